#!/usr/bin/env python
"""Mask R-CNN training-step time: our ViT backbone against each framework's own
reference detector, in MMDetection and in Detectron2, measured side by side in
one run.

    python tools/bench_detection.py                                 # CPU, small size
    python tools/bench_detection.py --device cuda --amp bf16 --size 1024 --batch 2 --iters 20

Per framework two models are built from configs: ours (the DeiT Mask R-CNN
config of this repository, ViTDet recipe: windows + global blocks, relative
positions, simple feature pyramid) and the framework's own reference, a
ResNet-50 FPN Mask R-CNN (MMDetection's ``mask-rcnn_r50_fpn_1x_coco``,
Detectron2's model-zoo ``common/models/mask_rcnn_fpn.py``); neither MMDetection
3.3.0's installed package nor Detectron2 0.6 ships a ViTDet backbone, whose
``projects/`` code is not installed. Every model gets the same random images
and the same ground truth (boxes with elliptic masks), 80 classes, random
weights (no download). A step is the framework's preprocessing, forward with
losses, backward and an AdamW update; the models are timed round-robin after
warm-up, and the median step time and the ratio to the framework's reference
are printed as a markdown table. "pyramid only" rows time the same models'
feature extraction alone (preprocessing, backbone and neck forward, backward
of the mean of the pyramid), which separates the backbone from the heads: the
ViTDet recipe's 4conv1fc box head is heavier than the reference's 2fc head.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # for the config paths


def make_ground_truth(batch: int, size: int, per_image: int, num_classes: int, seed: int = 0):
    """Random boxes (xyxy), labels and elliptic masks: lists of (n, 4) float, (n,) int, (n, H, W) uint8."""
    rng = np.random.default_rng(seed)
    images, boxes, labels, masks = [], [], [], []
    for _ in range(batch):
        images.append(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
        wh = rng.uniform(0.08, 0.5, size=(per_image, 2)) * size
        xy = rng.uniform(0, 1, size=(per_image, 2)) * (size - wh)
        b = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        yy, xx = np.mgrid[0:size, 0:size]
        m = np.zeros((per_image, size, size), np.uint8)
        for i, (x0, y0, x1, y1) in enumerate(b):
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            m[i] = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8)
        boxes.append(b)
        labels.append(rng.integers(0, num_classes, size=per_image))
        masks.append(m)
    return images, boxes, labels, masks


def _autocast(device: str, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# ------------------------------------------------------------------ MMDetection
def mmdet_models(args) -> Dict[str, Callable[[], None]]:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData

    register_all_modules(init_default_scope=False)
    init_default_scope("mmdet")
    import downstream.mmdet  # noqa: F401

    ours = Config.fromfile(os.path.join(REPO, "configs", "mmdet", f"mask-rcnn_vitmix-deit-{args.arch}_vitdet-100e_coco.py"))
    import mmdet

    mim_cfgs = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs")
    ref = Config.fromfile(os.path.join(mim_cfgs, "mask_rcnn", "mask-rcnn_r50_fpn_1x_coco.py"))
    ref.model.backbone.init_cfg = None  # random weights: nothing to download
    if args.window_size is not None:
        ours.model.backbone.window_size = args.window_size
    # the inputs already have the fixed training size (the LSJ pad to 1024 would change the workload)
    ours.model.data_preprocessor.batch_augments = None
    images, boxes, labels, masks = make_ground_truth(args.batch, args.size, args.per_image, 80)

    def batch():
        samples = []
        for b, lab, m in zip(boxes, labels, masks):
            s = DetDataSample(metainfo=dict(img_shape=(args.size, args.size), ori_shape=(args.size, args.size),
                                            scale_factor=(1.0, 1.0)))
            gt = InstanceData()
            gt.bboxes = torch.from_numpy(b)
            gt.labels = torch.from_numpy(lab).long()
            gt.masks = BitmapMasks(m, args.size, args.size)
            s.gt_instances = gt
            samples.append(s)
        # MMDet loads BGR; the preprocessor converts
        return {"inputs": [torch.from_numpy(i[..., ::-1].copy()).permute(2, 0, 1) for i in images], "data_samples": samples}

    steps = {}
    for name, cfg in (("ours (DeiT-%s ViTDet)" % args.arch.upper(), ours), ("reference (R50-FPN)", ref)):
        model = MODELS.build(cfg.model).to(args.device).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        data = batch()

        def step(model=model, opt=opt, data=data):
            d = model.data_preprocessor(data, True)
            with _autocast(args.device, args.amp):
                losses = model(**d, mode="loss")
            loss, _ = model.parse_losses(losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def features(model=model, data=data):
            d = model.data_preprocessor(data, True)
            with _autocast(args.device, args.amp):
                feats = model.extract_feat(d["inputs"])  # backbone (+ neck): the feature pyramid
            sum(f.float().mean() for f in feats).backward()
            model.zero_grad(set_to_none=True)

        steps[name] = step
        steps[name.replace(" (", " pyramid only (", 1)] = features
    return steps


# ------------------------------------------------------------------ Detectron2
def d2_models(args) -> Dict[str, Callable[[], None]]:
    from detectron2 import model_zoo
    from detectron2.config import LazyConfig, instantiate
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    ours = LazyConfig.load(os.path.join(REPO, "configs", "detectron2", f"mask_rcnn_vitmix_deit_{args.arch}_100ep.py"))
    if args.window_size is not None:
        ours.model.backbone.window_size = args.window_size
    ours.model.backbone.square_pad = args.size  # time the benchmark's square, not the recipe's 1024 training square
    ref = model_zoo.get_config("common/models/mask_rcnn_fpn.py")
    images, boxes, labels, masks = make_ground_truth(args.batch, args.size, args.per_image, 80)

    steps = {}
    for name, cfg, fmt in (("ours (DeiT-%s ViTDet)" % args.arch.upper(), ours, "RGB"), ("reference (R50-FPN)", ref, "BGR")):
        model = instantiate(cfg.model).to(args.device).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        data = []
        for img, b, lab, m in zip(images, boxes, labels, masks):
            inst = Instances((args.size, args.size))
            inst.gt_boxes = Boxes(torch.from_numpy(b))
            inst.gt_classes = torch.from_numpy(lab).long()
            inst.gt_masks = BitMasks(torch.from_numpy(m).bool())
            arr = img if fmt == "RGB" else img[..., ::-1]
            data.append({"image": torch.from_numpy(arr.copy()).permute(2, 0, 1), "instances": inst,
                         "height": args.size, "width": args.size})

        def step(model=model, opt=opt, data=data):
            with EventStorage(0):
                with _autocast(args.device, args.amp):
                    losses = model(data)
                loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def features(model=model, data=data):
            images = model.preprocess_image(data)
            with _autocast(args.device, args.amp):
                feats = model.backbone(images.tensor)  # the feature pyramid
            sum(f.float().mean() for f in feats.values()).backward()
            model.zero_grad(set_to_none=True)

        steps[name] = step
        steps[name.replace(" (", " pyramid only (", 1)] = features
    return steps


def time_round_robin(steps: Dict[str, Callable[[], None]], warmup: int, iters: int, device: str) -> Dict[str, List[float]]:
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps}
    for _ in range(iters):
        for k, fn in steps.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--arch", default="t", choices=["t", "s", "b"], help="DeiT size of our backbone")
    p.add_argument("--size", type=int, default=384, help="square image side (a multiple of 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--per-image", type=int, default=6, help="ground-truth objects per image")
    p.add_argument("--window-size", type=int, default=None, help="override the config's window size")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--frameworks", default="mmdet,detectron2")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.size % 32:
        p.error("--size must be a multiple of 32")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for fw in args.frameworks.split(","):
        steps = {"mmdet": mmdet_models, "detectron2": d2_models}[fw](args)
        times = time_round_robin(steps, args.warmup, args.iters, args.device)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            ref = "reference pyramid only (R50-FPN)" if "pyramid only" in k else "reference (R50-FPN)"
            rows.append({"framework": fw, "model": k, "ms_per_step": 1000 * v, "ratio_to_reference": v / med[ref],
                         "samples": len(times[k])})

    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nMask R-CNN training step, {args.batch} x {args.size}x{args.size}, {args.per_image} objects/image, "
          f"80 classes, amp={args.amp}, {dev}, torch {torch.__version__}; median of {args.iters} (after {args.warmup} warm-up)\n")
    print("| framework | model | ms / step | ratio to the framework's reference |")
    print("|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['framework']} | {r['model']} | {r['ms_per_step']:.0f} | {r['ratio_to_reference']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": dev, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
