#!/usr/bin/env python
"""Write a small learnable stand-in for CIFAR-10, CIFAR-100 or Tiny ImageNet in the real on-disk layout.

Examples::

    python tools/make_synthetic_small.py --format cifar100 --out data/small
    python tools/make_synthetic_small.py --format tiny_imagenet --out data/small --num-classes 20
    # then train with data.format=cifar100 data.root=data/small (reads data/small/cifar-100-python)

The files go to ``OUT/cifar-10-batches-py``, ``OUT/cifar-100-python`` or ``OUT/tiny-imagenet-200``
(the folder names of the official archives), which is printed at the end. Layouts and the
readers: docs/data_small.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.data.small import SMALL_FORMATS, write_synthetic_small  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--format", required=True, choices=SMALL_FORMATS, help="on-disk layout to write")
    p.add_argument("--out", required=True, help="folder that receives the dataset folder")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=50)
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    t0 = time.perf_counter()
    try:
        path = write_synthetic_small(a.out, a.format, num_classes=a.num_classes,
                                     train_per_class=a.train_per_class, val_per_class=a.val_per_class, seed=a.seed)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.format}: {a.num_classes} classes, {a.num_classes * a.train_per_class} train / "
          f"{a.num_classes * a.val_per_class} val images in {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
