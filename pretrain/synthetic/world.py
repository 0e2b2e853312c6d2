"""The classes of the synthetic world: what tells class ``c`` apart from the others.

Every class has its own shape (disc, square, triangle, ...), its own texture (stripes,
checker, dots, ...) and a typical hue. Class ``c`` does not depend on how many classes
are asked for, so a 12-class world extends the 10-class one. This module holds only the
class descriptions; how an object of a class looks on screen is :mod:`.shapes`,
:mod:`.textures` and :mod:`.objects`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GENERATOR_VERSION", "SHAPES", "TEXTURES", "MAX_CLASSES", "ClassSpec",
           "check_num_classes", "class_specs", "class_names"]

#: Bump whenever the rendered ImageNet/ADE20K/COCO/VOC output changes; stored in the
#: manifest so that an output directory made by an older generator is regenerated, not reused.
GENERATOR_VERSION = 1

#: Shape ``i`` is paired with texture ``i`` for the first ``len(SHAPES)`` classes.
SHAPES = (
    "disc", "square", "triangle", "ring", "cross",
    "star", "diamond", "hexagon", "crescent", "ellipse",
)
TEXTURES = (
    "spokes", "dots", "hstripes", "solid", "checker",
    "vstripes", "rings", "diagonal", "grid", "antidiagonal",
)
#: Every (shape, texture) pair is one class at most.
MAX_CLASSES = len(SHAPES) * len(TEXTURES)


@dataclass(frozen=True)
class ClassSpec:
    """One class: its index, name, shape, texture and class-typical hue in [0, 1)."""

    index: int
    name: str
    shape: str
    texture: str
    hue: float


def check_num_classes(num_classes: int) -> int:
    """``int(num_classes)`` when it is in ``[1, MAX_CLASSES]``, else a ``ValueError``."""
    num_classes = int(num_classes)
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    return num_classes


def class_specs(num_classes: int = 10) -> list[ClassSpec]:
    """The ``num_classes`` class descriptions in index order.

    Classes ``0..9`` pair shape ``c`` with texture ``c``. Beyond that the pairing is
    shifted by ``c // 10`` so that every (shape, texture) pair is unique; the hues of
    classes ``10..19`` (and every other decade) sit halfway between those of ``0..9``.
    """
    num_classes = check_num_classes(num_classes)
    n_s, n_t = len(SHAPES), len(TEXTURES)
    specs = []
    for c in range(num_classes):
        s = c % n_s
        t = (s + c // n_s) % n_t
        hue = ((c % n_s) / n_s + 0.05 * ((c // n_s) % 2)) % 1.0
        name = f"class{c:02d}_{SHAPES[s]}_{TEXTURES[t]}"
        specs.append(ClassSpec(c, name, SHAPES[s], TEXTURES[t], hue))
    return specs


def class_names(num_classes: int = 10) -> list[str]:
    """Class names in index order; they also sort in index order."""
    return [s.name for s in class_specs(num_classes)]
