"""The CIFAR-10 / CIFAR-100 python-pickle layouts (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``).

CIFAR-10: ``data_batch_1..5`` (the training split cut into five), ``test_batch`` and
``batches.meta``; CIFAR-100: ``train``, ``test`` and ``meta``, with fine labels and a coarse
label ``c // 5``. Every batch is a protocol-2 pickle of a dict with byte-string keys and
``b"data"`` uint8 ``(N, 3072)``: each row the R, G and B 32x32 planes, row-major.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ...data.small_layout import CIFAR_FILES, CIFAR_LABEL_KEYS
from ..splits import ClassificationSplit

__all__ = ["cifar_rows", "write_cifar"]


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 32, 32, 3)`` images to CIFAR rows, uint8 ``(N, 3072)`` (R plane, G plane, B plane)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def _dump(obj: Dict[bytes, Any], path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(out: Path, fmt: str, names: List[str], train: ClassificationSplit,
                val: ClassificationSplit) -> None:
    """Write the batches of ``train`` and ``val`` (32 px) and the meta file of ``fmt`` into ``out``.

    ``names`` are the class names in label order.
    """
    out = Path(out)
    label_key = CIFAR_LABEL_KEYS[fmt].encode()
    for split in (train, val):
        rows = cifar_rows(split.images())
        files = CIFAR_FILES[fmt][split.split]
        for fname, idx in zip(files, np.array_split(np.arange(len(split)), len(files))):
            d: Dict[bytes, Any] = {
                b"batch_label": f"synthetic {fname}".encode(),
                label_key: [int(v) for v in split.labels[idx]],
                b"data": rows[idx],
                b"filenames": [f"synthetic_{split.split}_{int(i):06d}.png".encode() for i in idx],
            }
            if fmt == "cifar100":
                d[b"coarse_labels"] = [int(v) // 5 for v in split.labels[idx]]
            _dump(d, out / fname)
    if fmt == "cifar10":
        per_batch = -(-len(train) // len(CIFAR_FILES[fmt]["train"]))
        meta = {b"num_cases_per_batch": int(per_batch), b"label_names": [n.encode() for n in names],
                b"num_vis": 3072}
    else:
        meta = {b"fine_label_names": [n.encode() for n in names],
                b"coarse_label_names": [f"synthetic_super_{c:02d}".encode() for c in range(-(-len(names) // 5))]}
    _dump(meta, out / CIFAR_FILES[fmt]["meta"])
