"""Validation of COCO instance-segmentation JSON before a detector trains on it.

MMDetection and Detectron2 read COCO files lazily and trust them: an image
listed in the JSON but absent on disk fails in the data loader hours into a
run, a zero-width box gives a NaN box-regression target, a two-point polygon
crashes the mask rasteriser, a category name that does not match the config
silently drops every annotation of that class. :func:`check_coco` finds all
of these up front, with the file named in every message, and either refuses
the file (``on_error="raise"``) or drops the bad entries and counts them
(``on_error="skip"``, the default). :func:`prepare_coco` does the same and
hands back a path to use (the original file when it is clean, else a cleaned
copy in a cache directory), so that the dataset and the COCO evaluator see
the same annotations. Both framework adapters call it when a dataset is built
(:class:`downstream.mmdet.VitMixCocoDataset`,
:func:`downstream.detectron2.register_checked_coco_instances`).

Always errors (the file cannot be used): unreadable or invalid JSON, missing
``images``/``annotations``/``categories`` lists, no categories, duplicate
image or category ids, configured class names absent from the categories,
a missing image directory, no image left after skipping.

Skipped and counted (errors under ``on_error="raise"``), by reason:

=========================  ====================================================
``image_missing_on_disk``  the file is not under the image directory (the
                           image and its annotations are dropped)
``image_bad_entry``        no ``file_name``, or width/height missing or <= 0
``ann_unknown_image``      ``image_id`` not among the images
``ann_unknown_category``   ``category_id`` not among the categories
``ann_bad_bbox``           ``bbox`` missing, not 4 finite numbers
``ann_zero_area_box``      box width or height <= 0
``ann_box_outside_image``  the box does not overlap the image
``ann_no_valid_mask``      no segmentation, or none of its polygons is valid, or
                           an RLE whose size is not the image's
=========================  ====================================================

Also counted, without dropping the annotation: ``polygon_parts_dropped``
(polygon parts with fewer than 3 points, an odd number of coordinates,
non-finite values or zero area, removed from an annotation that keeps at
least one valid part) and ``area_filled`` (annotations without ``area``,
which pycocotools' evaluation needs, get the box area). Non-contiguous
category ids are fine (both frameworks map them to contiguous labels) and
only noted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["CocoDataError", "CocoCheckReport", "check_coco", "prepare_coco", "SKIP_REASONS", "default_cache_dir"]

logger = logging.getLogger(__name__)

SKIP_REASONS = (
    "image_missing_on_disk",
    "image_bad_entry",
    "ann_unknown_image",
    "ann_unknown_category",
    "ann_bad_bbox",
    "ann_zero_area_box",
    "ann_box_outside_image",
    "ann_no_valid_mask",
)
_COUNTED = ("polygon_parts_dropped", "area_filled")


class CocoDataError(ValueError):
    """A COCO annotation file cannot be used (or has problems under ``on_error='raise'``)."""


@dataclass
class CocoCheckReport:
    """What :func:`check_coco` found.

    Attributes:
        ann_file: the JSON file checked.
        img_dir: the image directory (None when images were not looked for).
        num_images / num_annotations: entries in the file.
        kept_images / kept_annotations: entries left after skipping.
        skipped: reason -> number of images or annotations dropped.
        counted: ``polygon_parts_dropped`` / ``area_filled`` counts.
        examples: reason -> a few offending entries (ids, file names).
        notes: remarks that need no action.
        category_ids: the category ids, in file order.
    """

    ann_file: str
    img_dir: Optional[str] = None
    num_images: int = 0
    num_annotations: int = 0
    kept_images: int = 0
    kept_annotations: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)
    counted: Dict[str, int] = field(default_factory=dict)
    examples: Dict[str, List[str]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    category_ids: List[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing was dropped or changed."""
        return not any(self.skipped.values()) and not any(self.counted.values())

    def _add(self, reason: str, example: str, n: int = 1, table: Optional[Dict[str, int]] = None) -> None:
        table = self.skipped if table is None else table
        table[reason] = table.get(reason, 0) + n
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(example)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "ann_file": self.ann_file,
            "img_dir": self.img_dir,
            "num_images": self.num_images,
            "num_annotations": self.num_annotations,
            "kept_images": self.kept_images,
            "kept_annotations": self.kept_annotations,
            "skipped": dict(self.skipped),
            "counted": dict(self.counted),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """A multi-line human-readable account."""
        lines = [
            f"COCO check of {self.ann_file}: kept {self.kept_images}/{self.num_images} images, "
            f"{self.kept_annotations}/{self.num_annotations} annotations"
        ]
        for reason in SKIP_REASONS:
            if self.skipped.get(reason):
                lines.append(f"  skipped {self.skipped[reason]} ({reason}), e.g. {'; '.join(self.examples[reason])}")
        for reason in _COUNTED:
            if self.counted.get(reason):
                lines.append(f"  {reason}: {self.counted[reason]}, e.g. {'; '.join(self.examples[reason])}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)

    __str__ = summary


def _finite(vals: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals)


def _polygon_area(poly: Sequence[float]) -> float:
    xs, ys = poly[0::2], poly[1::2]
    n = len(xs)
    return 0.5 * abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n)))


def _load_json(ann_file: str) -> Dict[str, Any]:
    if not os.path.isfile(ann_file):
        raise CocoDataError(f"COCO annotation file not found: {ann_file}")
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise CocoDataError(f"cannot read COCO annotation file {ann_file}: {e}") from e
    if not isinstance(data, dict):
        raise CocoDataError(f"{ann_file}: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoDataError(f"{ann_file}: no '{key}' list (is this a COCO instances file?)")
    return data


def check_coco(
    ann_file: str,
    img_dir: Optional[str] = None,
    *,
    on_error: str = "skip",
    classes: Optional[Sequence[str]] = None,
    require_masks: bool = True,
    data: Optional[Dict[str, Any]] = None,
) -> Tuple[Dict[str, Any], CocoCheckReport]:
    """Check a COCO instances file and return a cleaned copy.

    Args:
        ann_file: path of the JSON file (named in every message).
        img_dir: directory the images' ``file_name`` are relative to; None
            skips the on-disk check.
        on_error: ``"skip"`` drops and counts bad entries; ``"raise"`` raises
            :class:`CocoDataError` listing them.
        classes: class names the config trains on; each must be a category
            name in the file.
        require_masks: annotations need a valid segmentation (Mask R-CNN).
        data: the parsed JSON, when already loaded (``ann_file`` then only
            names it).

    Returns:
        (cleaned, report): ``cleaned`` is a COCO dict holding only the kept
        images and annotations (the input object itself when nothing changed).

    Raises:
        CocoDataError: see the module docstring.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    ann_file = os.fspath(ann_file)
    if data is None:
        data = _load_json(ann_file)
    report = CocoCheckReport(ann_file=ann_file, img_dir=None if img_dir is None else os.fspath(img_dir))
    images, anns, cats = data["images"], data["annotations"], data["categories"]
    report.num_images, report.num_annotations = len(images), len(anns)

    # ---- categories (always fatal)
    if not cats:
        raise CocoDataError(f"{ann_file}: the 'categories' list is empty")
    cat_ids: List[int] = []
    names: Dict[str, int] = {}
    for c in cats:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise CocoDataError(f"{ann_file}: category entry without an integer 'id' and a 'name': {c!r}")
        if c["id"] in cat_ids:
            raise CocoDataError(f"{ann_file}: duplicate category id {c['id']}")
        if c["name"] in names:
            raise CocoDataError(f"{ann_file}: duplicate category name {c['name']!r} (ids {names[c['name']]}, {c['id']})")
        cat_ids.append(c["id"])
        names[c["name"]] = c["id"]
    report.category_ids = list(cat_ids)
    if sorted(cat_ids) != list(range(min(cat_ids), min(cat_ids) + len(cat_ids))):
        report.notes.append(
            f"category ids are not contiguous ({len(cat_ids)} categories, ids {min(cat_ids)}..{max(cat_ids)}); "
            "the frameworks map them to labels 0..K-1"
        )
    if classes is not None:
        absent = [c for c in classes if c not in names]
        if absent:
            raise CocoDataError(
                f"{ann_file}: the configured classes {absent} are not category names of the file "
                f"(it has {sorted(names)[:20]}{' ...' if len(names) > 20 else ''}); "
                "MMDetection would silently drop their annotations"
            )
        if len(set(classes)) != len(classes):
            raise CocoDataError(f"{ann_file}: the configured classes contain duplicates: {list(classes)}")

    if img_dir is not None and not os.path.isdir(img_dir):
        raise CocoDataError(f"image directory {img_dir} (for {ann_file}) does not exist")

    # ---- images
    kept_images: List[Dict[str, Any]] = []
    sizes: Dict[Any, Tuple[float, float]] = {}
    seen_ids = set()
    for img in images:
        iid = img.get("id") if isinstance(img, dict) else None
        if iid is None:
            raise CocoDataError(f"{ann_file}: image entry without an 'id': {img!r}")
        if iid in seen_ids:
            raise CocoDataError(f"{ann_file}: duplicate image id {iid}")
        seen_ids.add(iid)
        fname, w, h = img.get("file_name"), img.get("width"), img.get("height")
        if not isinstance(fname, str) or not fname or not _finite([w, h]) or w <= 0 or h <= 0:
            report._add("image_bad_entry", f"image id {iid} (file_name={fname!r}, width={w!r}, height={h!r})")
            continue
        if img_dir is not None and not os.path.isfile(os.path.join(img_dir, fname)):
            report._add("image_missing_on_disk", os.path.join(img_dir, fname))
            continue
        kept_images.append(img)
        sizes[iid] = (float(w), float(h))
    if not kept_images:
        raise CocoDataError(f"{ann_file}: no usable image left\n" + report.summary())

    # ---- annotations
    valid_cats = set(cat_ids)
    kept_anns: List[Dict[str, Any]] = []
    modified = False
    for ann in anns:
        aid = ann.get("id")
        iid = ann.get("image_id")
        if iid not in sizes:
            reason = "ann_unknown_image" if iid not in seen_ids else None
            if reason:
                report._add(reason, f"annotation {aid} (image_id={iid!r})")
            continue  # annotations of dropped images go with them
        if ann.get("category_id") not in valid_cats:
            report._add("ann_unknown_category", f"annotation {aid} (category_id={ann.get('category_id')!r})")
            continue
        box = ann.get("bbox")
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not _finite(box):
            report._add("ann_bad_bbox", f"annotation {aid} (bbox={box!r})")
            continue
        x, y, bw, bh = box
        if bw <= 0 or bh <= 0:
            report._add("ann_zero_area_box", f"annotation {aid} (bbox={box!r})")
            continue
        w, h = sizes[iid]
        if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
            report._add("ann_box_outside_image", f"annotation {aid} (bbox={box!r}, image {int(w)}x{int(h)})")
            continue
        seg = ann.get("segmentation")
        new_ann = ann
        if isinstance(seg, list):
            good = [
                p
                for p in seg
                if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0 and _finite(p) and _polygon_area(p) > 0
            ]
            if len(good) != len(seg):
                if not good:
                    if require_masks:
                        report._add("ann_no_valid_mask", f"annotation {aid} ({len(seg)} degenerate polygon part(s))")
                        continue
                else:
                    report._add("polygon_parts_dropped", f"annotation {aid}", len(seg) - len(good), report.counted)
                new_ann = dict(ann, segmentation=good)
        elif isinstance(seg, dict):
            size = seg.get("size")
            if "counts" not in seg or not isinstance(size, (list, tuple)) or [int(v) for v in size] != [int(h), int(w)]:
                report._add("ann_no_valid_mask", f"annotation {aid} (RLE size {size!r} vs image {int(h)}x{int(w)})")
                continue
        elif require_masks and not ann.get("iscrowd", 0):
            report._add("ann_no_valid_mask", f"annotation {aid} (no segmentation)")
            continue
        if not _finite([new_ann.get("area", float("nan"))]):
            new_ann = dict(new_ann, area=float(bw * bh))
            report._add("area_filled", f"annotation {aid}", 1, report.counted)
        if new_ann is not ann:
            modified = True
        kept_anns.append(new_ann)

    report.kept_images, report.kept_annotations = len(kept_images), len(kept_anns)
    if not report.clean and on_error == "raise":
        raise CocoDataError(
            f"{ann_file} has entries that cannot be trained on (on_error='raise'; use 'skip' to drop them):\n"
            + report.summary()
        )
    if len(kept_images) == len(images) and len(kept_anns) == len(anns) and not modified:
        return data, report
    cleaned = dict(data, images=kept_images, annotations=kept_anns)
    return cleaned, report


def default_cache_dir() -> str:
    """``$VITMIX_CACHE_DIR/coco_checked`` (default ``~/.cache/vitmix/coco_checked``)."""
    root = os.environ.get("VITMIX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vitmix")
    return os.path.join(root, "coco_checked")


def prepare_coco(
    ann_file: str,
    img_dir: Optional[str] = None,
    *,
    on_error: str = "skip",
    classes: Optional[Sequence[str]] = None,
    require_masks: bool = True,
    cache_dir: Optional[str] = None,
    log: bool = True,
) -> Tuple[str, CocoCheckReport]:
    """Check ``ann_file`` and return the path the framework should read.

    The original path when the file is clean; otherwise a cleaned copy under
    ``cache_dir`` (default :func:`default_cache_dir`) named after the file and
    a digest of (path, size, mtime, options, kept entries), written atomically
    and reused while none of these changes.

    Returns:
        (path, report)
    """
    ann_file = os.fspath(ann_file)
    cleaned, report = check_coco(ann_file, img_dir, on_error=on_error, classes=classes, require_masks=require_masks)
    if log:
        (logger.info if report.clean else logger.warning)(report.summary())
    if report.clean:
        return ann_file, report
    st = os.stat(ann_file)
    h = hashlib.sha1()
    h.update(json.dumps([os.path.abspath(ann_file), st.st_size, st.st_mtime_ns, on_error, require_masks]).encode())
    h.update(json.dumps([[i.get("id") for i in cleaned["images"]], [a.get("id") for a in cleaned["annotations"]]]).encode())
    h.update(json.dumps(report.counted, sort_keys=True).encode())
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(ann_file))[0]
    out = os.path.join(cache_dir, f"{stem}.{h.hexdigest()[:16]}.checked.json")
    if not os.path.isfile(out):
        tmp = f"{out}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(cleaned, f, separators=(",", ":"))
        os.replace(tmp, out)
    report.notes.append(f"cleaned annotations written to {out}")
    if log:
        logger.warning(f"using the cleaned copy {out} of {ann_file}")
    return out, report
