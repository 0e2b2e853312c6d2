"""Training objectives of the engine, by name (``objective:`` in a config).

* :mod:`.base`: the :class:`Objective` interface (model, loss of a batch, evaluation and its record,
  checkpoint format and architecture, generator state, end-of-run hook, config section);
* :mod:`.registry`: names -> classes (imported on first use), the config's choice, :func:`build_objective`;
* :mod:`.classification`: a timm ViT trained with a sample mixer (``classification``, the default).

MixMo (``mixmo``) lives in :mod:`pretrain.mixmo.objective`. See docs/pretraining.md, "Objectives".
"""
from .base import Objective
from .registry import (DEFAULT, available_objectives, build_objective, config_sections, objective_class, register,
                       resolve_objective)

__all__ = ["DEFAULT", "Objective", "available_objectives", "build_objective", "config_sections", "objective_class",
           "register", "resolve_objective"]
