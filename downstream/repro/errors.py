"""The errors of the reproduction tables: a bad request, and a result that is not there."""
from __future__ import annotations


class ReproError(RuntimeError):
    """A problem with the request itself (bad flag, unknown row, mixed scales): reported, not run."""


class Missing(Exception):
    """A result file is absent or incomplete; the message says which."""


class NoDetections(Missing):
    """The test ran but the detector kept no detection above its score threshold (a model this early in
    training scores background everywhere): COCO AP is undefined (pycocotools -1, Detectron2 NaN,
    MMDetection's CocoMetric returns nothing). The test step is done; the table says why it has no AP."""

    def __init__(self, where: str):
        super().__init__(f"no detections above the test score threshold, AP undefined ({where}); "
                         "the detector needs a longer schedule")
