"""Attentive-CutMix: paste the partner's most attended grid cells.

Paper: "Attentive CutMix: An Enhanced Data Augmentation Approach for Deep Learning Based Image
Classification", Walawalkar et al., ICASSP 2020, arXiv:2003.13048.

A frozen pretrained CNN (ResNet-50 in the paper) gives the partner image's last feature map
(7x7 at 224 px); its channel mean is the attention map. The ``k`` most activated cells (paper:
6 of 49) of the partner are pasted on the same cells of the own image; the own-label weight is the
share of own pixels, ``1 - k/49`` when the cells tile the image exactly (always recomputed from
the pixel mask, so uneven cell borders stay exact). All samples are handled batched: one CNN
forward, one ``topk``, one scatter.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from .base import MixedBatch, Mixer, check_batch, mix_targets, paste
from .teachers import build_external


def topk_cell_mask(maps: torch.Tensor, k: int) -> torch.Tensor:
    """(B, h, w) float {0, 1} masks marking each map's ``k`` largest cells (ties: lowest index first)."""
    if maps.dim() != 3:
        raise ValueError(f"attention maps must be (B, h, w), got shape {tuple(maps.shape)}")
    b, h, w = maps.shape
    if not 0 < k <= h * w:
        raise ValueError(f"k = {k} cells requested from a {h}x{w} map")
    flat = maps.detach().float().flatten(1)
    idx = flat.topk(k, dim=1, sorted=False).indices
    out = torch.zeros_like(flat).scatter_(1, idx, 1.0)
    return out.view(b, h, w)


def cells_to_pixels(cell_mask: torch.Tensor, img_hw) -> torch.Tensor:
    """(B, h, w) cell masks -> (B, 1, H, W) pixel masks by nearest-neighbour upsampling."""
    return F.interpolate(cell_mask.unsqueeze(1).float(), size=tuple(img_hw), mode="nearest")


class AttentiveCutMix(Mixer):
    """Attentive-CutMix with an external frozen CNN.

    Args:
        num_classes: K.
        model: external CNN spec (see :mod:`pretrain.mixing.teachers`), e.g.
            ``{name: resnet50, checkpoint: /ckpt/resnet50.pth, input_size: 224}``.
        k: number of grid cells pasted (paper: 6 of 7x7).
        prob: probability of mixing each sample.
        label_smoothing: timm-style.
        seed: seed of the mixer's generators.
    """

    name = "attentive_cutmix"

    def __init__(self, num_classes: int, model: Any = None, k: int = 6, prob: float = 1.0,
                 label_smoothing: float = 0.1, seed: Optional[int] = None):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError("prob must lie in [0, 1]")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.external = build_external(model, "Attentive-CutMix CNN")
        if self.external.is_vit:
            raise ValueError("Attentive-CutMix takes a CNN's last feature map; got a ViT "
                             f"({type(self.external.model).__name__})")
        self.k = int(k)
        self.prob = float(prob)
        self.label_smoothing = float(label_smoothing)
        self._init_rng(seed)

    def to(self, device) -> "AttentiveCutMix":
        self.external.to(device)
        return self

    def __call__(self, x: torch.Tensor, y: torch.Tensor, model=None, extras=None) -> MixedBatch:
        check_batch(x, y)
        b, _, h, w = x.shape
        mixed = torch.from_numpy(self.rng.random(b) < self.prob).to(x.device)
        if not bool(mixed.any()):
            return MixedBatch(images=x, labels=y, partner_labels=y.flip(0),
                              lam=torch.ones(b, device=x.device))
        att = self.external.activation(x).flip(0)  # the partner's attention, aligned with each sample
        cells = topk_cell_mask(att, self.k) * mixed.view(-1, 1, 1).float()
        mask = cells_to_pixels(cells, (h, w))
        lam = 1.0 - mask.flatten(1).mean(1)
        return MixedBatch(images=paste(x, mask), labels=y, partner_labels=y.flip(0), lam=lam.float(),
                          mask=mask, cut=mixed, aux={"cells": cells})

    def targets(self, batch: MixedBatch, attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        return mix_targets(batch.labels, batch.partner_labels, batch.lam, self.num_classes, self.label_smoothing)
