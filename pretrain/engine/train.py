"""The training loop: data -> objective (model, loss of a batch) -> optimizer step (+ EMA) -> evaluation,
with resume checkpoints, logs and signals.

Run it through ``tools/pretrain.sh CONFIG [key=value ...]`` (torchrun: one process per GPU, any number of
nodes) or ``python -m pretrain.train --config CONFIG [key=value ...]`` for one process. The loop follows the
shape of DeiT's ``engine.py`` ("Training data-efficient image transformers & distillation through
attention", Touvron et al., ICML 2021, arXiv:2012.12877; facebookresearch/deit); what a method changes
lives in its objective (:mod:`pretrain.objectives`, selected by the config's ``objective``). The pieces:

* :mod:`pretrain.data.build`: datasets, samplers, loaders;
* :mod:`.optim`: AdamW/SGD and the per-step warm-up + cosine/multistep schedule;
* :mod:`.step`: :class:`~.step.TrainStep`, one optimizer step with one host synchronisation;
* :mod:`.parallel`: DDP (default) or FSDP2 ``fully_shard`` per block (``train.parallel``);
* :mod:`.resume`: the counters of a run and its resume checkpoints (every ``train.checkpoint_steps`` steps
  and at every epoch end, ``--resume auto``);
* :mod:`.runlog`: ``metrics.jsonl`` per epoch, ``steps.jsonl`` every ``train.log_interval`` steps,
  TensorBoard under ``tb/``, and the clean checkpoint-and-exit on SIGUSR1/SIGTERM (SLURM pre-emption);
* :mod:`.rng`: seeding, generator states, deterministic kernels.

Exact resume: the sampler position, every rank's Python/NumPy/torch (CPU and CUDA) generator states,
the objective's generators, optimizer, grad scaler, EMA and the partial epoch sums are saved, and each
sample's augmentation is seeded from its place in the epoch (``pretrain.data.robust.KeyedDataset``),
so a run killed at any point and resumed with ``train.resume=auto`` repeats the losses of an
uninterrupted run (bit for bit on CPU with ``train.deterministic=true``).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional

import torch
import yaml

from .. import dist as du
from ..amp import AMP_DTYPES
from ..checkpoint import write_text_atomic, write_timm_config
from ..checkpoint.formats import VIT
from ..data.build import Data, build_data
from ..data.robust import read_bad_images
from ..objectives import build_objective
from .optim import build_optimizer, build_schedule
from .parallel import Parallel, broadcast_module
from .resume import Progress, RunCheckpoints, start_fresh
from .runfolder import keep_checkpoints, prepare_run_folder
from .rng import seed_everything, set_deterministic
from .runlog import RunLog, StopSignals, ignore_stop_signals
from .step import TrainStep

log = logging.getLogger("pretrain")

INTERRUPTED = 75  # exit status of a run stopped by a signal after writing its checkpoint (EX_TEMPFAIL)


def train(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Train as the config says; returns the summary also written to ``<out_dir>/summary.json``."""
    rank, world, device = du.init_distributed()
    tc = cfg["train"]
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    set_deterministic(bool(tc["deterministic"]))
    seed = int(tc["seed"])
    seed_everything(seed + rank)
    # rank 0: out_dir usable, its lock taken, the checkpoint chosen (newest intact), an earlier run moved aside
    ckpt, lock = prepare_run_folder(cfg, rank)
    try:
        return _train(cfg, rank, world, device, ckpt)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: Dict[str, Any], rank: int, world: int, device: torch.device, ckpt: Optional[str]) -> Dict[str, Any]:
    mc, dc, oc, tc = cfg["model"], cfg["data"], cfg["optim"], cfg["train"]
    out_dir = tc["out_dir"]
    seed = int(tc["seed"])
    # the objective first: its mixer may wrap the training set (per-sample side information such as label
    # maps); the model after the data, from the global torch generator
    objective = build_objective(cfg, seed=seed * 1000 + rank).to(device)
    data = build_data(cfg, rank, world, out_dir, wrap_train=objective.wrap_dataset,
                      worker_init_fn=ignore_stop_signals)
    if ckpt is None:
        start_fresh(out_dir, data.bad_log, rank)
    if rank == 0:
        with open(os.path.join(out_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
    model = objective.build_model().to(device)
    if rank == 0 and objective.weights_format == VIT:  # the run folder is also a timm `local-dir:` model
        write_timm_config(out_dir, objective.arch(model), img_size=int(dc["img_size"]),
                          interpolation=dc["interpolation"], crop_pct=float(dc["eval_crop_pct"]),
                          label_names=getattr(data.val_set, "classes", None))
    if tc.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    if tc.get("grad_checkpointing"):  # timm's activation checkpointing: blocks recomputed in backward
        if not hasattr(model, "set_grad_checkpointing"):
            raise ValueError(f"train.grad_checkpointing: {type(model).__name__} has no set_grad_checkpointing")
        model.set_grad_checkpointing(True)

    bs = int(dc["batch_size"])
    total_batch = bs * world
    base_lr = float(oc["lr"]) * total_batch / float(oc["lr_base_batch"])
    amp_dtype = AMP_DTYPES[tc["amp"]]
    parallel = Parallel(tc.get("parallel", "ddp"), device, world, amp_dtype,
                        bool(tc.get("fsdp_reshard_after_forward", True)), sample_shape=(3, int(dc["img_size"]),
                                                                                        int(dc["img_size"])))
    ema = None
    if parallel.fsdp:  # EMA copied from the whole model, both sharded, then the optimizer over the shards
        ema = _build_ema(model, mc)
        parallel.shard(model)
        if ema is not None:
            parallel.shard(ema.module)
    optimizer = build_optimizer(model, oc, base_lr, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if not parallel.fsdp:
        if mc.get("ema"):  # rank 0's initial weights first (DDP broadcasts them only when it wraps, later)
            broadcast_module(model)
        ema = _build_ema(model, mc)
    steps_per_epoch = data.train_sampler.num_samples // bs
    epochs = int(tc["epochs"])
    total_steps = epochs * steps_per_epoch
    lr_fn = build_schedule(oc, base_lr, steps_per_epoch, total_steps)

    # resume: weights, optimizer, scaler, EMA, sampler position, generators, counters
    p = Progress(objective.num_details)
    checkpoints = RunCheckpoints(out_dir, cfg, objective, model, ema, optimizer, scaler, device, rank, world, bs,
                                 keep=keep_checkpoints(tc), fsdp=parallel.fsdp)
    if ckpt is not None:
        checkpoints.restore(ckpt, p, seed, steps_per_epoch)

    net = parallel.wrap(model)  # DDP (more than one process), or the FSDP model itself
    if tc.get("compile"):
        net = torch.compile(net)
    objective.bind(model, total_steps)
    step_fn = TrainStep(model, net, objective, optimizer, scaler, amp_dtype, oc.get("clip_grad"), ema,
                        bool(tc.get("channels_last")), int(tc.get("accum_steps", 1)))
    runlog = RunLog(out_dir, rank == 0, bool(tc.get("tensorboard")), p.step if ckpt else None,
                    p.start_epoch if ckpt else None)
    log.info("model %s (%.1fM params), %d classes, %d train / %d val images, %d steps/epoch, %d process(es) x "
             "batch %d, lr %.2e, amp %s, EMA %s, %s", objective.label(),
             sum(q.numel() for q in model.parameters()) / 1e6, int(dc["num_classes"]), len(data.train_set),
             len(data.val_set), steps_per_epoch, world, bs, base_lr, tc["amp"],
             mc["ema_decay"] if ema is not None else "off", parallel.describe())
    log.info("%s", objective.describe())

    def epoch_record(epoch: int, data_wait: float, evaluate_now: bool = True, partial_epoch: bool = False):
        return _epoch_record(objective, epoch, p, optimizer, data, model, ema, device, amp_dtype, bad_seen,
                             data_wait, world, evaluate_now, partial_epoch, last_eval, parallel)

    show_bar = tc.get("progress") is True or (tc.get("progress") == "auto" and sys.stderr.isatty())
    history: List[Dict[str, Any]] = []
    last_eval: Dict[str, Any] = {}  # the latest evaluation of the model, for the objective's end-of-run hook
    stopped = None
    bad_seen = len(read_bad_images(data.bad_log))
    last_ckpt = p.step
    max_steps, log_every, ckpt_every = int(tc["max_steps"]), int(tc["log_interval"]), int(tc["checkpoint_steps"])
    if ckpt is not None and p.start_epoch >= epochs:
        log.info("%s: the run already finished its %d epochs, nothing to train (raise train.epochs to continue)",
                 ckpt, epochs)
    try:
        with StopSignals(step_fn) as signals:
            for epoch in range(p.start_epoch, epochs):
                data.train_sampler.set_epoch(epoch)
                first = p.start_batch if epoch == p.start_epoch else 0
                if first:
                    data.train_sampler.set_start(first * bs)
                else:
                    p.reset_partial()
                net.train()
                bar = None
                if show_bar and rank == 0:
                    from tqdm import tqdm
                    bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch}", dynamic_ncols=True)
                t_epoch = time.time()
                t_last, data_wait = time.time(), 0.0
                i = first
                it = iter(data.train_loader)
                while i < steps_per_epoch:
                    t0 = time.time()
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    data_wait += time.time() - t0
                    images = batch[0].to(device, non_blocking=True)
                    if data.device_transform is not None:  # data.pipeline=fast: uint8 -> normalized, erased
                        images = data.device_transform(images, epoch, i)
                    labels = batch[1].to(device, non_blocking=True)
                    extras = _to_device(batch[2], device) if len(batch) > 2 else None
                    lr = lr_fn(p.step, epoch)
                    res = step_fn(images, labels, extras, lr=lr, step=p.step)
                    i += 1
                    if res.skipped:
                        p.bad_total += 1
                        p.bad_in_a_row += 1
                        log.warning("non-finite loss or gradient at epoch %d batch %d (step %d): update skipped "
                                    "(%d in a row, %d in total)", epoch, i - 1, p.step, p.bad_in_a_row, p.bad_total)
                        if p.bad_in_a_row >= int(tc["max_bad_steps"]):
                            raise RuntimeError(
                                f"{p.bad_in_a_row} non-finite losses in a row (limit train.max_bad_steps="
                                f"{tc['max_bad_steps']}); stopping. Lower optim.lr, set optim.clip_grad or use "
                                f"train.amp=bf16; the last good checkpoint is in {out_dir}/checkpoints")
                    else:
                        p.bad_in_a_row = 0
                        p.step += 1
                        p.partial[0] += res.loss * images.shape[0]
                        p.partial[1] += images.shape[0]
                        for k, v in enumerate(res.details or ()):
                            p.partial[3 + k] += v * images.shape[0]
                    if bar is not None:
                        bar.update(1)
                    if log_every > 0 and p.step % log_every == 0 and not res.skipped:
                        now = time.time()
                        rec = {"step": p.step, "epoch": epoch, "batch": i, "loss": res.loss, "lr": lr,
                               "grad_norm": res.grad_norm,
                               "img_per_s": log_every * total_batch / max(now - t_last, 1e-9)}
                        if res.details is not None:
                            rec[objective.details_name or "details"] = res.details
                        t_last = now
                        runlog.step(rec)
                        if bar is not None:
                            bar.set_postfix(loss=f"{res.loss:.4f}", lr=f"{lr:.2e}")
                    reached = max_steps and p.step >= max_steps
                    if res.stop or reached or (ckpt_every and p.step - last_ckpt >= ckpt_every and i < steps_per_epoch):
                        p.partial[2] += time.time() - t_epoch
                        t_epoch = time.time()
                        if i < steps_per_epoch:
                            checkpoints.save(p, epoch, i)
                            last_ckpt = p.step
                        if res.stop:
                            stopped = f"signal {signals.name or 'on another rank'}"
                        elif reached:
                            stopped = f"train.max_steps={max_steps} reached"
                        if stopped:
                            break
                if bar is not None:
                    bar.close()
                del it
                p.partial[2] += time.time() - t_epoch
                if stopped and i < steps_per_epoch:
                    if stopped.startswith("train.max_steps"):  # evaluate what a smoke run produced
                        history.append(epoch_record(epoch, data_wait, partial_epoch=True))
                        runlog.epoch(history[-1])
                        log.info("stopped (%s) at epoch %d batch %d: %s", stopped, epoch, i, _rounded(history[-1]))
                    break
                record = epoch_record(epoch, data_wait,
                                      evaluate_now=epoch == epochs - 1 or (epoch + 1) % int(tc["eval_interval"]) == 0)
                bad_seen = len(read_bad_images(data.bad_log))
                history.append(record)
                for key, name in (("val_top1", "top1"), ("ema_val_top1", "ema_top1")):
                    if key in record and record[key] > p.best[name]:
                        p.best[name] = record[key]
                        record[f"new_best_{name}"] = True
                p.reset_partial()
                checkpoints.save(p, epoch + 1, 0, epoch_end=True, record=record)
                last_ckpt = p.step
                runlog.epoch(record)
                log.info("epoch %d: %s", epoch, _rounded(record))
                if stopped:
                    break
    finally:
        step_fn.close()
        runlog.close()

    interrupted = bool(stopped and stopped.startswith("signal"))
    summary = {"out_dir": out_dir, "best_top1": p.best["top1"], "best_ema_top1": p.best["ema_top1"] if ema else None,
               "steps": p.step, "skipped_steps": p.bad_total,
               "bad_images": len(read_bad_images(data.bad_log)), "stopped": stopped,
               "final": history[-1] if history else runlog.last_epoch()}  # resumed a finished run: its last
    if rank == 0:
        write_text_atomic(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2))
        if last_eval and not interrupted:
            objective.on_run_end(out_dir, last_eval)
    du.barrier()
    if interrupted:
        summary["interrupted"] = True
    return summary


def _epoch_record(objective, epoch: int, p: Progress, optimizer, data: Data, model, ema, device, amp_dtype,
                  bad_seen: int, data_wait: float, world: int, evaluate_now: bool = True,
                  partial_epoch: bool = False, last_eval: Optional[Dict[str, Any]] = None,
                  parallel: Optional[Parallel] = None) -> Dict[str, Any]:
    """Per-epoch metrics: train loss (and the objective's detail means) over all ranks, speed, skipped steps,
    unreadable images met this epoch (all ranks, training and validation), and the objective's evaluation of
    the model and of its EMA (the model's full result is left in ``last_eval``)."""
    loss_sum, seen, secs, *details = du.all_reduce_sum(p.partial, device)
    record = {"epoch": epoch, "step": p.step, "train_loss": loss_sum / max(seen, 1),
              "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": secs / world,
              "img_per_s": seen / max(secs / world, 1e-9), "data_wait_s": data_wait,
              "skipped_steps": p.bad_total}
    record.update(objective.details_record([d / max(seen, 1) for d in details]))
    if partial_epoch:
        record["partial_epoch"] = True

    def val_loader(module):  # FSDP: every rank runs as many forward passes (parallel.BalancedLoader)
        return data.val_loader if parallel is None else parallel.eval_loader(data.val_loader, module)

    if evaluate_now:
        result = objective.evaluate(model, val_loader(model), device, amp_dtype)
        record.update(objective.eval_record(result, "val_"))
        if last_eval is not None:
            last_eval.update(result=result, epochs_done=epoch + (0 if partial_epoch else 1), step=p.step,
                             partial_epoch=partial_epoch)
        if ema is not None:
            record.update(objective.eval_record(objective.evaluate(ema.module, val_loader(ema.module), device,
                                                                   amp_dtype), "ema_val_"))
    bad_now = len(read_bad_images(data.bad_log)) - bad_seen
    record["bad_images"] = int(du.all_reduce_sum([bad_now], device)[0])
    return record


def _build_ema(model, mc: Dict[str, Any]):
    """timm's ``ModelEmaV3`` of the model when ``model.ema`` is on (a deep copy; fixed decay), else None."""
    if not mc.get("ema"):
        return None
    from timm.utils import ModelEmaV3
    return ModelEmaV3(model, decay=float(mc["ema_decay"]))


def _rounded(record: Dict[str, Any]) -> str:
    return json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})


def _to_device(x, device):
    """Tensors of a loader batch's ``extras`` (nested dicts, lists, tuples) on ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    return x
