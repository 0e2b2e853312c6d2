"""The classes of the synthetic world: what tells class ``c`` apart from the others.

A class is a *layout*: a connected set of 3-8 cells of a 3 x 3 grid (8-neighbour
connectivity), counted up to translation and a left-right mirror (an object is drawn
mirrored half of the time). There are :data:`MAX_CLASSES` = 162 such layouts. An object
of the class puts one *part* on each cell of its layout; each part takes a random small
shape (:data:`PART_SHAPES`) and a random texture (:data:`TEXTURES`), so neither says
anything about the class.

Colour is shared too. The world has :data:`NUM_HUES` hues; class ``c`` draws the hues of
its parts from its *hue triple* :func:`hue_triple` (each of the three on at least one
part). Every hue belongs to three of the first ten classes and two of them share at most
one hue, so one part (one or two patches of a ViT) leaves three candidate classes; only
two parts of different hues, or the arrangement of the parts, name the class. Telling
classes apart takes patches across the object, not the colour or texture of one patch.

Class ``c`` does not depend on how many classes are asked for, so a 12-class world
extends the 10-class one. This module holds only the class descriptions; how an object
looks on screen is :mod:`.shapes`, :mod:`.textures`, :mod:`.objects` and :mod:`.render`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["GENERATOR_VERSION", "PART_SHAPES", "TEXTURES", "NUM_HUES", "MAX_CLASSES", "ClassSpec",
           "check_num_classes", "layouts", "hue_triple", "hue_of", "class_specs", "class_names"]

#: Bump whenever the rendered ImageNet/ADE20K/COCO/VOC output changes; stored in the
#: manifest so that an output directory made by an older generator is regenerated, not reused.
#: 1: one shape + texture + hue per class; 2: layouts of parts with shared hues and textures.
GENERATOR_VERSION = 2

#: Shapes of single parts (compact ones that fit their disc; :func:`.shapes.shape_mask`).
PART_SHAPES = ("disc", "square", "triangle", "diamond", "hexagon", "star")
#: Textures of single parts (:func:`.textures.texture_weight`).
TEXTURES = (
    "spokes", "dots", "hstripes", "solid", "checker",
    "vstripes", "rings", "diagonal", "grid", "antidiagonal",
)
#: Hues ``h / NUM_HUES`` of the colour circle that parts are painted in.
NUM_HUES = 10

Cells = tuple[tuple[int, int], ...]  # (row, col) cells of the 3 x 3 grid, sorted

#: The first ten classes, by name: layouts that are easy to tell apart by eye.
_NAMED: dict[str, Cells] = {
    "tee": ((0, 0), (0, 1), (0, 2), (1, 1), (2, 1)),
    "plus": ((0, 1), (1, 0), (1, 1), (1, 2), (2, 1)),
    "ell": ((0, 0), (1, 0), (2, 0), (2, 1)),
    "bar": ((0, 0), (0, 1), (0, 2)),
    "pillar": ((0, 0), (1, 0), (2, 0)),
    "cup": ((0, 0), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)),
    "zigzag": ((0, 0), (0, 1), (1, 1), (2, 1), (2, 2)),
    "block": ((0, 0), (0, 1), (1, 0), (1, 1)),
    "diagonal": ((0, 0), (1, 1), (2, 2)),
    "frame": ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)),
}


def canonical(cells) -> Cells:
    """The representative of ``cells`` up to translation and a left-right mirror."""
    def shifted(cs):
        r0 = min(r for r, _ in cs)
        c0 = min(c for _, c in cs)
        return tuple(sorted((r - r0, c - c0) for r, c in cs))
    cells = list(cells)
    return min(shifted(cells), shifted([(r, -c) for r, c in cells]))


def _connected(cells: Cells) -> bool:
    todo, seen = [cells[0]], {cells[0]}
    rest = set(cells)
    while todo:
        r, c = todo.pop()
        for dr, dc in itertools.product((-1, 0, 1), repeat=2):
            n = (r + dr, c + dc)
            if n in rest and n not in seen:
                seen.add(n)
                todo.append(n)
    return len(seen) == len(cells)


@lru_cache(maxsize=None)
def layouts() -> tuple[tuple[str, Cells], ...]:
    """All class layouts in class order, as ``(name, cells)``.

    The ten named ones first, then the others sorted by (cell count, cells). Names of the
    unnamed ones are ``parts{n}_{k}``: the ``k``-th layout of ``n`` cells.
    """
    grid = [(r, c) for r in range(3) for c in range(3)]
    found = set()
    for n in range(3, 9):
        for cells in itertools.combinations(grid, n):
            if _connected(cells):
                found.add(canonical(cells))
    named = {canonical(cells): name for name, cells in _NAMED.items()}
    assert len(named) == len(_NAMED) and set(named) <= found
    out = [(name, canonical(cells)) for name, cells in _NAMED.items()]
    counts: dict[int, int] = {}
    for cells in sorted(found - set(named), key=lambda cs: (len(cs), cs)):
        k = counts[len(cells)] = counts.get(len(cells), 0) + 1
        out.append((f"parts{len(cells)}_{k}", cells))
    return tuple(out)


#: Every layout is one class at most: 162 (the tests count them by brute force).
MAX_CLASSES = len(layouts())


def hue_triple(c: int) -> tuple[int, int, int]:
    """The hue indices that class ``c``'s parts are painted in.

    ``{c, c+1, c+3} mod 10`` in even decades of classes (0-9, 20-29, ...), ``{c, c+1, c+4}``
    in odd ones. Within a decade no two classes share two hues (the pairwise differences of
    ``{0, 1, 3}`` and of ``{0, 1, 4}`` are distinct mod 10).
    """
    base = c % NUM_HUES
    offsets = (0, 1, 3) if (c // NUM_HUES) % 2 == 0 else (0, 1, 4)
    return tuple((base + o) % NUM_HUES for o in offsets)


def hue_of(h: int) -> float:
    """The hue in ``[0, 1)`` of hue index ``h``."""
    return (h % NUM_HUES) / NUM_HUES


@dataclass(frozen=True)
class ClassSpec:
    """One class: its index, name, layout cells ``(row, col)`` and hue triple."""

    index: int
    name: str
    cells: Cells
    hues: tuple[int, int, int]

    @property
    def layout(self) -> str:
        """The layout's name (``tee``, ``plus``, ..., ``parts5_3``)."""
        return self.name.split("_", 1)[1]


def check_num_classes(num_classes: int) -> int:
    """``int(num_classes)`` when it is in ``[1, MAX_CLASSES]``, else a ``ValueError``."""
    num_classes = int(num_classes)
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    return num_classes


def class_specs(num_classes: int = 10) -> list[ClassSpec]:
    """The ``num_classes`` class descriptions in index order (class ``c`` = layout ``c``)."""
    num_classes = check_num_classes(num_classes)
    return [ClassSpec(c, f"class{c:03d}_{name}", cells, hue_triple(c))
            for c, (name, cells) in enumerate(layouts()[:num_classes])]


def class_names(num_classes: int = 10) -> list[str]:
    """Class names in index order; they also sort in index order."""
    return [s.name for s in class_specs(num_classes)]
