"""Checked COCO registration for Detectron2: the dataset and ``COCOEvaluator`` read the same checked file."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..coco_checks import CocoCheckReport, prepare_coco

__all__ = ["register_checked_coco_instances"]

logger = logging.getLogger(__name__)


def register_checked_coco_instances(
    name: str,
    json_file: str,
    image_root: str,
    *,
    on_error: str = "skip",
    classes: Optional[Sequence[str]] = None,
    metadata: Optional[Dict[str, Any]] = None,
    replace: bool = True,
) -> CocoCheckReport:
    """Check a COCO instances file and register it under ``name``.

    Args:
        name: dataset name (``DatasetCatalog``/``MetadataCatalog``).
        json_file: COCO JSON; image_root: directory of its images.
        on_error: ``'skip'`` (drop and count bad entries) or ``'raise'``.
        classes: class names that must be categories of the file.
        metadata: extra metadata (``register_coco_instances``).
        replace: re-register when ``name`` exists (e.g. a second run in one
            process); otherwise an existing name is an error.

    Returns:
        the :class:`~downstream.coco_checks.CocoCheckReport` (also stored in
        the metadata as ``vitmix_check``; ``json_file`` is the checked file,
        ``original_json_file`` the one given).
    """
    path, report = prepare_coco(json_file, image_root, on_error=on_error, classes=classes, log=False)
    (logger.info if report.clean else logger.warning)(report.summary())
    if name in DatasetCatalog.list():
        if not replace:
            raise ValueError(f"dataset {name!r} is already registered")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, dict(metadata or {}), path, image_root)
    MetadataCatalog.get(name).set(original_json_file=json_file, vitmix_check=report.to_dict())
    return report

