"""Detectron2 adapter: the ViTDet-style backbone, checked COCO registration,
layer-decay parameter groups and the LazyConfig train/evaluate entry point.

=========================================  ==========================================
:class:`VitMixViTDet`                      :mod:`.backbone`: a Detectron2 ``Backbone``
                                           (``output_shape``), strict loading when built;
:func:`build_vitmix_vitdet_backbone`,      yacs configs: ``BACKBONE_REGISTRY`` and the
:func:`add_vitmix_vitdet_config`           ``MODEL.VITMIX`` node
:class:`VitMixGeneralizedRCNN`             :mod:`.detector`: ``GeneralizedRCNN`` that pads every
                                           batch to the backbone's ``square_pad`` (official ViTDet)
:func:`register_checked_coco_instances`    :mod:`.data`: :func:`downstream.coco_checks.prepare_coco`,
                                           then ``register_coco_instances`` on the checked JSON
:func:`layer_decay_param_groups`           :mod:`.optim`: :func:`downstream.layer_decay.param_groups_layer_decay`
                                           for LazyConfig optimizers
:class:`SafeDetectionCheckpointer`         :mod:`.checkpoint`: weights-only reading of every file
                                           (``.pkl`` through an allow-list unpickler)
``main``                                   :mod:`.train` (``vitmix-train-d2``, ``tools/train_d2.py``)
=========================================  ==========================================

Importing this package imports Detectron2's modeling and data packages
(``.train`` is not imported here) and makes Detectron2's own ``DetectionCheckpointer``
read weights-only (:mod:`.checkpoint`); it is safe to repeat.
"""

from __future__ import annotations

from .checkpoint import SafeDetectionCheckpointer  # importing it makes DetectionCheckpointer weights-only
from .backbone import VitMixViTDet, add_vitmix_vitdet_config, build_vitmix_vitdet_backbone
from .data import register_checked_coco_instances
from .detector import VitMixGeneralizedRCNN, pad_images
from .optim import layer_decay_param_groups

__all__ = [
    "VitMixViTDet",
    "build_vitmix_vitdet_backbone",
    "add_vitmix_vitdet_config",
    "VitMixGeneralizedRCNN",
    "pad_images",
    "register_checked_coco_instances",
    "layer_decay_param_groups",
    "SafeDetectionCheckpointer",
]
