#!/usr/bin/env python
"""Per-core img/s of the training data paths on ImageNet-like JPEGs, split by stage, side by side.

    python tools/bench_loader.py                                  # writes runs/bench_loader/imagenet_like once
    python tools/bench_loader.py --data /data/imagenet --images 400 --json runs/bench_loader.json

Images: ``--data`` (an ImageNet-style folder, its ``train`` split) or, by default, the synthetic ImageNet-like
set (:mod:`pretrain.synthetic.photolike`: ImageNet's size distribution, mean about 430 x 370, quality 90,
about 90 KB per file, photograph-like 1/f detail over a synthetic-world scene) written once under
``runs/bench_loader/imagenet_like``.

Every path runs in this one process on one core (``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1``),
image by image in turn on the same file with the same per-sample seed (so the same crop, flip and
RandAugment draws), and every stage is timed on its own:

* ``timm`` (``data.pipeline=timm``): ``load_rgb`` (full decode) | RandomResizedCrop + bicubic resize | flip |
  RandAugment rand-m9-mstd0.5-inc1 | ToTensor | Normalize + RandomErasing(0.25, pixel);
* ``fast`` (``data.pipeline=fast``): header + crop draw + DCT-scaled decode (simplejpeg) | bicubic box resample
  | flip | the same RandAugment | uint8 tensor; normalize + erasing run batched on the device
  (:class:`pretrain.data.fast.device.DeviceAugment`) and are reported on their own row (timed on ``--device``,
  CUDA when there is one, for a batch of ``--batch``, per image) and not counted in the worker's cost;
* ``fast_device`` (``data.pipeline=fast_device``): the ``fast`` worker stages without the flip and RandAugment,
  which run batched on the device with normalize + erasing (:class:`pretrain.data.fast.randaug.TensorRandAugment`);
  the device row times all four on the CPU for a batch of ``--batch`` (a GPU does them in a fraction of that);
* ``gpu`` (``data.pipeline=gpu``): the worker reads the file and its header; decode (nvjpeg on a GPU), crop,
  resize and the ``fast_device`` stages run batched on the device (timed here on the CPU device, per image);
* ``fast, full decode``: the same without the DCT scaling (what the uint8 hand-off and the box resample give);
* ``fast, Pillow draft``: the DCT scaling through Pillow's ``draft()`` (1/2, 1/4, 1/8 only) for installs
  without simplejpeg.

Besides the stage sums, each sample is also timed whole through the dataset (file read, seeding, all worker
stages): ``img/s per core`` is from that. ``cores per GPU`` = the model's training img/s divided by that, for
the issue's figures of a bare timm bf16 step on one H100 (DeiT-S/16 about 5,100 img/s, DeiT-B/16 about 2,400;
not measured here). ``--model-ips`` overrides them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

from pretrain.data.fast.dataset import FastTrainTransform
import numpy as np
from PIL import Image

from pretrain.data.fast.decode import resample, simplejpeg
from pretrain.data.fast.device import DeviceAugment
from pretrain.data.folders import build_transforms, load_rgb
from pretrain.data.robust import seed_all, sample_seed

MODEL_IPS = {"DeiT-S/16 (5,100 img/s)": 5100.0, "DeiT-B/16 (2,400 img/s)": 2400.0}
STAGES = ["decode", "crop + resize", "flip", "RandAugment", "to tensor", "normalize + erasing"]


def _cfg(img):
    return {"img_size": img, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "re_mode": "pixel",
            "re_count": 1, "color_jitter": 0.3, "interpolation": "bicubic"}


class TimmPath:
    name = "timm"

    def __init__(self, img):
        t = build_transforms(_cfg(img), train=True).transforms
        self.rrc, self.flip, self.ra, self.tens, self.norm, self.erase = t

    def stages(self, path, clock):
        img = load_rgb(path)
        clock("decode")
        img = self.rrc(img)
        clock("crop + resize")
        img = self.flip(img)
        clock("flip")
        img = self.ra(img)
        clock("RandAugment")
        x = self.tens(img)
        clock("to tensor")
        x = self.erase(self.norm(x))
        clock("normalize + erasing")
        return x

    def whole(self, path):
        img = self.erase(self.norm(self.tens(self.ra(self.flip(self.rrc(load_rgb(path)))))))
        return img


class FastPath:
    def __init__(self, img, name, scaled=True, backend="auto", on_device=False):
        self.name = name
        self.t = FastTrainTransform(_cfg(img), scaled=scaled, backend=backend, on_device=on_device)

    def stages(self, path, clock):
        import random
        t = self.t
        img, params = t.decoder.crop(path, t.size, random)
        clock("decode")
        out = resample(img, params, t.size, t.resample)
        clock("crop + resize")
        flip = t.hflip and torch.rand(1) < t.hflip
        if t.augment:
            out = Image.fromarray(out.numpy(), "RGB")
            if flip:
                out = out.transpose(Image.FLIP_LEFT_RIGHT)
        elif flip:
            out = out.flip(1)
        clock("flip")
        for a in t.augment:
            out = a(out)
        clock("RandAugment")
        x = torch.from_numpy(np.array(out, dtype=np.uint8)) if t.augment else out
        clock("to tensor")
        return x

    def whole(self, path):
        return self.t(path)


class GpuReadPath:
    """``data.pipeline=gpu``'s worker: read the file and its JPEG header; everything else on the device."""
    name = "gpu"

    def stages(self, path, clock):
        from pretrain.data.fast.gpu import read_encoded
        e = read_encoded(path)
        clock("decode")
        return e

    def whole(self, path):
        from pretrain.data.fast.gpu import read_encoded
        return read_encoded(path)


def write_set(root):
    from pretrain.synthetic.photolike import write_imagenet_like
    return write_imagenet_like(root, num_classes=4, train_per_class=48, val_per_class=2, seed=0, quality=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="ImageNet-style folder (default: the synthetic ImageNet-like set)")
    ap.add_argument("--out", default="runs/bench_loader/imagenet_like", help="where the default set is written")
    ap.add_argument("--images", type=int, default=192, help="samples timed per path (cycling over the files)")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64, help="batch of the device-side stages' timing")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where the device-side stages are timed (the worker stages always run on one CPU core)")
    ap.add_argument("--model-ips", type=float, nargs="*", default=None,
                    help="model img/s for the cores-per-GPU column (default: the issue's DeiT-S/B H100 figures)")
    ap.add_argument("--paths", default="timm,fast,fast_device,gpu,fast_full,fast_pil")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    info = None
    root = args.data
    if root is None:
        info = write_set(args.out)
        root = args.out
    train = os.path.join(root, "train")
    files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(train) for f in fs if f.lower().endswith((".jpeg", ".jpg")))
    if not files:
        print(f"no JPEGs under {train}", file=sys.stderr)
        return 2
    img = args.img_size
    makers = {"timm": lambda: TimmPath(img), "fast": lambda: FastPath(img, "fast"),
              "fast_device": lambda: FastPath(img, "fast_device", on_device=True),
              "gpu": lambda: GpuReadPath(),
              "fast_full": lambda: FastPath(img, "fast, full decode", scaled=False),
              "fast_pil": lambda: FastPath(img, "fast, Pillow draft", backend="pil")}
    wanted = [p for p in args.paths.split(",") if p]
    if simplejpeg is None:
        wanted = [p for p in wanted if p not in ("fast", "fast_device", "fast_full")]
        print("note: simplejpeg is not installed: the simplejpeg rows are left out", file=sys.stderr)
    paths = [makers[p]() for p in wanted]
    stage_t = {p.name: {s: [] for s in STAGES} for p in paths}
    whole_t = {p.name: [] for p in paths}
    for k in range(min(8, len(files))):  # warm-up: page cache, lazy imports
        for p in paths:
            seed_all(k)
            p.whole(files[k])
    t_run = time.perf_counter()
    for k in range(args.images):
        f = files[k % len(files)]
        seed = sample_seed(0, 0, k)
        for p in (paths if k % 2 == 0 else paths[::-1]):  # alternate the order: no path always runs first
            seed_all(seed)
            t0 = time.perf_counter()
            p.whole(f)
            whole_t[p.name].append(time.perf_counter() - t0)
            seed_all(seed)
            last = [time.perf_counter()]

            def clock(stage, name=p.name, last=last):
                now = time.perf_counter()
                stage_t[name][stage].append(now - last[0])
                last[0] = now
            p.stages(f, clock)
    # device-side stages of the uint8 paths, timed on the CPU for one batch, per image
    from pretrain.data.fast.device import build_device_augment
    dev = torch.device(args.device)
    x = torch.randint(0, 256, (args.batch, img, img, 3), dtype=torch.uint8)
    x = x.pin_memory().to(dev) if dev.type == "cuda" else x

    def per_image(fn, arg):
        fn(arg, 0, 0)
        reps = []
        for b in range(3):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            fn(arg, 0, b + 1)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            reps.append((time.perf_counter() - t0) / args.batch)
        return statistics.median(reps) * 1e3
    dev_ms = per_image(DeviceAugment(re_prob=0.25), x)
    dev_ra_ms = per_image(build_device_augment({**_cfg(img), "pipeline": "fast_device"}, 0, 0), x)
    dev_gpu_ms = None
    if "gpu" in [p.name for p in paths]:  # decode + crop + resize + the fast_device stages
        from pretrain.data.fast.gpu import build_gpu_augment, collate_encoded, read_encoded
        enc = collate_encoded([(read_encoded(files[k % len(files)]), 0) for k in range(args.batch)])[0].to(dev)
        dev_gpu_ms = per_image(build_gpu_augment({**_cfg(img), "pipeline": "gpu"}, 0, 0), enc)
    on = "CPU" if dev.type == "cpu" else "GPU"
    wall = time.perf_counter() - t_run

    model_ips = dict(MODEL_IPS) if args.model_ips is None else {f"{v:.0f} img/s": v for v in args.model_ips}
    import timm
    import PIL
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"
    print(f"# bench_loader {datetime.date.today()} | {cpu}, 1 thread | torch {torch.__version__} | "
          f"timm {timm.__version__} | Pillow {PIL.__version__} | simplejpeg "
          f"{getattr(simplejpeg, '__version__', 'not installed')}")
    print("# command: python tools/bench_loader.py " + " ".join(sys.argv[1:] if argv is None else argv))
    desc = f"{len(files)} files under {train}"
    if info:
        desc += (f" (synthetic ImageNet-like: mean {info['mean_wh'][0]:.0f} x {info['mean_wh'][1]:.0f} px, "
                 f"{info['mean_kb']:.0f} KB, quality 90)")
    print(f"# images: {desc}; {args.images} samples per path, output {img} px; wall {wall:.0f} s")
    mean_ms = {n: {s: (1e3 * statistics.fmean(v) if v else None) for s, v in d.items()} for n, d in stage_t.items()}
    names = [p.name for p in paths]
    print("\n| stage (ms per image, mean) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for s in STAGES:
        cells = []
        for n in names:
            v = mean_ms[n][s]
            if n == "gpu" and s != "decode":
                cells.append(f"on device (all: {dev_gpu_ms:.3f} on {on})" if s == "normalize + erasing" else "on device")
            elif n == "gpu":
                cells.append(f"{v:.2f} (file read; decode on device)")
            elif n == "fast_device" and s in ("flip", "RandAugment", "normalize + erasing"):
                cells.append(f"on device ({dev_ra_ms:.3f} on {on}, with normalize + erasing)"
                             if s == "normalize + erasing" else "on device")
            elif v is None:
                cells.append(f"on device ({dev_ms:.3f} on {on})" if s == "normalize + erasing" else "-")
            else:
                cells.append(f"{v:.2f}")
        print(f"| {s} | " + " | ".join(cells) + " |")
    worker = {n: sum(v for k, v in mean_ms[n].items() if v is not None
                     and not (n == "fast_device" and k in ("flip", "RandAugment"))) for n in names}
    whole = {n: 1e3 * statistics.fmean(whole_t[n]) for n in names}
    print("| **worker total (sum of stages)** | " + " | ".join(f"**{worker[n]:.2f}**" for n in names) + " |")
    print("| whole sample through the dataset, ms | " + " | ".join(f"{whole[n]:.2f}" for n in names) + " |")
    ips = {n: 1e3 / whole[n] for n in names}
    base = ips.get("timm")
    print("| **img/s per core** | " + " | ".join(f"**{ips[n]:.1f}**" + (" (worker only: the device's decode time is not in it)"
                                                                     if n == "gpu" else "") for n in names) + " |")
    if base:
        print("| vs timm | " + " | ".join(f"{ips[n] / base:.2f}x" for n in names) + " |")
    for label, v in model_ips.items():
        print(f"| cores per GPU, {label} | " + " | ".join(f"{v / ips[n]:.1f}" for n in names) + " |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"date": str(datetime.date.today()), "cpu": cpu, "images": desc, "samples": args.images,
                       "img_size": img, "stage_ms": mean_ms, "device": str(dev),
                       "device_normalize_erase_ms": dev_ms,
                       "device_flip_randaugment_normalize_erase_ms": dev_ra_ms,
                       "device_gpu_path_all_stages_ms": dev_gpu_ms,
                       "worker_ms": worker, "whole_ms": whole, "img_per_s_per_core": ips,
                       "cores_per_gpu": {lab: {n: v / ips[n] for n in names} for lab, v in model_ips.items()}},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
