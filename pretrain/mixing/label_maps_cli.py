"""``vitmix-make-label-maps``: precompute TokenMix's dense label maps with a frozen teacher (whole
images, no crop), for ``mixer: {name: tokenmix, target: label_map, label_maps: OUT}``.

    vitmix-make-label-maps --data data/synthetic/imagenet/train --out runs/label_maps \
        --teacher-checkpoint runs/synthetic_cutmix/model.safetensors
    vitmix-make-label-maps --data /data/imagenet/train --out /data/label_maps_resnet50 \
        --teacher resnet50 --teacher-checkpoint resnet50.pth --input-size 224 --map cam --classes label

(``python tools/make_label_maps.py`` is the same command; ``torchrun --nproc-per-node 2
tools/make_label_maps.py ...`` splits the images over 2 processes.) Writes ``maps.npy`` (N, h, w)
float16, ``index.txt`` and ``meta.json`` into ``--out`` (the format :mod:`pretrain.data.label_maps`
reads); files are written to temporary names and renamed at the end. The teacher is built by
:func:`pretrain.mixing.teachers.build_external` and its maps come from its ``maps`` method (CLS
attention, CAM or activation), as in TokenMix ("TokenMix: Rethinking Image Mixing for Data
Augmentation in Vision Transformers", Liu et al., ECCV 2022, arXiv:2207.08409; official code
Sense-X/TokenMix), whose targets are precomputed teacher maps cropped to each view.

The images are cut into shards of ``--shard-size`` (:mod:`pretrain.jobs`): each finished shard is kept
in ``--work-dir`` (default ``OUT/.shards``) until the maps are written, so a rerun after a kill skips the
finished ones; the outputs do not depend on the number of processes. An unreadable image (corrupt,
truncated, zero bytes) is logged and skipped: its row of ``maps.npy`` is zeros and ``meta.json`` lists it
under ``unreadable`` (the training dataset skips the same file, so the row is never read).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from .. import jobs
from ..data.folders import RobustImageFolder
from ..dist import cleanup
from .teachers import build_external


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write the label maps; returns 0 (a missing or empty data folder exits with a message)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ImageNet-style split folder: DATA/<class>/<image>")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--teacher", default=None, help="timm model name (optional for this project's checkpoints)")
    ap.add_argument("--teacher-checkpoint", default=None, help=".safetensors / .pth weights of the teacher")
    ap.add_argument("--random-init", action="store_true", help="random teacher weights (tests only)")
    ap.add_argument("--input-size", type=int, default=None, help="square teacher input size (default: the "
                    "teacher's own for fixed-size ViTs, else 224)")
    ap.add_argument("--map", default="auto", choices=["auto", "attention", "cam", "activation"])
    ap.add_argument("--classes", default="label", choices=["label", "pred"],
                    help="CAM of the ground-truth class or of the teacher's prediction")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="auto", help="auto (this rank's GPU, else CPU), cpu, cuda, cuda:1, ...")
    jobs.add_job_args(ap, "maps")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        return _run(args)
    except jobs.JobError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        cleanup()


def _run(args) -> int:
    from torchvision import transforms as T
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if not os.path.isdir(args.data):
        raise SystemExit(f"error: data folder not found: {args.data}")
    ctx = jobs.start_job(args.device)
    spec = {"name": args.teacher, "checkpoint": args.teacher_checkpoint, "random_init": args.random_init}
    teacher = build_external(spec, "label-map teacher").to(ctx.device)
    size = args.input_size or (teacher.input_size[0] if teacher.input_size else 224)
    tf = T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                    T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    # The training dataset's class rule (hidden folders are no classes), so index.txt and the labels
    # line up with what the engine reads; unreadable images are logged and skipped (zero maps).
    ds = RobustImageFolder(args.data, transform=tf)
    if len(ds) == 0:
        raise SystemExit(f"error: no images under {args.data}")
    shard_size = jobs.shard_size_for(args.shard_size, args.batch_size)
    shards = jobs.make_shards(len(ds), shard_size)
    work = args.work_dir or os.path.join(args.out, ".shards")
    ckpt = jobs.fingerprint(os.path.abspath(args.teacher_checkpoint)) if args.teacher_checkpoint else None
    params = {"teacher": args.teacher, "checkpoint": ckpt, "random_init": args.random_init, "map": args.map,
              "classes": args.classes, "input_size": size, "batch_size": args.batch_size,
              "device": ctx.device.type, "torch": torch.__version__}
    store = jobs.ShardStore(work, "label_maps", params)
    use_labels = args.classes == "label"

    def compute(shard, bad_log, bar):
        maps, first = None, 0  # first: the batch's position in the shard
        for item in jobs.shard_loader(ds, shard, args.batch_size, args.workers, ctx.device, bad_log,
                                      split="label maps", bar=bar):
            if item.batch is not None:
                images, labels = (t.to(ctx.device) for t in item.batch)
                m = teacher.maps(images, args.map, labels if use_labels else None).float().cpu()
                if maps is None:
                    maps = torch.zeros((len(shard), *m.shape[1:]), dtype=torch.float16)
                maps[first + torch.nonzero(item.present).flatten()] = torch.from_numpy(m.numpy().astype(np.float16))
            first += int(item.present.numel())
        return maps  # None when no image of the shard was readable

    report = jobs.run_shards("label_maps", shards, compute, store,
                             lambda s: jobs.file_inputs(ds.samples[s.start:s.stop]), ctx, resume=args.resume,
                             progress=jobs.progress_enabled(args.progress, ctx))
    if not ctx.is_main:
        jobs.finish_job(work, ctx)
        return 0
    shape = next((tuple(r.shape[1:]) for r in report.results if r is not None), None)
    if shape is None:
        raise SystemExit(f"error: no readable image under {args.data} ({len(report.unreadable)} unreadable)")
    os.makedirs(args.out, exist_ok=True)
    tmp_maps = os.path.join(args.out, ".tmp-maps.npy")
    maps = np.lib.format.open_memmap(tmp_maps, mode="w+", dtype=np.float16, shape=(len(ds), *shape))
    for s, r in zip(shards, report.results):
        maps[s.start:s.stop] = r.numpy() if r is not None else 0
    maps.flush()
    del maps
    with open(os.path.join(args.out, ".tmp-index.txt"), "w") as f:
        for p, _ in ds.samples:
            f.write(os.path.relpath(p, ds.root) + "\n")
    meta = {"teacher": args.teacher, "checkpoint": args.teacher_checkpoint, "map": args.map,
            "classes": args.classes, "input_size": size, "images": len(ds), "classes_list": ds.classes}
    if report.unreadable:
        meta["unreadable"] = [[os.path.relpath(p, ds.root), r] for p, r in report.unreadable]
    with open(os.path.join(args.out, ".tmp-meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    for name in ("maps.npy", "index.txt", "meta.json"):
        tmp = os.path.join(args.out, ".tmp-" + name)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(args.out, name))
    if not args.keep_shards:
        store.remove(shards)
    jobs.finish_job(work, ctx)
    jobs.log_summary(report)
    print(f"wrote {len(ds)} maps to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
