"""``VitMixViTDet``: the ViTDet-style backbone as a Detectron2 ``Backbone``.

:class:`VitMixViTDet` is a Detectron2 ``Backbone`` and a
:class:`downstream.pyramid.ViTPyramidBackbone` (plain ViT + simple feature
pyramid, "Exploring Plain Vision Transformer Backbones for Object Detection",
Li, Mao, Girshick, He, ECCV 2022, arXiv:2203.16527; the same module, with the
same state-dict keys ``vit.*``/``pyramid.*``, as the MMDetection backbone). It
loads the pretrained ViT itself, strictly, when it is built, because
Detectron2's ``DetectionCheckpointer`` loads ``init_checkpoint`` non-strictly
(a wrong file would leave the backbone random with a log line). LazyConfig
files build it directly (``L(VitMixViTDet)(...)``); yacs configs go through
``BACKBONE_REGISTRY`` (``MODEL.BACKBONE.NAME: build_vitmix_vitdet_backbone``
after :func:`add_vitmix_vitdet_config`).

``square_pad`` is the test- and training-time square of the official ViTDet
model (``SimpleFeaturePyramid(square_pad=1024)`` in Detectron2's
``configs/common/models/mask_rcnn_vitdet.py``): Detectron2 0.6 has no
``padding_constraints``, so :class:`downstream.detectron2.VitMixGeneralizedRCNN`
reads :attr:`VitMixViTDet.padding_constraints` and pads every batch to it.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional, Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..pyramid import ViTPyramidBackbone
from ..weights import LoadReport

__all__ = ["VitMixViTDet", "build_vitmix_vitdet_backbone", "add_vitmix_vitdet_config"]

logger = logging.getLogger(__name__)


class VitMixViTDet(ViTPyramidBackbone, Backbone):
    """Plain ViT + simple feature pyramid (ViTDet) as a Detectron2 backbone.

    Args:
        **kwargs of :class:`downstream.pyramid.ViTPyramidBackbone`.
        pretrained: checkpoint loaded into the ViT at construction, strictly;
            None keeps the random init (a warning is logged).
        strict, allow_missing, allow_unexpected, trust_pickle: see
            :func:`downstream.weights.load_pretrained`.
        square_pad: side of the square every batch is padded to (bottom/right)
            before it reaches the backbone, as the official ViTDet model does
            (1024 there); 0 = pad only to :attr:`size_divisibility`. A multiple
            of :attr:`size_divisibility`. Read by
            :class:`~downstream.detectron2.VitMixGeneralizedRCNN` through
            :attr:`padding_constraints`; when set, :meth:`forward` refuses
            inputs of another size (a plain ``GeneralizedRCNN`` of Detectron2
            0.6 would otherwise run the model on a grid it never trained on).

    Forward: (B, in_chans, H, W), H = W = ``square_pad`` when it is set,
    otherwise multiples of :attr:`size_divisibility` -> dict
    ``{"p2": (B, C, H/4, W/4), ..., "p6": (B, C, H/64, W/64)}`` (names
    ``p{log2(stride)}``), described by :meth:`output_shape`.
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        strict: bool = True,
        allow_missing: Sequence[str] = (),
        allow_unexpected: Sequence[str] = (),
        trust_pickle: bool = False,
        square_pad: int = 0,
        **kwargs: Any,
    ):
        ViTPyramidBackbone.__init__(self, **kwargs)  # -> Backbone.__init__ -> nn.Module.__init__
        self.square_pad = int(square_pad or 0)
        if self.square_pad < 0 or self.square_pad % self.size_divisibility:
            raise ValueError(
                f"square_pad={square_pad} must be 0 or a positive multiple of the largest pyramid stride "
                f"({self.size_divisibility})"
            )
        self._out_features = [f"p{int(math.log2(s))}" for s in self.out_strides]
        self._out_feature_strides = dict(zip(self._out_features, self.out_strides))
        self._out_feature_channels = {f: self.out_channels for f in self._out_features}
        self.load_report: Optional[LoadReport] = None
        self.pretrained = pretrained
        if pretrained is None:
            logger.warning("VitMixViTDet: no pretrained checkpoint given; the backbone keeps its random initialisation")
        else:
            self.load_report = self.load_pretrained(
                pretrained,
                strict=strict,
                allow_missing=list(allow_missing or ()),
                allow_unexpected=list(allow_unexpected or ()),
                trust_pickle=trust_pickle or None,
                log=False,
            )
            level = logging.INFO if self.load_report.complete else logging.WARNING
            logger.log(level, "VitMixViTDet: " + self.load_report.summary())

    @property
    def size_divisibility(self) -> int:
        return ViTPyramidBackbone.size_divisibility.fget(self)

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """``{"size_divisibility": ..., "square_size": square_pad}``: what later Detectron2 versions read
        from a backbone (``ImageList.from_tensors(padding_constraints=...)``), and what
        :class:`~downstream.detectron2.VitMixGeneralizedRCNN` reads here."""
        return {"size_divisibility": self.size_divisibility, "square_size": self.square_pad}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.square_pad and tuple(x.shape[-2:]) != (self.square_pad, self.square_pad):
            raise ValueError(
                f"VitMixViTDet(square_pad={self.square_pad}) got a {tuple(x.shape[-2:])} input: the batch must be "
                f"padded to the {self.square_pad}x{self.square_pad} square (use downstream.detectron2."
                "VitMixGeneralizedRCNN as the meta architecture, or set square_pad=0)"
            )
        return dict(zip(self._out_features, self.forward_pyramid(x)))


def add_vitmix_vitdet_config(cfg) -> None:
    """Add ``MODEL.VITMIX`` (the backbone's arguments) to a yacs config."""
    from detectron2.config import CfgNode as CN

    c = cfg.MODEL.VITMIX = CN()
    c.IMG_SIZE = 224
    c.PATCH_SIZE = 16
    c.EMBED_DIM = 768
    c.DEPTH = 12
    c.NUM_HEADS = 12
    c.MLP_RATIO = 4.0
    c.DROP_PATH_RATE = 0.1
    c.WINDOW_SIZE = 14
    c.GLOBAL_BLOCK_INDEXES = [2, 5, 8, 11]
    c.USE_REL_POS = False
    c.REL_POS_GRID = []  # [] = the pretraining grid
    c.FINAL_NORM = False
    c.OUT_CHANNELS = 256
    c.STRIDES = [4, 8, 16, 32]
    c.TOP_BLOCK = True
    c.SQUARE_PAD = 1024  # official ViTDet (mask_rcnn_vitdet.py: square_pad=1024); needs
    # MODEL.META_ARCHITECTURE = "VitMixGeneralizedRCNN"; 0 = pad to a multiple of 32 only
    c.PRETRAINED = ""
    c.STRICT = True
    c.ALLOW_MISSING = []
    c.ALLOW_UNEXPECTED = []


def build_vitmix_vitdet_backbone(cfg, input_shape: ShapeSpec) -> VitMixViTDet:
    """``MODEL.BACKBONE.NAME = "build_vitmix_vitdet_backbone"`` (yacs configs)."""
    c = cfg.MODEL.VITMIX
    return VitMixViTDet(
        img_size=c.IMG_SIZE,
        patch_size=c.PATCH_SIZE,
        in_chans=input_shape.channels,
        embed_dim=c.EMBED_DIM,
        depth=c.DEPTH,
        num_heads=c.NUM_HEADS,
        mlp_ratio=c.MLP_RATIO,
        drop_path_rate=c.DROP_PATH_RATE,
        window_size=c.WINDOW_SIZE,
        global_block_indexes=tuple(c.GLOBAL_BLOCK_INDEXES),
        use_rel_pos=c.USE_REL_POS,
        rel_pos_grid=tuple(c.REL_POS_GRID) or None,
        final_norm=c.FINAL_NORM,
        out_channels=c.OUT_CHANNELS,
        strides=tuple(c.STRIDES),
        top_block=c.TOP_BLOCK,
        square_pad=c.SQUARE_PAD,
        pretrained=c.PRETRAINED or None,
        strict=c.STRICT,
        allow_missing=list(c.ALLOW_MISSING),
        allow_unexpected=list(c.ALLOW_UNEXPECTED),
    )


if "build_vitmix_vitdet_backbone" in BACKBONE_REGISTRY:  # module re-executed (reload)
    BACKBONE_REGISTRY._obj_map.pop("build_vitmix_vitdet_backbone")
BACKBONE_REGISTRY.register(build_vitmix_vitdet_backbone)
