"""Where a run stands, and its resume checkpoints: what is saved, what a resumed run restores.

A resume checkpoint (``<out_dir>/checkpoints/step_N/``, written by :mod:`pretrain.checkpoint.resume`) holds
the weights (model, EMA) with the objective's format tag and architecture, and ``state.pt``: optimizer,
grad scaler, epoch and batch position, best accuracies, skipped-step counters, the config, and per rank its
global generator states (:mod:`.rng`), the objective's generator states and its partial epoch sums. Resumed
with the same number of processes and batch size, a run repeats the uninterrupted run's losses.

Under ``train.parallel: fsdp`` the model, optimizer and EMA are saved sharded (``sharded/``, written by every
rank through ``torch.distributed.checkpoint``, :mod:`pretrain.checkpoint.sharded`) instead of in ``state.pt``,
and the full weights are gathered to rank 0 for ``model``/``ema.safetensors`` (the same files as a DDP run's).
A DDP run resumes a FSDP checkpoint and a FSDP run a DDP one (the optimizer state is matched by parameter
name); DCP reshards, so the number of processes may change too (with fresh random streams, as for DDP).
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

from .. import dist as du
from ..checkpoint.files import copy_file_atomic, load_state, load_weights
from ..checkpoint.resume import begin_checkpoint, load_checkpoint, save_checkpoint
from ..checkpoint.sharded import SHARDED, full_weights, load_sharded, save_sharded
from .parallel import broadcast_object
from .rng import rng_state, seed_everything, set_rng_state
from .runfolder import choose_checkpoint

log = logging.getLogger("pretrain")


@dataclass
class Progress:
    """The counters of a run (restored on resume).

    Attributes:
        num_details: length of the objective's per-step details (their sums follow in ``partial``).
        step: optimizer steps done; start_epoch, start_batch: where the loop starts.
        best: best ``val_top1`` of the model (``top1``) and of its EMA (``ema_top1``), -1 before any.
        bad_total, bad_in_a_row: skipped (non-finite) steps in all and in a row.
        partial: this rank's sums over the epoch so far: loss x images, images, seconds, then each
            detail x images.
    """

    num_details: int = 0
    step: int = 0
    start_epoch: int = 0
    start_batch: int = 0
    best: Dict[str, float] = field(default_factory=lambda: {"top1": -1.0, "ema_top1": -1.0})
    bad_total: int = 0
    bad_in_a_row: int = 0
    partial: List[float] = field(default_factory=list)

    def __post_init__(self):
        if not self.partial:
            self.reset_partial()

    def reset_partial(self) -> None:
        self.partial = [0.0] * (3 + self.num_details)


def resume_source(resume: Optional[str], out_dir: str) -> Optional[str]:
    """The checkpoint folder ``train.resume`` designates: None (start fresh) for null, ``auto`` (``out_dir``'s
    newest intact checkpoint, or None when it has none), or a run / checkpoint folder (an error when it has
    none). A damaged newer checkpoint is passed over with a warning naming the file."""
    ckpt, damaged = choose_checkpoint(resume, out_dir)
    for reason in damaged:
        log.warning("checkpoint passed over: %s; resuming from the newest intact one, %s", reason, ckpt)
    return ckpt


def start_fresh(out_dir: str, bad_log: str, rank: int) -> None:
    """A run that does not resume: a fresh unreadable-image log (an earlier run in ``out_dir`` was moved
    aside whole by :func:`.runfolder.prepare_run_folder` before)."""
    if os.path.exists(bad_log):
        os.remove(bad_log)


class RunCheckpoints:
    """Saves and restores the resume checkpoints of one run.

    Args:
        out_dir: run folder; cfg: the run config (saved in the state).
        objective: the run's objective (format tag, architecture, generator states, label).
        model, ema, optimizer, scaler: what is saved besides the counters (``ema`` may be None).
        device, rank, world, batch_size: this process, the number of processes, the per-process batch.
        keep: resume checkpoints kept (``train.keep_checkpoints``), the newest ones.
        fsdp: the run shards its model (``train.parallel: fsdp``): sharded checkpoints, see the module.
    """

    def __init__(self, out_dir: str, cfg: Dict[str, Any], objective, model, ema, optimizer, scaler, device,
                 rank: int, world: int, batch_size: int, keep: int = 2, fsdp: bool = False):
        self.out_dir, self.cfg, self.objective = out_dir, cfg, objective
        self.model, self.ema, self.optimizer, self.scaler = model, ema, optimizer, scaler
        self.device, self.rank, self.world, self.batch_size = device, rank, world, batch_size
        self.arch = objective.arch(model)
        self.keep = keep
        self.fsdp = bool(fsdp)

    def save(self, p: Progress, epoch: int, batch: int, epoch_end: bool = False,
             record: Optional[Dict[str, Any]] = None) -> None:
        """Resume checkpoint at position (epoch, batch) [collective]; on rank 0 also the top-level files
        (``model``/``ema.safetensors``, and at an epoch end ``best``/``best_ema``/``epoch_XXXX.safetensors``):
        copies of the checkpoint's verified files, each replaced atomically, so that neither pruning nor a
        damaged checkpoint can take them along."""
        per_rank = du.gather_objects({"rng": rng_state(self.device), "mixer": self.objective.state_dict(),
                                      "partial": p.partial})
        if self.fsdp:
            return self._save_fsdp(p, epoch, batch, per_rank, epoch_end, record)
        if self.rank != 0:
            return
        weights = {"model": self.model.state_dict()}
        if self.ema is not None:
            weights["ema"] = self.ema.module.state_dict()
        self._write(p, epoch, batch, per_rank, weights, {"optimizer": self.optimizer.state_dict()}, epoch_end,
                    record)

    def _save_fsdp(self, p: Progress, epoch: int, batch: int, per_rank, epoch_end: bool,
                   record: Optional[Dict[str, Any]]) -> None:
        """Every rank writes its shards into rank 0's temporary checkpoint folder, the full weights are
        gathered to rank 0, which completes the folder (manifest, rename); all ranks learn the outcome."""
        tmp = broadcast_object(begin_checkpoint(self.out_dir, p.step) if self.rank == 0 else None)
        try:
            save_sharded(os.path.join(tmp, SHARDED), self.model, self.optimizer,
                         self.ema.module if self.ema is not None else None)
            weights = {"model": full_weights(self.model)}
            if self.ema is not None:
                weights["ema"] = full_weights(self.ema.module)
        except BaseException:  # DCP raises on every rank when one fails: no half-written folder is left
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        failure = None
        if self.rank == 0:
            try:
                self._write(p, epoch, batch, per_rank, weights, {"sharded": SHARDED, "parallel": "fsdp"},
                            epoch_end, record, tmp=tmp)
            except BaseException as exc:
                broadcast_object(f"{type(exc).__name__}: {exc}")
                raise
        failure = broadcast_object(failure)
        if failure is not None:
            raise RuntimeError(f"rank 0 could not write the checkpoint of step {p.step}: {failure}")

    def _write(self, p: Progress, epoch: int, batch: int, per_rank, weights, model_state: Dict[str, Any],
               epoch_end: bool, record: Optional[Dict[str, Any]], tmp: Optional[str] = None) -> None:
        """Rank 0: the checkpoint folder and the top-level copies."""
        state = {"epoch": epoch, "batch": batch, **model_state,
                 "scaler": self.scaler.state_dict(), "best": p.best, "bad_total": p.bad_total,
                 "bad_in_a_row": p.bad_in_a_row, "ranks": per_rank, "world_size": self.world,
                 "batch_size": self.batch_size, "config": yaml.safe_dump(self.cfg, sort_keys=False)}
        extra = {"epochs_done": epoch, "mixer": self.cfg["mixer"].get("name"),
                 "val_top1": (record or {}).get("val_top1")}
        folder = save_checkpoint(self.out_dir, p.step, weights, state, self.arch, extra,
                                 keep=self.keep, fmt=self.objective.weights_format, tmp=tmp)
        top = lambda name: os.path.join(self.out_dir, name)  # noqa: E731
        for name in weights:  # model, ema
            copy_file_atomic(os.path.join(folder, f"{name}.safetensors"), top(f"{name}.safetensors"))
        if epoch_end and record is not None:
            done = epoch - 1  # the epoch just finished
            if record.get("new_best_top1"):
                copy_file_atomic(os.path.join(folder, "model.safetensors"), top("best.safetensors"))
            if self.ema is not None and record.get("new_best_ema_top1"):
                copy_file_atomic(os.path.join(folder, "ema.safetensors"), top("best_ema.safetensors"))
            every = int(self.cfg["train"]["save_every"])
            if every and (done + 1) % every == 0:
                copy_file_atomic(os.path.join(folder, "model.safetensors"), top(f"epoch_{done + 1:04d}.safetensors"))

    def _does_not_fit(self, ckpt: str, detail: str) -> ValueError:
        return ValueError(f"cannot resume from {ckpt}: its weights do not fit the configured model "
                          f"{self.objective.label()} {self.cfg['model'].get('kwargs') or ''} "
                          f"({detail[:400]}). Resume with the run's own config (saved in its "
                          "config.yaml) or start a new train.out_dir")

    def _check_shapes(self, ckpt: str) -> None:
        """FSDP: the checkpoint's full ``model.safetensors`` (header only) has the model's keys and shapes."""
        from safetensors import safe_open
        with safe_open(os.path.join(ckpt, "model.safetensors"), framework="pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        mine = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}  # DTensor: the global shape
        missing, unexpected = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
        shapes = [f"{k}: {saved[k]} vs {mine[k]}" for k in sorted(set(mine) & set(saved)) if saved[k] != mine[k]]
        if missing or unexpected or shapes:
            raise self._does_not_fit(ckpt, "; ".join(
                x for x in (f"missing {', '.join(missing[:5])}" if missing else "",
                            f"unexpected {', '.join(unexpected[:5])}" if unexpected else "",
                            f"shapes {', '.join(shapes[:5])}" if shapes else "") if x))

    def _restore_weights(self, ckpt: str) -> Dict[str, Any]:
        """Model, EMA and optimizer from ``ckpt`` (either kind of checkpoint, into either kind of run);
        returns the state."""
        ema = self.ema.module if self.ema is not None else None
        if self.fsdp:
            state = load_state(os.path.join(ckpt, "state.pt"))
            self._check_shapes(ckpt)
            if state.get("sharded"):
                load_sharded(os.path.join(ckpt, state["sharded"]), self.model, self.optimizer, ema)
            else:  # a DDP checkpoint: full weights and a positional optimizer state, distributed to the shards
                self._load_full(ckpt, state, ema)
            return state
        weights, state = load_checkpoint(ckpt)
        try:
            self.model.load_state_dict(weights["model"], strict=True)
        except RuntimeError as exc:
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()][1:3]
            raise self._does_not_fit(ckpt, "; ".join(lines)) from None
        if self.ema is not None:
            if "ema" in weights:
                self.ema.module.load_state_dict(weights["ema"], strict=True)
            else:
                log.warning("%s has no EMA weights: the EMA restarts from the current weights", ckpt)
                self.ema.module.load_state_dict(self.model.state_dict())
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        else:  # a FSDP checkpoint: optimizer (and again model, EMA) from its shards, gathered whole
            load_sharded(os.path.join(ckpt, state["sharded"]), self.model, self.optimizer,
                         ema if "ema" in weights else None)
        return state

    def _load_full(self, ckpt: str, state: Dict[str, Any], ema) -> None:
        weights = load_weights(os.path.join(ckpt, "model.safetensors"))
        ema_weights = None
        if ema is not None:
            ema_file = os.path.join(ckpt, "ema.safetensors")
            if os.path.isfile(ema_file):
                ema_weights = load_weights(ema_file)
            else:
                log.warning("%s has no EMA weights: the EMA restarts from the current weights", ckpt)
                ema_weights = weights
        load_full_state(self.model, self.optimizer, weights, state["optimizer"], ema, ema_weights)

    def restore(self, ckpt: str, p: Progress, seed: int, steps_per_epoch: int) -> None:
        """Load ``ckpt`` into the model, EMA, optimizer and scaler and ``p``; this rank's generators and the
        objective's when the number of processes and the batch size are the checkpoint's (fresh streams
        and the same fraction of the epoch otherwise, with a warning)."""
        state = self._restore_weights(ckpt)
        self.scaler.load_state_dict(state["scaler"])
        p.step, p.start_epoch, p.start_batch = int(state["step"]), int(state["epoch"]), int(state["batch"])
        p.best = dict(state.get("best", p.best))
        p.bad_total, p.bad_in_a_row = int(state.get("bad_total", 0)), int(state.get("bad_in_a_row", 0))
        world, bs = self.world, self.batch_size
        old_world, old_bs = int(state.get("world_size", world)), int(state.get("batch_size", bs))
        if (old_world, old_bs) == (world, bs):
            mine = state["ranks"][self.rank]
            set_rng_state(mine["rng"], self.device)
            self.objective.load_state_dict(mine["mixer"])
            p.partial = list(mine["partial"])
        else:
            log.warning("resuming %d process(es) x batch %d from a run of %d x %d: the data order and random "
                        "streams differ from an uninterrupted run", world, bs, old_world, old_bs)
            p.start_batch = p.start_batch * old_world * old_bs // (world * bs)
            seed_everything(seed + self.rank + 7919 * p.step)
        if p.start_batch >= steps_per_epoch:
            p.start_epoch, p.start_batch = p.start_epoch + 1, 0
            p.reset_partial()
        log.info("resumed from %s: step %d, epoch %d, batch %d", ckpt, p.step, p.start_epoch, p.start_batch)


def load_full_state(model, optimizer, weights: Dict[str, Any], optimizer_state: Dict[str, Any], ema=None,
                    ema_weights: Optional[Dict[str, Any]] = None) -> None:
    """A DDP checkpoint's full weights and positional optimizer state into a (sharded) model and optimizer:
    ``set_model_state_dict`` / ``set_optimizer_state_dict`` with ``StateDictOptions(full_state_dict=True)``
    (every rank holds the full tensors and keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=full)
    if ema is not None and ema_weights is not None:
        set_model_state_dict(ema, ema_weights, options=full)
    set_optimizer_state_dict(model, optimizer, named_optimizer_state(model, optimizer, optimizer_state), options=full)


def named_optimizer_state(model, optimizer, saved: Dict[str, Any]) -> Dict[str, Any]:
    """A positional optimizer state dict (``Optimizer.state_dict()``: parameters numbered in the order of
    the param groups) keyed by parameter name instead, as ``set_optimizer_state_dict`` takes it; the groups
    are matched in order with ``optimizer``'s (built by the same :func:`.optim.param_groups`)."""
    names = {id(q): n for n, q in model.named_parameters()}
    by_index: Dict[Any, str] = {}
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        raise ValueError(f"the checkpoint's optimizer has {len(saved['param_groups'])} parameter groups, this "
                         f"run's {len(optimizer.param_groups)}")
    for g_saved, g in zip(saved["param_groups"], optimizer.param_groups):
        if len(g_saved["params"]) != len(g["params"]):
            raise ValueError("the checkpoint's optimizer groups do not match this run's parameters")
        by_index.update({i: names[id(q)] for i, q in zip(g_saved["params"], g["params"])})
    return {"state": {by_index[i]: v for i, v in saved["state"].items()},
            "param_groups": [{**g, "params": [by_index[i] for i in g["params"]]} for g in saved["param_groups"]]}
