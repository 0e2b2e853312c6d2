"""MixMo: multi-input multi-output subnetworks trained with Linear- or Cut-MixMo mixing of their encoded
inputs, evaluated as a one-forward ensemble ("MixMo: Mixing Multiple Inputs for Multiple Outputs via Deep
Subnetworks", Ramé, Sun and Cord, ICCV 2021, arXiv:2103.06132; official code alexrame/mixmo-pytorch).

* :mod:`.models`: :class:`MixMoNet` (M encoders, mixing block, shared core, M heads) and builders for
  WRN-28-10, PreActResNet-18 (width multiplier) and timm ViTs with a class token;
* :mod:`.mixing`: batch repetition, Dirichlet ratios, Cut-/Linear-MixMo coefficient maps with the
  Cut probability schedule, the loss weights and :class:`MixMoTrainer` (sampling and loss of a step);
* :mod:`.objective`: :class:`MixMoObjective`, the engine's ``mixmo`` objective (config section, model,
  loss, evaluation, checkpoint format, ``eval.json``);
* :mod:`.evaluate`: ensemble and per-head top-1/NLL/ECE, ``python -m pretrain.mixmo.evaluate``.

See docs/mixmo.md.
"""
from .mixing import MixMoTrainer, build_trainer, cut_masks, cut_probability, loss_weights, repetition_indices
from .models import (MixMoNet, MixParams, build_mixmo_model, build_mixmo_preact_resnet, build_mixmo_vit,
                     build_mixmo_wrn)

__all__ = ["MixMoNet", "MixMoTrainer", "MixParams", "build_mixmo_model", "build_mixmo_preact_resnet",
           "build_mixmo_vit", "build_mixmo_wrn", "build_trainer", "cut_masks", "cut_probability", "loss_weights",
           "repetition_indices"]
