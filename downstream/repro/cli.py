"""``vitmix-repro TABLE [args]``: run one reproduction table (the same as ``python tools/repro/TABLE.py``).

    vitmix-repro --list                                  # the tables
    vitmix-repro imagenet --nproc 8 --dry-run            # the exact commands of one table
    vitmix-repro ade20k --help                           # a table's own flags
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# table name (a module of downstream.repro.tables) -> what it reproduces
TABLES = {
    "imagenet": "ImageNet-1k pretraining: DeiT-T/S/B x DeiT / CutMix / TransMix / TokenMix",
    "ade20k": "ADE20K semantic segmentation: Linear and Segmenter heads",
    "coco": "COCO Mask R-CNN (ViTDet recipe), MMDetection or Detectron2",
    "peers": "TransMix Table 8: DeiT-S with mixing peers, top-1 and throughput",
    "robustness": "occlusion, patch shuffle, ImageNet-A of the ImageNet checkpoints",
    "attention": "attention quality: VOC Jaccard and WSOL from the CLS attention",
    "mixmo_cifar100": "MixMo on CIFAR-100 with WRN-28-10",
}


USAGE = """usage: vitmix-repro TABLE [flags]     (the same as: python tools/repro/TABLE.py [flags])
       vitmix-repro TABLE --help        (the table's flags: --dry-run, --scale, --only, --collect, ...)
       vitmix-repro --list"""


def _usage() -> str:
    width = max(map(len, TABLES))
    return (USAGE + "\n\ntables:\n"
            + "\n".join(f"  {name:{width}s}  {what}" for name, what in TABLES.items()) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch ``TABLE [args]`` to ``downstream.repro.tables.TABLE.main(args)``; returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(_usage(), end="", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "--list"):
        print(_usage(), end="")
        return 0
    name, rest = argv[0].replace("-", "_"), argv[1:]
    if name not in TABLES:
        print(f"error: unknown table {argv[0]!r}\n\n" + _usage(), end="", file=sys.stderr)
        return 2
    module = importlib.import_module(f"downstream.repro.tables.{name}")
    return module.main(rest, prog=f"vitmix-repro {name}")


if __name__ == "__main__":
    sys.exit(main())
