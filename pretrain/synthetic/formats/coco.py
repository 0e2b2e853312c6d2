"""The COCO layout: ``{train,val}/*.jpg`` and ``annotations/instances_{train,val}.json``.

Every visible object (at least ``min_area`` pixels) is one instance annotation; its
``segmentation`` is exact pixel-edge polygons, or RLE where the mask has holes or the
polygons would not match it. pycocotools is imported only when a COCO set is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..masks import mask_to_polygons
from ..render import Scene
from ..scenes import build_scene
from ..world import GENERATOR_VERSION, ClassSpec
from .io import save_jpeg, write_json

__all__ = ["mask_to_coco_segmentation", "coco_annotations", "write_coco"]


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
    """pycocotools RLE of a polygon list or a (JSON or binary) RLE dict, for an ``h x w`` image."""
    mu = _import_mask_utils()
    if isinstance(seg, list):
        return mu.merge(mu.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], str):
        return {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    return seg


def mask_to_coco_segmentation(mask: np.ndarray, min_iou: float = 0.9):
    """COCO ``segmentation`` for a binary ``(H, W)`` mask: polygons, or RLE where needed.

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


def coco_annotations(scene: Scene, min_area: int = 16, min_iou: float = 0.9) -> list[dict]:
    """COCO annotations (without ``id``/``image_id``) for the visible objects of ``scene``."""
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


def write_coco(root: Path, p: dict, specs: list[ClassSpec]) -> dict:
    """Write ``p["coco_train"]`` / ``p["coco_val"]`` multi-object scenes and their instance JSON files.

    Category ``c + 1`` is class ``c`` (supercategory ``parts<n>``: its number of parts). Returns
    ``{"images": {split: {"images", "annotations", "polygon", "rle"}}}`` for the manifest.
    """
    _import_mask_utils()
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    w, h = p["seg_size"]
    categories = [{"id": s.index + 1, "name": s.name, "supercategory": f"parts{len(s.cells)}"} for s in specs]
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
            save_jpeg(sc.image, d / fname, p["jpeg_quality"])
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
        write_json(root / "annotations" / f"instances_{split}.json", data, compact=True)
        counts[split] = {"images": n, "annotations": len(annotations),
                         "polygon": n_poly, "rle": n_rle}
    return {"images": counts}
