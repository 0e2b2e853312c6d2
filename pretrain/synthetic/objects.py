"""Objects: an instance of a class (its parts at a pose) and how scenes place objects and loose parts.

An object of class ``c`` has one :class:`Part` on each cell of the class layout
(:mod:`.world`), spaced ``cell`` pixels apart, turned by up to :data:`MAX_TURN` and
mirrored half of the time. Every part gets its own random shape, texture and shading
colours from the class's hue triple. A *loose part* is a single part of random hue with
no class (``cls == BACKGROUND``): scenes scatter them as clutter behind the objects and as
occluders in front of them, and the ground truth counts them as background.

:func:`classification_objects` draws the objects of a one-object (classification) scene,
:func:`multi_object_objects` those of a segmentation/detection scene. Nothing here touches
pixels; :mod:`.render` draws the objects. All functions consume the per-image generator
``rng`` in a fixed order: the written datasets depend on it, so a change here changes
their bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .color import hsv
from .world import NUM_HUES, PART_SHAPES, TEXTURES, ClassSpec, hue_of

__all__ = ["BACKGROUND", "HUE_JITTER", "MAX_TURN", "PART_RADIUS", "Part", "ObjectSpec", "sample_part",
           "sample_object", "loose_part", "classification_objects", "multi_object_objects"]

#: ``ObjectSpec.cls`` of a loose part (clutter, occluder): background in the ground truth.
BACKGROUND = -1
#: Hues are ``1 / NUM_HUES`` = 0.1 apart; a part's hue is jittered by up to this much (ours).
HUE_JITTER = 0.03
#: Objects turn by up to this many radians either way (ours): small enough that a layout
#: and its turned copies stay one class (a quarter turn would make "bar" a "pillar").
MAX_TURN = 0.3
#: A part's radius as a fraction of the cell spacing (ours): neighbouring parts nearly touch.
PART_RADIUS = (0.6, 0.75)


@dataclass(frozen=True)
class Part:
    """One part: a small textured shape at an offset from its object's centre."""

    shape: str
    du: float  # offset from the object centre in cells, in the object's own (turned) frame
    dv: float
    radius: float  # pixels; the shape fits in a disc of this radius
    texture: str
    color: tuple[float, float, float]  # RGB 0..255
    color2: tuple[float, float, float]  # second texture colour
    period: float  # texture period in pixels
    phase: tuple[float, float]  # texture phase offsets in [0, 1)


@dataclass(frozen=True)
class ObjectSpec:
    """An object (``cls >= 0``) or a loose part (``cls == BACKGROUND``): parts around a centre."""

    cls: int
    parts: tuple[Part, ...]
    cx: float  # centre, pixel units (pixel (r, c) has its centre at (c + .5, r + .5))
    cy: float
    cell: float  # spacing of the parts in pixels
    angle: float  # turn of the layout (radians); textures stay image-aligned
    light: tuple[float, float]  # linear shading across the object

    def part_centres(self) -> np.ndarray:
        """``(n_parts, 2)`` pixel centres ``(x, y)`` of the parts."""
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        d = np.array([(p.du, p.dv) for p in self.parts], np.float64) * self.cell
        return np.stack([self.cx + d[:, 0] * ca - d[:, 1] * sa,
                         self.cy + d[:, 0] * sa + d[:, 1] * ca], axis=1)

    @property
    def radius(self) -> float:
        """Radius of the disc around the centre that holds every part."""
        return max(math.hypot(p.du, p.dv) * self.cell + p.radius for p in self.parts)


def _colors(rng: np.random.Generator, hue: float) -> tuple[tuple, tuple]:
    """A part's two texture colours around ``hue``: a saturated one and a darker or paler one."""
    hue = hue + rng.uniform(-HUE_JITTER, HUE_JITTER)
    sat = rng.uniform(0.45, 0.95)
    val = rng.uniform(0.55, 0.97)
    color = hsv(hue, sat, val)
    if rng.random() < 0.5:  # darker second colour
        color2 = hsv(hue + rng.uniform(-0.02, 0.02), sat * rng.uniform(0.7, 1.0), val * rng.uniform(0.25, 0.45))
    else:  # paler second colour
        color2 = hsv(hue + rng.uniform(-0.02, 0.02), sat * rng.uniform(0.1, 0.3),
                     min(1.0, val * rng.uniform(1.1, 1.4)))
    return color, color2


def sample_part(rng: np.random.Generator, hue_index: int, du: float, dv: float, cell: float) -> Part:
    """A part of hue ``hue_index`` with a random shape, texture, size and texture phase."""
    radius = cell * rng.uniform(*PART_RADIUS)
    color, color2 = _colors(rng, hue_of(hue_index))
    return Part(shape=PART_SHAPES[int(rng.integers(len(PART_SHAPES)))], du=float(du), dv=float(dv),
                radius=float(radius), texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
                color=color, color2=color2, period=float(np.clip(radius * rng.uniform(0.45, 0.7), 2.5, 8.0)),
                phase=(float(rng.random()), float(rng.random())))


def _light(rng: np.random.Generator) -> tuple[float, float]:
    la = rng.uniform(0.0, 2 * math.pi)
    ls = rng.uniform(0.0, 0.15)
    return ls * math.cos(la), ls * math.sin(la)


def sample_object(rng: np.random.Generator, spec: ClassSpec, cx: float, cy: float, cell: float) -> ObjectSpec:
    """An object of class ``spec`` centred at ``(cx, cy)`` with parts ``cell`` pixels apart.

    The layout is mirrored with probability 1/2 and turned by up to :data:`MAX_TURN`; the part
    hues are the class's hue triple, each on at least one part, the rest drawn from the triple.
    """
    cells = np.array(spec.cells, np.float64)
    rows, cols = cells[:, 0], cells[:, 1]
    if rng.random() < 0.5:
        cols = -cols
    du = cols - 0.5 * (cols.min() + cols.max())
    dv = rows - 0.5 * (rows.min() + rows.max())
    n = len(cells)
    hues = list(spec.hues) + [spec.hues[int(k)] for k in rng.integers(0, 3, size=max(0, n - 3))]
    hues = [hues[int(k)] for k in rng.permutation(n)]
    angle = rng.uniform(-MAX_TURN, MAX_TURN)
    parts = tuple(sample_part(rng, h, u, v, cell) for h, u, v in zip(hues, du, dv))
    return ObjectSpec(cls=spec.index, parts=parts, cx=float(cx), cy=float(cy), cell=float(cell),
                      angle=float(angle), light=_light(rng))


def loose_part(rng: np.random.Generator, cx: float, cy: float, cell: float) -> ObjectSpec:
    """A single part of a random hue at ``(cx, cy)``, of no class (clutter or occluder)."""
    part = sample_part(rng, int(rng.integers(NUM_HUES)), 0.0, 0.0, cell)
    return ObjectSpec(cls=BACKGROUND, parts=(part,), cx=float(cx), cy=float(cy), cell=float(cell),
                      angle=0.0, light=_light(rng))


def _occluder_on(rng: np.random.Generator, obj: ObjectSpec) -> ObjectSpec:
    """A loose part over one of ``obj``'s parts (at most about half of it hidden)."""
    centres = obj.part_centres()
    k = int(rng.integers(len(centres)))
    a = rng.uniform(0.0, 2 * math.pi)
    d = obj.cell * rng.uniform(0.5, 0.8)
    return loose_part(rng, centres[k, 0] + d * math.cos(a), centres[k, 1] + d * math.sin(a), obj.cell)


def classification_objects(rng: np.random.Generator, label: int, specs: Sequence[ClassSpec], size: int,
                           cell: tuple[float, float] = (0.2, 0.28), distractor_p: float = 0.3,
                           max_clutter: int = 3, occluder_p: float = 0.3) -> tuple[list[ObjectSpec], int]:
    """The objects of a one-object scene in drawing order and the index of the labelled one.

    Drawing order: 0..``max_clutter`` loose parts, with probability ``distractor_p`` a smaller
    object of another class (cell 0.55-0.7 of the main one's), the object of class ``label``
    (cell spacing ``cell`` x ``size`` pixels, centred so that its layout stays in the frame
    when it can) and, with probability ``occluder_p``, a loose part over one of its parts.
    """
    s = float(size)
    c = s * rng.uniform(*cell)
    half = 1.5 * c
    lo, hi = (half, s - half) if s > 2 * half else (0.5 * s, 0.5 * s)
    cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
    objects = [loose_part(rng, *rng.uniform(0.0, s, size=2), c * rng.uniform(0.6, 1.0))
               for _ in range(int(rng.integers(0, max_clutter + 1)))]
    if len(specs) > 1 and rng.random() < distractor_p:
        other = int(rng.integers(0, len(specs) - 1))
        other += other >= label
        dc = c * rng.uniform(0.55, 0.7)
        cands = rng.uniform(1.5 * dc, max(s - 1.5 * dc, 1.5 * dc), size=(12, 2))
        clearance = np.hypot(cands[:, 0] - cx, cands[:, 1] - cy) - 1.8 * (c + dc)
        ok = np.nonzero(clearance >= 0)[0]
        k = int(ok[0]) if len(ok) else int(np.argmax(clearance))
        objects.append(sample_object(rng, specs[other], cands[k, 0], cands[k, 1], dc))
    main = sample_object(rng, specs[label], cx, cy, c)
    objects.append(main)
    idx = len(objects) - 1
    if rng.random() < occluder_p:
        objects.append(_occluder_on(rng, main))
    return objects, idx


def multi_object_objects(rng: np.random.Generator, specs: Sequence[ClassSpec], size: tuple[int, int],
                         min_objects: int = 2, max_objects: int = 5, cell: tuple[float, float] = (0.07, 0.16),
                         max_clutter: int = 6, max_occluders: int = 2) -> list[ObjectSpec]:
    """2-5 objects of random classes (cell ``cell`` x the shorter side), clutter and occluders, in drawing order.

    0..``max_clutter`` loose parts come first, then the objects (which may overlap each other
    or be cut by the border), then 0..``max_occluders`` loose parts over random objects.
    """
    w, h = size
    side = float(min(w, h))
    n_clutter = int(rng.integers(0, max_clutter + 1))
    objects = [loose_part(rng, rng.uniform(0, w), rng.uniform(0, h), side * rng.uniform(*cell))
               for _ in range(n_clutter)]
    real = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        spec = specs[int(rng.integers(0, len(specs)))]
        real.append(sample_object(rng, spec, rng.uniform(0.08, 0.92) * w, rng.uniform(0.08, 0.92) * h,
                                  side * rng.uniform(*cell)))
    objects += real
    for _ in range(int(rng.integers(0, max_occluders + 1))):
        objects.append(_occluder_on(rng, real[int(rng.integers(len(real)))]))
    return objects
