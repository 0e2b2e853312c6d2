"""MixMo (Ramé et al., ICCV 2021): multi-input multi-output subnetworks trained with Linear- or
Cut-MixMo mixing of their encoded inputs, evaluated as a one-forward ensemble.

* :mod:`.models`: :class:`MixMoNet` (M encoders, mixing block, shared core, M heads) and builders for
  WRN-28-10, PreActResNet-18 (width multiplier) and timm ViTs with a class token;
* :mod:`.mixing`: batch repetition, Dirichlet ratios, Cut-/Linear-MixMo coefficient maps with the
  Cut probability schedule, the loss weights and :class:`MixMoTrainer` (the engine's objective);
* :mod:`.evaluate`: ensemble and per-head top-1/NLL/ECE, ``python -m pretrain.mixmo.evaluate``.

See docs/mixmo.md.
"""
from .mixing import MixMoTrainer, build_trainer, cut_masks, cut_probability, loss_weights, repetition_indices
from .models import (MixMoNet, MixParams, build_mixmo_model, build_mixmo_preact_resnet, build_mixmo_vit,
                     build_mixmo_wrn)

__all__ = ["MixMoNet", "MixMoTrainer", "MixParams", "build_mixmo_model", "build_mixmo_preact_resnet",
           "build_mixmo_vit", "build_mixmo_wrn", "build_trainer", "cut_masks", "cut_probability", "loss_weights",
           "repetition_indices"]
