"""Input validation for MMSegmentation data: datasets that check their files, and
a transform that checks every label map as it is loaded.

Registered in MMSeg's registries when :mod:`downstream.mmseg` is imported
(``custom_imports``):

* ``CheckedADE20KDataset`` / ``CheckedSegDataset``: MMSeg's ``ADE20KDataset``
  / ``BaseSegDataset`` whose file listing stops with an error naming the
  directory when ``data_root`` or an image/annotation folder does not exist,
  when no image is found, or when an image has no label map; every sample
  also carries ``num_classes`` for :class:`CheckSegMap`.
* ``CheckSegMap``: placed right after ``LoadAnnotations``; refuses a label map
  that is not a single-channel (H, W) array, whose size differs from its
  image's original size, or that holds values outside ``[0, num_classes)``
  other than ``ignore_index``. The error names the label file (and the image).
  It works on the array ``LoadAnnotations`` already decoded: no second read.

Without these checks MMSeg trains on such data silently (out-of-range values
are dropped by the IoU histogram and crash the loss only on some devices) or
fails far from the cause (a size mismatch surfaces as a crop or loss shape
error).
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets.ade import ADE20KDataset
from mmseg.datasets.basesegdataset import BaseSegDataset
from mmseg.registry import DATASETS, TRANSFORMS

__all__ = ["CheckSegMap", "CheckedSegDataset", "CheckedADE20KDataset", "check_seg_map"]

_ROOT_HINT = (
    "set data_root in the config, or pass --cfg-options train_dataloader.dataset.data_root=DIR "
    "val_dataloader.dataset.data_root=DIR test_dataloader.dataset.data_root=DIR"
)


def check_seg_map(
    seg: np.ndarray,
    num_classes: int,
    ignore_index: int = 255,
    image_shape: Optional[tuple] = None,
    seg_path: str = "<label map>",
    img_path: Optional[str] = None,
    reduce_zero_label: bool = False,
    label_mapped: bool = False,
) -> None:
    """Validate one decoded label map; raise ``ValueError`` naming the file.

    Args:
        seg: (H, W) integer class indices, after ``reduce_zero_label`` and any
            label mapping (as ``LoadAnnotations`` leaves ``gt_seg_map``).
        num_classes: valid values are ``0 .. num_classes - 1``.
        ignore_index: the one other value allowed.
        image_shape: (H, W[, C]) of the original image, or None to skip the
            size check.
        seg_path / img_path: file names used in messages.
        reduce_zero_label: the file's values are ``seg + 1`` (for messages).
        label_mapped: a label map was applied (messages then speak of mapped
            values only).
    """
    if seg.ndim != 2:
        raise ValueError(
            f"label map {seg_path} has shape {tuple(seg.shape)}; expected a single-channel (H, W) image of class "
            "indices (is it a colour-coded or RGB label image?)"
        )
    if image_shape is not None and tuple(seg.shape) != tuple(image_shape[:2]):
        raise ValueError(
            f"label map {seg_path} is {seg.shape[0]}x{seg.shape[1]} (HxW) but its image "
            f"{img_path or '<image>'} is {image_shape[0]}x{image_shape[1]}: image and label must have the same size"
        )
    bad = (seg >= num_classes) & (seg != ignore_index)
    if seg.dtype.kind == "i":
        bad |= seg < 0
    if bad.any():
        values, counts = np.unique(seg[bad], return_counts=True)
        shown = ", ".join(f"{int(v)} ({int(c)} px)" for v, c in zip(values[:10], counts[:10]))
        if len(values) > 10:
            shown += f", ... ({len(values) - 10} more values)"
        if label_mapped:
            where = "after the dataset's label mapping"
        elif reduce_zero_label:
            where = (
                "after reduce_zero_label (file value v becomes v - 1, 0 becomes ignore); the file holds "
                + ", ".join(str(int(v) + 1) for v in values[:10])
            )
        else:
            where = "as stored in the file"
        raise ValueError(
            f"label map {seg_path} has values outside the class range 0..{num_classes - 1} "
            f"(ignore_index {ignore_index}): {shown}, {where}. Check num_classes / the dataset's classes "
            "and reduce_zero_label"
        )


@TRANSFORMS.register_module(name="CheckSegMap", force=True)
class CheckSegMap(BaseTransform):
    """Validate ``gt_seg_map`` right after ``LoadAnnotations``.

    Required keys: ``gt_seg_map`` (H, W), ``seg_map_path``; used if present:
    ``ori_shape`` (the image's size as decoded, set by ``LoadImageFromFile``),
    ``img_path``, ``num_classes`` (set by the checked datasets),
    ``reduce_zero_label``, ``label_map``. Nothing is modified.

    Args:
        num_classes: number of classes; ``None`` takes it from the sample
            (``CheckedADE20KDataset``/``CheckedSegDataset`` put it there).
        ignore_index: the label value that marks unlabelled pixels.
        check_size: compare the label size with the original image size.
    """

    def __init__(self, num_classes: Optional[int] = None, ignore_index: int = 255, check_size: bool = True):
        super().__init__()
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"CheckSegMap: num_classes must be >= 1, got {num_classes}")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.ignore_index = int(ignore_index)
        self.check_size = bool(check_size)

    def transform(self, results: Dict) -> Dict:
        seg = results.get("gt_seg_map")
        if seg is None:
            raise KeyError("CheckSegMap found no 'gt_seg_map': place it right after LoadAnnotations in the pipeline")
        num_classes = self.num_classes if self.num_classes is not None else results.get("num_classes")
        if num_classes is None:
            raise ValueError(
                "CheckSegMap needs the number of classes: pass CheckSegMap(num_classes=N), or use the dataset "
                "types CheckedADE20KDataset / CheckedSegDataset, which provide it"
            )
        check_seg_map(
            np.asarray(seg),
            int(num_classes),
            ignore_index=self.ignore_index,
            image_shape=results.get("ori_shape") if self.check_size else None,
            seg_path=str(results.get("seg_map_path", "<label map>")),
            img_path=results.get("img_path"),
            reduce_zero_label=bool(results.get("reduce_zero_label", False)),
            label_mapped=bool(results.get("label_map")),
        )
        return results

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"check_size={self.check_size})"
        )


class _CheckedFilesMixin:
    """File-listing checks shared by the checked dataset classes."""

    def load_data_list(self) -> List[dict]:
        name = type(self).__name__
        if self.data_root and not os.path.isdir(self.data_root):
            raise FileNotFoundError(
                f"{name}: data_root {self.data_root!r} does not exist "
                f"(resolved to {os.path.abspath(self.data_root)}); {_ROOT_HINT}"
            )
        img_dir = self.data_prefix.get("img_path")
        ann_dir = self.data_prefix.get("seg_map_path")
        if self.ann_file and not os.path.isdir(self.ann_file) and not os.path.isfile(self.ann_file):
            raise FileNotFoundError(f"{name}: ann_file {self.ann_file!r} does not exist")
        for what, d in (("image", img_dir), ("annotation", ann_dir)):
            if d and not os.path.isdir(d):
                raise FileNotFoundError(
                    f"{name}: {what} directory {d!r} does not exist (data_root {self.data_root!r}, "
                    f"data_prefix {dict(self.data_prefix)}); {_ROOT_HINT}"
                )
        data_list = super().load_data_list()
        if not data_list:
            raise FileNotFoundError(
                f"{name}: no images ending in {self.img_suffix!r} found in {img_dir!r}"
                + (f" (listed in {self.ann_file})" if self.ann_file else "")
            )
        if ann_dir:
            missing = [(d["img_path"], d["seg_map_path"]) for d in data_list if not os.path.isfile(d["seg_map_path"])]
            if missing:
                raise FileNotFoundError(
                    f"{name}: {len(missing)} of {len(data_list)} images in {img_dir!r} have no label map in "
                    f"{ann_dir!r} (e.g. {missing[0][0]} -> {missing[0][1]} is missing; label suffix "
                    f"{self.seg_map_suffix!r})"
                )
        num_classes = len(self.metainfo["classes"])
        for d in data_list:
            d["num_classes"] = num_classes
        return data_list


@DATASETS.register_module(name="CheckedSegDataset", force=True)
class CheckedSegDataset(_CheckedFilesMixin, BaseSegDataset):
    """``BaseSegDataset`` with the file checks of this module (same arguments)."""


@DATASETS.register_module(name="CheckedADE20KDataset", force=True)
class CheckedADE20KDataset(_CheckedFilesMixin, ADE20KDataset):
    """``ADE20KDataset`` (150 classes, ``.jpg``/``.png``, ``reduce_zero_label``)
    with the file checks of this module (same arguments)."""
