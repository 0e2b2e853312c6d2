"""The ``fast`` training transform: timm's augmentation parameters, a cheaper decode and resize, uint8 output.

Per sample, in a loader worker, drawing from the per-sample-seeded global streams in timm's order:

1. RandomResizedCrop parameters (Python ``random``; :func:`.decode.rrc_params`) from the header's size;
2. decode at the smallest DCT scale that covers the crop (:class:`.decode.CropDecoder`), antialiased bicubic
   resample of the crop to ``img_size`` (:func:`.decode.resample`: torch on uint8 for a full-resolution
   decode, Pillow's box resize in a DCT-scaled one);
3. horizontal flip with probability 0.5 (``torch.rand(1) < 0.5``, as torchvision's RandomHorizontalFlip);
   it stays here, before RandAugment as in timm: ShearY about the top-left corner does not commute with a
   flip, so flipping after RandAugment would change the distribution;
4. RandAugment: the very object timm's ``create_transform`` builds for ``data.auto_augment`` (NumPy choice of
   the ops, Python ``random`` for probabilities and magnitudes), on the PIL image (ColorJitter when
   ``data.auto_augment`` is null, as timm);
5. ``(H, W, 3)`` uint8 tensor -- no ToTensor, no normalization, no erasing here:
   :class:`.device.DeviceAugment` does those batched on the device.

With the same per-sample seed the crop box, the flip and the RandAugment ops and magnitudes are the ones
the ``timm`` path draws; the pixels differ only by the resampling (rounding of torch's uint8 filter; the
DCT-domain shrink before the bicubic where the crop allows one).

``data.pipeline=fast_device`` stops after step 2: steps 3 and 4 run on the device, batched
(:class:`.device.DeviceAugment`, :class:`.randaug.TensorRandAugment`), with timm's distributions.
"""
from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import torch
from PIL import Image

from torch.utils.data import Dataset

from ..folders import build_transforms
from .decode import CropDecoder, resample

_INTERP = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
           "lanczos": Image.LANCZOS}


def timm_middle_transforms(data_cfg: Dict[str, Any]):
    """The transforms timm's ``create_transform`` puts between the flip and ToTensor for this config: the
    RandAugment / AutoAugment / AugMix object of ``data.auto_augment``, or ColorJitter without one."""
    from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
    from torchvision import transforms as T
    out = []
    for t in build_transforms({**data_cfg, "re_prob": 0.0}, train=True).transforms:
        if isinstance(t, (RandomResizedCropAndInterpolation, T.RandomHorizontalFlip, T.RandomVerticalFlip)):
            continue
        if isinstance(t, (MaybeToTensor, T.ToTensor, T.Normalize)):
            break
        out.append(t)
    return out


class FastTrainTransform:
    """``path -> (H, W, 3) uint8 tensor``: crop, decode, resample, flip, RandAugment (see the module doc).

    ``scaled=False`` decodes at full resolution (then the crop and its resampling are the timm path's up
    to the filter's border support). ``backend``: :class:`.decode.CropDecoder`'s. ``on_device=True``
    (``data.pipeline=fast_device``): crop and resample only; the flip and RandAugment run batched on the
    device (:class:`.device.DeviceAugment` with :class:`.randaug.TensorRandAugment`)."""

    def __init__(self, data_cfg: Dict[str, Any], scaled: bool = True, backend: str = "auto",
                 on_device: bool = False):
        size = int(data_cfg["img_size"])
        self.size = (size, size)
        interp = data_cfg.get("interpolation", "bicubic")
        if interp not in _INTERP:
            raise ValueError(f"data.pipeline=fast supports data.interpolation in {sorted(_INTERP)}, got {interp!r}")
        self.resample = _INTERP[interp]
        self.decoder = CropDecoder(scale=tuple(data_cfg.get("crop_scale", (0.08, 1.0))), ratio=(3 / 4, 4 / 3),
                                   scaled=scaled, backend=backend)
        self.hflip = 0.0 if on_device else 0.5
        self.augment = [] if on_device else timm_middle_transforms(data_cfg)

    def __call__(self, path: str) -> torch.Tensor:
        img, params = self.decoder.crop(path, self.size, random)
        out = resample(img, params, self.size, self.resample)  # (H, W, 3) uint8
        flip = self.hflip and torch.rand(1) < self.hflip
        if not self.augment:
            return out.flip(1) if flip else out
        pil = Image.fromarray(out.numpy(), "RGB")
        if flip:
            pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
        for t in self.augment:
            pil = t(pil)
        return torch.from_numpy(np.array(pil, dtype=np.uint8))


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
    """The ``fast`` / ``fast_device`` training dataset of ``data.root/<split>``."""
    from ..folders import build_folder_dataset
    base = build_folder_dataset(data_cfg, split, train=False)
    on_device = data_cfg.get("pipeline") == "fast_device"
    return FastFolder(base, FastTrainTransform(data_cfg, scaled=scaled, on_device=on_device))
