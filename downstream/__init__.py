"""Transfer of pretrained ViTs to dense prediction.

Framework-free parts live in :mod:`downstream.vit` (the backbone) and
:mod:`downstream.weights` (reading, mapping and strictly loading
checkpoints). Framework adapters are separate modules that are imported only
on demand: ``downstream.mmseg`` (MMSegmentation), ``downstream.mmdet``
(MMDetection) and ``downstream.detectron2`` (Detectron2) register the backbone
with their framework; :mod:`downstream.coco_checks` validates COCO files for
both detection frameworks. Importing this package never imports MMSeg, MMDet,
MMCV or Detectron2.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "VisionTransformer": "downstream.vit",
    "SimpleFeaturePyramid": "downstream.vit",
    "ViTPyramidBackbone": "downstream.vit",
    "LayerNorm2d": "downstream.vit",
    "check_coco": "downstream.coco_checks",
    "prepare_coco": "downstream.coco_checks",
    "CocoDataError": "downstream.coco_checks",
    "CocoCheckReport": "downstream.coco_checks",
    "resize_pos_embed": "downstream.vit",
    "get_layer_id": "downstream.vit",
    "param_groups_layer_decay": "downstream.vit",
    "CheckpointError": "downstream.weights",
    "LoadReport": "downstream.weights",
    "read_checkpoint": "downstream.weights",
    "arch_from_checkpoint": "downstream.weights",
    "convert_state_dict": "downstream.weights",
    "load_pretrained": "downstream.weights",
    "build_backbone_from_checkpoint": "downstream.weights",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'downstream' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
