"""The ADE20K layout: ``{images,annotations}/{training,validation}/synth_<split>_<idx>.{jpg,png}``.

Annotations are single-channel PNGs holding the class ``c + 1`` of the top-most object
and 0 ("other") elsewhere, as in the ADE20K scene-parsing release.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..scenes import build_scene
from ..world import ClassSpec
from .io import save_jpeg

__all__ = ["write_ade"]


def write_ade(root: Path, p: dict, specs: list[ClassSpec]) -> dict:
    """Write ``p["seg_train"]`` / ``p["seg_val"]`` multi-object scenes of size ``p["seg_size"]`` ``(W, H)``.

    Returns ``{"images": {"train": n, "val": m}}`` for the manifest.
    """
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
            save_jpeg(sc.image, di / f"{stem}.jpg", p["jpeg_quality"])
            Image.fromarray(sc.label).save(da / f"{stem}.png")
        counts[split] = n
    return {"images": counts}
