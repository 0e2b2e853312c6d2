#!/usr/bin/env python
"""A full training step (mixer, forward, targets, loss, backward, AdamW) per mixer, relative to CutMix.

    python tools/bench_mixers.py --device cpu --model deit_tiny_patch16_224 --img-size 96 --batch 32
    python tools/bench_mixers.py --device cuda --amp bf16 --model deit_small_patch16_224 --batch 256
    python tools/bench_mixers.py --device cuda --amp bf16 --model deit_base_patch16_224 --batch 128

All mixers share one model, optimizer and input batch (random tensors: the loader is not measured)
and are timed in the same run, interleaved: every round runs ``--steps`` steps of each mixer in a
shuffled order, after one untimed warm-up step each. CutMix is the reference (always box-mixed; the
TransMix and TokenMix rows mix every batch too, no Mixup switch). Peak memory is CUDA's
``max_memory_allocated`` over each mixer's steps (n/a on CPU). "mixer alone" times the mixer call and
its targets without the model step (Puzzle-Mix's saliency pass and the teachers' forwards included),
measured after the interleaved rounds. Rows:

* ``tokenmix``: targets from dense maps given as loader extras (precomputed maps: no teacher cost);
* ``tokenmix+teacher``: the same with the online teacher (``--teacher``) inside the step;
* ``teacher forward``: the online teacher's forward alone, per step (reported separately);
* externals (TransMix-external's ViT, Attentive-CutMix's CNN) are random-weight timm models of the
  named architectures: their cost does not depend on the weights. The CNN sees 224x224 inputs (its
  7x7 grid, as the paper).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import random
import statistics
import sys
import time

import torch

from pretrain.mixing import build_mixer
from pretrain.models.vit import ClsAttentionTap, create_vit

ALL = ["cutmix", "mixup", "transmix", "transmix_external", "tokenmix", "tokenmix_elem", "tokenmix+teacher",
       "saliencymix", "attentive_cutmix", "puzzlemix"]


def mixer_configs(args, amp: str):
    ext_vit = {"name": args.model, "random_init": True, "amp": amp,
               "kwargs": {"img_size": args.img_size, **({"patch_size": args.patch_size} if args.patch_size else {})}}
    cnn = {"name": args.cnn, "random_init": True, "amp": amp, "input_size": 224}  # the paper's 7x7 grid
    teacher = {"name": args.teacher, "random_init": True, "amp": amp}
    tm = {"name": "tokenmix", "mixup_alpha": 0.0, "target": "label_map", "label_maps": "bench"}
    return {
        "cutmix": {"name": "cutmix"},
        "mixup": {"name": "mixup"},
        "transmix": {"name": "transmix", "mixup_alpha": 0.0},
        "transmix_external": {"name": "transmix", "mixup_alpha": 0.0, "attention_source": "external",
                              "external": ext_vit},
        "tokenmix": dict(tm),
        "tokenmix_elem": dict(tm, mode="elem"),
        "tokenmix+teacher": {"name": "tokenmix", "mixup_alpha": 0.0, "target": "teacher", "teacher": teacher,
                             "teacher_class": "pred"},
        "saliencymix": {"name": "saliencymix"},
        "attentive_cutmix": {"name": "attentive_cutmix", "model": cnn},
        "puzzlemix": {"name": "puzzlemix", "amp": amp},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_tiny_patch16_224")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--patch-size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per mixer and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mixers", default=",".join(ALL))
    ap.add_argument("--teacher", default="resnet50", help="timm classifier used as TokenMix's online teacher")
    ap.add_argument("--cnn", default="resnet50", help="Attentive-CutMix's CNN")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.mixers.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SystemExit(f"error: unknown mixer row(s) {unknown}; choose from {ALL}")
    if "cutmix" not in names:
        names.insert(0, "cutmix")
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    ext_amp = args.amp if args.amp != "none" else "none"
    torch.manual_seed(args.seed)

    kw = {"img_size": args.img_size}
    if args.patch_size:
        kw["patch_size"] = args.patch_size
    model = create_vit(args.model, args.classes, drop_path_rate=0.1, **kw).to(dev).train()
    patch = model.patch_embed.patch_size[0]
    grid = (args.img_size // patch, args.img_size // patch)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, fused=dev.type == "cuda")
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=dev)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    maps = torch.rand(args.batch, *grid, device=dev)  # stands for precomputed label maps (loader extras)

    cfgs = mixer_configs(args, ext_amp)
    mixers = {n: build_mixer(cfgs[n], args.classes, seed=args.seed).to(dev) for n in names}
    autocast = (lambda: torch.autocast(device_type=dev.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(mixer):
        batch = mixer(x, y, model=model, extras=maps)
        with autocast():
            logits = model(batch.images)
        attention = tap.patch_attention().view(args.batch, *grid) if mixer.needs_attention else None
        targets = mixer.targets(batch, attention)
        loss = mixer.loss(logits, targets)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    times = {n: [] for n in names}  # seconds per step, one entry per round
    peak = {n: 0 for n in names}
    tap = None
    order = list(names)
    rng = random.Random(args.seed)
    for r in range(args.rounds):
        rng.shuffle(order)
        for n in order:
            mixer = mixers[n]
            if mixer.needs_attention:
                tap = ClsAttentionTap(model)
            if r == 0:
                step(mixer)  # warm-up (allocator, kernels, lazy init)
            sync()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = step(mixer)
            loss.item()
            sync()
            times[n].append((time.perf_counter() - t0) / args.steps)
            if dev.type == "cuda":
                peak[n] = max(peak[n], torch.cuda.max_memory_allocated(dev))
            if tap is not None:
                tap.remove()
                tap = None

    # the mixer alone (mixing + targets, no model step; Puzzle-Mix includes its saliency pass): the
    # overhead a mixer adds, measured without the step's run-to-run noise
    mix_ms = {}
    fake_att = torch.rand(args.batch, *grid, device=dev)
    for n in names:
        mixer = mixers[n]
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps * args.rounds):
            batch = mixer(x, y, model=model, extras=maps)
            mixer.targets(batch, fake_att if mixer.needs_attention else None)
        sync()
        mix_ms[n] = 1000 * (time.perf_counter() - t0) / (args.steps * args.rounds)
    opt.zero_grad(set_to_none=True)

    # the online teacher's forward alone (what tokenmix+teacher adds over tokenmix)
    teacher_ms = None
    if "tokenmix+teacher" in names:
        teacher = mixers["tokenmix+teacher"].teacher
        teacher.maps(x, "auto")
        sync()
        t0 = time.perf_counter()
        n_t = args.steps * args.rounds
        for _ in range(n_t):
            teacher.maps(x, "auto")
        sync()
        teacher_ms = 1000 * (time.perf_counter() - t0) / n_t

    # the median over rounds resists bursts of load from other processes
    med = {n: statistics.median(v) for n, v in times.items()}
    ref_t = med["cutmix"]
    rows = []
    for n in names:
        rows.append({"mixer": n, "img_per_s": args.batch / med[n], "ms_per_step": 1000 * med[n],
                     "time_vs_cutmix": med[n] / ref_t, "ms_per_round": [1000 * t for t in times[n]],
                     "mixer_ms": mix_ms[n],
                     "peak_mem_gib": peak[n] / 2**30 if dev.type == "cuda" else None,
                     "mem_vs_cutmix": peak[n] / peak["cutmix"] if dev.type == "cuda" and peak["cutmix"] else None})
    import timm
    if dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# bench_mixers: {args.model} img {args.img_size} patch {patch} batch {args.batch} amp {args.amp}")
    print(f"# device: {device_name}; torch {torch.__version__}, timm {timm.__version__}; "
          f"{datetime.date.today().isoformat()}; {args.rounds} rounds x {args.steps} steps, interleaved; "
          "median ms/step over rounds")
    print(f"# command: python tools/bench_mixers.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print()
    print("| mixer | img/s | ms/step | step time vs CutMix | mixer alone (ms) | peak mem (GiB) | peak mem vs CutMix |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        mem = f"{row['peak_mem_gib']:.2f}" if row["peak_mem_gib"] is not None else "n/a"
        memr = f"{row['mem_vs_cutmix']:.3f}x" if row["mem_vs_cutmix"] is not None else "n/a"
        print(f"| {row['mixer']} | {row['img_per_s']:.1f} | {row['ms_per_step']:.1f} | "
              f"{row['time_vs_cutmix']:.3f}x | {row['mixer_ms']:.1f} | {mem} | {memr} |")
    if teacher_ms is not None:
        cut_ms = 1000 * ref_t
        print(f"| teacher forward alone ({args.teacher}) | | {teacher_ms:.1f} | {teacher_ms / cut_ms:.3f}x | | | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": device_name, "torch": torch.__version__,
                       "timm": timm.__version__, "rows": rows, "teacher_forward_ms": teacher_ms}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
