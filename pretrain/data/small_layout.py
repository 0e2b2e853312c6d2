"""The published on-disk layouts of CIFAR-10, CIFAR-100 and Tiny ImageNet, as names only.

The readers (:mod:`pretrain.data.small`) and the synthetic stand-ins
(:mod:`pretrain.synthetic.small`) share these names, so a writer cannot drift from what the
reader expects. Nothing here imports torch.
"""

from __future__ import annotations

__all__ = ["SMALL_FORMATS", "NUM_CLASSES", "NATIVE_SIZE", "ARCHIVE_FOLDERS", "CIFAR_FILES",
           "CIFAR_LABEL_KEYS", "CIFAR_NAMES_KEYS", "TINY_IMAGENET_WNIDS", "check_format"]

SMALL_FORMATS = ("cifar10", "cifar100", "tiny_imagenet")

#: Classes of the real datasets.
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "tiny_imagenet": 200}
#: Image side in pixels.
NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "tiny_imagenet": 64}
#: The folder that each official archive extracts to.
ARCHIVE_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python",
                   "tiny_imagenet": "tiny-imagenet-200"}
#: CIFAR python pickles per split, and the meta file (class names).
CIFAR_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"], "meta": "batches.meta"},
    "cifar100": {"train": ["train"], "val": ["test"], "meta": "meta"},
}
#: The label list of a batch (CIFAR-100: the fine labels; ``coarse_labels`` is kept beside it).
CIFAR_LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}
#: The class-name list of the meta file.
CIFAR_NAMES_KEYS = {"cifar10": "label_names", "cifar100": "fine_label_names"}
#: Tiny ImageNet's class list (one wnid a line, not sorted in the real file).
TINY_IMAGENET_WNIDS = "wnids.txt"


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`SMALL_FORMATS`, else a ``ValueError`` listing them."""
    if fmt not in SMALL_FORMATS:
        raise ValueError(f"unknown small dataset format {fmt!r}; expected one of {', '.join(SMALL_FORMATS)}")
    return fmt
