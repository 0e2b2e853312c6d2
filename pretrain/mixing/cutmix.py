"""Mixup / CutMix with timm's semantics, batched on the device.

Papers: "mixup: Beyond Empirical Risk Minimization", Zhang et al., ICLR 2018, arXiv:1710.09412;
"CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features", Yun et al.,
ICCV 2019, arXiv:1905.04899 (official code: clovaai/CutMix-PyTorch). The reference implementation is
timm's ``Mixup`` (huggingface/pytorch-image-models, ``timm/data/mixup.py``), whose Mixup/CutMix switch
is the one of the DeiT recipe ("Training data-efficient image transformers & distillation through
attention", Touvron et al., ICML 2021, arXiv:2012.12877; official code: facebookresearch/deit).

Modes (as timm's ``Mixup``):
  * ``batch``: one mixing coefficient and one box for the whole batch;
  * ``pair``:  one per pair (i, B-1-i), both members use the same box (they swap regions);
  * ``elem``:  one per sample.
Unlike timm, ``pair``/``elem`` build all boxes and masks with tensor ops, not a Python loop
over samples.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from .base import (BOX_RULES, MixedBatch, Mixer, box_area_lam, box_masks, check_batch, mix_targets, paste, rand_bbox,
                   rand_bbox_minmax)

MODES = ("batch", "pair", "elem")


class MixupCutMix(Mixer):
    """Mixup and/or CutMix, switching between them per batch (or per sample / pair).

    Args:
        num_classes: number of classes K of the soft targets.
        mixup_alpha: Beta(alpha, alpha) parameter of Mixup (0 disables Mixup).
        cutmix_alpha: Beta(alpha, alpha) parameter of CutMix (0 disables CutMix).
        cutmix_minmax: if set, CutMix box side ratios are uniform in [min, max) instead of
            being derived from lambda (forces CutMix, as timm).
        prob: probability of mixing a batch (or sample) at all.
        switch_prob: probability of CutMix instead of Mixup when both are enabled.
        mode: ``batch``, ``pair`` or ``elem``.
        correct_lam: recompute lambda from the clipped box area (always done with ``cutmix_minmax``).
            The clipped-area share is kept in ``batch.aux["lam_area"]`` either way (TransMix uses it).
        label_smoothing: label smoothing of the soft targets.
        box_rule: ``timm`` (default, timm 1.0.x: an unclipped box has ``int(H sqrt(1-lam))`` rows) or
            ``timm054`` (timm <= 0.5.4, what DeiT and TransMix ran: ``2 * (cut_h // 2)`` rows); see
            :func:`pretrain.mixing.base.boxes_from_centres`.
        seed: seed of the mixer's own random generators (None: nondeterministic).
    """

    needs_attention = False

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 cutmix_minmax: Optional[Tuple[float, float]] = None, prob: float = 1.0,
                 switch_prob: float = 0.5, mode: str = "batch", correct_lam: bool = True,
                 label_smoothing: float = 0.1, box_rule: str = "timm", seed: Optional[int] = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if mode not in MODES:
            raise ValueError(f"unknown mixing mode '{mode}'; expected one of {MODES}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ValueError("prob and switch_prob must lie in [0, 1]")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        if box_rule not in BOX_RULES:
            raise ValueError(f"unknown box_rule '{box_rule}'; expected one of {BOX_RULES}")
        self.box_rule = box_rule
        self.num_classes = num_classes
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.cutmix_minmax = tuple(cutmix_minmax) if cutmix_minmax is not None else None
        if self.cutmix_minmax is not None:
            if len(self.cutmix_minmax) != 2:
                raise ValueError("cutmix_minmax must be (min, max)")
            self.cutmix_alpha = 1.0  # as timm: min-max boxes imply CutMix
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.mode = mode
        self.correct_lam = bool(correct_lam) or self.cutmix_minmax is not None
        self.label_smoothing = float(label_smoothing)
        self.enabled = self.mixup_alpha > 0 or self.cutmix_alpha > 0
        self._init_rng(seed)

    # ---- parameter draws -------------------------------------------------------------------
    def _draw(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """(lam, use_cutmix) for n draws: lam in [0, 1] (1 = not mixed), use_cutmix bool."""
        rng = self.rng
        lam = np.ones(n)
        use_cut = np.zeros(n, dtype=bool)
        if not self.enabled:
            return lam, use_cut
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cut = rng.random(n) < self.switch_prob
            lam_mix = np.where(use_cut, rng.beta(self.cutmix_alpha, self.cutmix_alpha, n),
                               rng.beta(self.mixup_alpha, self.mixup_alpha, n))
        elif self.mixup_alpha > 0:
            lam_mix = rng.beta(self.mixup_alpha, self.mixup_alpha, n)
        else:
            use_cut = np.ones(n, dtype=bool)
            lam_mix = rng.beta(self.cutmix_alpha, self.cutmix_alpha, n)
        mixed = rng.random(n) < self.prob
        lam = np.where(mixed, lam_mix, 1.0)
        use_cut &= mixed
        return lam, use_cut

    def _per_sample(self, b: int) -> Tuple[np.ndarray, np.ndarray]:
        if self.mode == "batch":
            lam, cut = self._draw(1)
            return np.repeat(lam, b), np.repeat(cut, b)
        if self.mode == "pair":
            if b % 2:
                raise ValueError(f"pair mode needs an even batch size, got {b}")
            lam, cut = self._draw(b // 2)
            return np.concatenate([lam, lam[::-1]]), np.concatenate([cut, cut[::-1]])
        return self._draw(b)

    def _boxes(self, lam: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        n = lam.shape[0]
        if self.mode == "batch":
            n = 1
        elif self.mode == "pair":
            n = n // 2
        if self.cutmix_minmax is not None:
            boxes = rand_bbox_minmax(hw, n, self.cutmix_minmax, generator=self.gen, rule=self.box_rule)
        else:
            boxes = rand_bbox(hw, lam[:n], generator=self.gen, rule=self.box_rule)
        if self.mode == "batch":
            return boxes.expand(lam.shape[0], 4)
        if self.mode == "pair":
            return torch.cat([boxes, boxes.flip(0)], dim=0)
        return boxes

    # ---- mixing ----------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor, model=None, extras=None) -> MixedBatch:
        """Mix a batch. x: (B, C, H, W); y: (B,) int labels. The input tensor is not modified."""
        check_batch(x, y)
        b, _, h, w = x.shape
        lam_np, cut_np = self._per_sample(b)
        lam = torch.from_numpy(lam_np)
        cut = torch.from_numpy(cut_np)
        images = x
        mask = None
        cut_flags = None
        aux = {}
        if cut.any():
            boxes = self._boxes(lam, (h, w))
            boxes = torch.where(cut.view(-1, 1), boxes, torch.zeros_like(boxes))  # empty box: not cut
            lam_area = torch.where(cut, box_area_lam(boxes, (h, w)), lam)  # own share of the clipped box
            aux["lam_area"] = lam_area.to(device=x.device, dtype=torch.float32)
            if self.correct_lam:
                lam = lam_area
            if self.mode == "batch":  # one box: build one mask and broadcast it
                mask = box_masks(boxes[:1], (h, w), device=x.device).expand(b, -1, -1, -1)
            else:
                mask = box_masks(boxes, (h, w), device=x.device)
            images = paste(x, mask)
            cut_flags = cut.to(x.device)
        mixup = (~cut) & (lam < 1.0)
        if mixup.any():
            lm = lam.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
            blended = x * lm + x.flip(0) * (1.0 - lm)
            images = torch.where(mixup.to(x.device).view(-1, 1, 1, 1), blended, images)
        return MixedBatch(images=images, labels=y, partner_labels=y.flip(0),
                          lam=lam.to(device=x.device, dtype=torch.float32), mask=mask, cut=cut_flags, aux=aux)

    def targets(self, batch: MixedBatch, attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, K) soft targets of a mixed batch (``attention`` is ignored by area-based mixers)."""
        return mix_targets(batch.labels, batch.partner_labels, batch.lam, self.num_classes,
                           self.label_smoothing)
