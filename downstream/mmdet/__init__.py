"""MMDetection adapter: registers the ViTDet-style backbone and its helpers in MMDet's registries.

Configs load it with::

    custom_imports = dict(imports=['downstream.mmdet'], allow_failed_imports=False)

and use ``backbone=dict(type='VitMixViTDet', pretrained=PATH, ...)`` with
``neck=None`` (the simple feature pyramid is part of the backbone).

=================================  ===========================================
``VitMixViTDet`` (MODELS)          :mod:`.backbone`: :class:`downstream.pyramid.ViTPyramidBackbone`
                                   with strict checkpoint loading in ``init_weights``
``VitMixLN2d`` (MODELS)            :mod:`.backbone`: timm's ``LayerNorm2d`` for the
                                   heads' ``norm_cfg`` (ViTDet's conv "LN")
``VitMixCocoDataset`` (DATASETS)   :mod:`.coco`: ``CocoDataset`` that runs
                                   :func:`downstream.coco_checks.prepare_coco`
``VitMixCocoMetric`` (METRICS)     :mod:`.coco`: ``CocoMetric`` on the same checked file
``VitMixMaskRCNN`` (MODELS)        :mod:`.detector`: ``MaskRCNN`` whose RPN and RoI heads
                                   run in float32 under bf16 autocast
``VitMixPad`` (TRANSFORMS)         :mod:`.transforms`: ``Pad`` to the ViTDet square that
                                   keeps ``img_shape`` (boxes clipped to the real image)
``PretrainedCheckHook`` (HOOKS)    :mod:`downstream.mmengine.hooks` (shared with MMSeg)
``VitMixLayerDecay...``            :mod:`downstream.mmengine.optim` (shared with MMSeg;
(OPTIM_WRAPPER_CONSTRUCTORS)       also as ``VitMixDetLayerDecayOptimizerConstructor``)
=================================  ===========================================

Importing it also allow-lists MMEngine's own ``iter_*.pth`` contents for the
weights-only ``torch.load`` (:mod:`downstream.mmengine.checkpoint`). It imports
``mmdet.registry``, ``mmdet.datasets.coco``, ``mmdet.datasets.transforms``,
``mmdet.evaluation`` and MMDet's detectors, and is safe to repeat (``force=True``).
"""

from __future__ import annotations

from mmdet.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS

from ..mmengine import VitMixLayerDecayOptimizerConstructor, register_shared
from .backbone import BACKBONE_NAME, VitMixLN2d, VitMixViTDet
from .coco import VitMixCocoDataset, VitMixCocoMetric
from .detector import VitMixMaskRCNN
from .transforms import VitMixPad

__all__ = [
    "VitMixViTDet",
    "VitMixLN2d",
    "VitMixCocoDataset",
    "VitMixCocoMetric",
    "VitMixLayerDecayOptimizerConstructor",
    "VitMixDetLayerDecayOptimizerConstructor",
    "VitMixMaskRCNN",
    "VitMixPad",
    "BACKBONE_NAME",
]

# the former MMDet-only name of the shared constructor
VitMixDetLayerDecayOptimizerConstructor = VitMixLayerDecayOptimizerConstructor

register_shared(HOOKS, OPTIM_WRAPPER_CONSTRUCTORS, constructor_names=("VitMixDetLayerDecayOptimizerConstructor",))
