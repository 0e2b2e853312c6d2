"""``--scale F``: epoch and iteration schedules at a fraction (or multiple) of the paper's.

The arithmetic (:func:`scale_epochs`, :func:`scale_iters`) multiplies epochs or iterations, keeps
warm-up, milestones and evaluation/checkpoint intervals at the same fraction of the run, and never
goes below a valid schedule (at least one epoch or iteration, strictly increasing milestones inside
the run). The ``*_scaled_*`` functions read a loaded config's schedule and return the overrides of
its own tool (MMEngine ``--cfg-options``, Detectron2 LazyConfig overrides, pretraining ``key=value``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import ReproError


def round_half_up(x: float) -> int:
    """Round half up (Python's ``round`` rounds half to even)."""
    return int(math.floor(x + 0.5))


def scale_count(n: int, f: float, minimum: int = 1) -> int:
    """``n`` epochs or iterations times the scale ``f``, rounded, and at least ``minimum``."""
    if f <= 0:
        raise ReproError(f"--scale must be > 0, got {f}")
    return max(int(minimum), round_half_up(n * f))


def scale_epochs(epochs: int, warmup_epochs: float, f: float) -> Tuple[int, float]:
    """An epoch schedule at scale ``f``: ``(epochs', warmup')``.

    ``epochs' = max(1, round(epochs * f))``; the warm-up keeps its share of the run,
    ``warmup' = warmup * epochs' / epochs`` (fractional epochs are fine for the engine's
    per-step warm-up), rounded to 4 decimals. ``f = 1`` returns the schedule unchanged.
    """
    e = scale_count(int(epochs), f)
    if float(warmup_epochs) <= 0:
        return e, 0.0
    return e, round(float(warmup_epochs) * e / int(epochs), 4)


def scale_iters(iters: int, f: float, warmup: Optional[int] = None, milestones: Sequence[int] = (),
                intervals: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """An iteration schedule at scale ``f``.

    Returns ``{"iters", "warmup", "milestones", **intervals}``:

    * ``iters = max(round(iters * f), 1 + len(milestones))`` (a multi-step schedule needs its
      milestones strictly inside the run);
    * ``warmup = round(warmup * iters' / iters)``, at least 1 when the recipe has a warm-up, and at
      most ``iters'``;
    * each milestone ``round(m * iters' / iters)``, then pushed to be strictly increasing within
      ``[1, iters' - 1]``;
    * each interval (evaluation, checkpoint) ``round(v * iters' / iters)``, within ``[1, iters']``.
    """
    iters = int(iters)
    n = scale_count(iters, f, minimum=1 + len(milestones))
    r = n / iters
    out: Dict[str, Any] = {"iters": n}
    if warmup is not None:
        out["warmup"] = 0 if warmup <= 0 else min(n, max(1, round_half_up(warmup * r)))
    ms = [min(max(1, round_half_up(m * r)), n - 1) for m in milestones]
    for i in range(len(ms)):  # strictly increasing, room left for the ones after
        lo = ms[i - 1] + 1 if i else 1
        hi = n - (len(ms) - i)
        ms[i] = min(max(ms[i], lo), hi)
    out["milestones"] = ms
    for k, v in (intervals or {}).items():
        out[k] = min(n, max(1, round_half_up(int(v) * r)))
    return out


def fmt_scale(f: float) -> str:
    return f"{f:g}"


# ------------------------------------------------------------------ per-tool overrides
def mm_schedule(cfg) -> Dict[str, Any]:
    """The iteration schedule of an MMEngine config: iterations, validation and checkpoint
    intervals, the linear warm-up (a ``LinearLR`` first) and multi-step milestones."""
    iters = int(cfg.train_cfg.max_iters)
    out = {"iters": iters, "val_interval": int(cfg.train_cfg.get("val_interval", iters)),
           "ckpt_interval": int(cfg.default_hooks.checkpoint.get("interval", iters)),
           "warmup": None, "warmup_index": None, "main_index": None, "milestones": []}
    for i, s in enumerate(cfg.param_scheduler):
        if s["type"] == "LinearLR" and i == 0 and len(cfg.param_scheduler) > 1:
            out["warmup"], out["warmup_index"] = int(s["end"]), i
        else:
            out["main_index"] = i
            out["main_end"] = int(s.get("end", iters))
            if s["type"] == "MultiStepLR":
                out["milestones"] = [int(m) for m in s["milestones"]]
    return out


def mm_scaled_options(cfg, f: float) -> Tuple[List[str], Dict[str, Any]]:
    """``--cfg-options`` that put an MMEngine config's schedule at scale ``f``; also returns the
    scaled schedule."""
    s = mm_schedule(cfg)
    sc = scale_iters(s["iters"], f, warmup=s["warmup"], milestones=s["milestones"],
                     intervals={"val_interval": s["val_interval"], "ckpt_interval": s["ckpt_interval"]})
    n = sc["iters"]
    opts = [f"train_cfg.max_iters={n}", f"train_cfg.val_interval={sc['val_interval']}",
            f"default_hooks.checkpoint.interval={sc['ckpt_interval']}"]
    if s["warmup_index"] is not None:
        opts.append(f"param_scheduler.{s['warmup_index']}.end={sc['warmup']}")
    if s["main_index"] is not None:
        opts.append(f"param_scheduler.{s['main_index']}.end={n}")
        if s["milestones"]:
            opts.append(f"param_scheduler.{s['main_index']}.milestones=[{','.join(map(str, sc['milestones']))}]")
    return opts, sc


def d2_scaled_overrides(cfg, f: float) -> Tuple[List[str], Dict[str, Any]]:
    """Detectron2 LazyConfig overrides for the schedule at scale ``f`` (iterations, multi-step
    milestones and ``num_updates``, warm-up length as a fraction, evaluation/checkpoint periods)."""
    iters = int(cfg.train.max_iter)
    sched = cfg.lr_multiplier.scheduler
    ms = [int(m) for m in sched.milestones]
    warm = int(round_half_up(float(cfg.lr_multiplier.warmup_length) * iters))
    sc = scale_iters(iters, f, warmup=warm, milestones=ms,
                     intervals={"eval_period": int(cfg.train.eval_period),
                                "ckpt_interval": int(cfg.train.checkpointer.period)})
    n = sc["iters"]
    ov = [f"train.max_iter={n}", f"lr_multiplier.scheduler.milestones=[{','.join(map(str, sc['milestones']))}]",
          f"lr_multiplier.scheduler.num_updates={n}",
          f"lr_multiplier.warmup_length={sc['warmup'] / n if warm else 0.0!r}",
          f"train.eval_period={sc['eval_period']}", f"train.checkpointer.period={sc['ckpt_interval']}"]
    return ov, sc


def fraction_of_run(value: float, e0: int, e: int) -> float:
    """An epoch count or position that keeps its share of the run: ``value * e / e0``, 4 decimals (an int
    when whole)."""
    x = round(float(value) * e / int(e0), 4)
    return int(x) if x.is_integer() else x


def pretrain_scaled_overrides(cfg: Dict[str, Any], f: float) -> Tuple[List[str], Dict[str, Any]]:
    """Pretraining overrides for scale ``f``: epochs, and at the same fraction of the run the warm-up epochs,
    the cooldown epochs (``optim.cooldown_epochs``) and any epoch milestones (list-valued
    ``optim.*milestones*`` keys).

    Milestones stay whole epochs while the scaled run holds them strictly increasing inside it (as
    :func:`scale_iters`); when it is too short for that (e.g. 101/201/226 of 300 epochs at 0.01: 3 epochs for
    3 milestones, whole epochs would give [1, 2, 2], two decays on one epoch) they become fractional epochs
    (1.01/2.01/2.26: the engine converts milestones to steps), and ``sched["notes"]`` says so for the plan.
    Learning rates (``optim.lr``, a numeric ``warmup_lr``, ``min_lr``) are levels, not durations, and are kept:
    the official recipes state them whatever the run length (timm's ``warmup_lr_init``; only ``lr`` follows the
    total batch, in the engine). A warm-up whose start depends on its length (the official MixMo
    ``GradualWarmupScheduler``: lr/W) says ``warmup_lr: gradual`` and the engine computes it from the scaled
    warm-up's steps."""
    o = cfg["optim"]
    e0 = int(cfg["train"]["epochs"])
    e, w = scale_epochs(e0, float(o.get("warmup_epochs", 0) or 0), f)
    ov = [f"train.epochs={e}"]
    if float(o.get("warmup_epochs", 0) or 0) > 0:
        ov.append(f"optim.warmup_epochs={w}")
    sched: Dict[str, Any] = {"epochs": e, "warmup_epochs": w, "notes": []}
    cooldown = float(o.get("cooldown_epochs", 0) or 0)
    if cooldown > 0:
        c = fraction_of_run(cooldown, e0, e)
        ov.append(f"optim.cooldown_epochs={c}")
        sched["cooldown_epochs"] = c
    for k, v in o.items():
        if "milestone" in k and isinstance(v, list) and v:
            if e > len(v):
                ms = scale_iters(e0, f, milestones=[int(m) for m in v])["milestones"]
            else:
                ms = [fraction_of_run(m, e0, e) for m in v]
                sched["notes"].append(f"optim.{k}: {e} epochs cannot hold {len(v)} whole-epoch milestones "
                                      f"strictly increasing; fractional epochs {ms} keep each at its share of the run")
            ov.append(f"optim.{k}=[{','.join(map(str, ms))}]")
            sched[k] = ms
    return ov, sched
