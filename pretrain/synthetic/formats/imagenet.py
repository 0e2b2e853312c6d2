"""The ImageNet folder layout: ``{train,val}/<class>/<class>_<idx>.JPEG``, one labelled object per image."""

from __future__ import annotations

from pathlib import Path

from ..scenes import build_scene
from ..world import ClassSpec
from .io import save_jpeg

__all__ = ["write_imagenet"]


def write_imagenet(root: Path, p: dict, specs: list[ClassSpec]) -> dict:
    """Write ``p["train_per_class"]`` / ``p["val_per_class"]`` images of every class at ``p["cls_size"]`` px.

    Returns ``{"images": {"train": n, "val": m}}`` for the manifest.
    """
    counts = {}
    for split, n in (("train", p["train_per_class"]), ("val", p["val_per_class"])):
        for spec in specs:
            d = root / split / spec.name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                sc = build_scene("imagenet", split, i, seed=p["seed"], num_classes=len(specs),
                                 size=p["cls_size"], label=spec.index)
                save_jpeg(sc.image, d / f"{spec.name}_{i:05d}.JPEG", p["jpeg_quality"])
        counts[split] = n * len(specs)
    return {"images": counts}
