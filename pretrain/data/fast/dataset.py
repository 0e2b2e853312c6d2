"""The ``fast`` training transform: timm's augmentation parameters, a cheaper decode and resize, uint8 output.

Per sample, in a loader worker, drawing from the per-sample-seeded global streams in timm's order:

1. RandomResizedCrop parameters (Python ``random``; :func:`.decode.rrc_params`) from the header's size;
2. decode at the smallest DCT scale that covers the crop (:class:`.decode.CropDecoder`), bicubic resample of
   the crop box to ``img_size`` (Pillow, antialiased; the box in the decoded image's coordinates);
3. horizontal flip with probability 0.5 (``torch.rand(1) < 0.5``, as torchvision's RandomHorizontalFlip);
   it stays here, before RandAugment as in timm: ShearY about the top-left corner does not commute with a
   flip, so flipping after RandAugment would change the distribution;
4. RandAugment: the very object timm's ``create_transform`` builds for ``data.auto_augment`` (NumPy choice of
   the ops, Python ``random`` for probabilities and magnitudes), on the PIL image;
5. ``(H, W, 3)`` uint8 tensor -- no ToTensor, no normalization, no erasing here:
   :class:`.device.DeviceAugment` does those batched on the device.

With the same per-sample seed the crop box, the flip and the RandAugment ops and magnitudes are the ones
the ``timm`` path draws; the pixels differ only by the resampling (DCT-domain shrink before the bicubic,
and the box resample using the pixels just outside the crop as the filter's support).
"""
from __future__ import annotations

import random
from typing import Any, Dict, Optional

import torch
from PIL import Image

from torch.utils.data import Dataset

from ..folders import build_transforms
from .decode import CropDecoder, resample, to_uint8_hwc

_INTERP = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
           "lanczos": Image.LANCZOS}


def timm_rand_augment(data_cfg: Dict[str, Any]):
    """The RandAugment / AutoAugment object of timm's training transform for this config (None without one)."""
    from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
    for t in build_transforms({**data_cfg, "re_prob": 0.0}, train=True).transforms:
        if isinstance(t, (RandAugment, AutoAugment, AugMixAugment)):
            return t
    return None


class FastTrainTransform:
    """``path -> (H, W, 3) uint8 tensor``: crop, decode, resample, flip, RandAugment (see the module doc).

    ``scaled=False`` decodes at full resolution (then the crop and its resampling are the timm path's up
    to the filter's border support). ``backend``: :class:`.decode.CropDecoder`'s."""

    def __init__(self, data_cfg: Dict[str, Any], scaled: bool = True, backend: str = "auto"):
        size = int(data_cfg["img_size"])
        self.size = (size, size)
        interp = data_cfg.get("interpolation", "bicubic")
        if interp not in _INTERP:
            raise ValueError(f"data.pipeline=fast supports data.interpolation in {sorted(_INTERP)}, got {interp!r}")
        self.resample = _INTERP[interp]
        self.decoder = CropDecoder(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), scaled=scaled, backend=backend)
        self.hflip = 0.5
        self.augment = timm_rand_augment(data_cfg)

    def __call__(self, path: str) -> torch.Tensor:
        img, params = self.decoder.crop(path, self.size, random)
        out = resample(img, params, self.size, self.resample)
        if torch.rand(1) < self.hflip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        if self.augment is not None:
            out = self.augment(out)
        return torch.from_numpy(to_uint8_hwc(out).copy())


class FastFolder(Dataset):
    """A folder dataset (:func:`pretrain.data.folders.build_folder_dataset`: its classes, labels, order and
    layout checks) whose items are ``(uint8 (H, W, 3) tensor, label)`` from :class:`FastTrainTransform`."""

    def __init__(self, base, fast: FastTrainTransform):
        self.base, self.fast = base, fast

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name):  # classes, samples, targets, root, ... of the folder dataset
        if name in ("base", "fast"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index: int):
        path, target = self.base.samples[index]
        return self.fast(path), target


def build_fast_dataset(data_cfg: Dict[str, Any], split: str, scaled: bool = True) -> FastFolder:
    """The ``fast`` training dataset of ``data.root/<split>``."""
    from ..folders import build_folder_dataset
    base = build_folder_dataset(data_cfg, split, train=False)
    return FastFolder(base, FastTrainTransform(data_cfg, scaled=scaled))
