#!/usr/bin/env python
"""Generate the synthetic shapes world in ImageNet / ADE20K / COCO / VOC layouts.

Example::

    python tools/make_synthetic.py --out data/synthetic
    python tools/make_synthetic.py --out /tmp/tiny --train-per-class 20 --only imagenet,voc

Running it again with the same parameters finds the complete set (recorded in
``OUT/synthetic.json``) and exits at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.data.synthetic import SUBSETS, default_params, generate  # noqa: E402


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _dir_size(path: Path) -> tuple[int, int]:
    total = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += 1
    return total, files


def parse_args(argv=None) -> argparse.Namespace:
    d = default_params()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--num-classes", type=int, default=d["num_classes"])
    p.add_argument("--cls-size", type=int, default=d["cls_size"],
                   help="side of the classification (ImageNet/VOC) images")
    p.add_argument("--seg-size", default=str(d["seg_size"]),
                   help="size of the ADE/COCO images: N or WxH")
    p.add_argument("--train-per-class", type=int, default=d["train_per_class"])
    p.add_argument("--val-per-class", type=int, default=d["val_per_class"])
    p.add_argument("--seg-train", type=int, default=d["seg_train"])
    p.add_argument("--seg-val", type=int, default=d["seg_val"])
    p.add_argument("--coco-train", type=int, default=d["coco_train"])
    p.add_argument("--coco-val", type=int, default=d["coco_val"])
    p.add_argument("--voc-val", type=int, default=d["voc_val"])
    p.add_argument("--jpeg-quality", type=int, default=d["jpeg_quality"])
    p.add_argument("--min-area", type=int, default=d["min_area"],
                   help="objects with fewer visible pixels get no COCO/VOC annotation")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of {','.join(SUBSETS)} (default: all)")
    p.add_argument("--force", action="store_true", help="regenerate even if complete")
    p.add_argument("-q", "--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        manifest = generate(
            args.out, seed=args.seed, num_classes=args.num_classes, cls_size=args.cls_size,
            seg_size=args.seg_size, train_per_class=args.train_per_class,
            val_per_class=args.val_per_class, seg_train=args.seg_train, seg_val=args.seg_val,
            coco_train=args.coco_train, coco_val=args.coco_val, voc_val=args.voc_val,
            only=args.only, jpeg_quality=args.jpeg_quality, min_area=args.min_area,
            force=args.force, verbose=not args.quiet,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    if not manifest["generated"]:
        print(f"{out}: already complete (same parameters), nothing written [{elapsed:.2f}s]")
        return 0
    print(f"wrote {', '.join(manifest['generated'])} to {out} in {elapsed:.1f}s "
          f"({manifest['params']['num_classes']} classes, seed {manifest['params']['seed']})")
    for name, entry in manifest["sets"].items():
        size, files = _dir_size(out / name)
        tag = "" if name in manifest["generated"] else "  (kept)"
        print(f"  {name:9s} {files:6d} files {_human(size):>10s}  {entry['images']}{tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
