"""The ViTDet simple feature pyramid and the detection backbone (plain ViT + pyramid).

"Exploring Plain Vision Transformer Backbones for Object Detection" (Li, Mao,
Girshick, He, ECCV 2022, arXiv:2203.16527; reference code:
facebookresearch/detectron2, ``projects/ViTDet``) builds the multi-scale maps a
detector needs from the last map of a plain ViT alone: deconvolutions for the
finer strides, max-pooling for the coarser ones, then a 1x1 and a 3x3 conv with
a channels-first LayerNorm per level. :class:`SimpleFeaturePyramid` is that
module and :class:`ViTPyramidBackbone` puts it on a
:class:`downstream.vit.VisionTransformer` (windowed/global attention,
relative positions, no CLS token); the MMDetection and Detectron2 backbones
are thin subclasses of it with identical state dicts (``vit.*``,
``pyramid.*``). ``LayerNorm2d`` is timm's (``timm.layers.LayerNorm2d``, eps
1e-6), re-exported for the heads' ``norm`` settings.
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from .vit import VisionTransformer
from .weights import load_pretrained

__all__ = ["SimpleFeaturePyramid", "ViTPyramidBackbone", "LayerNorm2d"]


def _log2_int(s: float) -> int:
    k = math.log2(s)
    if abs(k - round(k)) > 1e-9:
        raise ValueError(f"unsupported scale factor {s}: must be a power of two (4, 2, 1, 0.5, 0.25, ...)")
    return int(round(k))


class SimpleFeaturePyramid(nn.Module):
    """ViTDet-style simple feature pyramid built from one stride-p map.

    Each level resamples the single input map, then applies a 1x1 conv and a
    3x3 conv to ``out_channels`` (each followed by a channels-first
    LayerNorm when ``norm``):

    * scale 2**k, k >= 1: k stride-2 2x2 transposed convs halving the
      channels each time, with LayerNorm2d + GELU between them
      (scale 4: deconv, LN, GELU, deconv; scale 2: one deconv);
    * scale 1: identity;
    * scale 2**-k: a k*2 x k*2 max-pool with the same stride (0.5: 2x2).

    Args:
        in_channels: channels of the input map (the ViT embed dim).
        out_channels: channels of every output level.
        scale_factors: resampling factor of each level relative to the input
            (``(4, 2, 1, 0.5)`` gives strides 4, 8, 16, 32 for p = 16;
            ``(2, 1, 0.5, 0.25)`` the same strides for p = 8).
        norm: apply LayerNorm2d after each conv (the convs then have no bias).

    Shapes:
        input: (B, in_channels, Gh, Gw).
        output: tuple of (B, out_channels, Gh * s, Gw * s), one per scale s
        (for s < 1, Gh and Gw must be divisible by 1/s).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        norm: bool = True,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.stages = nn.ModuleList()
        for s in self.scale_factors:
            k = _log2_int(s)
            layers: List[nn.Module] = []
            dim = self.in_channels
            for j in range(k):
                if dim % 2:
                    raise ValueError(f"cannot halve {dim} channels for scale factor {s}")
                if j > 0:
                    layers += [LayerNorm2d(dim), nn.GELU()]
                layers += [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)]
                dim //= 2
            if k < 0:
                f = 2 ** (-k)
                layers += [nn.MaxPool2d(f, stride=f)]
            layers += [nn.Conv2d(dim, out_channels, 1, bias=not norm)]
            if norm:
                layers += [LayerNorm2d(out_channels)]
            layers += [nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not norm)]
            if norm:
                layers += [LayerNorm2d(out_channels)]
            self.stages.append(nn.Sequential(*layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Convs: Kaiming normal (fan_out, ReLU gain), zero bias; norms: identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        for s in self.scale_factors:
            if s < 1:
                f = int(round(1 / s))
                if x.shape[-2] % f or x.shape[-1] % f:
                    raise ValueError(
                        f"feature map {tuple(x.shape[-2:])} is not divisible by {f} for scale {s}; "
                        "pad the input to a multiple of the largest pyramid stride (size_divisibility)"
                    )
        return tuple(stage(x) for stage in self.stages)


class ViTPyramidBackbone(nn.Module):
    """Plain ViT + simple feature pyramid: the detection backbone (ViTDet design).

    The ViT (``self.vit``, a :class:`VisionTransformer` with timm key names,
    so its checkpoint loads through :func:`downstream.weights.load_pretrained`)
    returns the last block's stride-p map; ``self.pyramid`` turns it into
    maps of ``strides`` (default 4, 8, 16, 32); ``top_block`` adds one more
    level at twice the last stride by 1x1 max-pooling with stride 2 (the
    "p6" that the RPN of Mask R-CNN uses; the same op as MMDet's FPN extra
    level without convs and Detectron2's ``LastLevelMaxPool``).

    The MMDetection and Detectron2 backbones are thin subclasses; their state
    dicts are identical (``vit.*``, ``pyramid.*``).

    Args:
        out_channels: channels of every pyramid level.
        strides: output strides (each ``patch_size * 2**k``).
        top_block: add the max-pooled level at ``2 * strides[-1]``.
        pyramid_norm: LayerNorm2d in the pyramid.
        final_norm, use_cls_token: as :class:`VisionTransformer`, with ViTDet's defaults (no final norm,
            no CLS token).
        **vit_kwargs: the other arguments of :class:`VisionTransformer` (``img_size``, ``patch_size``,
            ``embed_dim``, ``depth``, ``num_heads``, ..., ``window_size``, ``global_block_indexes``,
            ``use_rel_pos``, ``rel_pos_grid``); ``out_indices`` is the last block.

    Shapes:
        input: (B, in_chans, H, W), H and W divisible by
            :attr:`size_divisibility` (the largest pyramid stride).
        output: tuple of (B, out_channels, H / s, W / s) for s in
            :attr:`out_strides`.
    """

    def __init__(
        self,
        out_channels: int = 256,
        strides: Sequence[int] = (4, 8, 16, 32),
        top_block: bool = True,
        pyramid_norm: bool = True,
        final_norm: bool = False,
        use_cls_token: bool = False,
        **vit_kwargs: Any,
    ):
        super().__init__()
        if "out_indices" in vit_kwargs:
            raise ValueError("ViTPyramidBackbone builds its pyramid from the last block; out_indices is not an option")
        self.vit = VisionTransformer(out_indices=(-1,), final_norm=final_norm, use_cls_token=use_cls_token,
                                     **vit_kwargs)
        strides = tuple(int(s) for s in strides)
        if not strides or list(strides) != sorted(set(strides)):
            raise ValueError(f"strides must be increasing and distinct, got {strides}")
        p = self.vit.patch_size
        self.pyramid = SimpleFeaturePyramid(
            self.vit.embed_dim, out_channels, scale_factors=[p / s for s in strides], norm=pyramid_norm
        )
        self.top_block = bool(top_block)
        self.out_channels = int(out_channels)
        self.out_strides: Tuple[int, ...] = strides + ((2 * strides[-1],) if self.top_block else ())

    @property
    def size_divisibility(self) -> int:
        """Input sides must be multiples of this (the largest pyramid stride)."""
        return max(self.pyramid_strides)

    @property
    def pyramid_strides(self) -> Tuple[int, ...]:
        return self.out_strides[: len(self.pyramid.scale_factors)]

    @property
    def num_layers(self) -> int:
        return self.vit.depth

    def load_pretrained(self, path: str, **kwargs):
        """Load a ViT checkpoint into ``self.vit`` strictly (see :func:`downstream.weights.load_pretrained`).

        Returns the :class:`~downstream.weights.LoadReport`.
        """
        return load_pretrained(self.vit, path, **kwargs)

    def forward_pyramid(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, in_chans, H, W) -> tuple of (B, out_channels, H / s, W / s), s in :attr:`out_strides`."""
        d = self.size_divisibility
        if x.shape[-2] % d or x.shape[-1] % d:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} is not divisible by {d} (the largest pyramid stride); "
                "pad the batch (MMDet: pad_size_divisor; Detectron2: the backbone's size_divisibility does it)"
            )
        (feat,) = self.vit(x)  # (B, C, H/p, W/p)
        outs = list(self.pyramid(feat))
        if self.top_block:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2, padding=0))
        return tuple(outs)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.forward_pyramid(x)

