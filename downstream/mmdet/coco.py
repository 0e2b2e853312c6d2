"""MMDetection's checked COCO dataset and metric: ``VitMixCocoDataset`` (DATASETS) and
``VitMixCocoMetric`` (METRICS).

Both run :func:`downstream.coco_checks.prepare_coco` (the same check as the
Detectron2 registration), so a bad annotation file stops the run naming the
file, and the metric evaluates against the same cleaned file the dataset reads.
"""

from __future__ import annotations

import logging
from typing import List, Optional

from mmdet.datasets.coco import CocoDataset
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import DATASETS, METRICS
from mmengine.logging import print_log

from ..coco_checks import prepare_coco

__all__ = ["VitMixCocoDataset", "VitMixCocoMetric"]


@DATASETS.register_module(name="VitMixCocoDataset", force=True)
class VitMixCocoDataset(CocoDataset):
    """``CocoDataset`` whose annotations are checked before they are parsed.

    :func:`downstream.coco_checks.prepare_coco` runs on ``ann_file`` with the
    image directory ``data_prefix['img']`` and the configured classes: a file
    that cannot be used, or configured class names that are not categories
    of the file, raise :class:`~downstream.coco_checks.CocoDataError` naming
    the file; bad entries are dropped and counted in the log
    (``on_error='skip'``) or refused (``on_error='raise'``).

    Args:
        on_error: ``'skip'`` or ``'raise'``.
        check_images: look for every image file on disk.
        **kwargs: those of ``CocoDataset``.
    """

    def __init__(self, *args, on_error: str = "skip", check_images: bool = True, **kwargs):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"VitMixCocoDataset: on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.check_images = bool(check_images)
        self.check_report = None
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get("img") if self.check_images else None
        classes = self.metainfo.get("classes")
        path, report = prepare_coco(
            self.ann_file, img_dir, on_error=self.on_error, classes=list(classes) if classes else None, log=False
        )
        self.check_report = report
        print_log(report.summary(), logger="current", level=logging.INFO if report.clean else logging.WARNING)
        self.ann_file = path
        return super().load_data_list()


@METRICS.register_module(name="VitMixCocoMetric", force=True)
class VitMixCocoMetric(CocoMetric):
    """``CocoMetric`` that evaluates against the checked annotation file.

    Runs the same :func:`~downstream.coco_checks.prepare_coco` as
    :class:`VitMixCocoDataset` (same options give the same cleaned file), so
    images dropped from the dataset are not counted as missed detections.

    Args:
        img_dir: the image directory of the evaluated split (for the on-disk
            check; None skips it).
        on_error: ``'skip'`` or ``'raise'``.
        **kwargs: those of ``CocoMetric`` (``ann_file`` required).
    """

    def __init__(self, ann_file: Optional[str] = None, img_dir: Optional[str] = None, on_error: str = "skip", **kwargs):
        if ann_file is None:
            raise ValueError("VitMixCocoMetric needs ann_file (the COCO JSON of the evaluated split)")
        path, report = prepare_coco(ann_file, img_dir, on_error=on_error, log=False)
        if not report.clean:
            print_log("VitMixCocoMetric: " + report.summary(), logger="current", level=logging.WARNING)
        self.check_report = report
        super().__init__(ann_file=path, **kwargs)

