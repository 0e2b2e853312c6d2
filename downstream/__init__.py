"""Transfer of pretrained ViTs to dense prediction.

Framework-free parts: :mod:`downstream.vit` (the ViT backbone on timm's
layers), :mod:`downstream.pyramid` (the ViTDet simple feature pyramid and the
detection backbone), :mod:`downstream.layer_decay` (layer-wise lr decay groups),
:mod:`downstream.weights` (reading, mapping and strictly loading checkpoints)
and :mod:`downstream.coco_checks` (COCO file validation for both detection
frameworks). Framework adapters are subpackages imported only on demand:
``downstream.mmseg`` (MMSegmentation), ``downstream.mmdet`` (MMDetection), both
on the shared MMEngine pieces of ``downstream.mmengine``, and
``downstream.detectron2`` (Detectron2, with the ``vitmix-train-d2`` entry
point). Importing this package never imports MMEngine, MMSeg, MMDet, MMCV or
Detectron2.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "VisionTransformer": "downstream.vit",
    "SimpleFeaturePyramid": "downstream.pyramid",
    "ViTPyramidBackbone": "downstream.pyramid",
    "LayerNorm2d": "downstream.pyramid",
    "check_coco": "downstream.coco_checks",
    "prepare_coco": "downstream.coco_checks",
    "CocoDataError": "downstream.coco_checks",
    "CocoCheckReport": "downstream.coco_checks",
    "resize_pos_embed": "downstream.vit",
    "get_layer_id": "downstream.layer_decay",
    "param_groups_layer_decay": "downstream.layer_decay",
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
