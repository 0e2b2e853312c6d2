"""``write_synthetic_small()``: CIFAR-10 / CIFAR-100 / Tiny ImageNet stand-ins drawn from the synthetic world.

The images are one-object scenes of the world (:data:`.scenes.ONE_OBJECT_SCENES`: a close-up
of an object of the class's layout of parts, on the world's cluttered background)
rendered at the dataset's side, 32 px (CIFAR) or 64 px (Tiny ImageNet), by the same core as
the ImageNet-style folder, and written in the published layout of the dataset so that
:mod:`pretrain.data.small` reads them as it reads the real files.
"""

from __future__ import annotations

import json
import os
import shutil

from ..data.small_layout import ARCHIVE_FOLDERS, NATIVE_SIZE, SMALL_FORMATS, check_format
from .formats.cifar import write_cifar
from .formats.tiny_imagenet import write_tiny_imagenet
from .scenes import image_rng
from .splits import class_major_split, shuffled_split
from .world import MAX_CLASSES, class_specs

__all__ = ["SMALL_FORMATS", "SMALL_VERSION", "MARKER", "stand_in_classes", "tiny_imagenet_wnids",
           "write_synthetic_small"]

#: Version of the stand-ins' content, stored in :data:`MARKER`. 1: hue + texture fields
#: (before the world rendered them); 2: scenes of the synthetic world; 3: scenes of the
#: world of layouts of parts (generator version 2).
SMALL_VERSION = 3
#: File in the written folder that marks it as a synthetic stand-in (and so replaceable).
MARKER = ".synthetic_small.json"


def stand_in_classes(num_classes: int) -> list[int]:
    """The world classes that the labels ``0..K-1`` of a ``K``-class stand-in show.

    Up to 10 classes: every ``10 / K``-th of the world's first ten (``c * 10 // K``), whose hue
    triples are spread around the colour circle (4 classes: world classes 0, 2, 5, 7); from 10
    classes on, the first ``K``.
    """
    if not 1 <= int(num_classes) <= MAX_CLASSES:
        raise ValueError(f"num_classes must be >= 1 and at most {MAX_CLASSES} (the classes of the synthetic "
                         f"world), got {num_classes}")
    k = int(num_classes)
    return [c * 10 // k for c in range(k)] if k <= 10 else list(range(k))


def tiny_imagenet_wnids(num_classes: int) -> list[str]:
    """Made-up wnids ``n9...`` of classes ``0..K-1``; they increase with the class, so sorted order = class order."""
    return [f"n{90000000 + 1013 * c:08d}" for c in range(num_classes)]


def write_synthetic_small(root: str, fmt: str, num_classes: int = 10, train_per_class: int = 50,
                          val_per_class: int = 10, seed: int = 0) -> str:
    """Write a small learnable dataset in the real on-disk layout of ``fmt`` and return its folder.

    Label ``c`` is a class of the synthetic world (:func:`stand_in_classes`: spread over the
    first ten for up to 10 classes, else class ``c``; at most
    :data:`~pretrain.synthetic.world.MAX_CLASSES` classes); each image is a close-up of one
    object of it. The folder is ``root/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``,
    ``batches.meta``), ``root/cifar-100-python`` (``train``, ``test``, ``meta``; fine labels,
    coarse label ``c // 5``) or ``root/tiny-imagenet-200`` (``wnids.txt`` in shuffled order,
    ``words.txt``, ``train/<wnid>/images/<wnid>_<i>.JPEG`` + ``<wnid>_boxes.txt``,
    ``val/images/val_<i>.JPEG`` + ``val/val_annotations.txt``; every 20th image of a split,
    from its 8th on, is saved as a grayscale JPEG). CIFAR class names are the world's class
    names; Tiny ImageNet wnids increase with the label, so label ``c`` is the ``c``-th wnid.

    The output depends only on the arguments (deterministic for a seed). It is written to a
    temporary folder and renamed into place; an existing folder is replaced only if it was
    written by this function (``FileExistsError`` for anything else, e.g. a real dataset).
    """
    fmt = check_format(fmt)
    num_classes, train_per_class, val_per_class = int(num_classes), int(train_per_class), int(val_per_class)
    classes = stand_in_classes(num_classes)
    specs = [class_specs(max(classes) + 1)[c] for c in classes]
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError("train_per_class and val_per_class must be >= 1")
    if fmt == "cifar10" and num_classes * train_per_class < 5:
        raise ValueError("cifar10 needs at least 5 training images (one per data_batch file)")
    if int(seed) < 0:
        raise ValueError("seed must be non-negative")
    seed = int(seed)
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    dest = os.path.join(root, ARCHIVE_FOLDERS[fmt])
    if os.path.exists(dest) and not os.path.isfile(os.path.join(dest, MARKER)):
        raise FileExistsError(f"{dest} exists and was not written by write_synthetic_small; not replacing it")
    tmp = f"{dest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    size = NATIVE_SIZE[fmt]
    layout = image_rng(seed, fmt, "layout", num_classes, train_per_class, val_per_class)
    try:
        if fmt == "tiny_imagenet":
            train = class_major_split(fmt, "train", classes, train_per_class, seed=seed, size=size)
            val = shuffled_split(layout, fmt, "val", classes, val_per_class, seed=seed, size=size)
            order = layout.permutation(num_classes)  # the real wnids.txt is not sorted either
            if num_classes > 1 and bool((order[1:] > order[:-1]).all()):
                order = order[::-1]
            words = [f"{s.name}: {len(s.cells)} parts in a {s.layout} layout" for s in specs]
            write_tiny_imagenet(tmp, tiny_imagenet_wnids(num_classes), words, order, train, val)
        else:
            train = shuffled_split(layout, fmt, "train", classes, train_per_class, seed=seed, size=size)
            val = shuffled_split(layout, fmt, "val", classes, val_per_class, seed=seed, size=size)
            write_cifar(tmp, fmt, [s.name for s in specs], train, val)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump({"format": fmt, "num_classes": num_classes, "train_per_class": train_per_class,
                       "val_per_class": val_per_class, "seed": seed, "version": SMALL_VERSION}, f)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
