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
from .objects import BACKGROUND, ObjectSpec
from .shapes import shape_mask
from .textures import texture_weight

__all__ = ["Scene", "draw_object", "render_scene"]


@dataclass
class Scene:
    """A rendered scene with its ground truth.

    ``masks[i]`` is the full (unoccluded) ``(H, W)`` bool mask of ``objects[i]`` inside the
    image; ``visible[i]`` what is left of it after the later objects are drawn on top;
    ``instance`` holds ``i + 1`` of the top-most object (0 = background, including loose parts)
    and ``label`` the class ``c + 1`` of the top-most object (0 = background).
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
    """Paint ``obj``'s parts onto the float ``(H, W, 3)`` image ``img`` in place; return its full ``(H, W)`` mask.

    Per part, only its bounding square is computed: shape test, texture, the object's linear
    shading and per-pixel grey noise (drawn from ``rng``) over that window at once.
    """
    h, w = img.shape[:2]
    full = np.zeros((h, w), bool)
    ca, sa = math.cos(obj.angle), math.sin(obj.angle)
    extent = obj.radius  # the shading's scale: one value for the whole object
    for part, (px, py) in zip(obj.parts, obj.part_centres()):
        ext = part.radius + 1.0
        x0, x1 = max(int(math.floor(px - ext)), 0), min(int(math.ceil(px + ext)), w)
        y0, y1 = max(int(math.floor(py - ext)), 0), min(int(math.ceil(py + ext)), h)
        if x0 >= x1 or y0 >= y1:  # entirely outside the image
            continue
        dx = (np.arange(x0, x1) + 0.5 - px)[None, :]
        dy = (np.arange(y0, y1) + 0.5 - py)[:, None]
        u = (dx * ca + dy * sa) / part.radius
        v = (-dx * sa + dy * ca) / part.radius
        m = shape_mask(part.shape, u, v)
        t = texture_weight(part.texture, dx, dy, part.period, part.phase)
        c1 = np.asarray(part.color)
        c2 = np.asarray(part.color2)
        col = c1 + t[..., None] * (c2 - c1)
        ox = (np.arange(x0, x1) + 0.5 - obj.cx)[None, :]
        oy = (np.arange(y0, y1) + 0.5 - obj.cy)[:, None]
        shade = 1.0 + (obj.light[0] * ox + obj.light[1] * oy) / extent
        col *= shade[..., None]
        sigma = 9.0 if part.texture == "solid" else 4.0
        col += rng.normal(0.0, sigma, size=col.shape[:2])[..., None]
        crop = img[y0:y1, x0:x1]
        crop[m] = col[m]
        full[y0:y1, x0:x1] |= m
    return full


def render_scene(rng: np.random.Generator, size: int | tuple[int, int],
                 objects: Sequence[ObjectSpec], main: int | None = None) -> Scene:
    """Render ``objects`` in order (later ones occlude earlier ones) on the cluttered background.

    ``size`` is ``N`` (square) or ``(W, H)``; the image is ``(H, W, 3)`` uint8 after a last
    layer of per-pixel colour noise. Loose parts (``cls == BACKGROUND``: clutter, occluders)
    are drawn but are background in the ground truth: the scene's ``objects``, ``masks``,
    ``visible`` and ``instance`` hold only the objects of a class, and ``main`` (an index into
    ``objects`` as given) is renumbered among them. ``extra["occluded"]`` counts the object
    pixels hidden by loose parts drawn over them.
    """
    w, h = (size, size) if isinstance(size, (int, np.integer)) else size
    img = background(rng, h, w)
    drawn = [draw_object(img, obj, rng) for obj in objects]
    img += rng.normal(0.0, 3.0, size=img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    top = np.zeros((h, w), np.int32)  # 1 + index (into ``objects``) of the top-most drawn item
    for i, m in enumerate(drawn):
        top[m] = i + 1
    keep = [i for i, o in enumerate(objects) if o.cls != BACKGROUND]
    renum = np.zeros(len(objects) + 1, np.int32)
    renum[[i + 1 for i in keep]] = np.arange(1, len(keep) + 1)
    instance = renum[top]
    masks = [drawn[i] for i in keep]
    visible = [instance == k + 1 for k in range(len(keep))]
    lut = np.zeros(len(keep) + 1, np.uint8)
    lut[1:] = [objects[i].cls + 1 for i in keep]
    label = lut[instance]
    occluded = sum(int((m & (instance == 0)).sum()) for m in masks)
    return Scene(image=image, objects=[objects[i] for i in keep], masks=masks, visible=visible,
                 instance=instance, label=label, main=None if main is None else keep.index(main),
                 extra={"occluded": occluded, "loose_parts": len(objects) - len(keep)})
