"""Optimizer and learning-rate schedule of the engine.

* :func:`lr_at`: linear warm-up then cosine decay, per optimizer step (DeiT's recipe steps it per epoch:
  "Training data-efficient image transformers & distillation through attention", Touvron et al., ICML 2021,
  arXiv:2012.12877, facebookresearch/deit);
* :func:`multistep_lr_at`: linear warm-up then step decay at milestones (the CIFAR ResNet recipes);
* :func:`epoch_cosine_lr`: timm's per-epoch ``CosineLRScheduler`` as ``create_scheduler`` builds it (timm
  0.3.2-0.5.x, the DeiT/TransMix/TokenMix runs): warm-up, then a cosine over the epochs counted from 0, then
  ``min_lr`` for the cooldown epochs;
* :func:`build_schedule`: the ``optim`` section's schedule as a function of the step (and epoch):
  ``optim.lr_unit`` step (default) or epoch, ``optim.cooldown_epochs`` at ``min_lr`` at the end of the run,
  ``optim.lr_epoch_lag`` (epoch unit: epoch e trains at the schedule's value for e - lag);
* :func:`param_groups`, :func:`build_optimizer`: AdamW (fused on CUDA) or SGD, without weight decay on
  biases, norms, tokens and position embeddings unless ``optim.no_decay_1d`` is false.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

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


def epoch_cosine_lr(t: float, cosine_epochs: float, warmup: float, base_lr: float, warmup_lr: float,
                    min_lr: float) -> float:
    """The lr timm's ``create_scheduler(args)`` gives epoch ``t`` with ``--sched cosine`` (``t_in_epochs=True``,
    ``warmup_prefix=False``, one cycle, no noise): ``warmup_lr + t (base_lr - warmup_lr) / warmup`` for
    ``t < warmup``; then ``min_lr + (base_lr - min_lr)(1 + cos(pi t / cosine_epochs)) / 2`` with ``t`` still
    counted from epoch 0 (the warm-up is not a prefix: the cosine does not restart at ``base_lr``); ``min_lr``
    from ``t = cosine_epochs`` on (timm's ``--cooldown-epochs``, which the official loop may or may not run)."""
    if t < warmup:
        return warmup_lr + (base_lr - warmup_lr) * t / warmup
    if t < cosine_epochs:
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t / cosine_epochs))
    return min_lr


def build_schedule(oc: Dict[str, Any], base_lr: float, steps_per_epoch: int,
                   total_steps: int) -> Callable[..., float]:
    """``(step, epoch=None) -> lr`` of the ``optim`` section: ``warmup_epochs`` of linear warm-up from
    ``warmup_lr``, then ``schedule`` cosine (to ``min_lr``) or multistep (``milestones`` in epochs, ``gamma``).

    ``lr_unit: step`` (default): the lr changes every optimizer step, the cosine reaches ``min_lr`` at
    ``total_steps`` less ``cooldown_epochs`` of steps (then stays there). ``lr_unit: epoch``: the lr is constant
    within an epoch, :func:`epoch_cosine_lr` (or the multistep rule in epochs) at epoch ``max(0, epoch -
    lr_epoch_lag)`` (``epoch`` defaults to ``step // steps_per_epoch``); the run's epochs are ``total_steps //
    steps_per_epoch`` and include the ``cooldown_epochs``. With the defaults (step, 0, 0) this is the schedule
    of every earlier run, unchanged.

    ``warmup_lr`` is a number (an absolute level: timm's ``warmup_lr_init``, DeiT's 1e-6), or ``gradual``:
    ``base_lr / (W + 1)`` for a warm-up of W steps (epochs with ``lr_unit: epoch``), so that step s of the
    warm-up trains at ``base_lr (s + 1) / (W + 1)`` (a ``GradualWarmupScheduler``, the official MixMo warm-up)
    whatever the run's length, total batch or dataset size."""
    unit = oc.get("lr_unit", "step")
    cooldown, lag = float(oc.get("cooldown_epochs", 0) or 0), int(oc.get("lr_epoch_lag", 0) or 0)
    spe = max(1, int(steps_per_epoch))
    epochs = total_steps / spe
    if unit not in ("step", "epoch"):
        raise ValueError(f"optim.lr_unit must be step|epoch, got {unit!r}")
    if not 0 <= cooldown < epochs:
        raise ValueError(f"optim.cooldown_epochs must lie in [0, train.epochs = {epochs:g}), got {cooldown:g}")
    if lag < 0 or (lag and unit != "epoch"):
        raise ValueError(f"optim.lr_epoch_lag must be >= 0 and needs optim.lr_unit=epoch, got {lag}")
    multistep = oc.get("schedule", "cosine") == "multistep"
    warmup_steps = int(round(float(oc["warmup_epochs"]) * steps_per_epoch))
    if oc["warmup_lr"] == "gradual":
        warmup_lr = base_lr / ((float(oc["warmup_epochs"]) if unit == "epoch" else warmup_steps) + 1)
    else:
        try:  # a number, or its text (PyYAML reads 1e-6 without a dot as a string)
            warmup_lr = float(oc["warmup_lr"])
        except (TypeError, ValueError):
            raise ValueError(f"optim.warmup_lr must be a number or 'gradual', got {oc['warmup_lr']!r}") from None
    if unit == "epoch":
        warmup = float(oc["warmup_epochs"])
        milestones = [float(m) for m in oc["milestones"]]

        def at_epoch(step: int, epoch: Optional[int] = None) -> float:
            t = max(0, (step // spe if epoch is None else int(epoch)) - lag)
            if multistep:
                return multistep_lr_at(t, warmup, base_lr, warmup_lr, milestones, float(oc["gamma"]))
            return epoch_cosine_lr(t, epochs - cooldown, warmup, base_lr, warmup_lr, float(oc["min_lr"]))
        return at_epoch
    if multistep:
        milestone_steps = [int(round(float(m) * steps_per_epoch)) for m in oc["milestones"]]
        return lambda s, epoch=None: multistep_lr_at(s, warmup_steps, base_lr, warmup_lr, milestone_steps,
                                                     float(oc["gamma"]))
    cosine_steps = total_steps - int(round(cooldown * steps_per_epoch))
    return lambda s, epoch=None: lr_at(s, cosine_steps, warmup_steps, base_lr, warmup_lr, float(oc["min_lr"]))


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
