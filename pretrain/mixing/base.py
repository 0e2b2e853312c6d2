"""Pure tensor helpers shared by the mixers: boxes, paste masks, soft targets.

Conventions (as timm and the official TransMix code):
  * sample ``i`` is mixed with its partner ``B-1-i`` (the batch flipped);
  * ``lam`` is the weight of the sample's *own* label: ``target = lam * y_i + (1 - lam) * y_partner``;
  * a paste mask is 1 where the partner's pixels were pasted and 0 where the own image is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

import torch
import torch.nn.functional as F


@dataclass
class MixedBatch:
    """A mixed batch and what target construction needs.

    Attributes:
        images: (B, C, H, W) mixed images.
        labels: (B,) integer labels of the own images.
        partner_labels: (B,) integer labels of the partner images (``labels.flip(0)``).
        lam: (B,) float32 weight of the own label (area share for CutMix, the mixing
            coefficient for Mixup, 1 for unmixed batches).
        mask: (B, 1, H, W) float {0, 1} paste mask (1 = partner pixel), or None when no
            sample of the batch was box-mixed (Mixup or no mixing).
        cut: (B,) bool, which samples were box-mixed (None when ``mask`` is None).
    """

    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    lam: torch.Tensor
    mask: Optional[torch.Tensor] = None
    cut: Optional[torch.Tensor] = None


class Mixer:
    """Common interface of every mixer (what the training engine relies on).

    * ``batch = mixer(images, labels, model=None, extras=None)`` mixes a (B, C, H, W) batch with
      (B,) integer labels and returns a :class:`MixedBatch`. ``model`` is the (unwrapped) network
      being trained; only mixers with ``needs_model = True`` use it (e.g. gradient saliency).
      ``extras`` is the third element of a loader batch ``(images, labels, extras)`` when the
      dataset was wrapped by :meth:`wrap_dataset` (e.g. crop geometry for dense label maps).
    * ``dataset = mixer.wrap_dataset(dataset)`` lets a mixer attach per-sample side information
      to the training set (identity by default).
    * ``targets = mixer.targets(batch, attention=None)`` gives (B, K) soft targets. Mixers with
      ``needs_attention = True`` want the last-block CLS attention of the forward pass on
      ``batch.images``, as (B, h, w) on the patch grid.
    * ``mixer.to(device)`` moves any auxiliary network (teacher, saliency model) and returns the mixer.
    * ``state_dict()`` / ``load_state_dict()`` capture the mixer's random generators so that a
      resumed run draws the same boxes and coefficients as an uninterrupted one.

    Subclasses keep their randomness in ``self.rng`` (numpy ``Generator``) and ``self.gen``
    (CPU ``torch.Generator``), both created by :meth:`_init_rng`.
    """

    needs_attention = False
    needs_model = False

    def _init_rng(self, seed: Optional[int]) -> None:
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator()
        self.gen.manual_seed(int(self.rng.integers(2**62)))

    def to(self, device) -> "Mixer":
        return self

    def wrap_dataset(self, dataset):
        return dataset

    def state_dict(self) -> Dict[str, Any]:
        return {"numpy": self.rng.bit_generator.state, "torch": self.gen.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["numpy"]
        self.gen.set_state(state["torch"])


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be (B,) integer class indices matching the batch; got shape "
                         f"{tuple(y.shape)} for {x.shape[0]} images")
    if y.dtype.is_floating_point:
        raise ValueError("labels must be integer class indices, not soft targets")
    if x.shape[0] < 2:
        raise ValueError("mixing needs a batch of at least 2 samples (got 1); use drop_last=True")


def rand_bbox(img_hw: Tuple[int, int], lam: torch.Tensor, generator: Optional[torch.Generator] = None,
              margin: float = 0.0) -> torch.Tensor:
    """Random boxes whose area is about ``1 - lam`` of the image, clipped at the borders.

    Args:
        img_hw: (H, W).
        lam: (n,) target own-image share per box.
        generator: optional torch generator (CPU) for reproducibility.
        margin: fraction of the box size the centre keeps away from the border.

    Returns:
        (n, 4) int64 boxes ``(y0, y1, x0, x1)``, half-open, as timm's ``rand_bbox``: a box of
        ``int(H*sqrt(1-lam))`` x ``int(W*sqrt(1-lam))`` centred uniformly, then clipped.
    """
    h, w = img_hw
    lam = lam.detach().double().cpu()
    ratio = torch.sqrt(1.0 - lam)
    cut_h = (h * ratio).long()
    cut_w = (w * ratio).long()
    my = (margin * cut_h).long()
    mx = (margin * cut_w).long()
    u = torch.rand(2, lam.shape[0], generator=generator, dtype=torch.float64)
    cy = my + (u[0] * (h - 2 * my)).long()  # uniform integer in [my, h - my)
    cx = mx + (u[1] * (w - 2 * mx)).long()
    y0 = (cy - cut_h // 2).clamp(0, h)
    y1 = (cy + cut_h // 2).clamp(0, h)
    x0 = (cx - cut_w // 2).clamp(0, w)
    x1 = (cx + cut_w // 2).clamp(0, w)
    return torch.stack([y0, y1, x0, x1], dim=1)


def rand_bbox_minmax(img_hw: Tuple[int, int], n: int, minmax: Tuple[float, float],
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Boxes with side ratios drawn uniformly in ``[min, max)`` of the image size (timm's min-max CutMix)."""
    h, w = img_hw
    lo, hi = minmax
    if not 0.0 < lo < hi <= 1.0:
        raise ValueError(f"cutmix_minmax must satisfy 0 < min < max <= 1, got {minmax}")
    u = torch.rand(4, n, generator=generator, dtype=torch.float64)
    cut_h = (h * (lo + (hi - lo) * u[0])).long()
    cut_w = (w * (lo + (hi - lo) * u[1])).long()
    y0 = (u[2] * (h - cut_h + 1)).long().clamp(max=h - cut_h)
    x0 = (u[3] * (w - cut_w + 1)).long().clamp(max=w - cut_w)
    return torch.stack([y0, y0 + cut_h, x0, x0 + cut_w], dim=1)


def box_area_lam(boxes: torch.Tensor, img_hw: Tuple[int, int]) -> torch.Tensor:
    """(n,) own-image share ``1 - box area / (H W)`` of (n, 4) ``(y0, y1, x0, x1)`` boxes."""
    h, w = img_hw
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    return 1.0 - area.double() / float(h * w)


def box_masks(boxes: torch.Tensor, img_hw: Tuple[int, int], device=None) -> torch.Tensor:
    """(n, 1, H, W) float {0,1} masks, 1 inside each half-open ``(y0, y1, x0, x1)`` box (batched)."""
    h, w = img_hw
    boxes = boxes.to(device)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    b = boxes.view(-1, 4, 1, 1)
    inside = (ys >= b[:, 0]) & (ys < b[:, 1]) & (xs >= b[:, 2]) & (xs < b[:, 3])
    return inside.unsqueeze(1).float()


def paste(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Images with the partner's (``x.flip(0)``) pixels where ``mask`` is 1; exact copies elsewhere."""
    return torch.where(mask.bool(), x.flip(0), x)


def one_hot(labels: torch.Tensor, num_classes: int, on_value: float = 1.0, off_value: float = 0.0) -> torch.Tensor:
    out = torch.full((labels.shape[0], num_classes), off_value, device=labels.device, dtype=torch.float32)
    return out.scatter_(1, labels.long().view(-1, 1), on_value)


def mix_targets(labels: torch.Tensor, partner_labels: torch.Tensor, lam: torch.Tensor, num_classes: int,
                smoothing: float = 0.0) -> torch.Tensor:
    """(B, K) soft targets ``lam * y + (1 - lam) * y_partner`` with label smoothing (timm's convention:
    off value ``smoothing / K``, on value ``1 - smoothing + smoothing / K``). Each row sums to 1."""
    if labels.numel() and (int(labels.max()) >= num_classes or int(labels.min()) < 0):
        raise ValueError(f"label {int(labels.max())} out of range for {num_classes} classes")
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = one_hot(labels, num_classes, on, off)
    y2 = one_hot(partner_labels, num_classes, on, off)
    lam = lam.detach().to(y1.device, torch.float32).view(-1, 1)
    return y1 * lam + y2 * (1.0 - lam)


def mask_to_patches(mask: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """Downsample (B, 1, H, W) paste masks to the (B, h*w) patch grid by nearest neighbour (row-major,
    the token order of a ViT's patch embedding)."""
    return F.interpolate(mask.float(), size=grid_hw, mode="nearest").flatten(1)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k t_k log softmax(logits)_k``."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
