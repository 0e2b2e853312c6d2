"""The pretraining loop: data -> mixer -> ViT (+ CLS attention tap) -> soft-target loss -> AdamW.

Run through ``tools/pretrain.sh CONFIG [key=value ...]`` (torchrun underneath) or
``python -m pretrain.train --config CONFIG [key=value ...]`` for one process.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from typing import Any, Dict

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..data.folders import accuracy, build_folder_dataset
from ..mixing import build_mixer, soft_target_cross_entropy
from ..models.vit import ClsAttentionTap, create_vit, vit_arch
from .checkpoint import save_state, save_weights

log = logging.getLogger("pretrain")


# ---- distributed helpers ---------------------------------------------------------------------
def init_distributed() -> tuple:
    """(rank, world_size, device). Uses torchrun's environment when present."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def all_reduce_sum(values, device) -> list:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


# ---- schedule --------------------------------------------------------------------------------
def lr_at(step: int, total: int, warmup: int, base_lr: float, warmup_lr: float, min_lr: float) -> float:
    """Linear warm-up from ``warmup_lr`` then cosine decay to ``min_lr`` (per optimizer step)."""
    if step < warmup:
        return warmup_lr + (base_lr - warmup_lr) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, t)))


def param_groups(model: torch.nn.Module, weight_decay: float):
    """No weight decay on biases, norms, tokens and position embeddings (as DeiT/timm)."""
    decay, no_decay = [], []
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, loader, device, amp_dtype) -> Dict[str, float]:
    model.eval()
    n = c1 = c5 = loss_sum = 0.0
    for images, target in loader:
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            logits = model(images)
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum").item()
        a1, a5 = accuracy(logits, target, (1, 5))
        c1, c5, n = c1 + a1, c5 + a5, n + target.shape[0]
    n, c1, c5, loss_sum = all_reduce_sum([n, c1, c5, loss_sum], device)
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "loss": loss_sum / max(n, 1)}


def _autocast(device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: Dict[str, Any]) -> torch.nn.Module:
    """The timm ViT a config describes (``model.kwargs`` override its architecture; the input size
    defaults to ``data.img_size``)."""
    mc, dc = cfg["model"], cfg["data"]
    kwargs = dict(mc.get("kwargs") or {})
    kwargs.setdefault("img_size", int(dc["img_size"]))
    return create_vit(mc["name"], int(dc["num_classes"]), drop_path_rate=float(mc["drop_path"]), **kwargs)


# ---- training --------------------------------------------------------------------------------
def train(cfg: Dict[str, Any]) -> Dict[str, Any]:
    rank, world, device = init_distributed()
    mc, dc, oc, tc = cfg["model"], cfg["data"], cfg["optim"], cfg["train"]
    out_dir = tc["out_dir"]
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    seed_everything(int(tc["seed"]) + rank)
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)

    # data: every bad-input check happens here, before any training step
    train_set = build_folder_dataset(dc, dc["train_split"], train=True)
    val_set = build_folder_dataset(dc, dc["val_split"], train=False)
    bs = int(dc["batch_size"])
    if len(train_set) < bs * world:
        raise ValueError(f"training set has {len(train_set)} images, fewer than one batch of {bs * world}")
    train_sampler = DistributedSampler(train_set, shuffle=True, seed=int(tc["seed"])) if world > 1 else None
    val_sampler = DistributedSampler(val_set, shuffle=False) if world > 1 else None
    workers = int(dc["workers"])
    gen = torch.Generator()
    gen.manual_seed(int(tc["seed"]) + rank)
    train_loader = DataLoader(train_set, batch_size=bs, shuffle=train_sampler is None, sampler=train_sampler,
                              num_workers=workers, pin_memory=device.type == "cuda", drop_last=True,
                              persistent_workers=workers > 0, generator=gen)
    val_loader = DataLoader(val_set, batch_size=bs, shuffle=False, sampler=val_sampler, num_workers=workers,
                            pin_memory=device.type == "cuda")

    # model, attention tap, mixer
    num_classes = int(dc["num_classes"])
    model = build_model(cfg).to(device)
    mixer = build_mixer(cfg["mixer"], num_classes, seed=int(tc["seed"]) * 1000 + rank).to(device)
    tap = ClsAttentionTap(model) if mixer.needs_attention else None
    if tc.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    if tc.get("compile"):
        net = torch.compile(net)

    # optimisation
    total_batch = bs * world
    base_lr = float(oc["lr"]) * total_batch / float(oc["lr_base_batch"])
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(param_groups(model, float(oc["weight_decay"])), lr=base_lr,
                                  betas=tuple(oc["betas"]), eps=float(oc["eps"]), fused=fused)
    steps_per_epoch = len(train_loader)
    epochs = int(tc["epochs"])
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(round(float(oc["warmup_epochs"]) * steps_per_epoch))
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[tc["amp"]]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    arch = vit_arch(model, mc["name"])

    log.info("model %s (%.1fM params), %d classes, %d train / %d val images, %d steps/epoch, total batch %d, lr %.2e",
             mc["name"], sum(p.numel() for p in model.parameters()) / 1e6, num_classes, len(train_set),
             len(val_set), steps_per_epoch, total_batch, base_lr)
    log.info("mixer %s %s", cfg["mixer"].get("name"), "(CLS attention from the same forward pass)" if tap else "")

    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    best = -1.0
    step = 0
    bad_in_a_row = bad_total = 0
    history = []
    for epoch in range(epochs):
        net.train()
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        t0 = time.time()
        loss_sum = seen = 0.0
        for i, loader_batch in enumerate(train_loader):
            images, labels = loader_batch[0], loader_batch[1]
            extras = loader_batch[2] if len(loader_batch) > 2 else None
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if tc.get("channels_last"):
                images = images.contiguous(memory_format=torch.channels_last)
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, total_steps, warmup_steps, base_lr, float(oc["warmup_lr"]), float(oc["min_lr"]))

            batch = mixer(images, labels, model=model, extras=extras)
            with _autocast(device, amp_dtype):
                logits = net(batch.images)
            attention = None
            if tap is not None:
                h, w = batch.images.shape[-2:]
                p = arch["patch_size"]
                attention = tap.patch_attention().view(images.shape[0], h // p, w // p)
            targets = mixer.targets(batch, attention)
            loss = soft_target_cross_entropy(logits, targets)

            if not torch.isfinite(loss):
                bad_in_a_row += 1
                bad_total += 1
                log.warning("non-finite loss at epoch %d step %d: skipped (%d in a row, %d total)",
                            epoch, i, bad_in_a_row, bad_total)
                optimizer.zero_grad(set_to_none=True)
                if bad_in_a_row >= int(tc["max_bad_steps"]):
                    raise RuntimeError(f"{bad_in_a_row} non-finite losses in a row (limit train.max_bad_steps="
                                       f"{tc['max_bad_steps']}); stopping. Last good checkpoint: {out_dir}")
                continue
            bad_in_a_row = 0

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if oc.get("clip_grad"):
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(oc["clip_grad"]))
            scaler.step(optimizer)
            scaler.update()
            step += 1
            loss_sum += loss.item() * images.shape[0]
            seen += images.shape[0]
            if rank == 0 and int(tc["log_interval"]) > 0 and (i + 1) % int(tc["log_interval"]) == 0:
                log.info("epoch %d [%d/%d] loss %.4f lr %.2e", epoch, i + 1, steps_per_epoch,
                         loss.item(), optimizer.param_groups[0]["lr"])

        train_loss = all_reduce_sum([loss_sum, seen], device)
        record = {"epoch": epoch, "step": step, "train_loss": train_loss[0] / max(train_loss[1], 1),
                  "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": time.time() - t0,
                  "img_per_s": train_loss[1] / max(time.time() - t0, 1e-9), "skipped_steps": bad_total}
        last = epoch == epochs - 1
        if last or (epoch + 1) % int(tc["eval_interval"]) == 0:
            record.update({f"val_{k}": v for k, v in evaluate(net, val_loader, device, amp_dtype).items()})
        history.append(record)
        if rank == 0:
            log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                        for k, v in record.items()}))
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            extra = {"epoch": epoch, "mixer": cfg["mixer"].get("name"), "val_top1": record.get("val_top1")}
            save_weights(os.path.join(out_dir, "model.safetensors"), model.state_dict(), arch, extra)
            save_state(os.path.join(out_dir, "state.pt"), {
                "epoch": epoch, "step": step, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "best_top1": max(best, record.get("val_top1", -1.0))})
            if record.get("val_top1", -1.0) > best:
                best = record["val_top1"]
                save_weights(os.path.join(out_dir, "best.safetensors"), model.state_dict(), arch, extra)
    if tap is not None:
        tap.remove()
    summary = {"out_dir": out_dir, "best_top1": best, "final": history[-1] if history else {}}
    if rank == 0:
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary
