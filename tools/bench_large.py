#!/usr/bin/env python
"""Overhead of gradient accumulation and activation checkpointing against the plain engine step.

    python tools/bench_large.py                                   # DeiT-Ti, 224, batch 16, CPU
    python tools/bench_large.py --device cuda --amp bf16 --batch 256 --model deit_small_patch16_224

Every variant is :class:`pretrain.engine.step.TrainStep` on the classification objective with TransMix (the
CLS-attention tap on, so the tap's cost under checkpointing is in the figure), the same model weights and
batch, built side by side and timed in one run, interleaved in shuffled order over ``--rounds`` rounds of
``--steps`` steps (median round reported):

* ``plain``: one forward/backward of the whole batch (``train.accum_steps: 1``);
* ``accum k``: ``train.accum_steps: k`` (k micro-batches of batch / k);
* ``checkpointing``: ``train.grad_checkpointing: true`` (timm's ``set_grad_checkpointing``);
* ``checkpointing + accum k``.

Ratios are plain img/s over the variant's img/s (> 1 is slower than plain). On CUDA the peak allocated memory
of a step is reported too.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import random
import statistics
import time

import torch

from pretrain.engine.optim import build_optimizer
from pretrain.engine.step import TrainStep
from pretrain.mixing import build_mixer
from pretrain.models.vit import create_vit
from pretrain.objectives.classification import ClassificationObjective
from pretrain.amp import AMP_DTYPES


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(model, k: int, ckpt: bool, device, amp_dtype, num_classes: int):
    model = copy.deepcopy(model).to(device)
    model.set_grad_checkpointing(ckpt)
    objective = ClassificationObjective(build_mixer({"name": "transmix"}, num_classes, seed=0)).to(device)
    objective.bind(model)
    opt = build_optimizer(model, {"name": "adamw", "weight_decay": 0.05, "betas": [0.9, 0.999], "eps": 1e-8},
                          1e-4, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainStep(model, model, objective, opt, scaler, amp_dtype, None, None, accum_steps=k)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="deit_tiny_patch16_224")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--accum", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=sorted(AMP_DTYPES))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device, amp_dtype = torch.device(args.device), AMP_DTYPES[args.amp]
    torch.manual_seed(0)
    base = create_vit(args.model, 1000, img_size=args.img)
    variants = {"plain": (1, False)}
    variants.update({f"accum {k}": (k, False) for k in args.accum})
    variants["checkpointing"] = (1, True)
    variants.update({f"checkpointing + accum {k}": (k, True) for k in args.accum})
    steps = {name: build(base, k, c, device, amp_dtype, 1000) for name, (k, c) in variants.items()}
    x = torch.randn(args.batch, 3, args.img, args.img, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    peak = {}
    for name, fn in steps.items():
        for _ in range(args.warmup):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            fn(x, y, None, lr=1e-4)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated() / 2 ** 20
    times = {name: [] for name in steps}
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = list(steps)
        rng.shuffle(order)
        for name in order:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                steps[name](x, y, None, lr=1e-4)
            _sync(device)
            times[name].append((time.perf_counter() - t0) / args.steps)
    ips = {name: args.batch / statistics.median(t) for name, t in times.items()}
    rows = [{"variant": n, "img_per_s": round(ips[n], 2), "slowdown_vs_plain": round(ips["plain"] / ips[n], 3),
             **({"peak_mib": round(peak[n], 1)} if n in peak else {})} for n in steps]
    print(f"{args.model} {args.img}px batch {args.batch} {args.device} amp {args.amp} threads "
          f"{torch.get_num_threads()}, median of {args.rounds} x {args.steps} steps")
    for r in rows:
        print(f"  {r['variant']:<26} {r['img_per_s']:8.2f} img/s  x{r['slowdown_vs_plain']:.3f}"
              + (f"  peak {r['peak_mib']} MiB" if "peak_mib" in r else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "torch": torch.__version__, "host": platform.node(),
                       "time": datetime.datetime.now(datetime.timezone.utc).isoformat()}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
