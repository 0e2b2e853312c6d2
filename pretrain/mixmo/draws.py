"""The random draws of the official MixMo code, batched: the rectangle rule, and CutMix on each input
inside Cut-MixMo.

"MixMo: Mixing Multiple Inputs for Multiple Outputs via Deep Subnetworks", Ramé, Sun and Cord, ICCV 2021,
arXiv:2103.06132. The official implementation (alexrame/mixmo-pytorch) draws per sample in its dataset
wrapper (``mixmo/loaders/dataset_wrapper.py``); here the same distributions are drawn for a whole batch at
once, from the trainer's generators (saved for exact resume), without a Python loop over samples.

* :func:`box_rule_boxes`: boxes whose area share is about ``share``. ``rule="even"`` is the official
  ``_rand_bbox_of_area_lam`` (``mixmo/augmentations/mixing_blocks.py``): side ``c = int(H sqrt(share))``,
  uniform integer centre, corners ``centre -/+ c // 2`` clipped, so an unclipped box has ``2 (c // 2)``
  rows (an even number); ``rule="exact"`` is timm 1.0's rule (``pretrain.mixing.base.rand_bbox``: ``c``
  rows), this project's former rectangle.
* :func:`cutmix_inputs`: the official "Cut-MixMo + CutMix" input mixing (``MSDADataset.call_msda``): with
  probability p per sample a box of the sample's own image (share lambda ~ Beta(alpha, alpha), the box
  rule above) is pasted over a random partner; inside MixMo the CutMix lambda is recomputed over the part
  of the mixing grid the member keeps (``mean(box * mask_k) / mean(mask_k)``, the box average-pooled to the
  grid when the encoder downsamples) and, when it falls below one half, the roles swap (the own image
  takes the complement of the box and 1 - lambda), so the own image always covers at least half of what
  survives the MixMo mask (``reverse_if_first_minor`` of ``MixMoDataset``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..mixing.base import box_masks, boxes_of_size, one_hot, rand_bbox

BOX_RULES = ("even", "exact")


def box_rule_boxes(hw: Tuple[int, int], share: torch.Tensor, generator: torch.Generator,
                   rule: str = "even") -> torch.Tensor:
    """(n, 4) int64 half-open boxes ``(y0, y1, x0, x1)`` of target area share ``share`` (n,) on an (h, w) grid.

    ``even``: side ``c = int(h sqrt(share))`` (resp. w), centre uniform in ``[0, h)``, rows
    ``[cy - c // 2, cy + c // 2)`` clipped to the grid (official rule). ``exact``: timm 1.0's ``c`` rows."""
    if rule not in BOX_RULES:
        raise ValueError(f"box rule must be one of {BOX_RULES}, got {rule!r}")
    h, w = int(hw[0]), int(hw[1])
    share = share.detach().double().cpu()
    if rule == "exact":
        return rand_bbox((h, w), 1.0 - share, generator=generator)  # rand_bbox's lam = share outside the box
    ratio = torch.sqrt(share)
    u = torch.rand(2, share.shape[0], generator=generator, dtype=torch.float64)
    cy = (u[0] * h).long().clamp(max=h - 1)
    cx = (u[1] * w).long().clamp(max=w - 1)
    # timm 0.5.4's side rule is the official one: rows [cy - c // 2, cy + c // 2)
    return boxes_of_size((h, w), (h * ratio).long(), (w * ratio).long(), cy, cx, rule="timm054")


def pool_to_grid(mask: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """(n, 1, H, W) image-resolution mask averaged over the cells of an (h, w) grid (the encoder's output).
    Equal sizes: the mask itself; an integer ratio: average pooling (the official code's 2x2 pooling for a
    stride-2 stem); otherwise area interpolation."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    H, W = mask.shape[-2:]
    if (H, W) == (h, w):
        return mask
    if H % h == 0 and W % w == 0:
        return F.avg_pool2d(mask, (H // h, W // w))
    return F.interpolate(mask, size=(h, w), mode="area")


def cutmix_inputs(images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, num_classes: int,
                  rng: np.random.Generator, gen: torch.Generator, prob: float, alpha: float,
                  keep_mask: Optional[torch.Tensor] = None, rule: str = "even"
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official CutMix of one MixMo input stream (see the module docstring), batched.

    Args:
        images: (B, C, H, W) loader batch; labels: (B,) int64.
        idx: (N,) int64 indices into the batch: the stream's own images (``images[idx]``); on the CPU
            (where they are drawn) to keep the step free of device-to-host copies.
        num_classes: K.
        rng, gen: the trainer's NumPy and torch (CPU) generators.
        prob: probability of CutMix per sample; alpha: lambda ~ Beta(alpha, alpha).
        keep_mask: (N, 1, h, w) share of the member on the mixing grid (MixMo mask: {0, 1} for Cut-MixMo,
            a constant lambda for Linear-MixMo), or None outside MixMo (M = 1: no recomputation, no swap,
            the official ``MSDADataset``).
        rule: the box rule (:func:`box_rule_boxes`).
    Returns:
        ``x`` (N, C, H, W) mixed images, ``targets`` (N, K) soft targets ``lam onehot(own) + (1 - lam)
        onehot(partner)``, ``lam`` (N,) float64 own share on the images' device (1 where no CutMix was drawn).

    The partner of a sample is a uniformly random *other* image of the loader batch (the official loader
    draws a random dataset index; the loader batch is a uniform sample of the dataset).
    """
    b = images.shape[0]
    n = idx.shape[0]
    dev = images.device
    idx_cpu = idx.cpu()  # pass the CPU indices: no device-to-host copy in the step
    idx_d = idx_cpu.to(dev, non_blocking=True)
    own_x, own_y = images[idx_d], labels[idx_d]
    if prob <= 0 or b < 2:
        return own_x, one_hot(own_y, num_classes), torch.ones(n, dtype=torch.float64, device=dev)
    apply = torch.from_numpy(rng.random(n) < prob).to(dev).view(n, 1, 1, 1)
    shift = torch.from_numpy(rng.integers(1, b, size=n))
    lam_draw = torch.from_numpy(rng.dirichlet((float(alpha), float(alpha)), size=n)[:, 0].copy())
    pidx = ((idx_cpu + shift) % b).to(dev, non_blocking=True)
    boxes = box_rule_boxes(images.shape[-2:], lam_draw, gen, rule)
    box = box_masks(boxes, tuple(images.shape[-2:]), device=dev)            # (N, 1, H, W), 1 = own image
    if keep_mask is None:
        lam = box.double().mean((1, 2, 3))
        own = box
    else:
        keep = keep_mask.to(dev, torch.float64)
        kept = pool_to_grid(box.double(), keep.shape[-2:]) * keep
        den = keep.sum((1, 2, 3))
        lam = torch.where(den > 0, kept.sum((1, 2, 3)) / den.clamp_min(1e-30), torch.zeros_like(den))
        swap = lam < 0.5
        own = torch.where(swap.view(n, 1, 1, 1), 1.0 - box, box)
        lam = torch.where(swap, 1.0 - lam, lam)
    lam = torch.where(apply.view(n), lam, torch.ones_like(lam))
    own = torch.where(apply, own, torch.ones_like(own))
    x = torch.where(own.bool(), own_x, images[pidx])
    lam_f = lam.float().view(n, 1)
    targets = lam_f * one_hot(own_y, num_classes) + (1.0 - lam_f) * one_hot(labels[pidx], num_classes)
    return x, targets, lam
