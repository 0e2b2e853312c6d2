"""Objects: an instance of a class at a pose with its drawn appearance, and how scenes place them.

:func:`sample_object` draws the appearance of one object (colour jitter around the class
hue, second texture colour, texture period and phase, rotation, shading);
:func:`classification_objects` and :func:`multi_object_objects` draw the objects of a
classification scene (one dominant object) and of a segmentation/detection scene (2-5
objects). Nothing here touches pixels; :mod:`.render` draws the objects.

All functions consume the per-image generator ``rng`` in a fixed order: the written
datasets depend on it, so a change here changes their bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .color import hsv
from .shapes import shape_area
from .world import ClassSpec

__all__ = ["HUE_JITTER", "ObjectSpec", "sample_object", "radius_for_area",
           "classification_objects", "multi_object_objects"]

#: Classes are 0.1 apart in hue and an object's hue is jittered by up to this much:
#: neighbouring classes overlap a little, so the mean colour alone is not enough.
HUE_JITTER = 0.07


@dataclass(frozen=True)
class ObjectSpec:
    """One object: a class shape at a pose, filled with the class texture."""

    cls: int
    shape: str
    texture: str
    cx: float  # centre, pixel units (pixel (r, c) has its centre at (c + .5, r + .5))
    cy: float
    radius: float  # the shape fits in a disc of this radius
    angle: float  # rotation of the shape (radians); textures stay image-aligned
    color: tuple[float, float, float]  # RGB 0..255
    color2: tuple[float, float, float]  # second texture colour
    period: float  # texture period in pixels
    phase: tuple[float, float]  # texture phase offsets in [0, 1)
    light: tuple[float, float]  # linear shading across the object


def sample_object(rng: np.random.Generator, spec: ClassSpec, cx: float, cy: float,
                  radius: float) -> ObjectSpec:
    """Draw the appearance of an object of class ``spec`` (its pose partly given)."""
    hue = spec.hue + rng.uniform(-HUE_JITTER, HUE_JITTER)
    sat = rng.uniform(0.45, 0.95)
    val = rng.uniform(0.55, 0.97)
    color = hsv(hue, sat, val)
    if rng.random() < 0.5:  # darker second colour
        color2 = hsv(hue + rng.uniform(-0.02, 0.02), sat * rng.uniform(0.7, 1.0),
                     val * rng.uniform(0.25, 0.45))
    else:  # paler second colour
        color2 = hsv(hue + rng.uniform(-0.02, 0.02), sat * rng.uniform(0.1, 0.3),
                     min(1.0, val * rng.uniform(1.1, 1.4)))
    period = float(np.clip(radius * rng.uniform(0.3, 0.45), 3.0, 10.0))
    angle = rng.uniform(0.0, 2 * math.pi)
    phase = (float(rng.random()), float(rng.random()))
    la = rng.uniform(0.0, 2 * math.pi)
    ls = rng.uniform(0.0, 0.15)
    return ObjectSpec(
        cls=spec.index, shape=spec.shape, texture=spec.texture,
        cx=float(cx), cy=float(cy), radius=float(radius), angle=float(angle),
        color=color, color2=color2, period=period, phase=phase,
        light=(ls * math.cos(la), ls * math.sin(la)),
    )


def radius_for_area(shape: str, area: float) -> float:
    """The radius at which ``shape`` covers ``area`` square pixels."""
    return math.sqrt(area / shape_area(shape))


def _distractor_probs(n: int) -> np.ndarray:
    """Probabilities of 0..n distractors, shape ``(n + 1,)``."""
    p = np.array([0.4, 0.35, 0.25][: n + 1] + [0.25] * max(0, n - 2))
    return p / p.sum()


def classification_objects(rng: np.random.Generator, label: int,
                           specs: Sequence[ClassSpec], size: int,
                           max_distractors: int = 2, area: tuple[float, float] = (0.2, 0.55),
                           max_radius: float = 0.6) -> list[ObjectSpec]:
    """One dominant object of class ``label`` (drawn last) and up to ``max_distractors`` small distractors.

    The dominant object is drawn to cover a fraction in ``area`` (about 20-55%) of the
    ``size x size`` image, its radius at most ``max_radius * size``; each distractor has another
    class and at most about a quarter of the dominant object's area.
    """
    s = float(size)
    dom_spec = specs[label]
    frac = rng.uniform(*area)
    dom_area = frac * s * s
    r = min(radius_for_area(dom_spec.shape, dom_area), max_radius * s)
    lo = min(0.85 * r, 0.5 * s)
    spread = max(0.5 * s - lo, 0.06 * s)
    cx = 0.5 * s + rng.uniform(-1.0, 1.0) * spread
    cy = 0.5 * s + rng.uniform(-1.0, 1.0) * spread
    dom_area = shape_area(dom_spec.shape) * r * r

    objects = []
    n_dis = int(rng.choice(np.arange(max_distractors + 1),
                           p=_distractor_probs(max_distractors))) if len(specs) > 1 else 0
    for _ in range(n_dis):
        other = int(rng.integers(0, len(specs) - 1))
        other += other >= label
        ospec = specs[other]
        ratio = rng.uniform(0.06, 0.25)
        rd = max(radius_for_area(ospec.shape, ratio * dom_area), 0.06 * s)
        rd = min(rd, radius_for_area(ospec.shape, 0.25 * dom_area))
        cands = rng.uniform(0.5 * rd, s - 0.5 * rd, size=(12, 2))
        clearance = np.hypot(cands[:, 0] - cx, cands[:, 1] - cy) - (r + rd)
        ok = np.nonzero(clearance >= 0)[0]
        k = int(ok[0]) if len(ok) else int(np.argmax(clearance))
        objects.append(sample_object(rng, ospec, cands[k, 0], cands[k, 1], rd))
    objects.append(sample_object(rng, dom_spec, cx, cy, r))
    return objects


def multi_object_objects(rng: np.random.Generator, specs: Sequence[ClassSpec],
                         size: tuple[int, int], min_objects: int = 2,
                         max_objects: int = 5) -> list[ObjectSpec]:
    """2-5 objects of random classes, sizes (2-14% of the ``(W, H)`` image each) and positions.

    Objects are returned in drawing order and may overlap or be cut by the border.
    """
    w, h = size
    n = int(rng.integers(min_objects, max_objects + 1))
    objects = []
    for _ in range(n):
        spec = specs[int(rng.integers(0, len(specs)))]
        frac = math.exp(rng.uniform(math.log(0.02), math.log(0.14)))
        r = radius_for_area(spec.shape, frac * w * h)
        cx = rng.uniform(0.05, 0.95) * w
        cy = rng.uniform(0.05, 0.95) * h
        objects.append(sample_object(rng, spec, cx, cy, r))
    return objects
