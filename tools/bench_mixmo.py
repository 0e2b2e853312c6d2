#!/usr/bin/env python
"""Training-step cost of MixMo (M=2, Cut-MixMo, batch repetition b) against the same backbone with CutMix.

    python tools/bench_mixmo.py                                              # CPU, narrow WRN-16-2, 32 px
    python tools/bench_mixmo.py --device cuda --amp bf16 --arch wrn28_10 --batch 64 --repeat 4

Every variant is a full training step of :class:`pretrain.engine.step.TrainStep` (forward under
autocast, loss, backward, the non-finite check, SGD with Nesterov momentum as the CIFAR recipes) on
synthetic tensors already on the device; all variants are built side by side and timed in the same run,
interleaved in shuffled order over ``--rounds`` rounds of ``--steps`` steps (median round reported):

* ``CutMix, batch B``: the single network (M=1) trained as the classification objective with the engine's
  CutMix mixer (alpha 1, every batch), loader batch B -- the baseline a MixMo run replaces;
* ``CutMix, batch B*b``: the same at batch B*b, i.e. as many samples through the core as MixMo;
* ``Cut-MixMo M=2, b``: the MixMo objective (:class:`pretrain.mixmo.objective.MixMoObjective` over a
  :class:`pretrain.mixmo.MixMoTrainer`; Cut-MixMo probability 1, the costlier branch: masks on the encoder
  grid) with loader batch B repeated b times per input.

Columns: loader images per second (unique images, B per step), samples per second (B for CutMix B,
B*b for the others: what passes through the core), the ratio of MixMo to each CutMix row, and the peak
accelerator memory of the variant's steps (CUDA only).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import time

import torch

from pretrain.amp import AMP_DTYPES
from pretrain.engine.optim import build_optimizer
from pretrain.engine.step import TrainStep
from pretrain.mixing import build_mixer
from pretrain.mixmo import MixMoTrainer, build_mixmo_preact_resnet, build_mixmo_vit, build_mixmo_wrn
from pretrain.mixmo.objective import MixMoObjective
from pretrain.objectives.classification import ClassificationObjective

ARCHS = {
    "wrn28_10": (lambda k, m: build_mixmo_wrn(k, m, 28, 10), 32),
    "wrn16_2": (lambda k, m: build_mixmo_wrn(k, m, 16, 2), 32),
    "preact18x3": (lambda k, m: build_mixmo_preact_resnet(k, m, width=3), 64),
    "preact18": (lambda k, m: build_mixmo_preact_resnet(k, m, width=1), 32),
    "deit_s": (lambda k, m: build_mixmo_vit("deit_small_patch16_224", k, m, img_size=224), 224),
}
OPTIM = {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "no_decay_1d": False}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_variants(args, device):
    build, size = ARCHS[args.arch]
    size = args.img_size or size
    amp = AMP_DTYPES[args.amp]
    b, r, k = args.batch, args.repeat, args.classes
    variants = {}
    for name, members, batch in (("CutMix, batch B", 1, b), ("CutMix, batch B*b", 1, b * r),
                                 ("Cut-MixMo M=2, b", 2, b)):
        torch.manual_seed(0)
        model = build(k, members).to(device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, OPTIM, 0.05, device)
        if members == 1:
            objective = ClassificationObjective(build_mixer({"name": "cutmix", "prob": 1.0, "label_smoothing": 0.0},
                                                            k, seed=0))
        else:
            objective = MixMoObjective(MixMoTrainer(2, k, mixing="cut", cut_prob=1.0, batch_repeat=r, seed=0))
        objective.bind(model)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        step = TrainStep(model, model, objective, opt, scaler, amp, None, None, args.channels_last)
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, k, (batch,), device=device)
        samples = batch * (r if members == 2 else 1)
        variants[name] = dict(step=step, x=x, y=y, images=batch, samples=samples, times=[], mem=0,
                              params=sum(p.numel() for p in model.parameters()))
    return variants, size


def run(args):
    device = torch.device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    variants, size = build_variants(args, device)
    for v in variants.values():  # warm-up (cuDNN autotune, allocator)
        for _ in range(args.warmup):
            v["step"](v["x"], v["y"], lr=0.05, step=0)
    sync(device)
    order = list(variants)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            v = variants[name]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0 = time.perf_counter()
            for i in range(args.steps):
                res = v["step"](v["x"], v["y"], lr=0.05, step=i)
                assert not res.skipped
            sync(device)
            v["times"].append(time.perf_counter() - t0)
            if device.type == "cuda":
                v["mem"] = max(v["mem"], torch.cuda.max_memory_allocated(device))
    rows = []
    for name, v in variants.items():
        t = statistics.median(v["times"]) / args.steps
        rows.append({"variant": name, "params_M": v["params"] / 1e6, "batch": v["images"], "samples": v["samples"],
                     "img_per_s": v["images"] / t, "samples_per_s": v["samples"] / t, "ms_per_step": 1000 * t,
                     "peak_mem_GiB": v["mem"] / 2**30 if device.type == "cuda" else None})
    mixmo = rows[2]
    for r in rows:
        r["mixmo_step_time_ratio"] = mixmo["ms_per_step"] / r["ms_per_step"]
    return rows, size


def table(rows, args, size) -> str:
    lines = [f"{args.arch}, {size} px, loader batch B={args.batch}, b={args.repeat}, {args.device}, amp {args.amp}",
             "",
             "| variant | params | images/step | samples/step | img/s (unique) | samples/s | ms/step "
             "| MixMo step time / this | peak mem |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = f"{r['peak_mem_GiB']:.2f} GiB" if r["peak_mem_GiB"] is not None else "n/a (CPU)"
        lines.append(f"| {r['variant']} | {r['params_M']:.2f}M | {r['batch']} | {r['samples']} | {r['img_per_s']:.1f} "
                     f"| {r['samples_per_s']:.1f} | {r['ms_per_step']:.1f} | {r['mixmo_step_time_ratio']:.2f} | {mem} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=sorted(AMP_DTYPES))
    p.add_argument("--arch", default="wrn16_2", choices=sorted(ARCHS))
    p.add_argument("--batch", type=int, default=32, help="loader batch B")
    p.add_argument("--repeat", type=int, default=2, help="MixMo batch repetition b")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--img-size", type=int, default=0, help="default: the architecture's (32, 64 or 224)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", default=None, help="write the rows and the environment here")
    args = p.parse_args(argv)
    if args.batch < 2 or args.repeat < 1:
        p.error("--batch must be >= 2 and --repeat >= 1")
    rows, size = run(args)
    text = table(rows, args, size)
    import timm
    env = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "timm": timm.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads(),
           "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()}
    print(text)
    print(json.dumps(env))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "env": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
