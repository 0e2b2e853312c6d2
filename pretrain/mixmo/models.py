"""MixMo networks: M input encoders, a mixing block, a shared core and M classifier heads.

:class:`MixMoNet` is the wrapper; its backbones are

* :class:`WideResNet` -- WRN-d-k for 32x32 inputs ("Wide Residual Networks", Zagoruyko & Komodakis,
  BMVC 2016, arXiv:1605.07146: pre-activation basic blocks, widths 16, 16k, 32k, 64k, optional dropout
  between the two convolutions; ``block="official"`` is the MixMo code's :class:`WideBasic`, stride in the
  second convolution and the raw input as shortcut);
* :class:`PreActResNet` -- PreActResNet-18 ("Identity Mappings in Deep Residual Networks", He et al., 2016,
  arXiv:1603.05027) with a width multiplier (widths 64w, 128w, 256w, 512w). The stem follows the MixMo
  official code by default (alexrame/mixmo-pytorch ``mixmo/networks/resnet.py``: a 3x3 convolution with
  stride 2 and 64 output channels whatever the width, no BN-ReLU before the pooling), so 64x64 Tiny
  ImageNet images are mixed on a 32x32 grid; ``stem_stride=1, stem_channels=None, final_norm=True`` is
  this project's former stride-1, 64w-channel stem with a final BN-ReLU;
* a timm Vision Transformer with a class token (:func:`build_mixmo_vit`): the M patch embeddings are
  the encoders, the mixing happens on the token grid, the position embedding, class token, blocks and
  final norm form the core, and the M heads read the class token.

For the CNNs the encoder is the first convolution, as in the MixMo paper; the core is everything
after it up to the pooled feature vector.

Forward contract (``net = MixMoNet(...)``):

* ``net(x)`` with ``x`` (B, C, H, W): inference. The same image goes through every encoder, the
  encoded features are summed (Linear-MixMo with lambda_k = 1/M, times M), and the mean of the M heads'
  logits is returned, (B, K): the "free" ensemble of one forward pass.
* ``net.head_logits(x)`` with ``x`` (B, C, H, W): the same forward, returning every head's logits
  (M, B, K) (evaluation of each subnetwork and of the ensemble).
* ``net(x, mix=params)`` with ``x`` (M, B, C, H, W) and a :class:`MixParams`: training. Input k goes
  through encoder k, the features are merged as ``sum_k coeffs[k] * l_k(x_k)``, and the (M, B, K)
  logits of all heads are returned (head k is trained on input k).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class MixParams:
    """How the M encoded inputs are merged in training.

    Attributes:
        coeffs: (M, B, 1, h, w) float coefficient maps on the mixing grid (the encoder's output
            resolution: the first conv's feature map, or the ViT token grid), or (M, B, 1, 1, 1) when
            they are constant over space (Linear-MixMo only). The mixed representation is
            ``sum_k coeffs[k] * l_k(x_k)``: ``M * lambda_k`` for Linear-MixMo, ``M * mask`` and
            ``M * (1 - mask)`` for Cut-MixMo.
    """

    coeffs: torch.Tensor


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


# ---- Wide ResNet and PreActResNet: pre-activation blocks ----------------------------------------
class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b; the wide basic block of WRN with ``dropout``):
    BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3, plus a 1x1 projection shortcut (on the
    pre-activated input) when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(cout, cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.dropout(F.relu(self.bn2(o))))
        return o + shortcut


class WideBasic(nn.Module):
    """The WRN block of the official MixMo code (alexrame/mixmo-pytorch ``mixmo/networks/wrn.py``
    ``WideBasic``): BN-ReLU-conv3x3 (stride 1), BN-ReLU-[dropout]-conv3x3 carrying the block's stride (a
    stride-2 convolution without padding after a one-pixel zero pad right and bottom), plus the *raw* input
    (identity, or a 1x1 projection with the stride when the shape changes). Same parameters as
    :class:`PreActBlock`, which puts the stride in the first convolution and projects the pre-activated input."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.stride = int(stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1 if stride == 1 else 0, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.conv1(F.relu(self.bn1(x)))
        o = self.dropout(F.relu(self.bn2(o)))
        if self.stride != 1:
            o = F.pad(o, (0, 1, 0, 1))
        o = self.conv2(o)
        return o + (x if self.shortcut is None else self.shortcut(x))


BLOCKS = {"preact": PreActBlock, "official": WideBasic}


class PreActCore(nn.Module):
    """Stages of :class:`PreActBlock` (stage ``g``: ``counts[g]`` blocks of width ``widths[g]``, the first
    with stride ``strides[g]``), final BN-ReLU (unless ``final_norm`` is false) and global average pooling.
    Input (B, cin, H, W), output (B, widths[-1])."""

    def __init__(self, cin: int, widths, strides, counts, dropout: float = 0.0, final_norm: bool = True,
                 block=PreActBlock):
        super().__init__()
        layers = []
        for w, s, n in zip(widths, strides, counts):
            for i in range(n):
                layers.append(block(cin, w, s if i == 0 else 1, dropout))
                cin = w
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin) if final_norm else None
        self.num_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        if self.bn is not None:
            x = F.relu(self.bn(x))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class WideResNetCore(PreActCore):
    """WRN-d-k after its first convolution: three groups of (d-4)/6 wide blocks (widths 16k, 32k, 64k,
    strides 1, 2, 2), final BN-ReLU and global average pooling. Input (B, 16, H, W), output (B, 64k)."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0, stem_channels: int = 16,
                 block: str = "preact"):
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"WRN widen_factor must be >= 1, got {widen_factor}")
        if block not in BLOCKS:
            raise ValueError(f"WRN block must be one of {sorted(BLOCKS)}, got {block!r}")
        n = (depth - 4) // 6
        super().__init__(stem_channels, [16 * widen_factor, 32 * widen_factor, 64 * widen_factor], (1, 2, 2),
                         (n, n, n), dropout, block=BLOCKS[block])


class PreActResNetCore(PreActCore):
    """PreActResNet-18 after its first convolution: four stages of two blocks, widths 64w..512w (strides
    1, 2, 2, 2), optional final BN-ReLU, global average pooling. Input (B, stem_channels, H, W), output
    (B, 512w)."""

    def __init__(self, width: int = 1, blocks=(2, 2, 2, 2), stem_channels: Optional[int] = None,
                 final_norm: bool = True):
        if width < 1:
            raise ValueError(f"PreActResNet width multiplier must be >= 1, got {width}")
        cin = 64 * width if stem_channels is None else int(stem_channels)
        super().__init__(cin, [64 * width, 128 * width, 256 * width, 512 * width], (1, 2, 2, 2), blocks,
                         final_norm=final_norm)


# ---- ViT core ------------------------------------------------------------------------------------
class ViTCore(nn.Module):
    """A timm ``VisionTransformer`` without its patch embedding and classifier: mixed patch tokens
    (B, N, D) -> class token + position embedding -> blocks -> norm -> pooled (B, D) (class token,
    ``fc_norm``, head dropout). Blocks keep timm's fused ``scaled_dot_product_attention``."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.num_features = int(vit.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        x = v._pos_embed(x)
        x = v.patch_drop(x)
        x = v.norm_pre(x)
        x = v.blocks(x)
        x = v.norm(x)
        return v.forward_head(x, pre_logits=True)


# ---- the wrapper ---------------------------------------------------------------------------------
class MixMoNet(nn.Module):
    """M encoders, the mixing block, a shared core, M linear heads (see the module docstring).

    Args:
        encoders: M modules mapping (B, C, H, W) images to (B, F, h, w) feature maps or (B, h*w, D)
            tokens (row-major on an h x w grid).
        core: module mapping the merged encoding to (B, num_features) pooled features.
        num_features: width of the core's output.
        num_classes: K.
        grid_fn: ``(H, W) -> (h, w)``, the mixing grid of an input size (raises for unsupported sizes).
        arch: plain-data description stored in checkpoint metadata.
    """

    def __init__(self, encoders: List[nn.Module], core: nn.Module, num_features: int, num_classes: int,
                 grid_fn, arch: Optional[Dict[str, Any]] = None):
        super().__init__()
        if len(encoders) < 1:
            raise ValueError("MixMoNet needs at least one encoder")
        self.num_members = len(encoders)
        self.num_classes = int(num_classes)
        self.encoders = nn.ModuleList(encoders)
        self.core = core
        self.heads = nn.ModuleList(nn.Linear(num_features, num_classes) for _ in range(self.num_members))
        self._grid_fn = grid_fn
        self.arch = dict(arch or {})

    def mix_grid(self, img_hw: Tuple[int, int]) -> Tuple[int, int]:
        """(h, w) mixing grid of (H, W) inputs: where the Cut-MixMo masks live."""
        return self._grid_fn((int(img_hw[0]), int(img_hw[1])))

    def no_weight_decay(self):
        """Names (in this module) of the parameters timm excludes from weight decay (class token,
        position embedding)."""
        inner = getattr(getattr(self.core, "vit", None), "no_weight_decay", None)
        return {f"core.vit.{n}" for n in inner()} if inner is not None else set()

    @staticmethod
    def _weigh(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """z * c for features (B, F, h, w) with c (B, 1, h', w') or tokens (B, N, D) (c flattened to (B, N, 1))."""
        c = c.to(z.dtype)
        if z.dim() == 3:
            c = c.flatten(2).transpose(1, 2) if c.shape[-1] * c.shape[-2] > 1 else c.view(c.shape[0], 1, 1)
        return z * c

    def encode_mixed(self, x: torch.Tensor, mix: MixParams) -> torch.Tensor:
        """(M, B, C, H, W) inputs -> merged encoding ``sum_k coeffs[k] * l_k(x_k)``."""
        m = self.num_members
        if x.dim() != 5 or x.shape[0] != m:
            raise ValueError(f"MixMo training input must be (M={m}, B, C, H, W), got shape {tuple(x.shape)}")
        c = mix.coeffs
        if c.dim() != 5 or c.shape[0] != m or c.shape[1] != x.shape[1]:
            raise ValueError(f"MixParams.coeffs must be (M={m}, B={x.shape[1]}, 1, h, w), got {tuple(c.shape)}")
        z = None
        for k, enc in enumerate(self.encoders):
            zk = self._weigh(enc(x[k]), c[k])
            z = zk if z is None else z + zk
        return z

    def encode_same(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> ``sum_k l_k(x)`` (inference: every encoder sees the same image)."""
        if x.dim() != 4:
            raise ValueError(f"MixMo inference input must be (B, C, H, W), got shape {tuple(x.shape)}")
        z = None
        for enc in self.encoders:
            zk = enc(x)
            z = zk if z is None else z + zk
        return z

    def _heads(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(feats) for h in self.heads])  # (M, B, K)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(M, B, K) logits of every head for one (B, C, H, W) image batch fed to all inputs."""
        return self._heads(self.core(self.encode_same(x)))

    def forward(self, x: torch.Tensor, mix: Optional[MixParams] = None) -> torch.Tensor:
        if mix is None:
            return self.head_logits(x).mean(0)
        return self._heads(self.core(self.encode_mixed(x, mix)))


# ---- builders ------------------------------------------------------------------------------------
def _same_grid(hw):
    return hw


def build_mixmo_wrn(num_classes: int, num_members: int = 2, depth: int = 28, widen_factor: int = 10,
                    dropout: float = 0.0, in_chans: int = 3, block: str = "preact", init: str = "fan_out") -> MixMoNet:
    """MixMo WRN-depth-widen_factor for 32x32-style inputs (M first convolutions 3->16 as encoders);
    ``block``: ``preact`` (:class:`PreActBlock`) or ``official`` (:class:`WideBasic`, the MixMo code's);
    ``init``: ``fan_out`` or ``official`` (:func:`_init_cnn`)."""
    core = WideResNetCore(depth, widen_factor, dropout, block=block)
    encoders = [_conv3x3(in_chans, 16) for _ in range(num_members)]
    arch = {"model": "mixmo", "arch": "wrn", "depth": depth, "widen_factor": widen_factor, "dropout": dropout,
            "num_members": num_members, "num_classes": num_classes, "block": block}
    return _init_cnn(MixMoNet(encoders, core, core.num_features, num_classes, _same_grid, arch), init)


def _conv_grid(stride: int):
    """Output size of a 3x3, padding-1 convolution with ``stride``: ``floor((H - 1) / stride) + 1``."""
    if stride == 1:
        return _same_grid
    return lambda hw: tuple((int(v) - 1) // stride + 1 for v in hw)


def build_mixmo_preact_resnet(num_classes: int, num_members: int = 2, width: int = 1, in_chans: int = 3,
                              stem_stride: int = 2, stem_channels: Optional[int] = 64,
                              final_norm: bool = False, init: str = "fan_out") -> MixMoNet:
    """MixMo PreActResNet-18 with width multiplier ``width`` (the paper's Tiny ImageNet net: width 3).

    Defaults follow the official code (alexrame/mixmo-pytorch ``mixmo/networks/resnet.py``,
    ``PreActResNet._make_conv1`` / ``_init_block`` / ``_forward_core_network``): the M encoders are 3x3
    convolutions with stride ``stem_stride`` = 2 and ``stem_channels`` = 64 outputs (64x64 inputs are mixed
    on a 32x32 grid), and the core pools the last stage without a final BN-ReLU. ``stem_channels=None``
    gives 64w channels, ``stem_stride=1`` the full-resolution grid, ``final_norm=True`` a final BN-ReLU;
    ``init``: ``fan_out`` or ``official`` (:func:`_init_cnn`, N(0, 0.01) heads as the official PreActResNet)."""
    if int(stem_stride) not in (1, 2):
        raise ValueError(f"PreActResNet stem_stride must be 1 or 2, got {stem_stride}")
    core = PreActResNetCore(width, stem_channels=stem_channels, final_norm=bool(final_norm))
    stem_out = 64 * width if stem_channels is None else int(stem_channels)
    encoders = [_conv3x3(in_chans, stem_out, int(stem_stride)) for _ in range(num_members)]
    arch = {"model": "mixmo", "arch": "preact_resnet", "depth": 18, "width": width, "num_members": num_members,
            "num_classes": num_classes, "stem_stride": int(stem_stride), "stem_channels": stem_out,
            "final_norm": bool(final_norm)}
    return _init_cnn(MixMoNet(encoders, core, core.num_features, num_classes, _conv_grid(int(stem_stride)), arch),
                     init, dense_gaussian=True)


INITS = ("fan_out", "official")
#: std of a standard normal truncated to [-2, 2] (the official init divides by it to keep He's variance)
TRUNC2_STD = 0.87962566103423978


def _he_truncated_(w: torch.Tensor) -> None:
    """He (fan-in, ReLU gain) normal truncated at two standard deviations, its std corrected by
    :data:`TRUNC2_STD` (official ``kaiming_normal_truncated``, ``mixmo/utils/torchutils.py``)."""
    fan_in = w.shape[1] * (w[0][0].numel() if w.dim() > 2 else 1)
    std = math.sqrt(2.0) / math.sqrt(fan_in) / TRUNC2_STD
    nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def _init_cnn(net: MixMoNet, init: str = "fan_out", dense_gaussian: bool = False) -> MixMoNet:
    """``fan_out``: He-normal (fan-out) convolutions, uniform +-1/sqrt(fan_in) heads (the usual CIFAR ResNet
    init); ``official``: the MixMo code's ``weights_init_hetruncatednormal`` (truncated He fan-in
    convolutions, heads alike or, with ``dense_gaussian`` as its PreActResNet, N(0, 0.01)). Unit BN and zero
    biases in both."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            if init == "official":
                _he_truncated_(m.weight.data)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if init == "official":
                if dense_gaussian:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    _he_truncated_(m.weight.data)
            else:
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    return net


def build_mixmo_vit(name: str, num_classes: int, num_members: int = 2, img_size: int = 224,
                    drop_path_rate: float = 0.0, **kwargs: Any) -> MixMoNet:
    """MixMo ViT from any timm ViT with a class token: M patch embeddings (the first one is timm's,
    the others fresh copies re-initialised) as encoders, Cut-MixMo on the token grid, shared blocks,
    M linear heads on the class token."""
    from timm.models.vision_transformer import VisionTransformer

    from ..models.vit import create_vit

    vit = create_vit(name, num_classes, drop_path_rate=drop_path_rate, img_size=img_size, **kwargs)
    if not isinstance(vit, VisionTransformer) or getattr(vit, "cls_token", None) is None:
        raise ValueError(f"timm model '{name}' is not a VisionTransformer with a class token")
    if getattr(vit, "dynamic_img_size", False):
        raise ValueError("MixMo ViTs need a fixed input size (dynamic_img_size=False)")
    pe = vit.patch_embed
    ps = tuple(pe.patch_size)
    isz = tuple(pe.img_size)
    if isz[0] % ps[0] or isz[1] % ps[1]:
        raise ValueError(f"image size {isz[0]}x{isz[1]} is not divisible by the patch size {ps[0]}x{ps[1]}")
    encoders = [pe]
    for _ in range(num_members - 1):
        e = copy.deepcopy(pe)
        e.proj.reset_parameters()  # nn.Conv2d's own (Kaiming-uniform) init, as timm's patch embedding
        encoders.append(e)
    vit.patch_embed = nn.Identity()
    vit.reset_classifier(0)
    core = ViTCore(vit)
    grid = (isz[0] // ps[0], isz[1] // ps[1])

    def grid_fn(hw):
        if tuple(hw) != isz:
            raise ValueError(f"this MixMo ViT takes {isz[0]}x{isz[1]} images (patch {ps[0]}, a {grid[0]}x"
                             f"{grid[1]} token grid), got {hw[0]}x{hw[1]}")
        return grid

    arch = {"model": "mixmo", "arch": "vit", "name": name, "img_size": list(isz), "patch_size": int(ps[0]),
            "embed_dim": int(core.num_features), "depth": len(vit.blocks), "num_members": num_members,
            "num_classes": num_classes}
    net = MixMoNet(encoders, core, core.num_features, num_classes, grid_fn, arch)
    for h in net.heads:  # timm's head init: truncated normal weights, zero bias
        nn.init.trunc_normal_(h.weight, std=0.02)
        nn.init.zeros_(h.bias)
    return net


ARCHS = ("wrn", "preact_resnet", "vit")


def build_mixmo_model(cfg: Dict[str, Any]) -> MixMoNet:
    """The MixMo network an engine config describes: ``model.arch`` (wrn | preact_resnet | vit),
    ``model.kwargs`` (wrn: depth, widen_factor, dropout, block, init; preact_resnet: width, stem_stride,
    stem_channels, final_norm, init; vit: timm overrides),
    ``mixmo.num_members``, ``data.num_classes`` / ``data.img_size``."""
    mc, dc, xc = cfg["model"], cfg["data"], cfg["mixmo"]
    arch = mc.get("arch", "vit")
    m = int(xc["num_members"])
    k = int(dc["num_classes"])
    kwargs = dict(mc.get("kwargs") or {})
    if arch == "wrn":
        allowed = {"depth", "widen_factor", "dropout", "block", "init"}
        _check_kwargs(kwargs, allowed, arch)
        return build_mixmo_wrn(k, m, **kwargs)
    if arch == "preact_resnet":
        _check_kwargs(kwargs, {"width", "stem_stride", "stem_channels", "final_norm", "init"}, arch)
        return build_mixmo_preact_resnet(k, m, **kwargs)
    if arch == "vit":
        kwargs.setdefault("img_size", int(dc["img_size"]))
        try:
            return build_mixmo_vit(mc["name"], k, m, drop_path_rate=float(mc["drop_path"]), **kwargs)
        except TypeError as exc:
            raise ValueError(f"model.kwargs {kwargs} do not fit timm model '{mc['name']}': {exc}") from None
    raise ValueError(f"unknown model.arch '{arch}' for MixMo; expected one of {ARCHS}")


def _check_kwargs(kwargs, allowed, arch):
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown model.kwargs {unknown} for model.arch={arch}; allowed: {sorted(allowed)}")
