"""``vitmix-make-label-maps``: precompute TokenMix's dense label maps with a frozen teacher (whole
images, no crop), for ``mixer: {name: tokenmix, target: label_map, label_maps: OUT}``.

    vitmix-make-label-maps --data data/synthetic/imagenet/train --out runs/label_maps \
        --teacher-checkpoint runs/synthetic_cutmix/model.safetensors
    vitmix-make-label-maps --data /data/imagenet/train --out /data/label_maps_resnet50 \
        --teacher resnet50 --teacher-checkpoint resnet50.pth --input-size 224 --map cam --classes label

(``python tools/make_label_maps.py`` is the same command.) Writes ``maps.npy`` (N, h, w) float16,
``index.txt`` and ``meta.json`` into ``--out`` (the format :mod:`pretrain.data.label_maps` reads);
files are written to temporary names and renamed at the end. The teacher is built by
:func:`pretrain.mixing.teachers.build_external` and its maps come from its ``maps`` method (CLS
attention, CAM or activation), as in TokenMix ("TokenMix: Rethinking Image Mixing for Data
Augmentation in Vision Transformers", Liu et al., ECCV 2022, arXiv:2207.08409; official code
Sense-X/TokenMix), whose targets are precomputed teacher maps cropped to each view.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch

from ..data.folders import RobustImageFolder
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
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    from torch.utils.data import DataLoader
    from torchvision import transforms as T
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if not os.path.isdir(args.data):
        raise SystemExit(f"error: data folder not found: {args.data}")
    spec = {"name": args.teacher, "checkpoint": args.teacher_checkpoint, "random_init": args.random_init}
    teacher = build_external(spec, "label-map teacher").to(torch.device(args.device))
    size = args.input_size or (teacher.input_size[0] if teacher.input_size else 224)
    tf = T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                    T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    # The training dataset's class rule (hidden folders are no classes), so index.txt and the labels
    # line up with what the engine reads; unreadable images are errors naming the file.
    ds = RobustImageFolder(args.data, transform=tf)
    if len(ds) == 0:
        raise SystemExit(f"error: no images under {args.data}")
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    maps = None
    pos = 0
    for images, labels in loader:
        images, labels = images.to(args.device), labels.to(args.device)
        m = teacher.maps(images, args.map, labels if args.classes == "label" else None).float().cpu()
        if maps is None:
            tmp_maps = os.path.join(args.out, ".tmp-maps.npy")
            maps = np.lib.format.open_memmap(tmp_maps, mode="w+", dtype=np.float16,
                                             shape=(len(ds), *m.shape[1:]))
        maps[pos:pos + m.shape[0]] = m.numpy().astype(np.float16)
        pos += m.shape[0]
    maps.flush()
    del maps
    with open(os.path.join(args.out, ".tmp-index.txt"), "w") as f:
        for p, _ in ds.samples:
            f.write(os.path.relpath(p, ds.root) + "\n")
    meta = {"teacher": args.teacher, "checkpoint": args.teacher_checkpoint, "map": args.map,
            "classes": args.classes, "input_size": size, "images": len(ds), "classes_list": ds.classes}
    with open(os.path.join(args.out, ".tmp-meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    for name in ("maps.npy", "index.txt", "meta.json"):
        os.replace(os.path.join(args.out, ".tmp-" + name), os.path.join(args.out, name))
    print(f"wrote {len(ds)} maps to {args.out} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
