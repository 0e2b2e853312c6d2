"""Precomputed dense label maps (TokenMix's offline teacher maps), cropped to each augmented view.

On disk (written by ``tools/make_label_maps.py``), a folder holds:

* ``maps.npy``: (N, h, w) float16 non-negative maps of the N training images, each over the *whole*
  image (no crop), in the order of ``index.txt``;
* ``index.txt``: the N image paths relative to the dataset root, one per line (``ImageFolder.samples``
  order);
* ``meta.json``: how the maps were made (teacher, map kind, input size).

:class:`LabelMapDataset` wraps an ``ImageFolder`` whose transform starts with timm's/torchvision's
random resized crop and horizontal flip. It records each sample's crop box and flip while the
transform runs and returns ``(image, label, map)`` with ``map`` (out_h, out_w) float32: the region of
the stored map under the crop, resampled with ``torchvision.ops.roi_align`` (as the official TokenMix
/ ReLabel pipelines), and flipped like the image. Other geometric augmentations (RandAugment's small
shears, translations and rotations) are not tracked, as in those pipelines.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


class _Geometry:
    """Per-process record of the last crop box ``(top, left, height, width)``, image size and flip."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.crop: Optional[Tuple[int, int, int, int]] = None
        self.size: Optional[Tuple[int, int]] = None  # (H, W) of the decoded image
        self.flip = False


class _CropParams:
    """Replaces a random-resized-crop's ``get_params`` to record the box it draws."""

    def __init__(self, original, record: _Geometry):
        self.original = original
        self.record = record

    def __call__(self, img, scale, ratio):
        params = self.original(img, scale, ratio)
        self.record.crop = tuple(int(v) for v in params)
        w, h = img.size if hasattr(img, "size") and not callable(img.size) else (img.shape[-1], img.shape[-2])
        self.record.size = (int(h), int(w))
        return params


class _RecordingFlip(torch.nn.Module):
    """Horizontal flip with probability ``p`` that records whether it flipped."""

    def __init__(self, p: float, record: _Geometry):
        super().__init__()
        self.p = p
        self.record = record

    def forward(self, img):
        import torchvision.transforms.functional as TF
        flip = bool(torch.rand(1) < self.p)
        self.record.flip = flip
        return TF.hflip(img) if flip else img


def _instrument(transform, record: _Geometry) -> bool:
    """Install the recorders in a Compose transform; True when a random resized crop was found."""
    import torchvision.transforms as T
    steps = getattr(transform, "transforms", None)
    if steps is None:
        return False
    found = False
    for i, t in enumerate(steps):
        if hasattr(t, "get_params") and hasattr(t, "scale") and hasattr(t, "ratio") and not found:
            original = type(t).get_params
            t.get_params = _CropParams(original, record)
            found = True
        elif isinstance(t, T.RandomHorizontalFlip):
            steps[i] = _RecordingFlip(t.p, record)
    return found


def read_label_maps(folder: str) -> Tuple[np.ndarray, list, Dict[str, Any]]:
    """(maps (N, h, w) memory-mapped, relative paths, meta) of a label-map folder; clear errors."""
    paths = {k: os.path.join(folder, f) for k, f in (("maps", "maps.npy"), ("index", "index.txt"),
                                                      ("meta", "meta.json"))}
    for k, p in paths.items():
        if not os.path.isfile(p):
            raise FileNotFoundError(f"label maps: {p} not found (write the folder with tools/make_label_maps.py)")
    maps = np.load(paths["maps"], mmap_mode="r")
    if maps.ndim != 3:
        raise ValueError(f"{paths['maps']}: expected (N, h, w) maps, got shape {maps.shape}")
    with open(paths["index"]) as f:
        index = [line.rstrip("\n") for line in f if line.strip()]
    if len(index) != maps.shape[0]:
        raise ValueError(f"{folder}: index.txt lists {len(index)} images but maps.npy holds {maps.shape[0]}")
    with open(paths["meta"]) as f:
        meta = json.load(f)
    return maps, index, meta


def crop_map(m: torch.Tensor, img_hw: Tuple[int, int], crop: Tuple[int, int, int, int], flip: bool,
             out_size: Tuple[int, int]) -> torch.Tensor:
    """The (out_h, out_w) part of a whole-image (h, w) map under a pixel crop ``(top, left, height, width)``
    of an (H, W) image, by ``roi_align`` (aligned, bilinear), flipped horizontally if ``flip``."""
    from torchvision.ops import roi_align
    mh, mw = m.shape
    H, W = img_hw
    top, left, ch, cw = crop
    sy, sx = mh / H, mw / W
    box = torch.tensor([[0.0, left * sx, top * sy, (left + cw) * sx, (top + ch) * sy]], dtype=torch.float32)
    out = roi_align(m.float().view(1, 1, mh, mw), box, output_size=tuple(out_size), spatial_scale=1.0,
                    sampling_ratio=2, aligned=True)[0, 0]
    return out.flip(-1) if flip else out


class LabelMapDataset(Dataset):
    """``(image, label, label_map)`` samples of an ImageFolder with precomputed whole-image maps.

    Args:
        dataset: a torchvision ``ImageFolder`` (``samples``, ``root``, ``transform``). Its transform is
            instrumented in place (the crop's ``get_params`` and the flip are replaced by recording
            equivalents drawing the same random numbers).
        folder: label-map folder (see the module docstring).
        out_size: (h, w) of the returned maps (default: the stored map size).
    """

    def __init__(self, dataset, folder: str, out_size: Optional[Tuple[int, int]] = None):
        if not hasattr(dataset, "samples") or not hasattr(dataset, "root"):
            raise ValueError(f"LabelMapDataset needs an ImageFolder-like dataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.folder = folder
        self.maps, index, self.meta = read_label_maps(folder)
        rel = [os.path.relpath(p, dataset.root) for p, _ in dataset.samples]
        if len(rel) != len(index):
            raise ValueError(f"{folder}: maps for {len(index)} images but the dataset {dataset.root} has {len(rel)}")
        bad = next((i for i, (a, b) in enumerate(zip(rel, index)) if a != b), None)
        if bad is not None:
            raise ValueError(f"{folder}/index.txt line {bad + 1} is '{index[bad]}' but the dataset's image "
                             f"{bad} is '{rel[bad]}': the maps were made for another image list")
        self.out_size = tuple(out_size) if out_size is not None else tuple(self.maps.shape[1:])
        self.record = _Geometry()
        self.has_crop = _instrument(dataset.transform, self.record)
        if not self.has_crop:
            log.warning("LabelMapDataset: no random resized crop in the transform of %s; maps cover the whole "
                        "image", dataset.root)
    def __getattr__(self, name):  # root, classes, samples, targets, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        self.record.reset()
        img, label = self.dataset[i]
        m = torch.from_numpy(np.asarray(self.maps[i], dtype=np.float32))
        if self.record.crop is not None:
            out = crop_map(m, self.record.size, self.record.crop, self.record.flip, self.out_size)
        else:
            h, w = m.shape
            out = crop_map(m, (h, w), (0, 0, h, w), self.record.flip, self.out_size)
        return img, label, out
