"""Normalization and random erasing of a uint8 batch, batched on its device (the ``fast`` pipelines' second half;
``fast_device`` also flips and RandAugments here, :mod:`.randaug`).

:class:`DeviceAugment` turns the loader's ``(B, H, W, 3)`` uint8 batch into the ``(B, 3, H, W)`` float batch
timm's ``ToTensor -> Normalize -> RandomErasing(mode, device)`` would give: the normalization is the same
arithmetic (``x / 255``, ``- mean``, ``/ std`` in float32, so equal inputs give equal outputs), and the erasing
boxes follow timm's ``RandomErasing`` draw for draw in distribution -- apply with probability ``re_prob``;
``count`` uniform in ``[1, re_count]``; per box up to 10 attempts of an area fraction uniform in
``[0.02, 1/3] / count`` and a log-uniform aspect in ``[0.3, 1/0.3]``, rounded half-to-even like Python's
``round``, kept when ``w < W and h < H``; the top-left corner uniform over the valid positions; filled
per pixel (``pixel``), per box and channel (``rand``) with N(0, 1) or with 0 (``const``).

All samples' attempts are drawn at once (tensors of shape ``(B, count, 10)``) and the boxes become masks by
broadcast comparisons: no Python loop over samples. The draws come from a generator seeded by
``(seed, rank, epoch, batch index)``, so a resumed run erases the same boxes with the same noise without any
saved state.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def erase_params(gen: torch.Generator, batch: int, img_h: int, img_w: int, prob: float, max_count: int = 1,
                 min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3):
    """``(top, left, h, w, active)``, each ``(B, max_count)`` (int64 / bool, on ``gen``'s device... CPU):
    timm's RandomErasing boxes for a batch (see the module doc)."""
    f64 = dict(dtype=torch.float64, generator=gen)
    k, n_try = max(int(max_count), 1), 10
    apply = torch.rand(batch, **f64) <= prob
    if k > 1:
        count = torch.randint(1, k + 1, (batch,), generator=gen)
    else:
        count = torch.ones(batch, dtype=torch.int64)
    area = float(img_h * img_w)
    lo, hi = math.log(min_aspect), math.log(1 / min_aspect)
    target = (min_area + (max_area - min_area) * torch.rand(batch, k, n_try, **f64)) * area / count.view(-1, 1, 1)
    aspect = torch.exp(lo + (hi - lo) * torch.rand(batch, k, n_try, **f64))
    h = torch.round(torch.sqrt(target * aspect)).long()  # round half to even, as Python's round
    w = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w < img_w) & (h < img_h)
    first = ok.long().argmax(-1, keepdim=True)  # the first attempt that fits
    found = ok.any(-1)
    h = h.gather(-1, first).squeeze(-1)
    w = w.gather(-1, first).squeeze(-1)
    u = torch.rand(batch, k, 2, **f64)
    top = torch.minimum((u[..., 0] * (img_h - h + 1)).floor().long(), img_h - h)
    left = torch.minimum((u[..., 1] * (img_w - w + 1)).floor().long(), img_w - w)
    active = apply.view(-1, 1) & found & (torch.arange(k).view(1, -1) < count.view(-1, 1))
    zero = torch.zeros_like(h)
    return (torch.where(active, top, zero), torch.where(active, left, zero), torch.where(active, h, zero),
            torch.where(active, w, zero), active)


def box_masks(top, left, h, w, img_h: int, img_w: int) -> torch.Tensor:
    """``(B, K, H, W)`` bool masks of ``(B, K)`` boxes (empty where ``h`` or ``w`` is 0)."""
    dev = top.device
    rows = torch.arange(img_h, device=dev).view(1, 1, -1, 1)
    cols = torch.arange(img_w, device=dev).view(1, 1, 1, -1)
    t, l_, hh, ww = (v.view(*v.shape, 1, 1) for v in (top, left, h, w))
    return (rows >= t) & (rows < t + hh) & (cols >= l_) & (cols < l_ + ww)


class DeviceAugment:
    """``(images uint8 (B, H, W, 3) [or (B, 3, H, W)], epoch, batch) -> float (B, 3, H, W)`` on the images' device:
    normalize, then timm-distributed random erasing (``re_prob``, ``re_mode`` pixel | rand | const, ``re_count``).

    Args:
        seed, rank: mixed with ``(epoch, batch)`` into the seed of each batch's draws.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 re_prob: float = 0.25, re_mode: str = "pixel", re_count: int = 1, seed: int = 0, rank: int = 0,
                 hflip: float = 0.0, rand_augment=None):
        if re_mode not in ("pixel", "rand", "const"):
            raise ValueError(f"re_mode must be pixel|rand|const, got {re_mode!r}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.re_prob, self.re_mode, self.re_count = float(re_prob), re_mode, max(int(re_count), 1)
        self.seed, self.rank = int(seed), int(rank)
        self.hflip, self.rand_augment = float(hflip), rand_augment
        self._consts = {}

    def _mean_std(self, device):
        if device not in self._consts:
            self._consts[device] = (torch.tensor(self.mean, device=device).view(1, 3, 1, 1),
                                    torch.tensor(self.std, device=device).view(1, 3, 1, 1))
        return self._consts[device]

    def batch_seed(self, epoch: int, batch: int) -> int:
        s = np.random.SeedSequence([self.seed, self.rank, int(epoch), int(batch), 0x45]).generate_state(2, np.uint32)
        return (int(s[0]) << 31) ^ int(s[1])

    @staticmethod
    def to_float(images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` or ``(B, 3, H, W)`` -> float32 ``(B, 3, H, W)`` in [0, 255] (contiguous)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"DeviceAugment expects uint8 images, got {images.dtype}")
        if images.dim() != 4:
            raise ValueError(f"expected a (B, H, W, 3) batch, got shape {tuple(images.shape)}")
        if images.shape[-1] == 3 and images.shape[1] != 3:
            images = images.permute(0, 3, 1, 2)
        return images.contiguous().float()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0, 255]) ``(B, H, W, 3)`` / ``(B, 3, H, W)`` -> normalized float32 ``(B, 3, H, W)``:
        ``x / 255``, ``- mean``, ``/ std`` as ToTensor + Normalize compute them."""
        x = self.to_float(images) if images.dtype == torch.uint8 else images
        mean, std = self._mean_std(x.device)
        return x.div_(255.0).sub_(mean).div_(std)

    def __call__(self, images: torch.Tensor, epoch: int = 0, batch: int = 0) -> torch.Tensor:
        seed = self.batch_seed(epoch, batch)
        cpu = torch.Generator().manual_seed(seed)
        x = self.to_float(images)
        if self.hflip > 0:  # before RandAugment, as timm (ShearY does not commute with a flip)
            flip = _to(torch.rand(x.shape[0], generator=cpu) < self.hflip, x.device).view(-1, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
        if self.rand_augment is not None:
            x = self.rand_augment(x, cpu)
        x = self.normalize(x)
        if self.re_prob <= 0:
            return x
        b, c, hgt, wid = x.shape
        top, left, h, w, active = erase_params(cpu, b, hgt, wid, self.re_prob, self.re_count)
        if not bool(active.any()):
            return x
        dev = x.device
        masks = box_masks(*_to(torch.stack([top, left, h, w]), dev), hgt, wid)  # (B, K, H, W)
        gen = torch.Generator(device=dev).manual_seed(seed ^ 0x5EED)
        if self.re_mode == "pixel":  # one N(0, 1) field per erased image serves all its boxes (iid noise)
            if dev.type == "cuda":  # the whole batch's field: no index copy, nothing waits for the GPU
                noise = torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype)
                return torch.where(masks.any(1, keepdim=True), noise, x)
            idx = active.any(1).nonzero().view(-1)
            noise = torch.randn((idx.numel(), c, hgt, wid), generator=gen, device=dev, dtype=x.dtype)
            x[idx] = torch.where(masks[idx].any(1, keepdim=True), noise, x[idx])
            return x
        for j in range(self.re_count):  # rand / const: one colour per box; later boxes over earlier ones
            fill = torch.randn(b, c, 1, 1, generator=gen, device=dev, dtype=x.dtype) if self.re_mode == "rand" \
                else torch.zeros((), device=dev, dtype=x.dtype)
            x = torch.where(masks[:, j:j + 1], fill, x)
        return x


def _to(t: torch.Tensor, device) -> torch.Tensor:
    """A small CPU tensor on ``device``: pinned and non-blocking on CUDA (no wait for the GPU's queue)."""
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def build_device_augment(data_cfg, seed: int, rank: int) -> DeviceAugment:
    """``data.pipeline=fast``: normalize + erasing; ``fast_device``: flip + RandAugment before them."""
    on_device = data_cfg.get("pipeline") == "fast_device"
    ra = None
    if on_device and data_cfg.get("auto_augment"):
        from .randaug import TensorRandAugment
        mean = tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN)  # timm's img_mean fill
        ra = TensorRandAugment(data_cfg["auto_augment"], fill=mean)
    return DeviceAugment(re_prob=float(data_cfg.get("re_prob", 0.0)), re_mode=data_cfg.get("re_mode", "pixel"),
                         re_count=int(data_cfg.get("re_count", 1)), seed=seed, rank=rank,
                         hflip=0.5 if on_device else 0.0, rand_augment=ra)
