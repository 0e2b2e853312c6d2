"""Optimizer and learning-rate schedule of the engine.

* :func:`lr_at`: linear warm-up then cosine decay, per optimizer step (DeiT's recipe steps it per epoch:
  "Training data-efficient image transformers & distillation through attention", Touvron et al., ICML 2021,
  arXiv:2012.12877, facebookresearch/deit);
* :func:`multistep_lr_at`: linear warm-up then step decay at milestones (the CIFAR ResNet recipes);
* :func:`build_schedule`: the ``optim`` section's schedule as a function of the step;
* :func:`param_groups`, :func:`build_optimizer`: AdamW (fused on CUDA) or SGD, without weight decay on
  biases, norms, tokens and position embeddings unless ``optim.no_decay_1d`` is false.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

import torch


def lr_at(step: int, total: int, warmup: int, base_lr: float, warmup_lr: float, min_lr: float) -> float:
    """Linear warm-up from ``warmup_lr`` then cosine decay to ``min_lr`` (per optimizer step)."""
    if step < warmup:
        return warmup_lr + (base_lr - warmup_lr) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, t)))


def multistep_lr_at(step: int, warmup: int, base_lr: float, warmup_lr: float, milestones: List[int],
                    gamma: float) -> float:
    """Linear warm-up from ``warmup_lr``, then ``base_lr * gamma^(number of milestones <= step)`` (steps)."""
    if step < warmup:
        return warmup_lr + (base_lr - warmup_lr) * step / max(1, warmup)
    return base_lr * gamma ** sum(1 for m in milestones if step >= m)


def build_schedule(oc: Dict[str, Any], base_lr: float, steps_per_epoch: int,
                   total_steps: int) -> Callable[[int], float]:
    """``step -> lr`` of the ``optim`` section: ``warmup_epochs`` of linear warm-up from ``warmup_lr``, then
    ``schedule`` cosine (to ``min_lr`` at ``total_steps``) or multistep (``milestones`` in epochs, ``gamma``)."""
    warmup_steps = int(round(float(oc["warmup_epochs"]) * steps_per_epoch))
    if oc.get("schedule", "cosine") == "multistep":
        milestone_steps = [int(round(float(m) * steps_per_epoch)) for m in oc["milestones"]]
        return lambda s: multistep_lr_at(s, warmup_steps, base_lr, float(oc["warmup_lr"]), milestone_steps,
                                         float(oc["gamma"]))
    return lambda s: lr_at(s, total_steps, warmup_steps, base_lr, float(oc["warmup_lr"]), float(oc["min_lr"]))


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_1d: bool = True):
    """No weight decay on biases, norms, tokens and position embeddings (as DeiT/timm), unless
    ``no_decay_1d`` is false (every parameter decays, the usual CIFAR ResNet recipe)."""
    if not no_decay_1d:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, oc: Dict[str, Any], lr: float, device: torch.device):
    """AdamW (default) or SGD (``optim.name=sgd``: momentum, Nesterov) over :func:`param_groups`; fused
    kernels on CUDA unless ``optim.fused`` is false."""
    fused = oc.get("fused", "auto")
    fused = device.type == "cuda" if fused == "auto" else bool(fused)
    groups = param_groups(model, float(oc["weight_decay"]), bool(oc.get("no_decay_1d", True)))
    if oc.get("name", "adamw") == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(oc.get("momentum", 0.9)),
                               nesterov=bool(oc.get("nesterov", False)), fused=fused or None,
                               foreach=None if fused else True)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(oc["betas"]),
                             eps=float(oc["eps"]), fused=fused or None, foreach=None if fused else True)
