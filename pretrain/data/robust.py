"""Per-sample seeding and unreadable-image handling around a dataset.

:class:`KeyedDataset` is the outermost dataset of a loader fed by
:class:`pretrain.data.samplers.EpochSampler`. For every ``(index, epoch, position)`` it

* seeds Python's ``random``, NumPy's global generator and torch's CPU generator from
  ``(seed, epoch, position)`` before the sample's transforms run, so that the augmentation of a
  sample depends only on its place in the epoch, not on which loader worker made it or what that
  worker made before (exact resume, results independent of ``data.workers``); in the main process
  (no workers) the previous generator states are restored afterwards;
* catches :class:`pretrain.data.folders.UnreadableImageError`: the file's path and reason are
  appended to a tab-separated log (one file per rank) and logged, and the sample is replaced by its
  successor in the dataset (``replace=True``, training: the batch keeps its size) or dropped
  (``replace=False``, evaluation: :func:`collate_skip_none` leaves it out). More than ``max_tries``
  unreadable files in a row is an error naming them, since it means a broken dataset rather than a
  few bad files.
"""
from __future__ import annotations

import logging
import os
import random
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from .folders import UnreadableImageError

log = logging.getLogger(__name__)


def sample_seed(seed: int, epoch: int, position: int, attempt: int = 0) -> int:
    """A 63-bit seed for one sample draw, well mixed from its key (NumPy's SeedSequence)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(position), int(attempt)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


class KeyedDataset(Dataset):
    """Seeded, fault-tolerant view of ``dataset`` (see the module docstring).

    Args:
        dataset: any map-style dataset whose items are ``(image, label)`` or ``(image, label, extras)``.
        seed: run seed mixed into every sample's seed.
        bad_log: path of the tab-separated unreadable-image log (``split  path  reason``), or None.
        split: name written in the log.
        replace: replace unreadable samples by the next index (True) or return None (False).
        max_tries: unreadable files in a row before giving up with an error.

    Items are addressed by ``(index, epoch, position)`` tuples from an ``EpochSampler`` or by plain
    integers (no seeding).
    """

    def __init__(self, dataset, seed: int = 0, bad_log: Optional[str] = None, split: str = "train",
                 replace: bool = True, max_tries: int = 32):
        self.dataset = dataset
        self.seed = int(seed)
        self.bad_log = bad_log
        self.split = split
        self.replace = bool(replace)
        self.max_tries = int(max_tries)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # classes, samples, root, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _record(self, exc: UnreadableImageError) -> None:
        log.warning("unreadable image skipped (%s): %s", self.split, exc)
        if self.bad_log:
            line = f"{self.split}\t{exc.path}\t{exc.reason}".replace("\n", " ") + "\n"
            with open(self.bad_log, "a") as f:  # one short O_APPEND write per event
                f.write(line)

    def _get(self, index: int, key: Optional[Tuple[int, int]]):
        tried: List[str] = []
        for attempt in range(self.max_tries):
            if key is not None:
                seed_all(sample_seed(self.seed, key[0], key[1], attempt))
            try:
                return self.dataset[index]
            except UnreadableImageError as exc:
                self._record(exc)
                tried.append(exc.path)
                if not self.replace:
                    return None
                index = (index + 1) % len(self.dataset)
        raise RuntimeError(f"{self.max_tries} unreadable images in a row ({', '.join(tried[:5])}, ...): the "
                           f"dataset looks broken (see {self.bad_log or 'the log'}); raise data.bad_image_tries "
                           "only if this many bad files are expected")

    def __getitem__(self, item):
        if isinstance(item, (tuple, list)):
            index, epoch, position = (int(v) for v in item)
            key = (epoch, position)
        else:
            index, key = int(item), None
        if key is None or get_worker_info() is not None:
            return self._get(index, key)
        # main-process loading: keep the training process's own generator streams untouched
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            return self._get(index, key)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


def collate_skip_none(batch):
    """``default_collate`` of the samples that are not None; None when none is left."""
    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None


def read_bad_images(path: str) -> List[Tuple[str, str, str]]:
    """``(split, path, reason)`` rows of an unreadable-image log (empty when there is none)."""
    if not path or not os.path.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) == 3:
                rows.append((parts[0], parts[1], parts[2]))
    return rows
