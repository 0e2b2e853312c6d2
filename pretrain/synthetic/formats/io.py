"""File writing shared by the format writers: JPEG images and atomic JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["save_jpeg", "write_json"]


def save_jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    """Save a uint8 ``(H, W, 3)`` image as a JPEG of the given quality."""
    Image.fromarray(image).save(path, format="JPEG", quality=int(quality))


def write_json(path: Path, data, compact: bool = False) -> None:
    """Write JSON atomically (temp file + rename); indented with a final newline unless ``compact``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        if compact:
            json.dump(data, f, separators=(",", ":"))
        else:
            json.dump(data, f, indent=2)
            f.write("\n")
    os.replace(tmp, path)
