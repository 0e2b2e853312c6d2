"""What the MMSegmentation and MMDetection adapters share: both run on MMEngine.

* :mod:`.backbone`: the ``pretrained``/``init_cfg`` policy and strict loading in ``init_weights``;
* :mod:`.checkpoint`: the weights-only ``torch.load`` allow-list for MMEngine's own ``iter_*.pth``;
* :mod:`.hooks`: ``PretrainedCheckHook`` (the backbone still equals its checkpoint when training starts);
* :mod:`.optim`: ``VitMixLayerDecayOptimizerConstructor`` (layer-wise lr decay).

:func:`register_shared` puts the hook and the constructor into a framework's
registries; :mod:`downstream.mmseg` and :mod:`downstream.mmdet` call it when
they are imported. This package imports MMEngine only, never MMSeg or MMDet.
"""

from __future__ import annotations

from typing import Sequence

from .backbone import configure_pretrained, split_pretrained_init_cfg, strict_init_weights
from .checkpoint import mmengine_safe_globals, register_mmengine_safe_globals
from .hooks import PretrainedCheckHook, compare_backbone_with_checkpoint
from .optim import VitMixLayerDecayOptimizerConstructor

__all__ = [
    "configure_pretrained",
    "split_pretrained_init_cfg",
    "strict_init_weights",
    "mmengine_safe_globals",
    "register_mmengine_safe_globals",
    "PretrainedCheckHook",
    "compare_backbone_with_checkpoint",
    "VitMixLayerDecayOptimizerConstructor",
    "register_shared",
]


def register_shared(hooks, optim_wrapper_constructors, constructor_names: Sequence[str] = ()) -> None:
    """Register :class:`PretrainedCheckHook` and :class:`VitMixLayerDecayOptimizerConstructor`.

    Args:
        hooks: the framework's ``HOOKS`` registry.
        optim_wrapper_constructors: its ``OPTIM_WRAPPER_CONSTRUCTORS`` registry.
        constructor_names: further names for the constructor (former names kept working).

    Also allow-lists MMEngine's checkpoint contents for weights-only loading. Safe to repeat.
    """
    register_mmengine_safe_globals()
    hooks.register_module(name="PretrainedCheckHook", module=PretrainedCheckHook, force=True)
    for name in ("VitMixLayerDecayOptimizerConstructor", *constructor_names):
        optim_wrapper_constructors.register_module(name=name, module=VitMixLayerDecayOptimizerConstructor, force=True)
