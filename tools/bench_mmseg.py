#!/usr/bin/env python
"""Training step time: our ``VitMixViT`` vs MMSeg's own ``VisionTransformer``,
side by side, in the same Segmenter config.

Both segmentors are built from one MMSeg config (default: the Segmenter
mask-transformer DeiT-S config); the second one only swaps the backbone for
``mmseg.models.backbones.VisionTransformer`` with the equivalent settings
(:func:`downstream.mmseg.compat.mmseg_vit_config`). The MMSeg backbone gets our
backbone's weights (renamed) and the decode heads share their initial weights,
so both compute the same function; the script checks that (max |logit
difference|) before timing. A step is ``model.loss`` + backward + SGD
(momentum 0.9, as in the Segmenter schedule), on a fixed random batch with
random labels, optionally under autocast. Steps of the two models alternate
in rounds (order swapped every round) and the median step time is reported,
so machine-load drift hits both alike. ``img_size`` is set to the crop size,
as in the ADE20K configs, so neither backbone resizes its position embedding
in the loop.

Examples::

    # CPU, small sizes (what docs/benchmarks/mmseg.md records)
    OMP_NUM_THREADS=2 python tools/bench_mmseg.py --sizes 128 256 --batch 2
    # GPU, the real Segmenter setting (512x512 crops, batch 8), bf16 autocast
    python tools/bench_mmseg.py --device cuda --amp bf16 --sizes 512 --batch 8 \\
        --config configs/mmseg/mask_deit-b_ade20k-512x512.py

The output is a markdown table (plus ``--json FILE``). ``ratio`` is our step
time divided by MMSeg's (< 1: ours is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch

DEFAULT_CONFIG = "configs/mmseg/mask_deit-s_ade20k-512x512.py"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="MMSeg config with a VitMixViT backbone")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square crop sizes to time")
    p.add_argument("--batch", type=int, default=2, help="images per step")
    p.add_argument("--steps", type=int, default=6, help="timed steps per model per size (split into rounds)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model per size")
    p.add_argument("--rounds", type=int, default=3, help="alternation rounds (steps are split across them)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_pair(cfg_path: str, size: int, device: torch.device):
    """Two segmentors from one config: ours and the MMSeg-backbone twin, same weights.

    Returns:
        (ours, mmseg_twin, num_classes)
    """
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    from downstream.mmseg.compat import mmseg_vit_config, timm_to_mmseg_vit  # importing it registers VitMixViT

    cfg = Config.fromfile(cfg_path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pretrained = None
    model_cfg.backbone.img_size = size
    model_cfg.pop("data_preprocessor", None)
    if model_cfg.backbone.type != "VitMixViT":
        raise SystemExit(f"{cfg_path}: expected a VitMixViT backbone, got {model_cfg.backbone.type}")
    twin_cfg = copy.deepcopy(model_cfg)
    twin_cfg.backbone = mmseg_vit_config(model_cfg.backbone)
    ours = MODELS.build(model_cfg)  # random init from the constructors (no checkpoint)
    twin = MODELS.build(twin_cfg)
    twin.backbone.load_state_dict(timm_to_mmseg_vit(ours.backbone.state_dict()), strict=True)
    twin.decode_head.load_state_dict(ours.decode_head.state_dict(), strict=True)
    ours.to(device).train()
    twin.to(device).train()
    return ours, twin, int(model_cfg.decode_head.num_classes)


def make_batch(batch: int, size: int, num_classes: int, device: torch.device, seed: int):
    """A fixed batch: (B, 3, S, S) normalised images and B label maps (S, S) in [0, num_classes)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    labels = torch.randint(0, num_classes, (batch, 1, size, size), generator=g).to(device)
    samples = []
    for i in range(batch):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=labels[i])
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        samples.append(s)
    return x, samples


def autocast_ctx(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stepper:
    """One training step of a segmentor: loss, backward, SGD."""

    def __init__(self, model, device: torch.device, amp: str, lr: float = 1e-3):
        self.model = model
        self.device = device
        self.amp = amp
        self.opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def __call__(self, x, samples) -> float:
        with autocast_ctx(self.device, self.amp):
            losses = self.model.loss(x, samples)
            loss, _ = self.model.parse_losses(losses)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def time_steps(step: Stepper, x, samples, n: int) -> List[float]:
    out = []
    for _ in range(n):
        _sync(step.device)
        t0 = time.perf_counter()
        step(x, samples)
        _sync(step.device)
        out.append(time.perf_counter() - t0)
    return out


def peak_memory(step: Stepper, x, samples) -> float:
    """Peak allocated GPU memory of one step, in MiB (NaN on CPU)."""
    if step.device.type != "cuda":
        return float("nan")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(step.device)
    step(x, samples)
    _sync(step.device)
    return torch.cuda.max_memory_allocated(step.device) / 2**20


def bench_size(args, size: int, device: torch.device) -> Dict[str, object]:
    torch.manual_seed(args.seed)
    ours, twin, num_classes = build_pair(args.config, size, device)
    x, samples = make_batch(args.batch, size, num_classes, device, args.seed)
    # same function before any step (eval mode: no drop path)
    ours.eval()
    twin.eval()
    with torch.no_grad():
        diff = (ours(x, mode="tensor") - twin(x, mode="tensor")).abs().max().item()
    ours.train()
    twin.train()
    steppers = {
        "VitMixViT": Stepper(ours, device, args.amp),
        "mmseg VisionTransformer": Stepper(twin, device, args.amp),
    }
    for s in steppers.values():
        for _ in range(args.warmup):
            s(x, samples)
    times: Dict[str, List[float]] = {k: [] for k in steppers}
    per_round = max(1, args.steps // args.rounds)
    names = list(steppers)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            times[name] += time_steps(steppers[name], x, samples, per_round)
    mem = {k: peak_memory(s, x, samples) for k, s in steppers.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "size": size,
        "batch": args.batch,
        "max_abs_logit_diff": diff,
        "step_s": med,
        "img_per_s": {k: args.batch / v for k, v in med.items()},
        "peak_mib": mem,
        "ratio": med["VitMixViT"] / med["mmseg VisionTransformer"],
        "steps_timed": len(times["VitMixViT"]),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    import timm

    rows = [bench_size(args, s, device) for s in args.sizes]
    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
    else:
        dev_name = f"CPU ({torch.get_num_threads()} threads)"
    print(f"# {os.path.basename(args.config)}: training step (loss + backward + SGD), batch {args.batch}, "
          f"amp {args.amp}, {dev_name}")
    print(f"# torch {torch.__version__}, timm {timm.__version__}, python {platform.python_version()}, "
          f"{datetime.date.today().isoformat()}")
    print()
    print("| crop | batch | VitMixViT step (ms) | MMSeg ViT step (ms) | ratio (ours / MMSeg) | "
          "VitMixViT peak MiB | MMSeg ViT peak MiB | max logit diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, b = r["step_s"]["VitMixViT"], r["step_s"]["mmseg VisionTransformer"]
        ma, mb = r["peak_mib"]["VitMixViT"], r["peak_mib"]["mmseg VisionTransformer"]
        fmt = lambda m: "n/a (CPU)" if m != m else f"{m:.0f}"  # noqa: E731
        print(f"| {r['size']}x{r['size']} | {r['batch']} | {a * 1e3:.1f} | {b * 1e3:.1f} | {r['ratio']:.3f} | "
              f"{fmt(ma)} | {fmt(mb)} | {r['max_abs_logit_diff']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": dev_name, "torch": torch.__version__, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
