"""Compositing: objects drawn in order on a background, and the ground truth that results.

:func:`render_scene` is the one rendering core of every synthetic dataset (ImageNet
folder, ADE20K, COCO, VOC, CIFAR, Tiny ImageNet); what differs between them is only
which objects a scene holds (:mod:`.objects`, :mod:`.scenes`) and how it is written
(:mod:`.formats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .background import background
from .objects import ObjectSpec
from .shapes import shape_mask
from .textures import texture_weight

__all__ = ["Scene", "draw_object", "render_scene"]


@dataclass
class Scene:
    """A rendered scene with its ground truth.

    ``masks[i]`` is the full (unoccluded) ``(H, W)`` bool mask of ``objects[i]`` inside the
    image; ``visible[i]`` what is left of it after the later objects are drawn on top;
    ``instance`` holds ``i + 1`` of the top-most object (0 = background) and ``label`` the
    class ``c + 1`` of the top-most object (0 = background).
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
        """``(W, H)``."""
        return self.image.shape[1], self.image.shape[0]


def draw_object(img: np.ndarray, obj: ObjectSpec, rng: np.random.Generator) -> np.ndarray:
    """Paint ``obj`` onto the float ``(H, W, 3)`` image ``img`` in place; return its full ``(H, W)`` mask.

    Only the object's bounding square is computed: shape test, texture, linear shading
    and per-pixel grey noise (drawn from ``rng``) over that window at once.
    """
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
    m = shape_mask(obj.shape, u, v)
    t = texture_weight(obj.texture, dx, dy, obj.period, obj.phase)
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
    """Render ``objects`` in order (later ones occlude earlier ones) on clutter.

    ``size`` is ``N`` (square) or ``(W, H)``; the image is ``(H, W, 3)`` uint8 after a
    last layer of per-pixel colour noise.
    """
    w, h = (size, size) if isinstance(size, (int, np.integer)) else size
    img = background(rng, h, w)
    masks = [draw_object(img, obj, rng) for obj in objects]
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
