"""Scene sampling: which scene every image of every synthetic dataset shows.

Every image is rendered from its own random generator, seeded from ``(seed, subset/split
code, index)``, so an image does not depend on which other sets were generated, how many
images a set has, or in which order they are written. :func:`build_scene` is the exact
scene that the writers save for one image.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .objects import classification_objects, multi_object_objects
from .render import Scene, render_scene
from .world import class_specs

__all__ = ["SET_CODES", "OneObjectRecipe", "ONE_OBJECT_SCENES", "image_rng", "parse_size", "build_scene"]

#: Codes mixed into the per-image seeds; one per (subset, split). ``layout`` is the generator
#: of a small set's file layout (label order of its splits, ``wnids.txt`` order).
SET_CODES = {
    ("imagenet", "train"): 11, ("imagenet", "val"): 12,
    ("ade", "train"): 21, ("ade", "val"): 22,
    ("coco", "train"): 31, ("coco", "val"): 32,
    ("voc", "val"): 42,
    ("cifar10", "train"): 51, ("cifar10", "val"): 52, ("cifar10", "layout"): 50,
    ("cifar100", "train"): 61, ("cifar100", "val"): 62, ("cifar100", "layout"): 60,
    ("tiny_imagenet", "train"): 71, ("tiny_imagenet", "val"): 72, ("tiny_imagenet", "layout"): 70,
}


class OneObjectRecipe(NamedTuple):
    """How the one-object (classification) scenes of a subset are drawn (:func:`.objects.classification_objects`)."""

    size: int  # default image side in pixels
    cell: tuple[float, float]  # range of the part spacing as a fraction of the side
    distractor_p: float  # probability of a smaller object of another class
    max_clutter: int  # loose parts scattered behind the object
    occluder_p: float  # probability of a loose part over the object


#: ImageNet folder and VOC: an object whose 3 x 3 layout spans 60-85% of the side (cell 0.2-0.28),
#: clutter of up to 3 loose parts, a smaller object of another class in 30% of the images and a
#: loose part over the object in 30%. The CIFAR / Tiny ImageNet stand-ins: a close-up (cell
#: 0.27-0.33, the layout fills the frame and may be cut by the border) with one loose part at
#: most and no distractor, as in those datasets the object fills the small frame. (All ours.)
_STAND_IN = dict(cell=(0.27, 0.33), distractor_p=0.0, max_clutter=1, occluder_p=0.2)
ONE_OBJECT_SCENES = {
    "imagenet": OneObjectRecipe(64, (0.2, 0.28), 0.3, 3, 0.3),
    "voc": OneObjectRecipe(64, (0.2, 0.28), 0.3, 3, 0.3),
    "cifar10": OneObjectRecipe(32, **_STAND_IN),
    "cifar100": OneObjectRecipe(32, **_STAND_IN),
    "tiny_imagenet": OneObjectRecipe(64, **_STAND_IN),
}


def image_rng(seed: int, subset: str, split: str, *index: int) -> np.random.Generator:
    """The random generator of one image (or layout), independent of all others."""
    if int(seed) < 0:
        raise ValueError("seed must be non-negative")
    code = SET_CODES[(subset, split)]
    return np.random.default_rng(np.random.SeedSequence([int(seed), code, *map(int, index)]))


def parse_size(size) -> tuple[int, int]:
    """``128``, ``"128"``, ``"160x120"`` (W x H) or ``(W, H)`` -> ``(W, H)`` (each side at least 8)."""
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


def build_scene(subset: str, split: str, index: int, *, seed: int = 0,
                num_classes: int = 10, size: int | tuple[int, int] | None = None,
                label: int | None = None) -> Scene:
    """The exact scene that the writers save for one image.

    ``imagenet``, ``cifar10``, ``cifar100``, ``tiny_imagenet``: one dominant object of class
    ``label`` (required); ``index`` counts within the class. ``voc``: the label is
    ``index % num_classes``. These follow :data:`ONE_OBJECT_SCENES` (``size`` defaults to
    64 px, 32 px for CIFAR). ``ade``/``coco``: multi-object scenes, ``size`` defaults to 128.
    """
    specs = class_specs(num_classes)
    if subset in ONE_OBJECT_SCENES:
        recipe = ONE_OBJECT_SCENES[subset]
        if subset == "voc":
            label = index % len(specs)
            rng = image_rng(seed, subset, split, index)
        elif label is None:
            raise ValueError(f"{subset} scenes need the class label")
        else:
            rng = image_rng(seed, subset, split, label, index)
        size = recipe.size if size is None else int(size)
        objs, main = classification_objects(rng, label, specs, size, cell=recipe.cell,
                                            distractor_p=recipe.distractor_p, max_clutter=recipe.max_clutter,
                                            occluder_p=recipe.occluder_p)
        return render_scene(rng, size, objs, main=main)
    if subset in ("ade", "coco"):
        wh = parse_size(128 if size is None else size)
        rng = image_rng(seed, subset, split, index)
        objs = multi_object_objects(rng, specs, wh)
        return render_scene(rng, wh, objs)
    raise ValueError(f"unknown subset {subset!r}")
