"""Where things are: the checkout whose tools and configs the tables run, the datasets, the runs."""
from __future__ import annotations

import os
import sys

# The checkout root (this file is downstream/repro/paths.py): tools/ and configs/ are read from it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Dataset roots inside the Docker image's /data volume (docker/README.md).
DATA = {
    "imagenet": "/data/imagenet",
    "ade": "/data/ade/ADEChallengeData2016",
    "coco": "/data/coco",
    "voc": "/data/VOCdevkit/VOC2012",
    "imagenet-a": "/data/imagenet-a",
    "cifar100": "/data/cifar100",
}
SYNTHETIC_DATA = os.path.join(REPO, "data", "synthetic")
RUNS = "/runs/repro"


def python() -> str:
    """The interpreter the tool steps run with (this one: the project's virtual environment)."""
    return sys.executable


def tool(*parts: str) -> str:
    """A file under the checkout's ``tools/``."""
    return os.path.join(REPO, "tools", *parts)


def config(*parts: str) -> str:
    """A file under the checkout's ``configs/``."""
    return os.path.join(REPO, "configs", *parts)
