"""The pretraining engine: data -> mixer -> ViT (+ CLS attention tap) -> mixer loss -> AdamW (+ EMA).

Run it through ``tools/pretrain.sh CONFIG [key=value ...]`` (torchrun: one process per GPU, any number
of nodes) or ``python -m pretrain.train --config CONFIG [key=value ...]`` for one process. The pieces,
top to bottom:

* :func:`lr_at`, :func:`param_groups`, :func:`build_optimizer`: linear warm-up + cosine per step, AdamW
  (fused on CUDA) without weight decay on biases, norms, tokens and position embeddings;
* :class:`TrainStep`: one optimizer step (mixing, autocast forward, targets from the same forward's
  CLS attention when the mixer wants it, backward, clipping, non-finite check agreed by all ranks,
  step, EMA) -- the unit :mod:`tools.bench_pretrain` times against a bare timm step;
* :func:`evaluate`: top-1/top-5/loss over the validation split (model and EMA);
* :func:`train`: the loop, with resume checkpoints every ``train.checkpoint_steps`` steps and at every
  epoch end (``pretrain.engine.checkpoint``), ``--resume auto``, metrics (``metrics.jsonl`` per epoch,
  ``steps.jsonl`` every ``train.log_interval`` steps, TensorBoard under ``tb/``), a tqdm bar on rank 0,
  and a clean checkpoint-and-exit on SIGUSR1/SIGTERM (SLURM pre-emption).

Exact resume: the sampler position, every rank's Python/NumPy/torch (CPU and CUDA) generator states,
the mixer's generators, optimizer, grad scaler, EMA and the partial epoch sums are saved, and each
sample's augmentation is seeded from its place in the epoch (``pretrain.data.robust.KeyedDataset``),
so a run killed at any point and resumed with ``train.resume=auto`` repeats the losses of an
uninterrupted run (bit for bit on CPU with ``train.deterministic=true``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..amp import AMP_DTYPES, autocast
from ..data.folders import accuracy, build_folder_dataset, check_same_classes
from ..data.robust import KeyedDataset, collate_skip_none, read_bad_images
from ..data.samplers import EpochSampler
from ..mixing import build_mixer, soft_target_cross_entropy
from ..models.vit import ClsAttentionTap, create_vit, vit_arch
from . import dist as du
from .checkpoint import FORMAT, find_checkpoint, link_or_copy, load_checkpoint, save_checkpoint

log = logging.getLogger("pretrain")

INTERRUPTED = 75  # exit status of a run stopped by a signal after writing its checkpoint (EX_TEMPFAIL)


# ---- schedule and optimizer ------------------------------------------------------------------
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


def build_model(cfg: Dict[str, Any]) -> torch.nn.Module:
    """The timm ViT a config describes (``model.kwargs`` override its architecture; the input size
    defaults to ``data.img_size``), or the MixMo network when ``mixmo.enabled``."""
    if cfg.get("mixmo", {}).get("enabled"):
        from ..mixmo.models import build_mixmo_model
        return build_mixmo_model(cfg)
    mc, dc = cfg["model"], cfg["data"]
    kwargs = dict(mc.get("kwargs") or {})
    kwargs.setdefault("img_size", int(dc["img_size"]))
    return create_vit(mc["name"], int(dc["num_classes"]), drop_path_rate=float(mc["drop_path"]), **kwargs)


def _model_label(cfg: Dict[str, Any]) -> str:
    mc = cfg["model"]
    if cfg.get("mixmo", {}).get("enabled"):
        name = mc["name"] if mc.get("arch", "vit") == "vit" else mc["arch"]
        return f"MixMo {name} (M={cfg['mixmo']['num_members']})"
    return mc["name"]


# ---- generator states (exact resume) ---------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> Dict[str, Any]:
    """This process's Python, NumPy (global), torch CPU and CUDA generator states (plain data + tensors)."""
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                                      "pos": int(np_state["state"]["pos"])}}
    out = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": state["numpy"]["state"]["key"].numpy().astype(np.uint32),
                         "pos": int(state["numpy"]["state"]["pos"])}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def set_deterministic(on: bool) -> None:
    """Deterministic kernels (resume tests, debugging) or the fastest ones (cuDNN autotune, TF32)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    torch.backends.cuda.matmul.allow_tf32 = not on
    torch.backends.cudnn.allow_tf32 = not on


# ---- one optimizer step ----------------------------------------------------------------------
@dataclass
class StepResult:
    loss: float          # this rank's loss (NaN/inf for a skipped step)
    skipped: bool        # non-finite loss or gradient on some rank: no update anywhere
    stop: bool           # some rank was asked to stop (signal)
    grad_norm: Optional[float] = None
    head_losses: Optional[List[float]] = None  # MixMo: each head's unweighted cross-entropy


class TrainStep:
    """One training step of the engine.

    Args:
        model: the (unwrapped) timm ViT; ``net`` is what runs the forward (DDP and/or compiled wrapper of
            ``model``, or ``model`` itself).
        mixer: a :class:`pretrain.mixing.Mixer`; its ``loss`` is the training loss.
        optimizer, scaler: AdamW and the (fp16-only) grad scaler.
        amp_dtype: autocast dtype or None.
        clip_grad: max global gradient norm or None.
        ema: a timm ``ModelEmaV3`` of ``model`` or None.
        channels_last: feed the mixed images in channels-last layout.

    ``step(images, labels, extras, lr)`` takes a (B, 3, H, W) float batch and (B,) int64 labels on the
    device and returns a :class:`StepResult`. One host synchronisation per step: the non-finite and stop
    flags (max over ranks) and the loss value travel in one small tensor.

    Objectives that own their forward (``mixer.forward_loss``, e.g. :class:`pretrain.mixmo.MixMoTrainer`)
    replace "mix, forward, targets, loss": ``loss, details = mixer.forward_loss(net, images, labels,
    extras, step=step, autocast=..., channels_last=...)``; ``details`` (a 1-D tensor, MixMo's per-head
    losses, or None) travels in the same host sync and comes back as ``StepResult.head_losses``.
    """

    def __init__(self, model, net, mixer, optimizer, scaler, amp_dtype=None, clip_grad=None, ema=None,
                 channels_last: bool = False):
        self.model, self.net, self.mixer = model, net, mixer
        self.optimizer, self.scaler, self.amp_dtype = optimizer, scaler, amp_dtype
        self.clip_grad = float(clip_grad) if clip_grad else None
        self.ema = ema
        self.channels_last = channels_last
        self.device = next(model.parameters()).device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.tap = ClsAttentionTap(model) if getattr(mixer, "needs_attention", False) else None
        self.patch = int(model.patch_embed.patch_size[0]) if self.tap is not None else None
        self.objective = getattr(mixer, "forward_loss", None)
        self.loss_fn = getattr(mixer, "loss", None) or soft_target_cross_entropy
        self.stop_requested = False
        self._flag = {v: torch.tensor(float(v), device=self.device) for v in (False, True)}  # no H2D copy per step

    def close(self) -> None:
        if self.tap is not None:
            self.tap.remove()
            self.tap = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, extras=None, lr: Optional[float] = None,
                 step: int = 0) -> StepResult:
        if lr is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        details = None
        if self.objective is not None:
            loss, details = self.objective(self.net, images, labels, extras, step=step,
                                           autocast=lambda: autocast(self.device, self.amp_dtype),
                                           channels_last=self.channels_last)
        else:
            batch = self.mixer(images, labels, model=self.model, extras=extras)
            x = batch.images
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp_dtype):
                logits = self.net(x)
            attention = None
            if self.tap is not None:
                attention = self.tap.patch_attention().view(x.shape[0], x.shape[-2] // self.patch,
                                                            x.shape[-1] // self.patch)
            loss = self.loss_fn(logits, self.mixer.targets(batch, attention))

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        grad_norm = None
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad, foreach=True)
        bad = ~torch.isfinite(loss.detach())
        if grad_norm is not None and self.amp_dtype != torch.float16:  # fp16: the scaler skips inf grads
            bad = bad | ~torch.isfinite(grad_norm)
        flags = torch.stack([bad.float(), self._flag[bool(self.stop_requested)]])
        du.all_reduce_max_(flags)
        extra = [loss.detach().float().view(1)] + ([grad_norm.detach().float().view(1)] if grad_norm is not None else [])
        if details is not None:
            extra.append(details.detach().float().view(-1))
        values = torch.cat([flags] + extra).tolist()  # the step's one host sync
        skipped, stop = values[0] > 0, values[1] > 0
        n_fixed = 4 if grad_norm is not None else 3
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model)  # fixed decay from the first step (DeiT)
        return StepResult(loss=values[2], skipped=skipped, stop=stop,
                          grad_norm=values[3] if grad_norm is not None else None,
                          head_losses=values[n_fixed:] if details is not None else None)


# ---- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, loader, device, amp_dtype) -> Dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over the loader (summed over ranks). Batches are
    ``(images, labels)``; None batches (all samples unreadable) are skipped."""
    was_training = model.training
    model.eval()
    n = c1 = c5 = loss_sum = 0.0
    for batch in loader:
        if batch is None:
            continue
        images, target = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images)
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum").item()
        a1, a5 = accuracy(logits, target, (1, 5))
        c1, c5, n = c1 + a1, c5 + a5, n + target.shape[0]
    n, c1, c5, loss_sum = du.all_reduce_sum([n, c1, c5, loss_sum], device)
    model.train(was_training)
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "loss": loss_sum / max(n, 1),
            "images": int(n)}


# ---- data --------------------------------------------------------------------------------------
@dataclass
class Data:
    train_set: Any
    val_set: Any
    train_sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader
    bad_log: str


def build_dataset(cfg: Dict[str, Any], split: str, train: bool):
    """One split (``"train"`` | ``"val"``) of the config's dataset: ``data.format`` folder (ImageNet layout,
    ``data.train_split``/``data.val_split`` under ``data.root``), or cifar10 | cifar100 | tiny_imagenet in
    their published layouts (:mod:`pretrain.data.small`; their own augmentation, ``data.img_size`` output)."""
    dc = cfg["data"]
    fmt = dc.get("format", "folder")
    if fmt == "folder":
        return build_folder_dataset(dc, dc["train_split"] if split == "train" else dc["val_split"], train=train)
    from ..data.small import build_small_dataset
    return build_small_dataset(fmt, dc["root"], split, train=train, img_size=int(dc["img_size"]),
                               num_classes=int(dc["num_classes"]))


def build_data(cfg: Dict[str, Any], mixer, rank: int, world: int, out_dir: str) -> Data:
    """Datasets (layout checked before anything trains), the mixer's dataset wrapper, samplers, loaders."""
    dc, tc = cfg["data"], cfg["train"]
    seed = int(tc["seed"])
    train_set = build_dataset(cfg, "train", train=True)
    val_set = build_dataset(cfg, "val", train=False)
    if dc.get("format", "folder") == "folder":
        check_same_classes(train_set, val_set)
    else:
        from ..data.small import check_small_splits
        check_small_splits(train_set, val_set)
    train_set = mixer.wrap_dataset(train_set)
    bad_log = os.path.join(out_dir, "bad_images.tsv" if world == 1 else f"bad_images.rank{rank}.tsv")
    tries = int(dc["bad_image_tries"])
    train_keyed = KeyedDataset(train_set, seed, bad_log, "train", replace=True, max_tries=tries)
    val_keyed = KeyedDataset(val_set, seed, bad_log, "val", replace=False, max_tries=tries)
    bs, workers = int(dc["batch_size"]), int(dc["workers"])
    sampler = EpochSampler(len(train_set), world, rank, shuffle=True, seed=seed, repeats=int(dc["repeated_aug"]))
    if sampler.num_samples < bs:
        where = os.path.join(dc["root"], dc["train_split"]) if dc.get("format", "folder") == "folder" else dc["root"]
        raise ValueError(f"{where}: {len(train_set)} training images give each of {world} process(es) "
                         f"{sampler.num_samples} samples per epoch, fewer than one batch of {bs}")
    val_sampler = EpochSampler(len(val_set), world, rank, shuffle=False, pad=False)
    pin = torch.cuda.is_available()
    common = dict(num_workers=workers, pin_memory=pin)
    if workers > 0:
        common.update(prefetch_factor=4, worker_init_fn=_ignore_stop_signals)
    # own generators: starting a loader iterator must not draw from the global torch stream (exact resume);
    # worker seeds do not matter otherwise, augmentations are seeded per sample
    gens = [torch.Generator(), torch.Generator()]
    for k, g in enumerate(gens):
        g.manual_seed(seed * 7 + 2 * rank + k)
    train_loader = DataLoader(train_keyed, batch_size=bs, sampler=sampler, drop_last=True,
                              persistent_workers=workers > 0, generator=gens[0], **common)
    val_loader = DataLoader(val_keyed, batch_size=bs, sampler=val_sampler, collate_fn=collate_skip_none,
                            generator=gens[1], **common)
    return Data(train_set, val_set, sampler, train_loader, val_loader, bad_log)


def _ignore_stop_signals(_worker_id: int) -> None:
    """Loader workers ignore SIGUSR1/SIGTERM: a pre-empted job signals every process, and the training
    process must still get its batches while it finishes the step and writes its checkpoint. Workers
    exit with their parent."""
    for name in _StopSignals.SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


def _to_device(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    return x


# ---- run folder: logs, metrics ---------------------------------------------------------------
class RunLog:
    """Rank 0's outputs: ``train.log``, ``metrics.jsonl`` (per epoch), ``steps.jsonl`` (per log interval),
    TensorBoard events under ``tb/``. Other ranks get a no-op instance."""

    def __init__(self, out_dir: str, active: bool, tensorboard: bool, resume_step: Optional[int],
                 resume_epoch: Optional[int]):
        self.active = active
        self.metrics = os.path.join(out_dir, "metrics.jsonl")
        self.steps = os.path.join(out_dir, "steps.jsonl")
        self.handler = None
        self.writer = None
        if not active:
            return
        self.handler = logging.FileHandler(os.path.join(out_dir, "train.log"))
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        logging.getLogger().addHandler(self.handler)
        if resume_step is None:  # a fresh run starts fresh files
            for p in (self.metrics, self.steps):
                if os.path.exists(p):
                    os.remove(p)
        else:  # drop what a killed run logged after its checkpoint
            self._rewind(self.steps, lambda r: r.get("step", 0) <= resume_step)
            self._rewind(self.metrics, lambda r: r.get("epoch", 0) < resume_epoch)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=resume_step)
            except ImportError:
                log.warning("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")

    @staticmethod
    def _rewind(path: str, keep) -> None:
        if not os.path.isfile(path):
            return
        with open(path) as f:
            rows = [json.loads(x) for x in f if x.strip()]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            for r in rows:
                if keep(r):
                    f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)

    def step(self, record: Dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.steps, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k in ("loss", "lr", "grad_norm", "img_per_s"):
                if record.get(k) is not None:
                    self.writer.add_scalar(f"train/{k}", record[k], record["step"])

    def epoch(self, record: Dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self.writer.add_scalar(f"epoch/{k}", v, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()


class _StopSignals:
    """SIGUSR1/SIGTERM set a flag (checked after each step) instead of killing the run mid-write."""

    SIGNALS = ("SIGUSR1", "SIGTERM")

    def __init__(self, step: TrainStep):
        self.step, self.previous, self.name = step, {}, None

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.name = signal.Signals(signum).name
        self.step.stop_requested = True
        log.warning("%s received: stopping after this step with a checkpoint", self.name)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _resume_source(resume: Optional[str], out_dir: str) -> Optional[str]:
    if resume in (None, "", "none", False):
        return None
    if resume == "auto":
        ckpt = find_checkpoint(out_dir) if os.path.isdir(out_dir) else None
        if ckpt is None:
            log.info("resume=auto: no checkpoint in %s, starting from scratch", out_dir)
        return ckpt
    if not os.path.exists(resume):
        raise FileNotFoundError(f"train.resume: {resume} does not exist")
    ckpt = find_checkpoint(resume)
    if ckpt is None:
        raise FileNotFoundError(f"train.resume: no checkpoint in {resume} (expected {resume}/checkpoints/latest "
                                "or a checkpoints/step_* folder)")
    return ckpt


# ---- training --------------------------------------------------------------------------------
def train(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Train as the config says; returns the summary also written to ``<out_dir>/summary.json``."""
    rank, world, device = du.init_distributed()
    mc, dc, oc, tc = cfg["model"], cfg["data"], cfg["optim"], cfg["train"]
    out_dir = tc["out_dir"]
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    set_deterministic(bool(tc["deterministic"]))
    seed = int(tc["seed"])
    seed_everything(seed + rank)
    os.makedirs(out_dir, exist_ok=True)
    ckpt = _resume_source(tc.get("resume"), out_dir)

    # mixer first: it may wrap the training set (per-sample side information such as label maps)
    num_classes = int(dc["num_classes"])
    mixmo = bool(cfg["mixmo"]["enabled"])
    if mixmo:  # MixMo: its trainer owns the forward and the loss; the mixer section mixes each input
        from ..mixmo.mixing import build_trainer
        mixer = build_trainer(cfg, seed=seed * 1000 + rank).to(device)
    else:
        mixer = build_mixer(cfg["mixer"], num_classes, seed=seed * 1000 + rank).to(device)
    data = build_data(cfg, mixer, rank, world, out_dir)
    if ckpt is None:  # a fresh run: fresh unreadable-image log; an earlier run's checkpoints are kept aside
        if os.path.exists(data.bad_log):
            os.remove(data.bad_log)
        old = os.path.join(out_dir, "checkpoints")
        if rank == 0 and os.path.isdir(old):
            aside = f"{old}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(old, aside)
            log.warning("%s held checkpoints of an earlier run and train.resume is not set: starting from scratch; "
                        "the old checkpoints are kept in %s (use --resume auto to continue a run)", out_dir, aside)
    if rank == 0:
        with open(os.path.join(out_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)

    model = build_model(cfg).to(device)
    if tc.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    arch = dict(model.arch) if mixmo else vit_arch(model, mc["name"])
    weights_format = "vitmix-mixmo" if mixmo else FORMAT
    num_heads = model.num_members if mixmo else 0
    bs = int(dc["batch_size"])
    total_batch = bs * world
    base_lr = float(oc["lr"]) * total_batch / float(oc["lr_base_batch"])
    optimizer = build_optimizer(model, oc, base_lr, device)
    amp_dtype = AMP_DTYPES[tc["amp"]]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = None
    if mc.get("ema"):
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=float(mc["ema_decay"]))

    steps_per_epoch = data.train_sampler.num_samples // bs
    epochs = int(tc["epochs"])
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(round(float(oc["warmup_epochs"]) * steps_per_epoch))
    if oc.get("schedule", "cosine") == "multistep":
        milestone_steps = [int(round(float(m) * steps_per_epoch)) for m in oc["milestones"]]

        def lr_fn(s: int) -> float:
            return multistep_lr_at(s, warmup_steps, base_lr, float(oc["warmup_lr"]), milestone_steps,
                                   float(oc["gamma"]))
    else:
        def lr_fn(s: int) -> float:
            return lr_at(s, total_steps, warmup_steps, base_lr, float(oc["warmup_lr"]), float(oc["min_lr"]))
    if mixmo:
        mixer.model, mixer.total_steps = model, total_steps

    # resume: weights, optimizer, scaler, EMA, sampler position, generators, counters
    start_epoch = start_batch = step = 0
    best = {"top1": -1.0, "ema_top1": -1.0}
    bad_total = bad_in_a_row = 0
    def zero_partial():  # loss sum, images, seconds of the epoch so far (this rank), MixMo head loss sums
        return [0.0] * (3 + num_heads)

    partial = zero_partial()
    if ckpt is not None:
        weights, state = load_checkpoint(ckpt)
        try:
            model.load_state_dict(weights["model"], strict=True)
        except RuntimeError as exc:
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()][1:3]
            raise ValueError(f"cannot resume from {ckpt}: its weights do not fit the configured model "
                             f"{_model_label(cfg)} {mc.get('kwargs') or ''} ({'; '.join(lines)[:400]}). "
                             "Resume with the "
                             "run's own config (saved in its config.yaml) or start a new train.out_dir") from None
        if ema is not None:
            if "ema" in weights:
                ema.module.load_state_dict(weights["ema"], strict=True)
            else:
                log.warning("%s has no EMA weights: the EMA restarts from the current weights", ckpt)
                ema.module.load_state_dict(model.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, start_epoch, start_batch = int(state["step"]), int(state["epoch"]), int(state["batch"])
        best = dict(state.get("best", best))
        bad_total, bad_in_a_row = int(state.get("bad_total", 0)), int(state.get("bad_in_a_row", 0))
        old_world, old_bs = int(state.get("world_size", world)), int(state.get("batch_size", bs))
        if (old_world, old_bs) == (world, bs):
            mine = state["ranks"][rank]
            set_rng_state(mine["rng"], device)
            mixer.load_state_dict(mine["mixer"])
            partial = list(mine["partial"])
        else:
            log.warning("resuming %d process(es) x batch %d from a run of %d x %d: the data order and random "
                        "streams differ from an uninterrupted run", world, bs, old_world, old_bs)
            start_batch = start_batch * old_world * old_bs // (world * bs)
            seed_everything(seed + rank + 7919 * step)
        if start_batch >= steps_per_epoch:
            start_epoch, start_batch, partial = start_epoch + 1, 0, zero_partial()
        log.info("resumed from %s: step %d, epoch %d, batch %d", ckpt, step, start_epoch, start_batch)

    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    if tc.get("compile"):
        net = torch.compile(net)
    step_fn = TrainStep(model, net, mixer, optimizer, scaler, amp_dtype, oc.get("clip_grad"), ema,
                        bool(tc.get("channels_last")))
    runlog = RunLog(out_dir, rank == 0, bool(tc.get("tensorboard")), step if ckpt else None,
                    start_epoch if ckpt else None)
    log.info("model %s (%.1fM params), %d classes, %d train / %d val images, %d steps/epoch, %d process(es) x "
             "batch %d, lr %.2e, amp %s, EMA %s", _model_label(cfg), sum(p.numel() for p in model.parameters()) / 1e6,
             num_classes, len(data.train_set), len(data.val_set), steps_per_epoch, world, bs, base_lr, tc["amp"],
             mc["ema_decay"] if ema is not None else "off")
    if mixmo:
        xc = cfg["mixmo"]
        log.info("MixMo: M=%d, mixing %s (cut prob %.2f -> %.2f over progress %.2f-%.2f), alpha %.2f, r %.2f, "
                 "batch repetition %d (%d images per step), input mixer %s", model.num_members, xc["mixing"],
                 xc["cut_prob"], xc["cut_prob_final"], xc["anneal_start"], xc["anneal_end"], xc["alpha"],
                 xc["weight_root"], xc["batch_repeat"], bs * int(xc["batch_repeat"]), cfg["mixer"].get("name"))
    else:
        log.info("mixer %s%s", cfg["mixer"].get("name"),
                 " (CLS attention from the same forward pass)" if step_fn.tap is not None else "")

    def checkpoint(epoch: int, batch: int, epoch_end: bool = False, record: Optional[Dict[str, Any]] = None):
        """Resume checkpoint at position (epoch, batch) [collective]; on rank 0 also the top-level files."""
        per_rank = du.gather_objects({"rng": rng_state(device), "mixer": mixer.state_dict(), "partial": partial})
        if rank != 0:
            return
        weights = {"model": model.state_dict()}
        if ema is not None:
            weights["ema"] = ema.module.state_dict()
        state = {"epoch": epoch, "batch": batch, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "best": best, "bad_total": bad_total, "bad_in_a_row": bad_in_a_row, "ranks": per_rank,
                 "world_size": world, "batch_size": bs, "config": yaml.safe_dump(cfg, sort_keys=False)}
        extra = {"epochs_done": epoch, "mixer": cfg["mixer"].get("name"),
                 "val_top1": (record or {}).get("val_top1")}
        folder = save_checkpoint(out_dir, step, weights, state, arch, extra, fmt=weights_format)
        for name in weights:
            link_or_copy(os.path.join(folder, f"{name}.safetensors"), os.path.join(out_dir, f"{name}.safetensors"))
        if epoch_end and record is not None:
            done = epoch - 1  # the epoch just finished
            if record.get("new_best_top1"):
                link_or_copy(os.path.join(folder, "model.safetensors"), os.path.join(out_dir, "best.safetensors"))
            if ema is not None and record.get("new_best_ema_top1"):
                link_or_copy(os.path.join(folder, "ema.safetensors"), os.path.join(out_dir, "best_ema.safetensors"))
            every = int(tc["save_every"])
            if every and (done + 1) % every == 0:
                link_or_copy(os.path.join(folder, "model.safetensors"),
                             os.path.join(out_dir, f"epoch_{done + 1:04d}.safetensors"))

    show_bar = tc.get("progress") is True or (tc.get("progress") == "auto" and sys.stderr.isatty())
    history: List[Dict[str, Any]] = []
    last_eval: Dict[str, Any] = {"ece_bins": int(cfg["mixmo"]["ece_bins"])}  # MixMo: the latest full evaluation
    stopped = None
    bad_seen = len(read_bad_images(data.bad_log))
    last_ckpt = step
    max_steps = int(tc["max_steps"])
    log_every = int(tc["log_interval"])
    ckpt_every = int(tc["checkpoint_steps"])
    try:
        with _StopSignals(step_fn) as signals:
            for epoch in range(start_epoch, epochs):
                data.train_sampler.set_epoch(epoch)
                first = start_batch if epoch == start_epoch else 0
                if first:
                    data.train_sampler.set_start(first * bs)
                else:
                    partial = zero_partial()
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
                    labels = batch[1].to(device, non_blocking=True)
                    extras = _to_device(batch[2], device) if len(batch) > 2 else None
                    lr = lr_fn(step)
                    res = step_fn(images, labels, extras, lr=lr, step=step)
                    i += 1
                    if res.skipped:
                        bad_total += 1
                        bad_in_a_row += 1
                        log.warning("non-finite loss or gradient at epoch %d batch %d (step %d): update skipped "
                                    "(%d in a row, %d in total)", epoch, i - 1, step, bad_in_a_row, bad_total)
                        if bad_in_a_row >= int(tc["max_bad_steps"]):
                            raise RuntimeError(
                                f"{bad_in_a_row} non-finite losses in a row (limit train.max_bad_steps="
                                f"{tc['max_bad_steps']}); stopping. Lower optim.lr, set optim.clip_grad or use "
                                f"train.amp=bf16; the last good checkpoint is in {out_dir}/checkpoints")
                    else:
                        bad_in_a_row = 0
                        step += 1
                        partial[0] += res.loss * images.shape[0]
                        partial[1] += images.shape[0]
                        for k, v in enumerate(res.head_losses or ()):
                            partial[3 + k] += v * images.shape[0]
                    if bar is not None:
                        bar.update(1)
                    if log_every > 0 and step % log_every == 0 and not res.skipped:
                        now = time.time()
                        rec = {"step": step, "epoch": epoch, "batch": i, "loss": res.loss, "lr": lr,
                               "grad_norm": res.grad_norm,
                               "img_per_s": log_every * total_batch / max(now - t_last, 1e-9)}
                        if res.head_losses is not None:
                            rec["head_losses"] = res.head_losses
                        t_last = now
                        runlog.step(rec)
                        if bar is not None:
                            bar.set_postfix(loss=f"{res.loss:.4f}", lr=f"{lr:.2e}")
                    reached = max_steps and step >= max_steps
                    if res.stop or reached or (ckpt_every and step - last_ckpt >= ckpt_every and i < steps_per_epoch):
                        partial[2] += time.time() - t_epoch
                        t_epoch = time.time()
                        if i < steps_per_epoch:
                            checkpoint(epoch, i)
                            last_ckpt = step
                        if res.stop:
                            stopped = f"signal {signals.name or 'on another rank'}"
                        elif reached:
                            stopped = f"train.max_steps={max_steps} reached"
                        if stopped:
                            break
                if bar is not None:
                    bar.close()
                del it
                partial[2] += time.time() - t_epoch
                if stopped and i < steps_per_epoch:
                    if stopped.startswith("train.max_steps"):  # evaluate what a smoke run produced
                        history.append(_epoch_record(epoch, step, partial, optimizer, bad_total, data, model, ema,
                                                     device, amp_dtype, bad_seen, data_wait, world,
                                                     partial_epoch=True, sink=last_eval))
                        runlog.epoch(history[-1])
                        log.info("stopped (%s) at epoch %d batch %d: %s", stopped, epoch, i,
                                 json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                             for k, v in history[-1].items()}))
                    break
                record = _epoch_record(epoch, step, partial, optimizer, bad_total, data, model, ema, device,
                                       amp_dtype, bad_seen, data_wait, world,
                                       evaluate_now=epoch == epochs - 1 or (epoch + 1) % int(tc["eval_interval"]) == 0,
                                       sink=last_eval)
                bad_seen = len(read_bad_images(data.bad_log))
                history.append(record)
                for key, name in (("val_top1", "top1"), ("ema_val_top1", "ema_top1")):
                    if key in record and record[key] > best[name]:
                        best[name] = record[key]
                        record[f"new_best_{name}"] = True
                partial = zero_partial()
                checkpoint(epoch + 1, 0, epoch_end=True, record=record)
                last_ckpt = step
                runlog.epoch(record)
                log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                            for k, v in record.items()}))
                if stopped:
                    break
    finally:
        step_fn.close()
        runlog.close()

    summary = {"out_dir": out_dir, "best_top1": best["top1"], "best_ema_top1": best["ema_top1"] if ema else None,
               "steps": step, "skipped_steps": bad_total,
               "bad_images": len(read_bad_images(data.bad_log)), "stopped": stopped,
               "final": history[-1] if history else {}}
    if rank == 0:
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        if mixmo and "result" in last_eval and not (stopped and stopped.startswith("signal")):
            from ..mixmo.evaluate import format_table, write_eval_json
            write_eval_json(os.path.join(out_dir, "eval.json"), last_eval["result"],
                            os.path.abspath(os.path.join(out_dir, "model.safetensors")), last_eval["epochs_done"],
                            {"step": last_eval["step"], "partial_epoch": last_eval["partial_epoch"]})
            log.info("final evaluation (%s/eval.json):\n%s", out_dir, format_table(last_eval["result"]))
    du.barrier()
    if stopped and stopped.startswith("signal"):
        summary["interrupted"] = True
    return summary


def _epoch_record(epoch, step, partial, optimizer, bad_total, data: Data, model, ema, device, amp_dtype,
                  bad_seen: int, data_wait: float, world: int, evaluate_now: bool = True,
                  partial_epoch: bool = False, sink: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Per-epoch metrics: train loss over all ranks, speed, skipped steps, unreadable images met this epoch
    (all ranks, training and validation), validation of the model and of its EMA.

    MixMo networks (``model.num_members``): ``train_head{k}_loss`` per head, and the validation of the
    ensemble (``val_top1`` = ensemble top-1, ``val_loss`` = ensemble NLL, ``val_ece``) and of every head
    (``val_head{k}_top1/nll/ece``); the full evaluation is left in ``sink["result"]``."""
    loss_sum, seen, secs, *heads = du.all_reduce_sum(partial, device)
    record = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(seen, 1),
              "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": secs / world,
              "img_per_s": seen / max(secs / world, 1e-9), "data_wait_s": data_wait,
              "skipped_steps": bad_total}
    for k, h in enumerate(heads):
        record[f"train_head{k}_loss"] = h / max(seen, 1)
    if partial_epoch:
        record["partial_epoch"] = True
    if evaluate_now and hasattr(model, "head_logits"):
        from ..mixmo.evaluate import evaluate_mixmo, flat_record
        bins = int((sink or {}).get("ece_bins", 15))
        result = evaluate_mixmo(model, data.val_loader, device, amp_dtype, n_bins=bins)
        record.update(flat_record(result))
        if sink is not None:
            sink.update(result=result, epochs_done=epoch + (0 if partial_epoch else 1), step=step,
                        partial_epoch=partial_epoch)
        if ema is not None:
            record.update(flat_record(evaluate_mixmo(ema.module, data.val_loader, device, amp_dtype, n_bins=bins),
                                      prefix="ema_val_"))
    elif evaluate_now:
        record.update({f"val_{k}": v for k, v in evaluate(model, data.val_loader, device, amp_dtype).items()})
        if ema is not None:
            record.update({f"ema_val_{k}": v for k, v in evaluate(ema.module, data.val_loader, device,
                                                                    amp_dtype).items()})
    bad_now = len(read_bad_images(data.bad_log)) - bad_seen
    record["bad_images"] = int(du.all_reduce_sum([bad_now], device)[0])
    return record
