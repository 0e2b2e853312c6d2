"""Quality of the CLS attention as a weakly-supervised mask.

This is the attention-quality experiment of "TransMix: Attend to Mix for Vision Transformers",
Chen et al., CVPR 2022, arXiv:2111.09833 (weakly-supervised segmentation on Pascal VOC 2012 and
weakly-supervised localisation on ImageNet), with the attention thresholded and scored as in DINO
("Emerging Properties in Self-Supervised Vision Transformers", Caron et al., ICCV 2021,
arXiv:2104.14294; official code: facebookresearch/dino).
Pascal VOC: "The PASCAL Visual Object Classes (VOC) Challenge", Everingham et al., IJCV 2010.

The head-averaged CLS attention of the last block, ``A`` of shape (B, h, w), is thresholded as in
DINO: per image, keep the smallest set of patches holding at least ``keep_mass`` (e.g. 0.6) of the
attention mass. The binary patch mask is upsampled (nearest) to the image and scored by

(a) **weakly-supervised segmentation**: the Jaccard index (IoU) between the mask and the
    foreground of Pascal VOC 2012 ``SegmentationClass`` (every class != 0; the 255 boundary/void
    band is ignored). Reported as the mean per-image Jaccard (DINO's number) and the dataset-level
    Jaccard (summed intersections over summed unions);
(b) **weakly-supervised object localisation (WSOL)**: the box around the largest connected
    component of the mask (8-connectivity by default; ties go to the component met first in
    raster order) against the ground-truth boxes (Pascal-VOC XML, as the ImageNet val boxes are
    distributed). A prediction is correct when its IoU with *any* ground-truth box of the image
    is >= 0.5 ("GT-known" localisation accuracy, the convention the TransMix paper follows);
    ``top1_loc`` additionally needs the correct top-1 class.

Images are resized to the model's input (no crop) and masks/boxes are mapped to that frame,
so the whole batch is scored with tensor ops; box IoU is invariant to that axis-aligned scaling,
the segmentation masks are resized with nearest-neighbour sampling.
"""
from __future__ import annotations

import itertools
import logging
import os
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data.folders import UnreadableImageError
from ..jobs import split_present
from .common import (IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, AnalysisError, LoadedModel,
                     check_same_input, rgb_loader)

log = logging.getLogger("analysis")

VOC_IGNORE = 255


# ------------------------------------------------------------------------------- metrics
def threshold_attention(att: torch.Tensor, keep_mass: float = 0.6) -> torch.Tensor:
    """DINO-style thresholding: keep the top patches holding ``keep_mass`` of the attention.

    Args:
        att: (B, h, w) or (B, P) non-negative attention (need not be normalised).
        keep_mass: fraction of the mass to keep, in (0, 1].
    Returns:
        bool tensor shaped like ``att``: per row, the smallest set of highest-attention patches
        whose mass is >= ``keep_mass`` of the row's total (a patch is kept when the mass of the
        patches ranked strictly above it is < ``keep_mass``).
    """
    if not 0.0 < float(keep_mass) <= 1.0:
        raise AnalysisError(f"keep_mass must be in (0, 1], got {keep_mass}")
    flat = att.reshape(att.shape[0], -1).float()
    flat = flat / flat.sum(dim=1, keepdim=True).clamp_min(1e-12)
    val, order = flat.sort(dim=1, descending=True)
    above = val.cumsum(dim=1) - val  # mass ranked strictly above each patch
    keep_sorted = above < float(keep_mass)
    keep = torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
    return keep.view(att.shape)


def upsample_mask(mask: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(B, h, w) bool patch mask -> (B, H, W) bool pixel mask (nearest)."""
    return F.interpolate(mask[:, None].float(), size=tuple(size), mode="nearest")[:, 0] > 0.5


def jaccard(pred: torch.Tensor, label: torch.Tensor, ignore_index: int = VOC_IGNORE) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image intersection and union of a predicted foreground mask with a VOC label map.

    Args:
        pred: (B, H, W) bool predicted foreground.
        label: (B, H, W) integer class map; foreground is every value other than 0 and
            ``ignore_index``; pixels equal to ``ignore_index`` count for neither.
    Returns:
        (intersection (B,), union (B,)) as float64; per-image Jaccard = inter / union (defined as
        1 when the union is empty).
    """
    if pred.shape != label.shape:
        raise AnalysisError(f"mask {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
    valid = label != ignore_index
    fg = (label != 0) & valid
    pred = pred & valid
    inter = (pred & fg).flatten(1).sum(1).double()
    union = (pred | fg).flatten(1).sum(1).double()
    return inter, union


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise AnalysisError(f"connectivity must be 4 or 8, got {connectivity}")
    s = np.zeros((3, 3, 3), bool)  # no links across the batch axis
    s[1] = np.ones((3, 3), bool) if connectivity == 8 else np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    return s


def largest_component_boxes(mask: torch.Tensor, connectivity: int = 8) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bounding box of the largest connected component of every mask, in one labelling call.

    Args:
        mask: (B, h, w) bool.
    Returns:
        boxes (B, 4) float ``[x0, y0, x1, y1]`` in cell-edge coordinates (a component covering
        cells ``c0..c1`` gives ``x0 = c0, x1 = c1 + 1``), and valid (B,) bool (False for empty masks,
        whose box is all zeros). Ties in size go to the component whose first cell comes first in
        raster order.
    """
    from scipy import ndimage

    m = mask.detach().to("cpu", torch.bool).numpy()
    b = m.shape[0]
    boxes = np.zeros((b, 4), np.float32)
    valid = np.zeros(b, bool)
    lab, n = ndimage.label(m, structure=_structure(connectivity))
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        slices = ndimage.find_objects(lab)
        img = np.array([s[0].start for s in slices])
        # labels are numbered in raster order, so a stable sort keeps the first component on ties
        order = np.lexsort((np.arange(n), -sizes, img))
        first = order[np.unique(img[order], return_index=True)[1]]
        for lbl in first:  # one entry per image that has a component (B at most)
            s = slices[lbl]
            boxes[img[lbl]] = (s[2].start, s[1].start, s[2].stop, s[1].stop)
            valid[img[lbl]] = True
    return torch.from_numpy(boxes), torch.from_numpy(valid)


def box_iou_any(pred: torch.Tensor, gt: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
    """Best IoU of each predicted box with the ground-truth boxes of its image.

    Args:
        pred: (B, 4) ``[x0, y0, x1, y1]``.
        gt: (B, K, 4) padded ground-truth boxes; gt_valid: (B, K) bool.
    Returns:
        (B,) float: max IoU over the valid boxes (0 when an image has none).
    """
    p = pred[:, None, :].float()
    g = gt.float()
    lt = torch.maximum(p[..., :2], g[..., :2])
    rb = torch.minimum(p[..., 2:], g[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_p = (p[..., 2:] - p[..., :2]).clamp_min(0).prod(-1)
    area_g = (g[..., 2:] - g[..., :2]).clamp_min(0).prod(-1)
    iou = inter / (area_p + area_g - inter).clamp_min(1e-9)
    iou = torch.where(gt_valid, iou, torch.zeros_like(iou))
    return iou.max(dim=1).values if iou.shape[1] else torch.zeros(pred.shape[0])


# ---------------------------------------------------------------------------------- data
def _resize_normalise(img_size, mean, std):
    from torchvision import transforms as T

    return T.Compose([T.Resize(tuple(img_size), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                      T.Normalize(mean, std)])


def _read_ids(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise AnalysisError(f"image-set list not found: {path}")
    return [ln.split()[0] for ln in open(path) if ln.strip()]


class VOCForeground(Dataset):
    """Pascal VOC 2012 segmentation images with their class maps, resized to the model input.

    ``root`` is the ``VOC2012`` folder (``JPEGImages/``, ``SegmentationClass/``,
    ``ImageSets/Segmentation/<split>.txt``). Ids whose image or mask file is missing are skipped,
    counted in ``skipped`` and logged.

    Items: (image (3, S, S) normalised, label (S, S) uint8 with 255 = ignore).
    """

    def __init__(self, root: str, img_size, split: str = "val", mean=IMAGENET_MEAN, std=IMAGENET_STD):
        for sub in ("JPEGImages", "SegmentationClass"):
            if not os.path.isdir(os.path.join(root, sub)):
                raise AnalysisError(f"{root} is not a VOC2012 folder: no {sub}/")
        ids = _read_ids(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"))
        self.items = []
        self.skipped: List[str] = []
        for i in ids:
            img, lab = os.path.join(root, "JPEGImages", f"{i}.jpg"), os.path.join(root, "SegmentationClass", f"{i}.png")
            (self.items.append((img, lab)) if os.path.isfile(img) and os.path.isfile(lab) else self.skipped.append(i))
        if self.skipped:
            log.warning("VOC %s: skipped %d of %d ids without image or mask (e.g. %s)", root, len(self.skipped),
                        len(ids), self.skipped[0])
        if not self.items:
            raise AnalysisError(f"{root}: none of the {len(ids)} '{split}' ids has an image and a mask")
        self.size = tuple(img_size)
        self.tf = _resize_normalise(img_size, mean, std)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        img_path, lab_path = self.items[i]
        try:
            lab = Image.open(lab_path)
            lab.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise UnreadableImageError(lab_path, f"{type(exc).__name__}: {exc}") from None
        if lab.mode not in ("P", "L"):
            raise UnreadableImageError(lab_path, f"expected a palette/grey class map, got mode {lab.mode}")
        lab = lab.resize((self.size[1], self.size[0]), Image.NEAREST)
        return self.tf(rgb_loader(img_path)), torch.from_numpy(np.array(lab, dtype=np.uint8))


def parse_voc_boxes(path: str) -> Tuple[List[List[float]], List[str]]:
    """Boxes of a Pascal-VOC XML file as continuous ``[x0, y0, x1, y1]`` pixel edges.

    VOC stores 1-based inclusive pixel indices, so ``xmin=1, xmax=W`` is the full width:
    ``x0 = xmin - 1, x1 = xmax``. Returns (boxes, object names).
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise AnalysisError(f"cannot read box file {path}: {e}") from e
    boxes, names = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as e:
            raise AnalysisError(f"{path}: bad bndbox ({e})") from e
        if x1 < x0 or y1 < y0:
            raise AnalysisError(f"{path}: box with xmax < xmin or ymax < ymin: {(x0, y0, x1, y1)}")
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        names.append((obj.findtext("name") or "").strip())
    return boxes, names


class BoxedImages(Dataset):
    """Images with Pascal-VOC XML boxes, resized to the model input; boxes scaled alike.

    Build with :meth:`from_voc` (``VOC2012`` layout: ``JPEGImages``, ``Annotations``,
    ``ImageSets/Main/<split>.txt``) or :meth:`from_folders` (any image tree, e.g. ImageNet
    ``val/<wnid>/*.JPEG``, with ``<boxes_dir>/<image stem>.xml`` as the ImageNet val boxes are
    distributed). Images without an XML or without boxes are skipped (counted in ``skipped``).
    With a class list the label is the index of the first object's name (-1 if unknown), which
    enables top-1 localisation.

    Items: (image (3, S, S), boxes (K, 4) float in model-input pixels, label int).
    """

    def __init__(self, items: List[Tuple[str, str]], img_size, classes: Optional[Sequence[str]] = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, source: str = ""):
        if not items:
            raise AnalysisError(f"{source}: no image with a box file")
        self.items = items
        self.size = tuple(img_size)
        self.classes = {c: i for i, c in enumerate(classes)} if classes is not None else None
        self.tf = _resize_normalise(img_size, mean, std)

    @classmethod
    def from_voc(cls, root: str, img_size, split: str = "val", **kw) -> "BoxedImages":
        for sub in ("JPEGImages", "Annotations"):
            if not os.path.isdir(os.path.join(root, sub)):
                raise AnalysisError(f"{root} is not a VOC2012 folder: no {sub}/")
        lst = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(lst):
            lst = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
        ids = _read_ids(lst)
        items, skipped = [], []
        for i in ids:
            img, xml = os.path.join(root, "JPEGImages", f"{i}.jpg"), os.path.join(root, "Annotations", f"{i}.xml")
            (items.append((img, xml)) if os.path.isfile(img) and os.path.isfile(xml) else skipped.append(i))
        ds = cls(items, img_size, source=root, **kw)
        ds.skipped = skipped
        ds._log_skips(root, len(ids))
        return ds

    @classmethod
    def from_folders(cls, images: str, boxes: str, img_size, **kw) -> "BoxedImages":
        if not os.path.isdir(images):
            raise AnalysisError(f"image folder not found: {images}")
        if not os.path.isdir(boxes):
            raise AnalysisError(f"box folder not found: {boxes} (Pascal-VOC XML files named <image stem>.xml)")
        xmls = {os.path.splitext(e.name)[0]: e.path for e in os.scandir(boxes) if e.name.endswith(".xml")}
        items, skipped = [], []
        for dirpath, _, files in sorted(os.walk(images)):
            for fname in sorted(files):
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                stem = os.path.splitext(fname)[0]
                (items.append((os.path.join(dirpath, fname), xmls[stem])) if stem in xmls else skipped.append(fname))
        ds = cls(items, img_size, source=images, **kw)
        ds.skipped = skipped
        ds._log_skips(images, len(items) + len(skipped))
        return ds

    def _log_skips(self, root: str, total: int) -> None:
        if self.skipped:
            log.warning("boxes %s: skipped %d of %d images without a box file (e.g. %s)", root, len(self.skipped),
                        total, self.skipped[0])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        img_path, xml_path = self.items[i]
        img = rgb_loader(img_path)
        boxes, names = parse_voc_boxes(xml_path)
        w, h = img.size
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        b *= torch.tensor([self.size[1] / w, self.size[0] / h] * 2)
        label = -1
        if self.classes is not None and names:
            label = self.classes.get(names[0], -1)
        return self.tf(img), b, label


def collate_boxes(batch):
    """Stack images, pad boxes: (B, 3, S, S), (B, K, 4), (B, K) valid, (B,) labels."""
    images = torch.stack([b[0] for b in batch])
    k = max(1, max(b[1].shape[0] for b in batch))
    boxes = torch.zeros(len(batch), k, 4)
    valid = torch.zeros(len(batch), k, dtype=torch.bool)
    for i, b in enumerate(batch):
        boxes[i, : b[1].shape[0]] = b[1]
        valid[i, : b[1].shape[0]] = True
    return images, boxes, valid, torch.tensor([b[2] for b in batch], dtype=torch.long)


# --------------------------------------------------------------------------------- study
_SUMS = ("inter", "union", "jac", "area", "iou")  # kept per batch, added in batch order when merged
_COUNTS = ("n_seg", "loc", "top1loc", "n_loc")


def attention_quality_study(models: Sequence[LoadedModel], device: torch.device, seg_loader=None,
                            box_loader=None, keep_masses: Sequence[float] = (0.6,), connectivity: int = 8,
                            iou_threshold: float = 0.5, amp_dtype=None, num_examples: int = 4,
                            max_batches: Optional[int] = None) -> Tuple[List[Dict], Dict]:
    """Jaccard (VOC foreground) and WSOL accuracy of every model's thresholded CLS attention.

    Args:
        seg_loader: yields (images, labels (B, S, S)) e.g. over :class:`VOCForeground`.
        box_loader: yields :func:`collate_boxes` batches over :class:`BoxedImages`.
        keep_masses: DINO thresholds to evaluate (each gives one row per model).
    Returns:
        rows ``{checkpoint, keep_mass, jaccard, jaccard_dataset, mask_area, seg_images,
        gt_known_loc, top1_loc, mean_box_iou, loc_images}`` (metrics in %), and ``examples`` for
        overlays: ``{"images": (N, 3, S, S) normalised, "labels": (N, S, S) or None, "boxes": ...,
        "attention": {name: (N, h, w)}, "pred_boxes": {name: {keep_mass: (N, 4) pixels}}}``.
    """
    if seg_loader is None and box_loader is None:
        raise AnalysisError("attention quality needs VOC segmentation data and/or box data")
    t0 = time.perf_counter()
    counts = attention_counts(models, device, seg_loader, box_loader, keep_masses, connectivity, iou_threshold,
                              amp_dtype, num_examples, max_batches,
                              examples_from="seg" if seg_loader is not None else "box")
    log.info("attention quality: %d models x %d thresholds in %.1fs", len(models), len(keep_masses),
             time.perf_counter() - t0)
    return attention_rows(models, keep_masses, counts), counts["examples"]


@torch.inference_mode()
def attention_counts(models: Sequence[LoadedModel], device: torch.device, seg_loader=None, box_loader=None,
                     keep_masses: Sequence[float] = (0.6,), connectivity: int = 8, iou_threshold: float = 0.5,
                     amp_dtype=None, num_examples: int = 4, max_batches: Optional[int] = None,
                     examples_from: Optional[str] = "seg") -> Dict:
    """The sums behind :func:`attention_quality_study`: ``{"stats": {(name, keep_mass): {...}},
    "unknown_labels": int, "box_loader": bool, "examples": dict}``, float sums kept per batch (see
    :func:`merge_attention_counts`). The loaders may yield :class:`pretrain.jobs.Present` items;
    ``examples_from`` (``seg``, ``box`` or None) names the loader whose first batch gives the overlay examples."""
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise AnalysisError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    keep_masses = [float(k) for k in keep_masses]
    for k in keep_masses:
        threshold_attention(torch.ones(1, 1), k)
    img_size, _ = check_same_input(models)
    stats = {(m.name, k): dict(inter=[], union=[], jac=[], area=[], n_seg=0, loc=0, top1loc=0, iou=[], n_loc=0,
                               has_label=False)
             for m in models for k in keep_masses}
    examples: Dict = {"attention": {m.name: [] for m in models}, "pred_boxes": {}}

    if seg_loader is not None:
        first = examples_from == "seg"
        for item in itertools.islice(seg_loader, max_batches):
            batch, _ = split_present(item)
            if batch is None:
                continue
            images, labels = batch
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if tuple(labels.shape[-2:]) != tuple(img_size):
                raise AnalysisError(f"labels are {tuple(labels.shape[-2:])}, models run at {img_size}")
            for m in models:
                att = m.attention(images, amp_dtype)
                for k in keep_masses:
                    pred = upsample_mask(threshold_attention(att, k), img_size)
                    inter, union = jaccard(pred, labels)
                    per = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
                    s = stats[(m.name, k)]
                    # per-batch sums stay on the device until the end: no sync per batch
                    s["inter"].append(inter.sum())
                    s["union"].append(union.sum())
                    s["jac"].append(per.sum())
                    s["area"].append(pred.flatten(1).double().mean(1).sum())
                    s["n_seg"] += images.shape[0]
                if first:
                    examples["attention"][m.name] = att[:num_examples].cpu()
            if first:
                examples["images"] = images[:num_examples].cpu()
                examples["labels"] = labels[:num_examples].cpu()
                first = False

    unknown_labels = 0
    if box_loader is not None:
        first = examples_from == "box"
        for item in itertools.islice(box_loader, max_batches):
            batch, _ = split_present(item)
            if batch is None:
                continue
            images, gt, gt_valid, target = batch
            images = images.to(device, non_blocking=True)
            has_labels = bool((target >= 0).any())
            unknown_labels += int((target < 0).sum())
            target = target.to(device)
            for m in models:
                if m.num_classes:
                    logits, att = m.forward(images, amp_dtype, attention=True)
                    cls_ok = logits.argmax(1).eq(target).cpu()
                else:
                    att = m.attention(images, amp_dtype)
                    cls_ok = None
                h, w = att.shape[-2:]
                scale = torch.tensor([img_size[1] / w, img_size[0] / h] * 2)
                for k in keep_masses:
                    boxes, ok = largest_component_boxes(threshold_attention(att, k), connectivity)
                    boxes = boxes * scale
                    iou = torch.where(ok, box_iou_any(boxes, gt, gt_valid), torch.zeros(len(ok)))
                    hit = iou >= iou_threshold
                    s = stats[(m.name, k)]
                    s["loc"] += int(hit.sum())
                    s["iou"].append(float(iou.sum()))
                    s["n_loc"] += images.shape[0]
                    if cls_ok is not None:  # unknown labels (-1) never match: they count as misses
                        s["top1loc"] += int((hit & cls_ok).sum())
                        s["has_label"] = s["has_label"] or has_labels
                    if first:
                        examples["pred_boxes"].setdefault(m.name, {})[k] = boxes[:num_examples]
                if first:
                    examples["attention"][m.name] = att[:num_examples].cpu()
            if first:
                examples["images"] = images[:num_examples].cpu()
                examples["labels"] = None
                examples["boxes"] = (gt[:num_examples], gt_valid[:num_examples])
                first = False
    for s in stats.values():
        for key in _SUMS:
            s[key] = [float(v) for v in (torch.stack(s[key]).tolist() if torch.is_tensor(s[key][0]) else s[key])] \
                if s[key] else []
    return {"stats": stats, "unknown_labels": unknown_labels, "box_loader": box_loader is not None,
            "examples": examples}


def merge_attention_counts(parts: Sequence[Dict]) -> Dict:
    """One :func:`attention_counts` result from those of consecutive parts of the data (in order): the
    per-batch sums are concatenated, so that :func:`attention_rows` adds them in the order one pass would."""
    stats: Dict = {}
    for p in parts:
        for key, s in p["stats"].items():
            t = stats.setdefault(key, {**{f: [] for f in _SUMS}, **{f: 0 for f in _COUNTS}, "has_label": False})
            for f in _SUMS:
                t[f].extend(s[f])
            for f in _COUNTS:
                t[f] += int(s[f])
            t["has_label"] = t["has_label"] or bool(s["has_label"])
    return {"stats": stats, "unknown_labels": sum(int(p["unknown_labels"]) for p in parts),
            "box_loader": any(p["box_loader"] for p in parts), "examples": parts[0]["examples"] if parts else {}}


def attention_rows(models: Sequence[LoadedModel], keep_masses: Sequence[float], counts: Dict) -> List[Dict]:
    """The result rows of :func:`attention_quality_study` from its (merged) counts."""
    stats = counts["stats"]
    if counts["unknown_labels"] and counts["box_loader"] and any(s["has_label"] for s in stats.values()):
        log.warning("WSOL: %d images have no known class label; they count as top-1 localisation misses",
                    counts["unknown_labels"])
    rows = []
    for m in models:
        for k in keep_masses:
            k = float(k)
            s = dict(stats[(m.name, k)])
            for key in _SUMS:  # in batch order, from 0.0: the additions one pass over the data makes
                total = 0.0
                for v in s[key]:
                    total = total + v
                s[key] = total
            row = {"checkpoint": m.name, "keep_mass": k}
            if s["n_seg"]:
                row.update(jaccard=100.0 * s["jac"] / s["n_seg"],
                           jaccard_dataset=100.0 * s["inter"] / max(s["union"], 1.0),
                           mask_area=100.0 * s["area"] / s["n_seg"], seg_images=s["n_seg"])
            if s["n_loc"]:
                row.update(gt_known_loc=100.0 * s["loc"] / s["n_loc"],
                           top1_loc=(100.0 * s["top1loc"] / s["n_loc"]) if s["has_label"] else None,
                           mean_box_iou=100.0 * s["iou"] / s["n_loc"], loc_images=s["n_loc"])
            rows.append(row)
    return rows
