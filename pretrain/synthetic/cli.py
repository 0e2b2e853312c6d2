"""``vitmix-make-synthetic``: write the synthetic world in any of its layouts.

Examples::

    vitmix-make-synthetic --out data/synthetic                          # ImageNet, ADE20K, COCO, VOC
    vitmix-make-synthetic --out /tmp/tiny --train-per-class 20 --only imagenet,voc
    vitmix-make-synthetic --format cifar100 --out data/synthetic_small --num-classes 10
    vitmix-make-synthetic --format tiny_imagenet --out data/small --num-classes 20

``--format world`` (the default) writes the ImageNet folder / ADE20K / COCO / VOC sets under
``OUT`` (``--only`` picks some); running it again with the same parameters finds the complete
set (recorded in ``OUT/synthetic.json``) and exits at once. ``--format cifar10|cifar100|tiny_imagenet``
writes a stand-in in that dataset's published layout to ``OUT/cifar-10-batches-py``,
``OUT/cifar-100-python`` or ``OUT/tiny-imagenet-200`` (rewritten on every call).
``tools/make_synthetic.py`` and ``tools/make_synthetic_small.py`` call :func:`main` and
:func:`main_small`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .generator import SUBSETS, default_params, generate
from .small import SMALL_FORMATS, write_synthetic_small

__all__ = ["build_parser", "main", "main_small"]

_DESCRIPTION = ("Write the synthetic world: its ImageNet folder / ADE20K / COCO / VOC sets (--format world), "
                "or a CIFAR-10 / CIFAR-100 / Tiny ImageNet stand-in in that dataset's published layout.")
_EPILOG = "examples:\n" + "\n".join("  " + ln[4:] for ln in __doc__.splitlines() if ln.startswith("    vitmix-"))

FORMATS = ("world",) + SMALL_FORMATS
#: defaults of the options shared by both kinds of output: (world, small sets)
_SHARED = {"seed": (0, 0), "num_classes": (10, 10), "train_per_class": (200, 50), "val_per_class": (40, 10)}
_WORLD_ONLY = ("cls_size", "seg_size", "seg_train", "seg_val", "coco_train", "coco_val", "voc_val",
               "jpeg_quality", "min_area", "only", "force")


def _human(n: float) -> str:
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


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of :func:`main`; options the chosen ``--format`` does not use stay None."""
    d = default_params()
    p = argparse.ArgumentParser(prog=prog, description=_DESCRIPTION, epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", default="world", choices=FORMATS,
                   help="world: the ImageNet/ADE20K/COCO/VOC sets (default); or one small dataset's layout")
    shared = p.add_argument_group("all formats (defaults: world / small sets)")
    for name, (dw, ds) in _SHARED.items():
        shared.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"default {dw} / {ds}")
    w = p.add_argument_group("--format world only")
    w.add_argument("--cls-size", type=int, help=f"side of the classification (ImageNet/VOC) images "
                                                f"(default {d['cls_size']})")
    w.add_argument("--seg-size", help=f"size of the ADE/COCO images: N or WxH (default {d['seg_size']})")
    for name in ("seg_train", "seg_val", "coco_train", "coco_val", "voc_val", "jpeg_quality"):
        w.add_argument("--" + name.replace("_", "-"), type=int, help=f"default {d[name]}")
    w.add_argument("--min-area", type=int,
                   help=f"objects with fewer visible pixels get no COCO/VOC annotation (default {d['min_area']})")
    w.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SUBSETS)} (default: all)")
    w.add_argument("--force", action="store_true", default=None, help="regenerate even if complete")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-subset progress lines")
    return p


def _run_world(args: argparse.Namespace) -> int:
    d = default_params()
    for name, (dw, _) in _SHARED.items():
        d[name] = dw if getattr(args, name) is None else getattr(args, name)
    for name in _WORLD_ONLY:
        if name not in ("only", "force") and getattr(args, name) is not None:
            d[name] = getattr(args, name)
    t0 = time.perf_counter()
    try:
        manifest = generate(args.out, **d, only=args.only, force=bool(args.force), verbose=not args.quiet)
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


def _run_small(fmt: str, out: str, num_classes: int, train_per_class: int, val_per_class: int, seed: int) -> int:
    t0 = time.perf_counter()
    try:
        path = write_synthetic_small(out, fmt, num_classes=num_classes, train_per_class=train_per_class,
                                     val_per_class=val_per_class, seed=seed)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{fmt}: {num_classes} classes, {num_classes * train_per_class} train / "
          f"{num_classes * val_per_class} val images in {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


def main(argv=None) -> int:
    """``vitmix-make-synthetic`` (and ``tools/make_synthetic.py``); returns the exit status."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.format == "world":
        return _run_world(args)
    given = [n for n in _WORLD_ONLY if getattr(args, n) is not None]
    if given:
        p.error(f"--{given[0].replace('_', '-')} applies to --format world only, not {args.format}")
    v = {name: (ds if getattr(args, name) is None else getattr(args, name)) for name, (_, ds) in _SHARED.items()}
    return _run_small(args.format, args.out, **v)


def main_small(argv=None) -> int:
    """``tools/make_synthetic_small.py``: ``--format`` is required and names a small dataset."""
    p = argparse.ArgumentParser(
        description="Write a small learnable stand-in for CIFAR-10, CIFAR-100 or Tiny ImageNet in the real "
                    "on-disk layout (the same as vitmix-make-synthetic --format FORMAT).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--format", required=True, choices=SMALL_FORMATS, help="on-disk layout to write")
    p.add_argument("--out", required=True, help="folder that receives the dataset folder")
    for name, (_, ds) in _SHARED.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, default=ds)
    a = p.parse_args(argv)
    return _run_small(a.format, a.out, a.num_classes, a.train_per_class, a.val_per_class, a.seed)


if __name__ == "__main__":
    sys.exit(main())
