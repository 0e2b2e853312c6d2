"""Pure tensor helpers shared by the mixers: boxes, paste masks, soft targets.

Conventions (as timm, huggingface/pytorch-image-models ``timm/data/mixup.py``, and the official
TransMix code, Beckschen/TransMix; papers in docs/references.md):
  * sample ``i`` is mixed with its partner ``B-1-i`` (the batch flipped);
  * ``lam`` is the weight of the sample's *own* label: ``target = lam * y_i + (1 - lam) * y_partner``;
  * a paste mask is 1 where the partner's pixels were pasted and 0 where the own image is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
        aux: per-mixer tensors that target construction needs besides the above, e.g.
            ``patch_mask`` (B, P) on the token grid, ``maps`` (B, P) teacher activation maps of the
            own images, ``attention`` (B, h, w) from an external model. Empty for plain mixers.
    """

    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    lam: torch.Tensor
    mask: Optional[torch.Tensor] = None
    cut: Optional[torch.Tensor] = None
    aux: Dict[str, Any] = field(default_factory=dict)


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
    * ``loss = mixer.loss(logits, targets)`` is the training loss the method's paper uses with its
      targets: soft-target cross-entropy by default; TokenMix overrides it with binary
      cross-entropy (its official recipe). The engine should call it instead of a fixed loss.
    * ``mixer.to(device)`` moves any auxiliary network (teacher, saliency model) and returns the mixer.
    * ``state_dict()`` / ``load_state_dict()`` capture the mixer's random generators so that a
      resumed run draws the same boxes and coefficients as an uninterrupted one.

    Flags: ``needs_attention`` (targets want the training forward's CLS attention; may be an
    instance attribute, e.g. TransMix with an external attention model sets it to False) and
    ``needs_model`` (the mixer cannot work without ``model``, e.g. Puzzle-Mix's gradient saliency).
    Auxiliary networks (teachers, external CNNs) are frozen, in eval mode and run under no_grad.

    Subclasses keep their randomness in ``self.rng`` (numpy ``Generator``) and ``self.gen``
    (CPU ``torch.Generator``), both created by :meth:`_init_rng`. Random numbers are drawn on
    the CPU (so that a seed gives the same draws on every device) and moved in one transfer.
    """

    needs_attention = False
    needs_model = False
    name = "mixer"

    def _init_rng(self, seed: Optional[int]) -> None:
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator()
        self.gen.manual_seed(int(self.rng.integers(2**62)))

    def to(self, device) -> "Mixer":
        return self

    def wrap_dataset(self, dataset):
        return dataset

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of (B, K) logits against (B, K) soft targets."""
        return soft_target_cross_entropy(logits, targets)

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


BOX_RULES = ("timm", "timm054")


def boxes_from_centres(img_hw: Tuple[int, int], lam: torch.Tensor, cy: torch.Tensor,
                       cx: torch.Tensor, rule: str = "timm") -> torch.Tensor:
    """(n, 4) int64 half-open boxes ``(y0, y1, x0, x1)`` centred at integer pixels (cy, cx), clipped at
    the borders, for ``cut_h = int(H*sqrt(1-lam))``, ``cut_w = int(W*sqrt(1-lam))``.

    ``rule`` is the side-length rule of timm's ``rand_bbox``:

    * ``timm`` (timm 1.0.x): ``y0 = cy - cut_h // 2``, ``y1 = cy + (cut_h + 1) // 2``, so an unclipped
      box has exactly ``cut_h`` x ``cut_w`` pixels;
    * ``timm054`` (timm <= 0.5.4, which DeiT, TransMix and TokenMix's copy ran):
      ``y1 = cy + cut_h // 2``, so an unclipped box has ``2*(cut_h//2)`` x ``2*(cut_w//2)`` pixels
      (one row/column fewer when ``cut_h``/``cut_w`` is odd).
    """
    h, w = img_hw
    ratio = torch.sqrt(1.0 - lam.detach().double().cpu())
    return boxes_of_size(img_hw, (h * ratio).long(), (w * ratio).long(), cy, cx, rule)


def boxes_of_size(img_hw: Tuple[int, int], cut_h: torch.Tensor, cut_w: torch.Tensor, cy: torch.Tensor,
                  cx: torch.Tensor, rule: str = "timm") -> torch.Tensor:
    """(n, 4) int64 half-open boxes of (n,) integer sides ``cut_h`` x ``cut_w`` centred at (cy, cx) by the
    side-length ``rule`` of :func:`boxes_from_centres`, clipped at the borders."""
    if rule not in BOX_RULES:
        raise ValueError(f"unknown box rule '{rule}'; expected one of {BOX_RULES}")
    h, w = img_hw
    cut_h, cut_w = cut_h.long().cpu(), cut_w.long().cpu()
    cy, cx = cy.long().cpu(), cx.long().cpu()
    up_h, up_w = ((cut_h + 1) // 2, (cut_w + 1) // 2) if rule == "timm" else (cut_h // 2, cut_w // 2)
    y0 = (cy - cut_h // 2).clamp(0, h)
    y1 = (cy + up_h).clamp(0, h)
    x0 = (cx - cut_w // 2).clamp(0, w)
    x1 = (cx + up_w).clamp(0, w)
    return torch.stack([y0, y1, x0, x1], dim=1)


def rand_bbox(img_hw: Tuple[int, int], lam: torch.Tensor, generator: Optional[torch.Generator] = None,
              margin: float = 0.0, rule: str = "timm") -> torch.Tensor:
    """Random boxes whose area is about ``1 - lam`` of the image, clipped at the borders.

    Args:
        img_hw: (H, W).
        lam: (n,) target own-image share per box.
        generator: optional torch generator (CPU) for reproducibility.
        margin: fraction of the box size the centre keeps away from the border.
        rule: side-length rule, ``timm`` or ``timm054`` (see :func:`boxes_from_centres`).

    Returns:
        (n, 4) int64 boxes ``(y0, y1, x0, x1)``, half-open, as timm's ``rand_bbox``: a box of
        ``int(H*sqrt(1-lam))`` x ``int(W*sqrt(1-lam))`` (``timm``) centred uniformly, then clipped.
    """
    h, w = img_hw
    lam = lam.detach().double().cpu()
    ratio = torch.sqrt(1.0 - lam)
    my = (margin * (h * ratio).long()).long()
    mx = (margin * (w * ratio).long()).long()
    u = torch.rand(2, lam.shape[0], generator=generator, dtype=torch.float64)
    cy = my + (u[0] * (h - 2 * my)).long()  # uniform integer in [my, h - my)
    cx = mx + (u[1] * (w - 2 * mx)).long()
    return boxes_from_centres(img_hw, lam, cy, cx, rule)


def rand_bbox_minmax(img_hw: Tuple[int, int], n: int, minmax: Tuple[float, float],
                     generator: Optional[torch.Generator] = None, rule: str = "timm") -> torch.Tensor:
    """Boxes as timm's min-max CutMix: side lengths uniform integers in ``[int(H*min), int(H*max))``
    (resp. W), top-left corner uniform over the positions that keep the box inside the image
    (``timm``, 1.0.x: ``[0, H - cut_h]``; ``timm054``: ``[0, H - cut_h)``, never touching the far border)."""
    if rule not in BOX_RULES:
        raise ValueError(f"unknown box rule '{rule}'; expected one of {BOX_RULES}")
    h, w = img_hw
    lo, hi = minmax
    if not 0.0 < lo < hi <= 1.0:
        raise ValueError(f"cutmix_minmax must satisfy 0 < min < max <= 1, got {minmax}")
    hlo, hhi, wlo, whi = int(h * lo), int(h * hi), int(w * lo), int(w * hi)
    if hhi <= hlo or whi <= wlo:
        raise ValueError(f"cutmix_minmax {minmax} gives no box size for a {h}x{w} image")
    u = torch.rand(4, n, generator=generator, dtype=torch.float64)
    cut_h = hlo + (u[0] * (hhi - hlo)).long()
    cut_w = wlo + (u[1] * (whi - wlo)).long()
    extra = 1 if rule == "timm" else 0
    y0 = (u[2] * (h - cut_h + extra)).long().clamp(max=h - cut_h)
    x0 = (u[3] * (w - cut_w + extra)).long().clamp(max=w - cut_w)
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
    lam = lam.detach().to(torch.float32)
    return weighted_targets(labels, partner_labels, lam, 1.0 - lam, num_classes, smoothing)


def weighted_targets(labels: torch.Tensor, partner_labels: torch.Tensor, w_own: torch.Tensor,
                     w_partner: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B, K) targets ``w_own * y + w_partner * y_partner`` with smoothed one-hots (timm's smoothing).
    Rows sum to ``w_own + w_partner`` (1 for area-based mixing). Weights are detached."""
    if labels.numel() and (int(labels.max()) >= num_classes or int(labels.min()) < 0):
        raise ValueError(f"label {int(labels.max())} out of range for {num_classes} classes")
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = one_hot(labels, num_classes, on, off)
    y2 = one_hot(partner_labels, num_classes, on, off)
    w1 = w_own.detach().to(y1.device, torch.float32).view(-1, 1)
    w2 = w_partner.detach().to(y1.device, torch.float32).view(-1, 1)
    return y1 * w1 + y2 * w2


def patch_grid(img_hw: Tuple[int, int], patch_size: int) -> Tuple[int, int]:
    """(h, w) token grid of an (H, W) image; a clear error when H or W is not a multiple of the patch."""
    h, w = int(img_hw[0]), int(img_hw[1])
    p = int(patch_size)
    if p <= 0:
        raise ValueError(f"patch size must be > 0, got {patch_size}")
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    return h // p, w // p


def model_patch_size(model) -> Optional[int]:
    """Patch size of a timm ViT (``patch_embed.patch_size``), None for models without one."""
    pe = getattr(model, "patch_embed", None)
    ps = getattr(pe, "patch_size", None)
    if ps is None:
        return None
    ps = tuple(ps) if isinstance(ps, (tuple, list)) else (int(ps), int(ps))
    if ps[0] != ps[1]:
        raise ValueError(f"non-square patches {ps} are not supported")
    return int(ps[0])


ZERO_MAPS = ("zero", "uniform")


def resize_maps(maps: torch.Tensor, grid_hw: Tuple[int, int], eps: float = 1e-12,
                zero: str = "uniform") -> torch.Tensor:
    """Non-negative activation maps (B, h', w') -> (B, h*w) on the token grid, each row summing to 1.

    Exact area pooling when the map size is a multiple of the grid, bilinear resampling otherwise;
    negative values are clipped to 0. An all-zero map becomes uniform (``zero="uniform"``, the area
    share) or stays all zero (``zero="zero"``, as the official TokenMix code, whose ``map / (sum + 1e-8)``
    gives that image a label weight of 0).
    """
    if zero not in ZERO_MAPS:
        raise ValueError(f"unknown zero-map rule '{zero}'; expected one of {ZERO_MAPS}")
    if maps.dim() != 3:
        raise ValueError(f"activation maps must be (B, h, w), got shape {tuple(maps.shape)}")
    m = maps.detach().float().unsqueeze(1)
    gh, gw = grid_hw
    mh, mw = m.shape[-2:]
    if (mh, mw) != (gh, gw):
        if mh % gh == 0 and mw % gw == 0:
            m = F.avg_pool2d(m, (mh // gh, mw // gw))
        else:
            m = F.interpolate(m, size=(gh, gw), mode="bilinear", align_corners=False)
    m = m.flatten(1).clamp_min(0.0)
    total = m.sum(1, keepdim=True)
    fallback = torch.full_like(m, 1.0 / m.shape[1]) if zero == "uniform" else torch.zeros_like(m)
    return torch.where(total > eps, m / total.clamp_min(eps), fallback)


def mask_to_patches(mask: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """Downsample (B, 1, H, W) paste masks to the (B, h*w) patch grid by nearest neighbour (row-major,
    the token order of a ViT's patch embedding)."""
    return F.interpolate(mask.float(), size=grid_hw, mode="nearest").flatten(1)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k t_k log softmax(logits)_k``."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
