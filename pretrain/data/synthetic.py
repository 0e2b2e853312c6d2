"""A small, deterministic synthetic "world" of textured shapes on cluttered backgrounds.

The world has ``K`` object classes. Every class has its own shape (disc, square,
triangle, ...), its own texture (stripes, checker, dots, ...) and a typical hue,
so that a small network can learn it quickly, while the hue jitter between
neighbouring classes overlaps so that the mean colour alone is not enough.
Backgrounds are smooth colour gradients with low-frequency noise, soft blobs
and thin lines/curves that do not resemble any class.

The generator writes the scenes in the on-disk layouts that real datasets use,
so that the same data loaders and evaluation code can read both:

* ``imagenet/{train,val}/<class>/<class>_<idx>.JPEG``  (ImageNet folder layout)
* ``ade/{images,annotations}/{training,validation}/``  (ADE20K layout, 0 = other)
* ``coco/{train,val}/*.jpg`` + ``coco/annotations/instances_{train,val}.json``
* ``voc/{JPEGImages,SegmentationClass,Annotations,ImageSets}``  (Pascal VOC 2012)

plus ``classes.json`` (class names in index order) and ``synthetic.json`` (the
manifest, written last). Every image is rendered from its own random generator,
seeded from ``(seed, subset/split code, index)``, so an image does not depend on
which other sets were generated or in which order.

Only numpy and PIL are needed; pycocotools is imported lazily for the COCO set.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "GENERATOR_VERSION",
    "SHAPES",
    "TEXTURES",
    "SUBSETS",
    "MAX_CLASSES",
    "ClassSpec",
    "ObjectSpec",
    "Scene",
    "class_specs",
    "class_names",
    "image_rng",
    "sample_object",
    "classification_objects",
    "multi_object_objects",
    "render_scene",
    "build_scene",
    "mask_to_polygons",
    "mask_to_coco_segmentation",
    "coco_annotations",
    "voc_palette",
    "default_params",
    "generate",
]

#: Bump whenever the rendered output changes; stored in the manifest so that an
#: output directory made by an older generator is regenerated, not reused.
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
MAX_CLASSES = len(SHAPES) * len(TEXTURES)
SUBSETS = ("imagenet", "ade", "coco", "voc")

# Codes mixed into the per-image seeds; one per (subset, split).
_SET_CODES = {
    ("imagenet", "train"): 11, ("imagenet", "val"): 12,
    ("ade", "train"): 21, ("ade", "val"): 22,
    ("coco", "train"): 31, ("coco", "val"): 32,
    ("voc", "val"): 42,
}

_HUE_JITTER = 0.07  # classes are 0.1 apart in hue: neighbours overlap a little


# ---------------------------------------------------------------------------
# Classes
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassSpec:
    index: int
    name: str
    shape: str
    texture: str
    hue: float  # class-typical hue in [0, 1)


def _check_num_classes(num_classes: int) -> int:
    num_classes = int(num_classes)
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    return num_classes


def class_specs(num_classes: int = 10) -> list[ClassSpec]:
    """Class descriptions; class ``c`` does not depend on ``num_classes``.

    Classes ``0..9`` pair shape ``c`` with texture ``c``. Beyond that the pairing
    is shifted by ``c // 10`` so that every (shape, texture) pair is unique.
    """
    num_classes = _check_num_classes(num_classes)
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


# ---------------------------------------------------------------------------
# Objects and scenes
# ---------------------------------------------------------------------------

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


@dataclass
class Scene:
    """A rendered scene with its ground truth.

    ``masks[i]`` is the full (unoccluded) mask of ``objects[i]`` inside the image;
    ``visible[i]`` what is left of it after the later objects are drawn on top;
    ``instance`` holds ``i + 1`` of the top-most object (0 = background) and
    ``label`` the class ``c + 1`` of the top-most object (0 = background).
    """

    image: np.ndarray  # (H, W, 3) uint8
    objects: list[ObjectSpec]
    masks: list[np.ndarray]
    visible: list[np.ndarray]
    instance: np.ndarray  # (H, W) int32
    label: np.ndarray  # (H, W) uint8
    main: int | None = None  # index of the labelled object of a classification scene
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def image_rng(seed: int, subset: str, split: str, *index: int) -> np.random.Generator:
    """The random generator of one image, independent of all other images."""
    if int(seed) < 0:
        raise ValueError("seed must be non-negative")
    code = _SET_CODES[(subset, split)]
    return np.random.default_rng(np.random.SeedSequence([int(seed), code, *map(int, index)]))


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (255.0 * r, 255.0 * g, 255.0 * b)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in the object's normalised frame (the shape fits the unit disc)."""
    r2 = u * u + v * v
    if shape == "disc":
        return r2 <= 0.96
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.68
    if shape == "triangle":  # equilateral, circumradius 1, inradius 0.5
        inside = np.ones(np.broadcast(u, v).shape, bool)
        for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
            inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
        return inside
    if shape == "ring":
        return (r2 <= 0.96) & (r2 >= 0.52 ** 2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.92)) | ((av <= 0.3) & (au <= 0.92))
    if shape == "star":  # five points, outer radius 1, inner radius 0.45
        theta = np.arctan2(v, u) + math.pi / 2
        sector = 2 * math.pi / 5
        phi = np.mod(theta, sector)
        phi = np.minimum(phi, sector - phi)
        rho = np.sqrt(r2)
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        ix, iy = 0.45 * math.cos(sector / 2), 0.45 * math.sin(sector / 2)
        return (ix - 1.0) * py - iy * (px - 1.0) >= 0.0
    if shape == "diamond":
        return np.abs(u) / 0.6 + np.abs(v) <= 0.98
    if shape == "hexagon":
        d = np.abs(u)
        for a in (math.pi / 3, 2 * math.pi / 3):
            d = np.maximum(d, np.abs(u * math.cos(a) + v * math.sin(a)))
        return d <= 0.84
    if shape == "crescent":
        return (r2 <= 0.96) & ((u - 0.42) ** 2 + v * v > 0.78 ** 2)
    if shape == "ellipse":
        return u * u + (v / 0.4) ** 2 <= 0.96
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=None)
def _shape_area(shape: str) -> float:
    """Area of a shape of radius 1 (numerically)."""
    g = (np.arange(400) + 0.5) / 200.0 - 1.0
    return float(_shape_mask(shape, g[None, :], g[:, None]).mean() * 4.0)


def _texture(texture: str, dx: np.ndarray, dy: np.ndarray, period: float,
             phase: tuple[float, float]) -> np.ndarray:
    """Second-colour weight in [0, 1] at offsets (dx, dy) from the object centre."""
    p, (p0, p1) = period, phase
    shape = np.broadcast(dx, dy).shape
    if texture == "solid":
        return np.zeros(shape)
    if texture == "hstripes":
        t = np.mod(dy / p + p0, 1.0) < 0.5
    elif texture == "vstripes":
        t = np.mod(dx / p + p0, 1.0) < 0.5
    elif texture == "diagonal":
        t = np.mod((dx + dy) / (p * math.sqrt(2)) + p0, 1.0) < 0.5
    elif texture == "antidiagonal":
        t = np.mod((dx - dy) / (p * math.sqrt(2)) + p0, 1.0) < 0.5
    elif texture == "checker":
        t = (np.floor(dx / p + p0) + np.floor(dy / p + p1)) % 2 == 1
    elif texture == "dots":
        s = 1.5 * p
        fx = np.mod(dx / s + p0, 1.0) - 0.5
        fy = np.mod(dy / s + p1, 1.0) - 0.5
        t = fx * fx + fy * fy < 0.3 ** 2
    elif texture == "rings":
        t = np.mod(np.sqrt(dx * dx + dy * dy) / p + p0, 1.0) < 0.5
    elif texture == "grid":
        t = (np.mod(dx / p + p0, 1.0) < 0.34) | (np.mod(dy / p + p1, 1.0) < 0.34)
    elif texture == "spokes":
        t = np.mod(np.arctan2(dy, dx) * (4.0 / math.pi) + p0, 1.0) < 0.5
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.broadcast_to(t, shape).astype(np.float64)


def sample_object(rng: np.random.Generator, spec: ClassSpec, cx: float, cy: float,
                  radius: float) -> ObjectSpec:
    """Draw the appearance of an object of class ``spec`` (pose partly given)."""
    hue = spec.hue + rng.uniform(-_HUE_JITTER, _HUE_JITTER)
    sat = rng.uniform(0.45, 0.95)
    val = rng.uniform(0.55, 0.97)
    color = _hsv(hue, sat, val)
    if rng.random() < 0.5:  # darker second colour
        color2 = _hsv(hue + rng.uniform(-0.02, 0.02), sat * rng.uniform(0.7, 1.0),
                      val * rng.uniform(0.25, 0.45))
    else:  # paler second colour
        color2 = _hsv(hue + rng.uniform(-0.02, 0.02), sat * rng.uniform(0.1, 0.3),
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


def _radius_for_area(shape: str, area: float) -> float:
    return math.sqrt(area / _shape_area(shape))


def classification_objects(rng: np.random.Generator, label: int,
                           specs: Sequence[ClassSpec], size: int,
                           max_distractors: int = 2) -> list[ObjectSpec]:
    """One dominant object of class ``label`` (drawn last) and 0-2 small distractors.

    The dominant object covers about 20-55% of the image; each distractor has
    another class and at most about a quarter of the dominant object's area.
    """
    s = float(size)
    dom_spec = specs[label]
    frac = rng.uniform(0.2, 0.55)
    dom_area = frac * s * s
    r = min(_radius_for_area(dom_spec.shape, dom_area), 0.6 * s)
    lo = min(0.85 * r, 0.5 * s)
    spread = max(0.5 * s - lo, 0.06 * s)
    cx = 0.5 * s + rng.uniform(-1.0, 1.0) * spread
    cy = 0.5 * s + rng.uniform(-1.0, 1.0) * spread
    dom_area = _shape_area(dom_spec.shape) * r * r

    objects = []
    n_dis = int(rng.choice(np.arange(max_distractors + 1),
                           p=_distractor_probs(max_distractors))) if len(specs) > 1 else 0
    for _ in range(n_dis):
        other = int(rng.integers(0, len(specs) - 1))
        other += other >= label
        ospec = specs[other]
        ratio = rng.uniform(0.06, 0.25)
        rd = max(_radius_for_area(ospec.shape, ratio * dom_area), 0.06 * s)
        rd = min(rd, _radius_for_area(ospec.shape, 0.25 * dom_area))
        cands = rng.uniform(0.5 * rd, s - 0.5 * rd, size=(12, 2))
        clearance = np.hypot(cands[:, 0] - cx, cands[:, 1] - cy) - (r + rd)
        ok = np.nonzero(clearance >= 0)[0]
        k = int(ok[0]) if len(ok) else int(np.argmax(clearance))
        objects.append(sample_object(rng, ospec, cands[k, 0], cands[k, 1], rd))
    objects.append(sample_object(rng, dom_spec, cx, cy, r))
    return objects


def _distractor_probs(n: int) -> np.ndarray:
    p = np.array([0.4, 0.35, 0.25][: n + 1] + [0.25] * max(0, n - 2))
    return p / p.sum()


def multi_object_objects(rng: np.random.Generator, specs: Sequence[ClassSpec],
                         size: tuple[int, int], min_objects: int = 2,
                         max_objects: int = 5) -> list[ObjectSpec]:
    """2-5 objects of random classes, sizes (2-14% of the image each) and positions.

    Objects are returned in drawing order and may overlap or be cut by the border.
    """
    w, h = size
    n = int(rng.integers(min_objects, max_objects + 1))
    objects = []
    for _ in range(n):
        spec = specs[int(rng.integers(0, len(specs)))]
        frac = math.exp(rng.uniform(math.log(0.02), math.log(0.14)))
        r = _radius_for_area(spec.shape, frac * w * h)
        cx = rng.uniform(0.05, 0.95) * w
        cy = rng.uniform(0.05, 0.95) * h
        objects.append(sample_object(rng, spec, cx, cy, r))
    return objects


# -- rendering ---------------------------------------------------------------

def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    f = pos - i0
    a = np.zeros((n_out, n_in))
    a[np.arange(n_out), i0] = 1.0 - f
    a[np.arange(n_out), i0 + 1] = f
    return a


def _smooth_noise(rng: np.random.Generator, h: int, w: int, grid: int, channels: int) -> np.ndarray:
    """Low-frequency noise: a random ``grid x grid`` field bilinearly upsampled."""
    g = rng.normal(0.0, 1.0, size=(grid, grid, channels))
    return np.einsum("hi,ijc,wj->hwc", _interp_matrix(h, grid), g, _interp_matrix(w, grid))


def _blend(img: np.ndarray, alpha: np.ndarray, color: Sequence[float]) -> None:
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * np.asarray(color, dtype=np.float64)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth gradient + low-frequency noise + soft blobs and thin lines/curves."""
    ys = (np.arange(h) + 0.5)[:, None]
    xs = (np.arange(w) + 0.5)[None, :]
    c1 = np.array(_hsv(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.9)))
    c2 = np.array(_hsv(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.9)))
    a = rng.uniform(0.0, 2 * math.pi)
    proj = xs * math.cos(a) + ys * math.sin(a)
    t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
    img = c1 * (1.0 - t[..., None]) + c2 * t[..., None]
    img += 14.0 * _smooth_noise(rng, h, w, 4, 3)
    img += 6.0 * _smooth_noise(rng, h, w, 9, 1)

    s = float(min(h, w))
    n_items = int(rng.integers(3, 6)) + (int(rng.integers(0, 3)) if s >= 96 else 0)
    for _ in range(n_items):
        color = _hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
        kind = rng.choice(3, p=[0.4, 0.4, 0.2])
        if kind == 0:  # soft elliptical blob
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sx, sy = rng.uniform(0.04, 0.15, size=2) * s
            al = rng.uniform(0.25, 0.6)
            alpha = al * np.exp(-0.5 * (((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2))
        elif kind == 1:  # thin straight line
            p0 = rng.uniform(-0.1, 1.1, size=2) * (w, h)
            p1 = rng.uniform(-0.1, 1.1, size=2) * (w, h)
            d = p1 - p0
            ll = max(float(d @ d), 1e-6)
            tt = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / ll, 0.0, 1.0)
            dist = np.hypot(xs - (p0[0] + tt * d[0]), ys - (p0[1] + tt * d[1]))
            width = rng.uniform(0.6, 1.6)
            alpha = rng.uniform(0.4, 0.85) * np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)
        else:  # thin wavy curve across the image
            amp = rng.uniform(0.03, 0.12) * s
            lam = rng.uniform(0.3, 0.9) * s
            off = rng.uniform(-0.4, 0.4) * s
            ph = rng.uniform(0, 2 * math.pi)
            rot = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
            ca, sa = math.cos(rot), math.sin(rot)
            xc, yc = xs - 0.5 * w, ys - 0.5 * h  # rotate about the image centre
            u = xc * ca + yc * sa
            vv = -xc * sa + yc * ca
            k = 2 * math.pi / lam
            # vertical distance to the curve, divided by the slope factor ~ true distance
            dist = np.abs(vv - off - amp * np.sin(k * u + ph))
            dist = dist / np.sqrt(1.0 + (amp * k * np.cos(k * u + ph)) ** 2)
            width = rng.uniform(0.6, 1.4)
            alpha = rng.uniform(0.35, 0.75) * np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)
        _blend(img, alpha, color)
    return img


def _draw_object(img: np.ndarray, obj: ObjectSpec, rng: np.random.Generator) -> np.ndarray:
    """Paint ``obj`` onto ``img`` (in place) and return its full (H, W) mask."""
    h, w = img.shape[:2]
    full = np.zeros((h, w), bool)
    ext = obj.radius + 1.0
    x0, x1 = max(int(math.floor(obj.cx - ext)), 0), min(int(math.ceil(obj.cx + ext)), w)
    y0, y1 = max(int(math.floor(obj.cy - ext)), 0), min(int(math.ceil(obj.cy + ext)), h)
    if x0 >= x1 or y0 >= y1:  # entirely outside the image
        return full
    dx = (np.arange(x0, x1) + 0.5 - obj.cx)[None, :]
    dy = (np.arange(y0, y1) + 0.5 - obj.cy)[:, None]
    ca, sa = math.cos(obj.angle), math.sin(obj.angle)
    u = (dx * ca + dy * sa) / obj.radius
    v = (-dx * sa + dy * ca) / obj.radius
    m = _shape_mask(obj.shape, u, v)
    t = _texture(obj.texture, dx, dy, obj.period, obj.phase)
    c1 = np.asarray(obj.color)
    c2 = np.asarray(obj.color2)
    col = c1 + t[..., None] * (c2 - c1)
    shade = 1.0 + (obj.light[0] * dx + obj.light[1] * dy) / obj.radius
    col *= shade[..., None]
    sigma = 9.0 if obj.texture == "solid" else 4.0
    col += rng.normal(0.0, sigma, size=col.shape[:2])[..., None]
    crop = img[y0:y1, x0:x1]
    crop[m] = col[m]
    full[y0:y1, x0:x1] = m
    return full


def render_scene(rng: np.random.Generator, size: int | tuple[int, int],
                 objects: Sequence[ObjectSpec], main: int | None = None) -> Scene:
    """Render ``objects`` in order (later ones occlude earlier ones) on clutter."""
    w, h = (size, size) if isinstance(size, (int, np.integer)) else size
    img = _background(rng, h, w)
    masks = [_draw_object(img, obj, rng) for obj in objects]
    img += rng.normal(0.0, 3.0, size=img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    instance = np.zeros((h, w), np.int32)
    for i, m in enumerate(masks):
        instance[m] = i + 1
    visible = [instance == i + 1 for i in range(len(masks))]
    lut = np.zeros(len(objects) + 1, np.uint8)
    lut[1:] = [o.cls + 1 for o in objects]
    label = lut[instance]
    return Scene(image=image, objects=list(objects), masks=masks, visible=visible,
                 instance=instance, label=label, main=main)


def build_scene(subset: str, split: str, index: int, *, seed: int = 0,
                num_classes: int = 10, size: int | tuple[int, int] | None = None,
                label: int | None = None) -> Scene:
    """The exact scene that :func:`generate` writes for one image.

    ``imagenet``: ``index`` counts within class ``label`` (required).
    ``voc``: the label is ``index % num_classes``. ``ade``/``coco``: multi-object
    scenes. ``size`` defaults to 64 (imagenet, voc) or 128 (ade, coco).
    """
    specs = class_specs(num_classes)
    if subset == "imagenet":
        if label is None:
            raise ValueError("imagenet scenes need the class label")
        size = 64 if size is None else int(size)
        rng = image_rng(seed, subset, split, label, index)
        objs = classification_objects(rng, label, specs, size)
        return render_scene(rng, size, objs, main=len(objs) - 1)
    if subset == "voc":
        label = index % len(specs)
        size = 64 if size is None else int(size)
        rng = image_rng(seed, subset, split, index)
        objs = classification_objects(rng, label, specs, size)
        return render_scene(rng, size, objs, main=len(objs) - 1)
    if subset in ("ade", "coco"):
        wh = _parse_size(128 if size is None else size)
        rng = image_rng(seed, subset, split, index)
        objs = multi_object_objects(rng, specs, wh)
        return render_scene(rng, wh, objs)
    raise ValueError(f"unknown subset {subset!r}")


# ---------------------------------------------------------------------------
# Masks to COCO / VOC annotations
# ---------------------------------------------------------------------------

def mask_to_polygons(mask: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Trace the boundaries of a binary mask along pixel edges.

    Returns ``(points, is_hole)`` pairs; ``points`` is an ``(N, 2)`` array of
    ``(x, y)`` pixel-corner coordinates (pixel ``(r, c)`` spans ``[c, c+1] x
    [r, r+1]``) without collinear vertices. Outer boundaries run clockwise on
    screen, holes anticlockwise. Pixels touching only at a corner belong to
    separate boundaries (4-connectivity), so every outer loop is a simple
    polygon and the union of the outer loops minus the holes is exactly the mask.
    """
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return []
    y0, x0 = int(ys.min()), int(xs.min())
    y1, x1 = int(ys.max()) + 1, int(xs.max()) + 1
    m = np.zeros((y1 - y0 + 2, x1 - x0 + 2), bool)
    m[1:-1, 1:-1] = mask[y0:y1, x0:x1]
    stride = m.shape[1] + 1  # vertices live on a (H+1) x (W+1) lattice

    inner = m[1:-1, 1:-1]
    sx, sy, ex, ey, dd = [], [], [], [], []
    # direction codes clockwise on screen: 0 east, 1 south, 2 west, 3 north
    for d, (nb, ox0, oy0, ox1, oy1) in enumerate((
        (m[:-2, 1:-1], 0, 0, 1, 0),   # top edge, heading east
        (m[1:-1, 2:], 1, 0, 1, 1),    # right edge, heading south
        (m[2:, 1:-1], 1, 1, 0, 1),    # bottom edge, heading west
        (m[1:-1, :-2], 0, 1, 0, 0),   # left edge, heading north
    )):
        r, c = np.nonzero(inner & ~nb)
        r, c = r + 1, c + 1
        sx.append(c + ox0); sy.append(r + oy0)
        ex.append(c + ox1); ey.append(r + oy1)
        dd.append(np.full(len(r), d))
    sx, sy, ex, ey, dd = (np.concatenate(a) for a in (sx, sy, ex, ey, dd))
    skey = sy * stride + sx
    ekey = ey * stride + ex
    order = np.argsort(skey, kind="stable")
    sorted_keys = skey[order]
    lo = np.searchsorted(sorted_keys, ekey, "left")
    hi = np.searchsorted(sorted_keys, ekey, "right")
    nxt = order[lo]
    pinch = (hi - lo) == 2  # two outgoing edges: take the right turn
    if pinch.any():
        alt = order[np.minimum(lo + 1, len(order) - 1)]
        right = (dd + 1) % 4
        use_alt = pinch & (dd[nxt] != right)
        nxt = np.where(use_alt, alt, nxt)

    nxt_l = nxt.tolist()
    seen = np.zeros(len(nxt_l), bool)
    loops = []
    for start in range(len(nxt_l)):
        if seen[start]:
            continue
        idx = []
        e = start
        while not seen[e]:
            seen[e] = True
            idx.append(e)
            e = nxt_l[e]
        idx = np.asarray(idx)
        din = dd[np.roll(idx, 1)]
        keep = idx[dd[idx] != din]  # vertex = start of an edge that turns
        pts = np.stack([sx[keep] + (x0 - 1), sy[keep] + (y0 - 1)], axis=1).astype(np.float64)
        xx, yy = pts[:, 0], pts[:, 1]
        area2 = float(np.sum(xx * np.roll(yy, -1) - np.roll(xx, -1) * yy))
        loops.append((pts, area2 < 0))
    return loops


def _import_mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the COCO subset needs pycocotools (pip install pycocotools)") from e
    return mask_utils


def _rle_of_mask(mask: np.ndarray) -> dict:
    mu = _import_mask_utils()
    return mu.encode(np.asfortranarray(mask.astype(np.uint8)))


def _rle_of_segmentation(seg, h: int, w: int) -> dict:
    mu = _import_mask_utils()
    if isinstance(seg, list):
        return mu.merge(mu.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], str):
        return {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    return seg


def mask_to_coco_segmentation(mask: np.ndarray, min_iou: float = 0.9):
    """COCO ``segmentation`` for a binary mask: polygons, or RLE where needed.

    Polygons (a list of flat ``[x1, y1, x2, y2, ...]`` lists) are used when the
    mask has no holes and the polygons, rasterised back with pycocotools, match
    the mask with IoU >= ``min_iou``; otherwise a (JSON-ready) RLE dict.
    """
    mu = _import_mask_utils()
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    loops = mask_to_polygons(mask)
    if loops and not any(hole for _, hole in loops):
        polys = [[float(v) for v in pts.reshape(-1)] for pts, _ in loops if len(pts) >= 3]
        if polys:
            dec = mu.decode(_rle_of_segmentation(polys, h, w)).astype(bool)
            union = np.logical_or(dec, mask).sum()
            iou = np.logical_and(dec, mask).sum() / max(int(union), 1)
            if iou >= min_iou:
                return polys
    rle = _rle_of_mask(mask)
    return {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")}


def voc_palette(n: int = 256) -> list[int]:
    """The Pascal VOC colour map as a flat ``[r, g, b, ...]`` list."""
    pal = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _boundary_band(instance: np.ndarray) -> np.ndarray:
    """Pixels with a 3x3 neighbour of another instance, where one side is an object."""
    p = np.pad(instance, 1, mode="edge")
    h, w = instance.shape
    band = np.zeros((h, w), bool)
    for oy in (0, 1, 2):
        for ox in (0, 1, 2):
            if oy == 1 and ox == 1:
                continue
            nb = p[oy:oy + h, ox:ox + w]
            band |= (nb != instance) & ((nb > 0) | (instance > 0))
    return band


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------

def _parse_size(size) -> tuple[int, int]:
    """``128``, ``"128"``, ``"160x120"`` (W x H) or ``(W, H)`` -> ``(W, H)``."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        if len(parts) == 1:
            wh = (int(parts[0]), int(parts[0]))
        elif len(parts) == 2:
            wh = (int(parts[0]), int(parts[1]))
        else:
            raise ValueError(f"bad size {size!r}; use N or WxH")
    elif isinstance(size, (int, np.integer)):
        wh = (int(size), int(size))
    else:
        wh = (int(size[0]), int(size[1]))
    if min(wh) < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {wh}")
    return wh


def _save_jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(image).save(path, format="JPEG", quality=int(quality))


def _write_imagenet(root: Path, p: dict, specs: list[ClassSpec]) -> dict:
    counts = {}
    for split, n in (("train", p["train_per_class"]), ("val", p["val_per_class"])):
        for spec in specs:
            d = root / split / spec.name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                sc = build_scene("imagenet", split, i, seed=p["seed"], num_classes=len(specs),
                                 size=p["cls_size"], label=spec.index)
                _save_jpeg(sc.image, d / f"{spec.name}_{i:05d}.JPEG", p["jpeg_quality"])
        counts[split] = n * len(specs)
    return {"images": counts}


def _write_ade(root: Path, p: dict, specs: list[ClassSpec]) -> dict:
    counts = {}
    for split, folder, n in (("train", "training", p["seg_train"]),
                             ("val", "validation", p["seg_val"])):
        di = root / "images" / folder
        da = root / "annotations" / folder
        di.mkdir(parents=True, exist_ok=True)
        da.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sc = build_scene("ade", split, i, seed=p["seed"], num_classes=len(specs),
                             size=tuple(p["seg_size"]))
            stem = f"synth_{split}_{i:05d}"
            _save_jpeg(sc.image, di / f"{stem}.jpg", p["jpeg_quality"])
            Image.fromarray(sc.label).save(da / f"{stem}.png")
        counts[split] = n
    return {"images": counts}


def coco_annotations(scene: Scene, min_area: int = 16, min_iou: float = 0.9) -> list[dict]:
    """COCO annotations (without ``id``/``image_id``) for the visible objects."""
    mu = _import_mask_utils()
    h, w = scene.label.shape
    anns = []
    for obj, vis in zip(scene.objects, scene.visible):
        if int(vis.sum()) < min_area:
            continue
        seg = mask_to_coco_segmentation(vis, min_iou=min_iou)
        rle = _rle_of_segmentation(seg, h, w)
        area = float(mu.area(rle))
        if area < 1:
            continue
        bbox = [float(v) for v in mu.toBbox(rle)]
        anns.append({"category_id": obj.cls + 1, "segmentation": seg, "area": area,
                     "bbox": bbox, "iscrowd": 0})
    return anns


def _write_coco(root: Path, p: dict, specs: list[ClassSpec]) -> dict:
    _import_mask_utils()
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    w, h = p["seg_size"]
    categories = [{"id": s.index + 1, "name": s.name, "supercategory": s.shape} for s in specs]
    counts = {}
    for split, n in (("train", p["coco_train"]), ("val", p["coco_val"])):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        n_poly = n_rle = 0
        for i in range(n):
            sc = build_scene("coco", split, i, seed=p["seed"], num_classes=len(specs),
                             size=(w, h))
            fname = f"synth_{split}_{i:05d}.jpg"
            _save_jpeg(sc.image, d / fname, p["jpeg_quality"])
            image_id = i + 1
            images.append({"id": image_id, "file_name": fname, "width": w, "height": h,
                           "license": 1})
            for ann in coco_annotations(sc, p["min_area"]):
                if isinstance(ann["segmentation"], list):
                    n_poly += 1
                else:
                    n_rle += 1
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
        data = {
            "info": {"description": "synthetic shapes world", "version": str(GENERATOR_VERSION),
                     "year": 2024, "contributor": "vitmix", "url": "",
                     "date_created": "2024-01-01"},
            "licenses": [{"id": 1, "name": "CC0 1.0", "url": ""}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        _write_json(root / "annotations" / f"instances_{split}.json", data, compact=True)
        counts[split] = {"images": n, "annotations": len(annotations),
                         "polygon": n_poly, "rle": n_rle}
    return {"images": counts}


def _voc_xml(image_id: str, w: int, h: int, objects: list[dict]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "synthetic shapes world"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(w)
    ET.SubElement(size, "height").text = str(h)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "1"
    for o in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = o["name"]
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(o["truncated"])
        ET.SubElement(el, "occluded").text = str(o["occluded"])
        ET.SubElement(el, "difficult").text = "0"
        bb = ET.SubElement(el, "bndbox")
        for k in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(bb, k).text = str(o[k])
    ET.indent(root, space="\t")
    return ET.ElementTree(root)


def _write_voc(root: Path, p: dict, specs: list[ClassSpec]) -> dict:
    dirs = {k: root / k for k in ("JPEGImages", "SegmentationClass", "Annotations",
                                  "ImageSets/Segmentation", "ImageSets/Main")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    ids = []
    size = p["cls_size"]
    for i in range(p["voc_val"]):
        sc = build_scene("voc", "val", i, seed=p["seed"], num_classes=len(specs), size=size)
        image_id = f"synth_{i:05d}"
        ids.append(image_id)
        seg = sc.label.copy()
        seg[_boundary_band(sc.instance)] = 255
        objs = []
        # the labelled (dominant) object first, then the others in drawing order
        order = [sc.main] + [k for k in range(len(sc.objects)) if k != sc.main]
        for k in order:
            vis = sc.visible[k]
            if int(vis.sum()) < p["min_area"]:
                seg[vis] = 255  # too small to annotate: void, as VOC does
                continue
            bx0, by0, bx1, by1 = _tight_box(vis)
            full = sc.masks[k]
            touches = bool(full[0].any() or full[-1].any() or full[:, 0].any() or full[:, -1].any())
            objs.append({"name": specs[sc.objects[k].cls].name,
                         "truncated": int(touches),
                         "occluded": int(vis.sum() < 0.95 * full.sum()),
                         "xmin": bx0 + 1, "ymin": by0 + 1, "xmax": bx1 + 1, "ymax": by1 + 1})
        _save_jpeg(sc.image, dirs["JPEGImages"] / f"{image_id}.jpg", p["jpeg_quality"])
        im = Image.fromarray(seg)
        im.putpalette(palette)
        im.save(dirs["SegmentationClass"] / f"{image_id}.png")
        _voc_xml(image_id, size, size, objs).write(dirs["Annotations"] / f"{image_id}.xml")
    text = "".join(f"{i}\n" for i in ids)
    for sub in ("ImageSets/Segmentation", "ImageSets/Main"):
        (dirs[sub] / "val.txt").write_text(text)
    return {"images": {"val": len(ids)}}


_WRITERS = {"imagenet": _write_imagenet, "ade": _write_ade, "coco": _write_coco, "voc": _write_voc}

# parameters that each subset's content depends on
_SUBSET_KEYS = {
    "imagenet": ("cls_size", "train_per_class", "val_per_class", "jpeg_quality"),
    "ade": ("seg_size", "seg_train", "seg_val", "jpeg_quality"),
    "coco": ("seg_size", "coco_train", "coco_val", "jpeg_quality", "min_area"),
    "voc": ("cls_size", "voc_val", "jpeg_quality", "min_area"),
}
_COMMON_KEYS = ("generator_version", "seed", "num_classes")


# ---------------------------------------------------------------------------
# generate()
# ---------------------------------------------------------------------------

def default_params() -> dict:
    """The default generation parameters (the keyword arguments of :func:`generate`)."""
    return {
        "seed": 0, "num_classes": 10, "cls_size": 64, "seg_size": 128,
        "train_per_class": 200, "val_per_class": 40, "seg_train": 300, "seg_val": 60,
        "coco_train": 200, "coco_val": 50, "voc_val": 100,
        "jpeg_quality": 90, "min_area": 16,
    }


def _normalise_only(only) -> list[str]:
    if only is None:
        return list(SUBSETS)
    if isinstance(only, str):
        only = [s for s in only.split(",")]
    names = [s.strip().lower() for s in only if s and s.strip()]
    bad = sorted(set(names) - set(SUBSETS))
    if bad or not names:
        raise ValueError(f"'only' must name some of {', '.join(SUBSETS)}; got {only!r}")
    return [s for s in SUBSETS if s in names]


def _write_json(path: Path, data, compact: bool = False) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        if compact:
            json.dump(data, f, separators=(",", ":"))
        else:
            json.dump(data, f, indent=2)
            f.write("\n")
    os.replace(tmp, path)


def _read_manifest(path: Path) -> dict | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != "vitmix-synthetic":
        return None
    return data


class _DirLock:
    """Advisory lock on the output directory (a no-op where fcntl is missing)."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return self
        self.f = open(self.path, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            import fcntl
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()


def generate(out_dir: str | os.PathLike, *, seed: int = 0, num_classes: int = 10,
             cls_size: int = 64, seg_size: int | str | tuple[int, int] = 128,
             train_per_class: int = 200, val_per_class: int = 40,
             seg_train: int = 300, seg_val: int = 60, coco_train: int = 200,
             coco_val: int = 50, voc_val: int = 100, only: str | Iterable[str] | None = None,
             jpeg_quality: int = 90, min_area: int = 16, force: bool = False,
             verbose: bool = False) -> dict:
    """Write the synthetic sets under ``out_dir`` and return the manifest.

    A subset is reused, not rewritten, when ``out_dir/synthetic.json`` records it
    with the same parameters (unless ``force``). Subsets to (re)build are written
    to temporary directories and renamed into place; the manifest is removed
    first and written last, so an interrupted run never looks complete.
    Subsets from an earlier run with another seed, class count or generator
    version are deleted, since ``classes.json`` no longer describes them.

    The returned dict is the manifest plus two entries not stored in the file:
    ``generated`` (subsets written by this call; empty when all were reused)
    and ``elapsed_s``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    subsets = _normalise_only(only)
    if int(seed) < 0:
        raise ValueError("seed must be non-negative")
    specs = class_specs(num_classes)
    params = {
        "generator_version": GENERATOR_VERSION, "seed": int(seed), "num_classes": len(specs),
        "cls_size": int(cls_size), "seg_size": list(_parse_size(seg_size)),
        "train_per_class": int(train_per_class), "val_per_class": int(val_per_class),
        "seg_train": int(seg_train), "seg_val": int(seg_val),
        "coco_train": int(coco_train), "coco_val": int(coco_val), "voc_val": int(voc_val),
        "jpeg_quality": int(jpeg_quality), "min_area": int(min_area),
    }
    if params["cls_size"] < 8:
        raise ValueError("cls_size must be at least 8")
    for k in ("train_per_class", "val_per_class", "seg_train", "seg_val",
              "coco_train", "coco_val", "voc_val"):
        if params[k] < 0:
            raise ValueError(f"{k} must be non-negative")

    def subset_params(name: str) -> dict:
        return {k: params[k] for k in _COMMON_KEYS + _SUBSET_KEYS[name]}

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "synthetic.json"
    log = print if verbose else (lambda *a, **k: None)

    with _DirLock(out / ".synthetic.lock"):
        old = _read_manifest(manifest_path)
        old_sets = dict(old.get("sets", {})) if old else {}
        todo = [s for s in subsets
                if force or not (s in old_sets and old_sets[s].get("params") == subset_params(s)
                                 and (out / s).is_dir())]
        if not todo and (out / "classes.json").is_file():
            result = dict(old)
            result.update(generated=[], elapsed_s=time.perf_counter() - t0)
            return result

        # from here on the directory is not complete until the manifest is rewritten
        manifest_path.unlink(missing_ok=True)
        for p in out.glob(".tmp-*"):  # leftovers of an interrupted run
            shutil.rmtree(p, ignore_errors=True)
        keep = {}
        for name, entry in old_sets.items():
            if name in todo or name not in SUBSETS:
                continue
            ep = entry.get("params", {})
            if all(ep.get(k) == params[k] for k in _COMMON_KEYS) and (out / name).is_dir():
                keep[name] = entry
            else:
                log(f"removing stale subset {name} (other seed/classes/generator version)")
                shutil.rmtree(out / name, ignore_errors=True)

        for name in todo:
            ts = time.perf_counter()
            tmp = out / f".tmp-{name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            info = _WRITERS[name](tmp, {**params, "seg_size": tuple(params["seg_size"])}, specs)
            dest = out / name
            if dest.exists():
                trash = out / f".tmp-old-{name}-{os.getpid()}"
                os.replace(dest, trash)
                os.replace(tmp, dest)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, dest)
            keep[name] = {"params": subset_params(name), **info}
            log(f"  {name:9s} {json.dumps(info['images'])}  ({time.perf_counter() - ts:.1f}s)")

        _write_json(out / "classes.json", [s.name for s in specs])
        manifest = {
            "format": "vitmix-synthetic",
            "params": {**params, "only": subsets},
            "classes": [s.name for s in specs],
            "class_specs": [{"index": s.index, "name": s.name, "shape": s.shape,
                             "texture": s.texture, "hue": round(s.hue, 4)} for s in specs],
            "layout": {
                "imagenet": "imagenet/{train,val}/<class>/<class>_<idx>.JPEG",
                "ade": "ade/{images,annotations}/{training,validation}/synth_{train,val}_<idx>.{jpg,png}",
                "coco": "coco/{train,val}/*.jpg, coco/annotations/instances_{train,val}.json",
                "voc": "voc/{JPEGImages,SegmentationClass,Annotations,ImageSets/{Main,Segmentation}}",
            },
            "sets": {k: keep[k] for k in SUBSETS if k in keep},
        }
        _write_json(manifest_path, manifest)  # last: marks the directory complete
    result = dict(manifest)
    result.update(generated=list(todo), elapsed_s=time.perf_counter() - t0)
    return result
