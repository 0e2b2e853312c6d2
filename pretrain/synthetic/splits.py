"""Labelled splits of one-object-per-image sets (the CIFAR and Tiny ImageNet stand-ins).

A split is a list of labels; image ``i`` shows world class ``classes[labels[i]]`` and is the
``index[i]``-th image of its label, rendered by :func:`.scenes.build_scene` from its own
generator ``(seed, subset/split, world class, index)``. An image therefore does not depend on
the class count, the number of images per class, or the order the split is stored in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .render import Scene
from .scenes import build_scene

__all__ = ["ClassificationSplit", "within_class_index", "class_major_split", "shuffled_split"]


def within_class_index(labels: np.ndarray) -> np.ndarray:
    """For labels ``(N,)``: int64 ``(N,)``, how many earlier entries have the same label."""
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=int(labels.max()) + 1 if labels.size else 0)
    starts = np.cumsum(counts) - counts
    index = np.empty_like(labels)
    index[order] = np.arange(labels.size) - np.repeat(starts, counts)
    return index


@dataclass(frozen=True)
class ClassificationSplit:
    """One split: ``labels`` int64 ``(N,)`` in ``[0, len(classes))`` and ``index`` int64 ``(N,)``
    (position within the label); label ``c`` shows world class ``classes[c]``."""

    subset: str  # the scene kind of scenes.build_scene: "cifar10", "cifar100", "tiny_imagenet"
    split: str  # "train" or "val"
    labels: np.ndarray
    index: np.ndarray
    classes: tuple[int, ...]
    seed: int
    size: int  # image side in pixels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def scene(self, i: int) -> Scene:
        """The scene of image ``i``."""
        return build_scene(self.subset, self.split, int(self.index[i]), seed=self.seed,
                           num_classes=max(self.classes) + 1, size=self.size,
                           label=self.classes[int(self.labels[i])])

    def scenes(self) -> Iterator[Scene]:
        """The scenes of images ``0..N-1`` in order, one at a time."""
        return (self.scene(i) for i in range(len(self)))

    def images(self) -> np.ndarray:
        """uint8 ``(N, size, size, 3)``: every image of the split."""
        out = np.empty((len(self), self.size, self.size, 3), np.uint8)
        for i, sc in enumerate(self.scenes()):
            out[i] = sc.image
        return out


def class_major_split(subset: str, split: str, classes: Sequence[int], per_class: int, *, seed: int,
                      size: int) -> ClassificationSplit:
    """``per_class`` images of label 0, then of label 1, ...: ``N = len(classes) * per_class``."""
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    return ClassificationSplit(subset, split, labels, within_class_index(labels), tuple(map(int, classes)),
                               int(seed), int(size))


def shuffled_split(rng: np.random.Generator, subset: str, split: str, classes: Sequence[int], per_class: int,
                   *, seed: int, size: int) -> ClassificationSplit:
    """``per_class`` images of every label in an order drawn from ``rng`` (one permutation)."""
    labels = rng.permutation(np.repeat(np.arange(len(classes), dtype=np.int64), per_class))
    return ClassificationSplit(subset, split, labels, within_class_index(labels), tuple(map(int, classes)),
                               int(seed), int(size))
