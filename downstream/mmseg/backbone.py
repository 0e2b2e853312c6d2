"""``VitMixViT``: the plain ViT backbone (timm key layout, strict loading) in MMSeg's ``MODELS``.

Used with MMSeg's own decode heads, e.g. the Linear and Mask decoders of
"Segmenter: Transformer for Semantic Segmentation" (Strudel, Garcia, Laptev,
Schmid, ICCV 2021, arXiv:2105.05633).

Why not MMSeg's own ``VisionTransformer`` + ``init_cfg=dict(type='Pretrained')``:
that path loads with ``strict=False`` and expects MMSeg's key layout, so an
unconverted timm/DeiT checkpoint leaves the backbone randomly initialised
with only a warning in the log. :class:`VitMixViT` keeps the timm key layout
and loads through :func:`downstream.weights.load_pretrained`, strictly by
default; the load report goes to the MMEngine logger.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from mmengine.model import BaseModule
from mmseg.registry import MODELS

from ..mmengine.backbone import configure_pretrained, strict_init_weights
from ..vit import VisionTransformer
from ..weights import load_pretrained

__all__ = ["VitMixViT", "BACKBONE_NAME"]

BACKBONE_NAME = "VitMixViT"


def _alias(name: str, value: Any, alias: str, alias_value: Any, default: Any) -> Any:
    """``value`` or its MMSeg-named ``alias_value`` (an error when both are given), else ``default``."""
    if value is not None and alias_value is not None:
        raise ValueError(
            f"{BACKBONE_NAME}: got both {name}={value!r} and its MMSeg alias {alias}={alias_value!r}; give {name} only"
        )
    if value is not None:
        return value
    return alias_value if alias_value is not None else default


@MODELS.register_module(name=BACKBONE_NAME, force=True)
class VitMixViT(VisionTransformer, BaseModule):
    """Plain ViT backbone (timm key layout) for MMSegmentation.

    Parameter names are those of :class:`downstream.vit.VisionTransformer`
    (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.*``,
    ``norm.*``), so a segmentor's keys are ``backbone.blocks.0.attn.qkv.weight``
    etc. and a file written by ``tools/convert_checkpoint.py`` also works as
    ``load_from``.

    The architecture arguments have timm's names, as in the MMDetection and
    Detectron2 backbones; MMSeg's names are accepted as aliases (giving both
    spellings of one argument is an error): ``in_channels`` = ``in_chans``,
    ``embed_dims`` = ``embed_dim``, ``num_layers`` = ``depth``.

    Args:
        img_size: pretraining image size (int or (H, W)): the grid the stored
            ``pos_embed`` lives on. The checkpoint's embedding is resized to
            it when loading, and resized again at forward time to the grid
            of each input.
        patch_size: patch size (must equal the checkpoint's).
        in_chans: input channels (default 3).
        embed_dim: token width (default 768; must equal the checkpoint's).
        depth: number of blocks (default 12; must equal the checkpoint's
            unless allowed by ``strict``/``allow_missing``/``allow_unexpected``).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
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
            k blocks; ``frozen_stages=depth`` freezes the whole backbone
            (linear probing of the pretrained features).
        pretrained: checkpoint path (safetensors or .pth) or None for a
            random backbone (a warning is logged).
        strict: refuse missing/unexpected keys (after the allow-lists).
        allow_missing: glob patterns of backbone keys that may be missing.
        allow_unexpected: glob patterns of checkpoint keys that may be unused.
        trust_pickle: allow full unpickling of a trusted ``.pth`` that
            ``torch.load(weights_only=True)`` refuses.
        init_cfg: MMEngine init configs, applied before the checkpoint is
            loaded (so they never overwrite it); a ``Pretrained`` entry is a
            synonym of ``pretrained`` and loaded strictly (the policy of
            :mod:`downstream.mmengine.backbone`, the same in MMDet).
        in_channels, embed_dims, num_layers: MMSeg's names of ``in_chans``,
            ``embed_dim``, ``depth``.

    Forward: (B, in_chans, H, W) with H, W divisible by ``patch_size`` ->
    tuple of (B, embed_dim, H/p, W/p), one per ``out_indices`` entry.
    """

    def __init__(
        self,
        img_size: Union[int, Sequence[int]] = 224,
        patch_size: int = 16,
        in_chans: Optional[int] = None,
        embed_dim: Optional[int] = None,
        depth: Optional[int] = None,
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
        in_channels: Optional[int] = None,
        embed_dims: Optional[int] = None,
        num_layers: Optional[int] = None,
    ):
        # VisionTransformer.__init__ -> BaseModule.__init__(init_cfg=None) -> nn.Module.__init__
        VisionTransformer.__init__(
            self,
            img_size=img_size,
            patch_size=patch_size,
            in_chans=_alias("in_chans", in_chans, "in_channels", in_channels, 3),
            embed_dim=_alias("embed_dim", embed_dim, "embed_dims", embed_dims, 768),
            depth=_alias("depth", depth, "num_layers", num_layers, 12),
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
        configure_pretrained(
            self, BACKBONE_NAME, pretrained, init_cfg, strict, allow_missing, allow_unexpected, trust_pickle
        )

    def init_weights(self) -> None:
        """Apply ``init_cfg`` (if any), then load ``pretrained`` strictly.

        The checkpoint is loaded last, inside this method, so neither our own
        ``init_cfg`` nor the segmentor's non-``Pretrained`` ``init_cfg``
        (applied before the children's ``init_weights``) overwrites it.
        """
        strict_init_weights(self, BACKBONE_NAME, lambda path, **kw: load_pretrained(self, path, **kw))
