"""MMSegmentation adapter: registers :class:`VitMixViT` (and a layer-decay
optimizer constructor) in MMSeg's registries.

Configs load it with::

    custom_imports = dict(imports=['downstream.mmseg'], allow_failed_imports=False)

and use ``backbone=dict(type='VitMixViT', pretrained=PATH, ...)``.

Why not MMSeg's own ``VisionTransformer`` + ``init_cfg=dict(type='Pretrained')``:
that path loads with ``strict=False`` and expects MMSeg's key layout, so an
unconverted timm/DeiT checkpoint leaves the backbone randomly initialised
with only a warning in the log. :class:`VitMixViT` keeps the timm key layout
and loads through :func:`downstream.weights.load_pretrained`, strictly by
default; the load report goes to the MMEngine logger.

Importing it also registers, from sibling modules:

* :mod:`downstream.mmseg_data`: ``CheckedADE20KDataset``/``CheckedSegDataset``
  (missing folders, images without labels -> errors naming the path) and the
  ``CheckSegMap`` transform (label values outside the class range, label/image
  size mismatch -> errors naming the file);
* :mod:`downstream.mmseg_hooks`: ``PretrainedCheckHook`` (the backbone still
  equals its checkpoint when training starts);
* :mod:`downstream.mmengine_checkpoint`: weights-only ``torch.load`` allow-list
  for MMEngine's own ``iter_*.pth`` files (``mim test``, ``--resume``,
  ``load_from`` work with torch >= 2.6 without turning the check off).

Importing this module imports ``mmseg.registry`` and ``mmseg.datasets`` but
not ``mmseg.models``, and is safe to repeat (registration uses ``force=True``).
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Union

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from . import mmseg_data, mmseg_hooks  # noqa: F401  (registration)
from .mmengine_checkpoint import register_mmengine_safe_globals
from .mmengine_common import set_pretrained_options, strict_init_weights
from .vit import VisionTransformer, get_layer_id
from .weights import load_pretrained

__all__ = ["VitMixViT", "VitMixLayerDecayOptimizerConstructor", "BACKBONE_NAME"]

register_mmengine_safe_globals()

BACKBONE_NAME = "VitMixViT"


def _pretrained_from_init_cfg(init_cfg):
    """Split ``init_cfg`` into (checkpoint path or None, remaining init_cfg)."""
    if init_cfg is None:
        return None, None
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    ckpt, rest = None, []
    for c in cfgs:
        if c.get("type") == "Pretrained":
            prefix = c.get("prefix")
            if prefix not in (None, "", "backbone", "backbone."):
                raise ValueError(
                    f"{BACKBONE_NAME}: init_cfg Pretrained prefix={prefix!r} is not supported; "
                    "use pretrained=PATH (the loader finds 'backbone.' keys itself)"
                )
            ckpt = c.get("checkpoint")
        else:
            rest.append(c)
    if not rest:
        rest = None
    elif isinstance(init_cfg, dict):
        rest = rest[0]
    return ckpt, rest


@MODELS.register_module(name=BACKBONE_NAME, force=True)
class VitMixViT(VisionTransformer, BaseModule):
    """Plain ViT backbone (timm key layout) for MMSegmentation.

    Parameter names are those of :class:`downstream.vit.VisionTransformer`
    (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.*``,
    ``norm.*``), so a segmentor's keys are ``backbone.blocks.0.attn.qkv.weight``
    etc. and a file written by ``tools/convert_checkpoint.py`` also works as
    ``load_from``.

    Args:
        img_size: pretraining image size (int or (H, W)): the grid the stored
            ``pos_embed`` lives on. The checkpoint's embedding is resized to
            it when loading, and resized again at forward time to the grid
            of each input.
        patch_size: patch size (must equal the checkpoint's).
        in_channels: input channels.
        embed_dims: token width (must equal the checkpoint's).
        num_layers: number of blocks (must equal the checkpoint's unless
            allowed by ``strict``/``allow_missing``/``allow_unexpected``).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dims.
        qkv_bias: bias on the QKV projection.
        drop_rate: dropout rate.
        attn_drop_rate: attention dropout rate.
        drop_path_rate: stochastic depth of the last block (linear in depth).
        out_indices: block indices whose outputs are returned (int or list;
            ``-1`` = last block).
        final_norm: apply the final LayerNorm to the last block's output.
        norm_eps: LayerNorm epsilon.
        interpolate_mode: position-embedding interpolation mode.
        frozen_stages: -1 (train all), or freeze the embeddings and the first
            k blocks; ``frozen_stages=num_layers`` freezes the whole backbone
            (linear probing of the pretrained features).
        pretrained: checkpoint path (safetensors or .pth) or None for a
            random backbone. ``init_cfg=dict(type='Pretrained', checkpoint=P)``
            is accepted as a synonym and loaded the same (strict) way.
        strict: refuse missing/unexpected keys (after the allow-lists).
        allow_missing: glob patterns of backbone keys that may be missing.
        allow_unexpected: glob patterns of checkpoint keys that may be unused.
        trust_pickle: allow full unpickling of a trusted ``.pth`` that
            ``torch.load(weights_only=True)`` refuses.
        init_cfg: other MMEngine init configs (applied before the checkpoint
            is loaded, so they never overwrite it).

    Forward: (B, in_channels, H, W) with H, W divisible by ``patch_size`` ->
    tuple of (B, embed_dims, H/p, W/p), one per ``out_indices`` entry.
    """

    def __init__(
        self,
        img_size: Union[int, Sequence[int]] = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        embed_dims: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        out_indices: Union[int, Sequence[int]] = -1,
        final_norm: bool = True,
        norm_eps: float = 1e-6,
        interpolate_mode: str = "bicubic",
        frozen_stages: int = -1,
        pretrained: Optional[str] = None,
        strict: bool = True,
        allow_missing: Sequence[str] = (),
        allow_unexpected: Sequence[str] = (),
        trust_pickle: bool = False,
        init_cfg=None,
    ):
        # VisionTransformer.__init__ -> BaseModule.__init__(init_cfg=None) -> nn.Module.__init__
        VisionTransformer.__init__(
            self,
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_channels,
            embed_dim=embed_dims,
            depth=num_layers,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            out_indices=out_indices,
            final_norm=final_norm,
            norm_eps=norm_eps,
            interpolate_mode=interpolate_mode,
            frozen_stages=frozen_stages,
        )
        ckpt, init_cfg = _pretrained_from_init_cfg(init_cfg)
        if ckpt is not None:
            if pretrained is not None and pretrained != ckpt:
                raise ValueError(f"{BACKBONE_NAME}: both pretrained={pretrained!r} and init_cfg checkpoint={ckpt!r}")
            pretrained = ckpt
        self.init_cfg = init_cfg
        set_pretrained_options(self, pretrained, strict, allow_missing, allow_unexpected, trust_pickle)

    def init_weights(self) -> None:
        """Apply ``init_cfg`` (if any), then load ``pretrained`` strictly.

        The checkpoint is loaded last, inside this method, so neither our own
        ``init_cfg`` nor the segmentor's non-``Pretrained`` ``init_cfg``
        (applied before the children's ``init_weights``) overwrites it.
        """
        strict_init_weights(self, BACKBONE_NAME, lambda path, **kw: load_pretrained(self, path, **kw))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="VitMixLayerDecayOptimizerConstructor", force=True)
class VitMixLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise lr decay for segmentors with a :class:`VitMixViT` backbone.

    ``paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65)``: parameter
    ``backbone.blocks.{i}.*`` gets ``lr * rate ** (num_layers - i)``, the
    embeddings ``lr * rate ** (num_layers + 1)``, everything else (final
    norm, heads) the full lr. 1-D parameters, biases, ``pos_embed`` and
    ``cls_token`` get no weight decay.
    """

    def add_params(self, params: List[dict], module, **kwargs) -> None:
        num_layers = int(self.paramwise_cfg.get("num_layers"))
        rate = float(self.paramwise_cfg.get("layer_decay_rate", 1.0))
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("backbone."):
                lid = get_layer_id(name, num_layers)
            else:
                lid = num_layers + 1
            no_decay = param.ndim == 1 or name.endswith(".bias") or name.split(".")[-1] in ("pos_embed", "cls_token")
            key = (lid, no_decay)
            if key not in groups:
                scale = rate ** (num_layers + 1 - lid)
                groups[key] = {
                    "params": [],
                    "param_names": [],
                    "lr": self.base_lr * scale,
                    "lr_scale": scale,
                    "weight_decay": 0.0 if no_decay else (self.base_wd or 0.0),
                }
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(name)
        for key in sorted(groups):
            g = groups[key]
            print_log(
                f"layer decay group layer_id={key[0]} no_decay={key[1]}: lr_scale={g['lr_scale']:.4f}, "
                f"{len(g['params'])} tensors",
                logger="current",
                level=logging.DEBUG,
            )
            params.append(g)
