"""Reading metrics back from MMEngine work directories (no mmengine import needed)."""
from __future__ import annotations

import glob
import json
import os
from typing import List, Optional


def scalar_history(work_dir: str, key: str) -> List[float]:
    """Every value of ``key`` logged under ``work_dir/<timestamp>/vis_data/scalars.json``, in order."""
    values = []
    for path in sorted(glob.glob(os.path.join(work_dir, "*", "vis_data", "scalars.json"))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if key in rec:
                    values.append(float(rec[key]))
    return values


def last_scalar(work_dir: str, key: str) -> Optional[float]:
    """The last logged value of ``key`` (e.g. ``mIoU``, ``coco/bbox_mAP``), or None."""
    values = scalar_history(work_dir, key)
    return values[-1] if values else None
