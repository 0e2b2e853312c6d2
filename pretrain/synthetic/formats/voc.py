"""The Pascal VOC 2012 layout: ``JPEGImages``, ``SegmentationClass`` (palette PNGs), ``Annotations``
(XML boxes) and ``ImageSets/{Main,Segmentation}/val.txt``.

As in VOC, a band along object boundaries and objects too small to annotate are void (255)
in the segmentation; the XML lists the labelled (dominant) object first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from ..masks import tight_box
from ..scenes import build_scene
from ..world import ClassSpec
from .io import save_jpeg

__all__ = ["voc_palette", "write_voc"]


def voc_palette(n: int = 256) -> list[int]:
    """The Pascal VOC colour map as a flat ``[r, g, b, ...]`` list of ``3 n`` values."""
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


def boundary_band(instance: np.ndarray) -> np.ndarray:
    """Bool ``(H, W)``: pixels of the ``(H, W)`` instance map with a 3x3 neighbour of another
    instance, where one side is an object."""
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


def write_voc(root: Path, p: dict, specs: list[ClassSpec]) -> dict:
    """Write ``p["voc_val"]`` one-object scenes of ``p["cls_size"]`` px (image ``i`` shows class ``i % K``).

    Returns ``{"images": {"val": n}}`` for the manifest.
    """
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
        seg[boundary_band(sc.instance)] = 255
        objs = []
        # the labelled (dominant) object first, then the others in drawing order
        order = [sc.main] + [k for k in range(len(sc.objects)) if k != sc.main]
        for k in order:
            vis = sc.visible[k]
            if int(vis.sum()) < p["min_area"]:
                seg[vis] = 255  # too small to annotate: void, as VOC does
                continue
            bx0, by0, bx1, by1 = tight_box(vis)
            full = sc.masks[k]
            touches = bool(full[0].any() or full[-1].any() or full[:, 0].any() or full[:, -1].any())
            objs.append({"name": specs[sc.objects[k].cls].name,
                         "truncated": int(touches),
                         "occluded": int(vis.sum() < 0.95 * full.sum()),
                         "xmin": bx0 + 1, "ymin": by0 + 1, "xmax": bx1 + 1, "ymax": by1 + 1})
        save_jpeg(sc.image, dirs["JPEGImages"] / f"{image_id}.jpg", p["jpeg_quality"])
        im = Image.fromarray(seg)
        im.putpalette(palette)
        im.save(dirs["SegmentationClass"] / f"{image_id}.png")
        _voc_xml(image_id, size, size, objs).write(dirs["Annotations"] / f"{image_id}.xml")
    text = "".join(f"{i}\n" for i in ids)
    for sub in ("ImageSets/Segmentation", "ImageSets/Main"):
        (dirs[sub] / "val.txt").write_text(text)
    return {"images": {"val": len(ids)}}
