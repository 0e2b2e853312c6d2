"""SaliencyMix: CutMix whose box is centred on the source's saliency peak.

Paper: "SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better Regularization", Uddin
et al., ICLR 2021, arXiv:2006.01791; official code: SaliencyMix/SaliencyMix ("the official code" below).

For each sample, the partner (source, ``flip(0)``) image's static saliency map is computed, the
CutMix box (side ``sqrt(1 - lam)`` of the image, lam ~ Beta(alpha, alpha)) is centred on its
maximum, and the partner's pixels in that box are pasted *at the same location* in the own image.
Labels are mixed by area (lam recomputed from the clipped box).

Saliency: spectral residual ("Saliency Detection: A Spectral Residual Approach", Hou & Zhang,
CVPR 2007; no arXiv version), batched on the device with ``torch.fft``:
the grey image is resized to ``saliency_size`` (64), ``R = log|F| - box3x3(log|F|)``,
``S = |IFFT(exp(R + i angle F))|^2`` smoothed by a Gaussian, and its arg-max mapped back to pixels.

Deviations from the official code (documented in docs/mixers.md): the official implementation
computes OpenCV's fine-grained static saliency of one source image per batch, on the CPU, and
uses its box for the whole batch; here every pair gets its own box (``mode: elem``, default) or
the batch shares the box of sample 0's source (``mode: batch``), all on the device.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .base import (MixedBatch, Mixer, box_area_lam, box_masks, boxes_from_centres, check_batch, mix_targets,
                   paste)


def gaussian_kernel1d(sigma: float, device=None) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def spectral_residual_saliency(x: torch.Tensor, size: int = 64, blur_sigma: float = 2.5,
                               eps: float = 1e-8) -> torch.Tensor:
    """(B, size, size) spectral-residual saliency maps of (B, C, H, W) images, each scaled to max 1.

    Steps: grey = channel mean; bilinear resize to ``size`` x ``size``; ``A = log(|FFT| + eps)``;
    ``R = A - mean3x3(A)`` (reflect padding); ``S = |IFFT(exp(R) * exp(i * phase))|^2``; Gaussian
    blur (``blur_sigma``, reflect padding); divide by the per-image maximum.
    """
    if x.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    g = x.detach().float().mean(1, keepdim=True)
    g = F.interpolate(g, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    spec = torch.fft.fft2(g)
    log_amp = torch.log(spec.abs() + eps)
    phase = torch.angle(spec)
    smooth = F.avg_pool2d(F.pad(log_amp.unsqueeze(1), (1, 1, 1, 1), mode="reflect"), 3, stride=1)[:, 0]
    residual = log_amp - smooth
    sal = torch.fft.ifft2(torch.exp(residual) * torch.exp(1j * phase)).abs() ** 2
    k = gaussian_kernel1d(blur_sigma, device=x.device)
    r = k.numel() // 2
    s = F.pad(sal.unsqueeze(1), (r, r, r, r), mode="reflect")
    s = F.conv2d(s, k.view(1, 1, 1, -1))
    s = F.conv2d(s, k.view(1, 1, -1, 1))[:, 0]
    return s / s.flatten(1).amax(1).clamp_min(eps).view(-1, 1, 1)


def saliency_peaks(sal: torch.Tensor, img_hw) -> tuple:
    """Pixel coordinates (cy, cx), each (B,) int64 on the CPU, of the maxima of (B, s, s) saliency maps
    mapped to an (H, W) image (centre of the saliency cell)."""
    b, sh, sw = sal.shape
    idx = sal.flatten(1).argmax(1).cpu()
    iy, ix = idx // sw, idx % sw
    h, w = img_hw
    cy = ((iy.double() + 0.5) * h / sh).long().clamp(0, h - 1)
    cx = ((ix.double() + 0.5) * w / sw).long().clamp(0, w - 1)
    return cy, cx


class SaliencyMix(Mixer):
    """SaliencyMix with per-sample (batched) saliency boxes.

    Args:
        num_classes: K.
        alpha: Beta(alpha, alpha) of lam (official 1.0).
        prob: probability of mixing a batch (``batch``) or sample (``elem``).
        mode: ``elem`` (each sample's box on its partner's peak) or ``batch`` (one box for all).
        saliency_size, blur_sigma: spectral-residual parameters.
        label_smoothing: timm-style.
        seed: seed of the mixer's generators.
    """

    name = "saliencymix"

    def __init__(self, num_classes: int, alpha: float = 1.0, prob: float = 1.0, mode: str = "elem",
                 saliency_size: int = 64, blur_sigma: float = 2.5, label_smoothing: float = 0.1,
                 seed: Optional[int] = None):
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if mode not in ("batch", "elem"):
            raise ValueError(f"unknown SaliencyMix mode '{mode}'; expected batch or elem")
        if not 0.0 <= prob <= 1.0:
            raise ValueError("prob must lie in [0, 1]")
        if saliency_size < 8:
            raise ValueError(f"saliency_size must be >= 8, got {saliency_size}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.prob = float(prob)
        self.mode = mode
        self.saliency_size = int(saliency_size)
        self.blur_sigma = float(blur_sigma)
        self.label_smoothing = float(label_smoothing)
        self._init_rng(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, model=None, extras=None) -> MixedBatch:
        check_batch(x, y)
        b, _, h, w = x.shape
        n = 1 if self.mode == "batch" else b
        lam = self.rng.beta(self.alpha, self.alpha, n)
        mixed = self.rng.random(n) < self.prob
        if self.mode == "batch":
            lam, mixed = np.repeat(lam, b), np.repeat(mixed, b)
        cut = torch.from_numpy(mixed)
        lam_t = torch.ones(b, dtype=torch.float64)
        if not cut.any():
            return MixedBatch(images=x, labels=y, partner_labels=y.flip(0),
                              lam=lam_t.to(x.device, torch.float32))
        source = x.flip(0) if self.mode == "elem" else x.flip(0)[:1]
        sal = spectral_residual_saliency(source, self.saliency_size, self.blur_sigma)
        cy, cx = saliency_peaks(sal, (h, w))
        if self.mode == "batch":
            cy, cx = cy.expand(b), cx.expand(b)
        boxes = boxes_from_centres((h, w), torch.from_numpy(lam), cy, cx)
        boxes = torch.where(cut.view(-1, 1), boxes, torch.zeros_like(boxes))
        lam_t = box_area_lam(boxes, (h, w))
        mask = box_masks(boxes, (h, w), device=x.device)
        return MixedBatch(images=paste(x, mask), labels=y, partner_labels=y.flip(0),
                          lam=lam_t.to(x.device, torch.float32), mask=mask, cut=cut.to(x.device))

    def targets(self, batch: MixedBatch, attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        return mix_targets(batch.labels, batch.partner_labels, batch.lam, self.num_classes, self.label_smoothing)
