"""``VitMixViTDet`` and ``VitMixLN2d`` in MMDetection's ``MODELS``.

``VitMixViTDet`` is :class:`downstream.pyramid.ViTPyramidBackbone` (plain ViT
+ simple feature pyramid, "Exploring Plain Vision Transformer Backbones for
Object Detection", Li, Mao, Girshick, He, ECCV 2022, arXiv:2203.16527) with
strict checkpoint loading in ``init_weights``; it is used with ``neck=None``
(the pyramid is part of the backbone, exactly as in the Detectron2
registration, so both frameworks hold the same module with the same state-dict
keys ``backbone.vit.*``/``backbone.pyramid.*``). ``VitMixLN2d`` is timm's
channels-first ``LayerNorm2d`` for the heads' ``norm_cfg`` (ViTDet's conv "LN").
"""

from __future__ import annotations

from typing import Optional, Sequence

from mmdet.registry import MODELS
from mmengine.model import BaseModule

from ..mmengine.backbone import configure_pretrained, strict_init_weights
from ..pyramid import LayerNorm2d, ViTPyramidBackbone

__all__ = ["VitMixViTDet", "VitMixLN2d", "BACKBONE_NAME"]

BACKBONE_NAME = "VitMixViTDet"


@MODELS.register_module(name=BACKBONE_NAME, force=True)
class VitMixViTDet(ViTPyramidBackbone, BaseModule):
    """Plain ViT + simple feature pyramid (ViTDet) for MMDetection, timm key layout.

    Args:
        **kwargs of :class:`downstream.pyramid.ViTPyramidBackbone` (``img_size``,
            ``patch_size``, ``in_chans``, ``embed_dim``, ``depth``, ``num_heads``,
            ..., ``window_size``, ``global_block_indexes``, ``use_rel_pos``,
            ``out_channels``, ``strides``, ``top_block``).
        pretrained: checkpoint path (safetensors or .pth) loaded into the ViT
            in :meth:`init_weights`, strictly; None keeps the random init (a
            warning is logged).
        strict, allow_missing, allow_unexpected, trust_pickle: see
            :func:`downstream.weights.load_pretrained`.
        init_cfg: MMEngine init configs, applied before the checkpoint is
            loaded; a ``Pretrained`` entry is a synonym of ``pretrained`` and
            loaded strictly (the policy of :mod:`downstream.mmengine.backbone`,
            the same in MMSeg).

    Forward: (B, in_chans, H, W), H and W multiples of the largest pyramid
    stride (``pad_size_divisor=32`` in the data preprocessor) -> tuple of
    (B, out_channels, H / s, W / s) for s in ``out_strides`` (default 4, 8,
    16, 32, 64), which is what MMDet's RPN and RoI heads take from a neck.
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        strict: bool = True,
        allow_missing: Sequence[str] = (),
        allow_unexpected: Sequence[str] = (),
        trust_pickle: bool = False,
        init_cfg=None,
        **kwargs,
    ):
        ViTPyramidBackbone.__init__(self, **kwargs)  # -> BaseModule.__init__(init_cfg=None)
        configure_pretrained(
            self, BACKBONE_NAME, pretrained, init_cfg, strict, allow_missing, allow_unexpected, trust_pickle
        )

    def init_weights(self) -> None:
        """Apply ``init_cfg`` (if any), then load ``pretrained`` into the ViT strictly."""
        strict_init_weights(self, BACKBONE_NAME, self.load_pretrained)


@MODELS.register_module(name="VitMixLN2d", force=True)
class VitMixLN2d(LayerNorm2d):
    """``norm_cfg=dict(type='VitMixLN2d', eps=1e-6)``: LayerNorm over the channels of NCHW maps."""
