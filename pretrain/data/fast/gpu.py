"""``data.pipeline=gpu``: JPEG decode on the device (nvjpeg through ``torchvision.io.decode_jpeg``), then the
crop, resize, flip, RandAugment, normalization and erasing there too, batched.

The loader workers only read files: :class:`EncodedFolder` items are an :class:`Encoded` (the file's bytes and
its size from the JPEG header) or, for files the device decoder cannot take (PNG, CMYK JPEGs, files without an
end-of-image marker), the pixels decoded on the CPU by :func:`pretrain.data.folders.load_rgb` (so unreadable
files are still counted and replaced by :class:`pretrain.data.robust.KeyedDataset`). :func:`collate_encoded`
keeps them as a list (:class:`EncodedBatch`).

On the device, :class:`GpuAugment` decodes the whole batch in one ``decode_jpeg`` call, draws the
RandomResizedCrop boxes for all samples at once with timm's distribution (10 attempts of a uniform area
fraction in ``[0.08, 1]`` and a log-uniform aspect in ``[3/4, 4/3]``, then timm's central fallback), and
resamples every crop to ``img_size`` with Pillow's antialiased bicubic filter (a = -0.5, support scaled with the
shrink factor, weights normalized over the crop; horizontal pass first, rounded in between) as one pair of
batched matrix products per chunk of samples
(weights ``(B, out, in)``; images padded to the batch's largest). The uint8 result goes through
:class:`pretrain.data.fast.device.DeviceAugment` with the flip and :class:`pretrain.data.fast.randaug.TensorRandAugment`.
All draws come from one generator seeded by ``(seed, rank, epoch, batch)``: exact resume without saved state.
The same code runs with ``device='cpu'`` (torchvision's libjpeg-turbo decoder), which is what CI tests.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset, default_collate

from ..folders import load_rgb
from .decode import _read, jpeg_size
from .device import DeviceAugment, _to

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One training image as the workers hand it: ``data`` the JPEG's bytes (uint8 1-D) and ``size`` (W, H),
    or ``pixels`` (H, W, 3) uint8 already decoded on the CPU."""

    data: Optional[torch.Tensor]
    size: Tuple[int, int]
    pixels: Optional[torch.Tensor] = None


class EncodedBatch:
    """A list of :class:`Encoded` that moves like a tensor: ``.to(device)`` records the device (nvjpeg reads
    the bytes from host memory), ``pin_memory()`` is a no-op, ``len`` / ``shape[0]`` the batch size."""

    def __init__(self, items: List[Encoded], device: Optional[torch.device] = None):
        self.items, self.device = items, device

    def to(self, device, non_blocking: bool = False) -> "EncodedBatch":
        return EncodedBatch(self.items, torch.device(device))

    def pin_memory(self, device=None) -> "EncodedBatch":
        return self

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self):
        return (len(self.items),)


def collate_encoded(batch):
    """``(EncodedBatch, labels[, extras])`` of ``(Encoded, label[, extras])`` samples."""
    first = [b[0] for b in batch]
    rest = default_collate([tuple(b[1:]) for b in batch])
    return (EncodedBatch(first), *rest)


def read_encoded(path: str) -> Encoded:
    data = _read(path)
    size = jpeg_size(data) if data[-2:] == b"\xff\xd9" else None
    if size is None:  # not a JPEG nvjpeg takes (or truncated): decode here, errors counted by KeyedDataset
        import numpy as np
        img = load_rgb(path)
        return Encoded(None, img.size, torch.from_numpy(np.array(img, dtype=np.uint8)))
    return Encoded(torch.frombuffer(bytearray(data), dtype=torch.uint8), size)


class EncodedFolder(Dataset):
    """A folder dataset (:func:`pretrain.data.folders.build_folder_dataset`: classes, labels, order, checks)
    whose items are ``(Encoded, label)``."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name):
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index: int):
        path, target = self.base.samples[index]
        return read_encoded(path), target


def rrc_boxes(gen: torch.Generator, sizes: torch.Tensor, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """``(top, left, h, w)`` int64 ``(B,)`` each: timm's RandomResizedCrop draw for images of ``sizes`` (B, 2)
    = (W, H), all samples at once (10 attempts each, the first that fits, else timm's central crop)."""
    b = sizes.shape[0]
    W, H = sizes[:, 0].double(), sizes[:, 1].double()
    area = (W * H).view(-1, 1)
    f64 = dict(dtype=torch.float64, generator=gen)
    target = (scale[0] + (scale[1] - scale[0]) * torch.rand(b, 10, **f64)) * area
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(b, 10, **f64))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w <= W.view(-1, 1)) & (h <= H.view(-1, 1))
    first = ok.long().argmax(1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    u = torch.rand(b, 2, **f64)
    top = torch.minimum(torch.floor(u[:, 0] * (H - h + 1)), H - h)
    left = torch.minimum(torch.floor(u[:, 1] * (W - w + 1)), W - w)
    # fallback: the central crop clamped to the ratio range
    in_ratio = W / H
    fw = torch.where(in_ratio < min(ratio), W, torch.where(in_ratio > max(ratio), torch.round(H * max(ratio)), W))
    fh = torch.where(in_ratio < min(ratio), torch.round(W / min(ratio)), H)
    found = ok.any(1)
    h, w = torch.where(found, h, fh), torch.where(found, w, fw)
    top = torch.where(found, top, torch.floor((H - fh) / 2))
    left = torch.where(found, left, torch.floor((W - fw) / 2))
    return top.long(), left.long(), h.long(), w.long()


def _bicubic(x, a=-0.5):
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def aa_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """``(B, out_size, in_size)`` weights of Pillow's antialiased bicubic resize of ``[start, start + length)``
    (per sample) to ``out_size`` pixels, the filter clipped to the crop (crop-then-resize, as timm)."""
    start, length = start.double().view(-1, 1, 1), length.double().view(-1, 1, 1)
    scale = length / out_size
    fs = torch.clamp(scale, min=1.0)
    i = torch.arange(out_size, dtype=torch.float64, device=start.device).view(1, -1, 1)
    j = torch.arange(in_size, dtype=torch.float64, device=start.device).view(1, 1, -1)
    center = start + (i + 0.5) * scale
    wgt = _bicubic((j + 0.5 - center) / fs)
    wgt = wgt * ((j >= start) & (j < start + length))
    return (wgt / wgt.sum(-1, keepdim=True).clamp(min=1e-12)).float()


def crop_resize(images: Sequence[torch.Tensor], top, left, h, w, out_size: int, chunk: int = 64) -> torch.Tensor:
    """uint8 ``(B, 3, out, out)`` of the crops of ``images`` (list of (3, H_i, W_i) uint8 on one device)."""
    dev = images[0].device
    out = torch.empty(len(images), 3, out_size, out_size, dtype=torch.uint8, device=dev)
    top, left, h, w = _to(torch.stack([top, left, h, w]), dev)  # one pinned, non-blocking copy
    for s in range(0, len(images), chunk):  # chunks of samples bound the padded batch's memory
        part = images[s:s + chunk]
        hmax = max(int(x.shape[1]) for x in part)
        wmax = max(int(x.shape[2]) for x in part)
        x = _padded(part, hmax, wmax)
        sl = slice(s, s + len(part))
        wy = aa_weights(top[sl], h[sl], hmax, out_size)  # (b, out, H)
        wx = aa_weights(left[sl], w[sl], wmax, out_size)  # (b, out, W)
        # horizontal pass first, rounded to uint8 in between, as Pillow's resize
        y = torch.matmul(x, wx.transpose(1, 2).unsqueeze(1)).round_().clamp_(0, 255)  # (b, 3, H, out)
        y = torch.matmul(wy.unsqueeze(1), y)  # (b, 3, out, out)
        out[sl] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _padded(images, hmax: int, wmax: int) -> torch.Tensor:
    """``(b, 3, hmax, wmax)`` float32 of uint8 images of different sizes, zero-padded (one nested-tensor copy)."""
    shape = (len(images), 3, hmax, wmax)
    with warnings.catch_warnings():  # "nested tensors are a prototype": only nested_tensor + to_padded_tensor
        warnings.simplefilter("ignore", UserWarning)
        try:
            return torch.nested.nested_tensor(list(images)).to_padded_tensor(0, shape).float()
        except (RuntimeError, NotImplementedError):  # no uint8 kernel for this device: pad as float
            return torch.nested.nested_tensor([x.float() for x in images]).to_padded_tensor(0.0, shape)


class GpuAugment:
    """``(EncodedBatch, epoch, batch) -> float (B, 3, S, S)``: decode, crop + resize, then ``DeviceAugment``."""

    def __init__(self, img_size: int, after: DeviceAugment, scale=(0.08, 1.0)):
        self.img_size, self.after, self.scale = int(img_size), after, tuple(scale)

    def decode(self, batch: EncodedBatch) -> List[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg
        dev = batch.device or torch.device("cpu")
        enc = [k for k, e in enumerate(batch.items) if e.data is not None]
        out: List[Optional[torch.Tensor]] = [None] * len(batch)
        if enc:
            datas = [batch.items[k].data for k in enc]
            try:
                decoded = decode_jpeg(datas, mode=ImageReadMode.RGB, device=dev)
            except RuntimeError as exc:  # one bad file: decode one by one, grey for the ones that fail
                log.warning("batched JPEG decode failed (%s): decoding one by one", exc)
                decoded = []
                for k, d in zip(enc, datas):
                    try:
                        decoded.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=dev))
                    except RuntimeError:
                        wd, ht = batch.items[k].size
                        decoded.append(torch.full((3, ht, wd), 124, dtype=torch.uint8, device=dev))
            for k, img in zip(enc, decoded):
                out[k] = img
        for k, e in enumerate(batch.items):
            if e.data is None:
                out[k] = e.pixels.permute(2, 0, 1).to(dev, non_blocking=True)
        return out

    def __call__(self, batch: EncodedBatch, epoch: int = 0, index: int = 0) -> torch.Tensor:
        images = self.decode(batch)
        sizes = torch.tensor([[int(x.shape[2]), int(x.shape[1])] for x in images], dtype=torch.int64)  # metadata
        gen = torch.Generator().manual_seed(self.after.batch_seed(epoch, index) ^ 0xC409)
        top, left, h, w = rrc_boxes(gen, sizes, self.scale)
        crops = crop_resize(images, top, left, h, w, self.img_size)
        return self.after(crops, epoch, index)


def build_gpu_augment(data_cfg, seed: int, rank: int) -> GpuAugment:
    from .device import build_device_augment
    after = build_device_augment({**data_cfg, "pipeline": "fast_device"}, seed, rank)
    return GpuAugment(int(data_cfg["img_size"]), after, data_cfg.get("crop_scale", (0.08, 1.0)))
