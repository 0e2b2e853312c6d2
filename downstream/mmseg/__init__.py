"""MMSegmentation adapter: registers the ViT backbone and its helpers in MMSeg's registries.

Configs load it with::

    custom_imports = dict(imports=['downstream.mmseg'], allow_failed_imports=False)

and use ``backbone=dict(type='VitMixViT', pretrained=PATH, embed_dim=..., depth=..., ...)``.

=====================================  ================================================
``VitMixViT`` (MODELS)                 :mod:`.backbone`: :class:`downstream.vit.VisionTransformer`
                                       with strict checkpoint loading in ``init_weights``
``CheckedADE20KDataset``,              :mod:`.data`: MMSeg's datasets with file checks
``CheckedSegDataset`` (DATASETS)       (missing folders, images without labels)
``CheckSegMap`` (TRANSFORMS)           :mod:`.data`: label values and sizes checked per file
``PretrainedCheckHook`` (HOOKS)        :mod:`downstream.mmengine.hooks` (shared with MMDet)
``VitMixLayerDecayOptimizerConstructor``  :mod:`downstream.mmengine.optim` (shared with MMDet)
(OPTIM_WRAPPER_CONSTRUCTORS)
=====================================  ================================================

Importing it also allow-lists MMEngine's own ``iter_*.pth`` contents for the
weights-only ``torch.load`` (:mod:`downstream.mmengine.checkpoint`), so ``mim
test``, ``--resume`` and ``load_from`` work with torch >= 2.6.
:mod:`.compat` maps our backbone onto MMSeg's own ``VisionTransformer`` (tests,
``tools/bench_mmseg.py``).

Importing this package imports ``mmseg.registry`` and ``mmseg.datasets`` but
not ``mmseg.models``, and is safe to repeat (registration uses ``force=True``).
"""

from __future__ import annotations

from mmseg.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS

from ..mmengine import VitMixLayerDecayOptimizerConstructor, register_shared
from . import data  # noqa: F401  (registration)
from .backbone import BACKBONE_NAME, VitMixViT

__all__ = ["VitMixViT", "VitMixLayerDecayOptimizerConstructor", "BACKBONE_NAME"]

register_shared(HOOKS, OPTIM_WRAPPER_CONSTRUCTORS)
