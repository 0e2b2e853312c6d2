#!/usr/bin/env python
"""Training throughput of the engine's step against a bare timm step, and of the loader path.

    python tools/bench_pretrain.py --preset cpu                       # small, CPU
    python tools/bench_pretrain.py --preset gpu                       # DeiT-S b256 and DeiT-B b128, bf16
    python tools/bench_pretrain.py --device cuda --amp bf16 --model deit_small_patch16_224 --batch 256 \
        --data data/synthetic/imagenet --workers 16

Model-only rows (synthetic tensors already on the device, no loader), all variants of one model built
side by side and timed in the same run, interleaved in shuffled order over ``--rounds`` rounds of
``--steps`` steps (median round reported):

* ``bare timm``: ``timm.create_model`` + ``torch.optim.AdamW`` (fused on CUDA, foreach on CPU), autocast
  forward, cross-entropy with label smoothing, backward, step -- nothing else;
* ``engine, no mixing``: :class:`pretrain.engine.step.TrainStep` running the classification objective
  (:class:`pretrain.objectives.classification.ClassificationObjective`) with mixer ``none`` (soft-target loss,
  the non-finite check agreed between ranks, one host sync per step);
* ``engine, DeiT recipe``: the same with Mixup/CutMix (switch 0.5) and the EMA update;
* ``engine, TransMix``: TransMix with the CLS-attention tap, and the EMA.

Ratios are engine img/s over bare img/s (>= 1.0 means the engine costs nothing). ``--channels-last`` and
``--compile`` apply to every variant alike.

Loader rows (``--data``, an ImageNet-style folder such as the synthetic one), one per ``--pipelines`` value of
``data.pipeline`` (timm, fast, fast_device, gpu): the engine's training data path (RandAugment + random erasing,
per-sample seeding, repeated-augmentation sampler, ``--workers`` processes, pinned memory, and the path's
device-side stages after the copy to the device, as the engine's loop runs them) read alone, then loader +
engine step together; the full path is loader-bound when the loader alone is slower than the model alone.
``tools/bench_loader.py`` splits the paths' per-core cost by stage.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from pretrain.amp import AMP_DTYPES, autocast
from pretrain.engine.optim import build_optimizer
from pretrain.engine.step import TrainStep
from pretrain.mixing import build_mixer
from pretrain.models.vit import create_vit
from pretrain.objectives.classification import ClassificationObjective

PRESETS = {
    "cpu": dict(device="cpu", amp="none", rows=[("deit_tiny_patch16_224", 32, 112)],
                steps=2, rounds=3, warmup=1, data="data/synthetic/imagenet", workers=2, loader_batches=6),
    "gpu": dict(device="cuda", amp="bf16", rows=[("deit_small_patch16_224", 256, 224), ("deit_base_patch16_224", 128, 224)],
                steps=20, rounds=5, warmup=5, data="data/synthetic/imagenet", workers=16, loader_batches=40),
}
OPTIM = {"weight_decay": 0.05, "betas": [0.9, 0.999], "eps": 1e-8}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bare:
    """The reference: a plain timm model, AdamW, autocast forward, CE with label smoothing, backward, step."""

    def __init__(self, name, img, device, amp_dtype, channels_last, compile_):
        self.model = create_vit(name, 1000, drop_path_rate=0.1, img_size=img).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        fused = device.type == "cuda"
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05, fused=fused or None,
                                     foreach=None if fused else True)
        self.net = torch.compile(self.model) if compile_ else self.model
        self.device, self.amp_dtype = device, amp_dtype

    def __call__(self, x, y):
        with autocast(self.device, self.amp_dtype):
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class Engine:
    """The engine's TrainStep on the classification objective with a given mixer (and EMA)."""

    def __init__(self, name, img, device, amp_dtype, channels_last, compile_, mixer, ema):
        from timm.utils import ModelEmaV3
        self.model = create_vit(name, 1000, drop_path_rate=0.1, img_size=img).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        opt = build_optimizer(self.model, {**OPTIM, "fused": "auto"}, 1e-4, device)
        net = torch.compile(self.model) if compile_ else self.model
        objective = ClassificationObjective(build_mixer(mixer, 1000, seed=0)).to(device)
        objective.bind(self.model)
        e = ModelEmaV3(self.model, decay=0.99996) if ema else None
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.step = TrainStep(self.model, net, objective, opt, scaler, amp_dtype, None, e, channels_last)
        self.n = 0

    def __call__(self, x, y):
        self.step(x, y, None, lr=1e-4, step=self.n)
        self.n += 1


def bench_models(name, batch, img, args, device, amp_dtype):
    torch.manual_seed(0)
    x = torch.randn(batch, 3, img, img, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    variants = {
        "bare timm": Bare(name, img, device, amp_dtype, args.channels_last, args.compile),
        "engine, no mixing": Engine(name, img, device, amp_dtype, args.channels_last, args.compile,
                                    {"name": "none"}, ema=False),
        "engine, DeiT recipe (Mixup/CutMix + EMA)": Engine(name, img, device, amp_dtype, args.channels_last,
                                                           args.compile, {"name": "mixup_cutmix"}, ema=True),
        "engine, TransMix + EMA": Engine(name, img, device, amp_dtype, args.channels_last, args.compile,
                                         {"name": "transmix"}, ema=True),
    }
    for fn in variants.values():  # warm-up (and compilation)
        for _ in range(args.warmup):
            fn(x, y)
    sync(device)
    times = {k: [] for k in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for k in order:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                variants[k](x, y)
            sync(device)
            times[k].append((time.perf_counter() - t0) / args.steps)
    ips = {k: batch / statistics.median(v) for k, v in times.items()}
    del variants
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ips


def bench_loader(name, batch, img, args, device, amp_dtype, model_ips, pipeline="timm"):
    from pretrain.data.build import build_dataset
    from pretrain.data.robust import KeyedDataset
    from pretrain.data.samplers import EpochSampler
    classes = sorted(d for d in os.listdir(os.path.join(args.data, "train")))
    dc = {"root": args.data, "num_classes": len(classes), "img_size": img, "auto_augment": "rand-m9-mstd0.5-inc1",
          "re_prob": 0.25, "re_mode": "pixel", "re_count": 1, "color_jitter": 0.3, "interpolation": "bicubic",
          "train_split": "train", "pipeline": pipeline}
    ds = KeyedDataset(build_dataset({"data": dc}, "train", train=True), seed=0)
    device_transform, collate = None, None
    if pipeline == "gpu":
        from pretrain.data.fast.gpu import build_gpu_augment, collate_encoded
        device_transform, collate = build_gpu_augment(dc, 0, 0), collate_encoded
    elif pipeline != "timm":
        from pretrain.data.fast.device import build_device_augment
        device_transform = build_device_augment(dc, 0, 0)
    sampler = EpochSampler(len(ds), 1, 0, shuffle=True, seed=0, repeats=3)
    need = args.loader_batches * batch
    if sampler.num_samples < need:
        print(f"note: {args.data} has {len(ds)} images; epochs are chained to read {need}", file=sys.stderr)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=args.workers > 0,
                                         prefetch_factor=4 if args.workers else None, collate_fn=collate)

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    def images_of(b, k):  # what the engine's loop does with a batch: to the device, then the device stages
        x = b[0].to(device, non_blocking=True)
        return device_transform(x, 0, k) if device_transform is not None else x

    it = batches()
    for _ in range(min(4, args.loader_batches)):  # start the workers, fill the queues
        images_of(next(it), 0)
    sync(device)
    t0 = time.perf_counter()
    for k in range(args.loader_batches):
        images_of(next(it), k)
    sync(device)
    loader_ips = args.loader_batches * batch / (time.perf_counter() - t0)

    eng = Engine(name, img, device, amp_dtype, args.channels_last, args.compile, {"name": "mixup_cutmix"}, ema=True)
    for k in range(2):
        b = next(it)
        eng(images_of(b, k), b[1].to(device, non_blocking=True))
    sync(device)
    t0 = time.perf_counter()
    for k in range(args.loader_batches):
        b = next(it)
        eng(images_of(b, k), b[1].to(device, non_blocking=True))
    sync(device)
    full_ips = args.loader_batches * batch / (time.perf_counter() - t0)
    del it
    loader = None  # the workers stop with their loader
    bound = "loader" if loader_ips < model_ips else "model"
    return {"pipeline": pipeline, "loader_img_per_s": loader_ips, "full_img_per_s": full_ips,
            "model_img_per_s": model_ips, "bound": bound}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None)
    ap.add_argument("--model", default=None, help="one model instead of the preset's rows")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--data", default=None, help="ImageNet-style folder for the loader rows ('' to skip)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--loader-batches", type=int, default=None)
    ap.add_argument("--pipelines", default="timm,fast,fast_device,gpu",
                    help="data.pipeline values of the loader rows (comma-separated)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    p = PRESETS[args.preset or ("gpu" if torch.cuda.is_available() else "cpu")]
    for k in ("device", "amp", "steps", "rounds", "warmup", "data", "workers", "loader_batches"):
        if getattr(args, k) is None:
            setattr(args, k, p[k])
    rows = p["rows"]
    if args.model:
        rows = [(args.model, args.batch or rows[0][1], args.img_size or rows[0][2])]
    elif args.batch or args.img_size:
        rows = [(m, args.batch or b, args.img_size or s) for m, b, s in rows]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    amp_dtype = AMP_DTYPES[args.amp]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    import timm
    print(f"# bench_pretrain {datetime.date.today()} | {dev_name} | torch {torch.__version__} | timm {timm.__version__}"
          f" | amp {args.amp} | channels_last {args.channels_last} | compile {args.compile}")
    print("# command: python tools/bench_pretrain.py " + " ".join(sys.argv[1:] if argv is None else argv))
    results = []
    print("\n| model | batch | img | variant | img/s | vs bare timm |\n|---|---|---|---|---|---|")
    for name, batch, img in rows:
        ips = bench_models(name, batch, img, args, device, amp_dtype)
        bare = ips["bare timm"]
        for k, v in ips.items():
            print(f"| {name} | {batch} | {img} | {k} | {v:.1f} | {v / bare:.3f}x |")
            results.append({"model": name, "batch": batch, "img": img, "variant": k, "img_per_s": v,
                            "ratio": v / bare})
        sys.stdout.flush()
    if args.data:
        if not os.path.isdir(os.path.join(args.data, "train")):
            print(f"\nloader rows skipped: {args.data}/train not found (python tools/make_synthetic.py --out "
                  f"{os.path.dirname(args.data.rstrip('/')) or '.'})")
        else:
            print("\n| model | batch | img | data.pipeline | workers | loader alone img/s | model alone img/s "
                  "| loader + model img/s | bound by |\n|---|---|---|---|---|---|---|---|---|")
            for name, batch, img in rows:
                model_ips = next(r["img_per_s"] for r in results if r["model"] == name
                                 and r["variant"].startswith("engine, DeiT"))
                for pipeline in [p for p in args.pipelines.split(",") if p]:
                    r = bench_loader(name, batch, img, args, device, amp_dtype, model_ips, pipeline)
                    print(f"| {name} | {batch} | {img} | {pipeline} | {args.workers} | {r['loader_img_per_s']:.1f} | "
                          f"{r['model_img_per_s']:.1f} | {r['full_img_per_s']:.1f} | {r['bound']} |")
                    sys.stdout.flush()
                    results.append({"model": name, "batch": batch, "img": img, "workers": args.workers, **r})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev_name, "torch": torch.__version__, "amp": args.amp, "results": results}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
