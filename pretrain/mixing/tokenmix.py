"""TokenMix: token-level mixing with content-based targets.

Paper: "TokenMix: Rethinking Image Mixing for Data Augmentation in Vision Transformers", Liu et al.,
ECCV 2022, arXiv:2207.08409; official code: Sense-X/TokenMix ("the official code" and "the official
recipe" below). The block masking is BEiT's ("BEiT: BERT Pre-Training of Image Transformers", Bao et al.,
ICLR 2022, arXiv:2106.08254; official code: microsoft/unilm); CAM is from "Learning Deep Features for
Discriminative Localization", Zhou et al., CVPR 2016, arXiv:1512.04150.

Mixing: the partner's tokens are pasted on a *multi-part* region of the patch grid, grown as BEiT's
block masking does: blocks of random area (uniform in ``[min_block_tokens, remaining]``) and
aspect ratio (log-uniform in ``[min_aspect, 1/min_aspect]``) are added, each accepted only when it
adds between 1 and ``remaining`` new tokens, up to ``attempts`` tries per block, until the target
token count is reached (or no block fits). The target count is
``min(P, int(mask_ratio * P) + extra_tokens)`` with ``mask_ratio = 0.5`` and ``extra_tokens = 14``
in the official code on 14x14 grids; by default ``extra_tokens = round(P / 14)``, which is 14 there
and keeps the same share on other grids. :func:`block_token_masks` runs this for a whole batch at once
on the device: every sample's block search is vectorised, and the only Python loop is over
growth rounds (about 10), with all random numbers drawn up front on the CPU.

Targets: for a token-mixed sample with paste mask ``M`` (1 = partner token) and normalised
activation maps ``A`` (B, P) of the clean images (``A_i`` sums to 1),

    w_own = sum_p (1 - M_p) A_own_p,   w_partner = sum_p M_p A_partner_p,
    target = w_own * y_own + w_partner * y_partner          (not renormalised, as the official code)

The maps come from ``target``:

* ``area``: ``A`` uniform, i.e. ``w_own = 1 - |M| / P`` (CutMix-style targets on token masks);
* ``teacher``: an online frozen teacher on the clean images (any timm classifier): CAM of the
  ground-truth class (``teacher_class: label``; the teacher must share the label space) or of its
  own prediction (``pred``) for CNNs, last-block CLS attention for ViTs;
* ``label_map``: precomputed dense maps on disk, cropped to each augmented view by
  :class:`pretrain.data.label_maps.LabelMapDataset` (``wrap_dataset``) and passed as ``extras``.

Label smoothing of token-mixed rows (``smoothing_rule``; ``s`` = ``label_smoothing``, K classes):

* ``official`` (default; Sense-X/TokenMix ``tokenmix.py``, ``Mixup.__call__``): every class gets ``s/K``
  and each image's class gets its weight minus ``s/2``::

      target = s/K + (w_own - s/2) e_own + (w_partner - s/2) e_partner

  An image whose weight is below ``s/2 - s/K`` (an object hidden by the mask, or an all-zero map) gets a
  *negative* target; rows sum to ``w_own + w_partner``.
* ``onehot``: timm's smoothing of each one-hot before weighting,
  ``w_own ((1-s) e_own + s/K) + w_partner ((1-s) e_partner + s/K)``, never negative.

The Mixup branch (and unmixed samples) always use timm's ``mixup_target`` smoothing, as the official code.

The official recipe switches per batch between Mixup (alpha 0.8) and TokenMix (switch prob 0.5)
and trains with binary cross-entropy: :meth:`TokenMix.loss` (``loss: bce``) is timm 0.5.4's
``BinaryCrossEntropy`` as the official ``main.py`` builds it for dense targets: elementwise
``softplus(x) - x t`` averaged over the B x K entries, on the targets as given (no clamp, no smoothing
inside, no threshold, no weights); ``bce_clamp: true`` clamps the targets to [0, 1] first (targets can
be negative with the official smoothing, or exceed 1 when both images share a class). ``loss: ce``
gives soft-target cross-entropy. ``renormalize: true`` divides the two weights by their sum.
``zero_map``: an all-zero activation map gives that image weight 0 (``zero``, official) or the area
share (``uniform``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .base import (ZERO_MAPS, MixedBatch, Mixer, check_batch, model_patch_size, one_hot, paste, patch_grid,
                   resize_maps, soft_target_cross_entropy, weighted_targets)
from .teachers import build_external

TARGETS = ("area", "teacher", "label_map")
MODES = ("batch", "elem")
LOSSES = ("bce", "ce")
SMOOTHING_RULES = ("official", "onehot")


def block_mask_randoms(rounds: int, n: int, attempts: int, generator: Optional[torch.Generator] = None
                       ) -> torch.Tensor:
    """(rounds, n, attempts, 4) uniform [0, 1) numbers for :func:`block_token_masks` (area, aspect,
    top, left), drawn on the CPU in one call so a seed gives the same masks on every device."""
    return torch.rand(rounds, n, attempts, 4, generator=generator, dtype=torch.float64)


def block_token_masks(num_tokens: torch.Tensor, grid_hw: Tuple[int, int], randoms: torch.Tensor,
                      min_block_tokens: int = 1, max_block_tokens: Optional[int] = None,
                      min_aspect: float = 0.3, device=None) -> torch.Tensor:
    """BEiT-style multi-block token masks for a batch, built with tensor ops.

    Args:
        num_tokens: (n,) target number of masked tokens per sample.
        grid_hw: (h, w) token grid.
        randoms: (rounds, n, attempts, 4) uniform numbers from :func:`block_mask_randoms`.
        min_block_tokens: smallest block area drawn.
        max_block_tokens: largest block area (default: the whole grid).
        min_aspect: aspect ratios are log-uniform in [min_aspect, 1/min_aspect].

    Returns:
        (n, h, w) bool masks, True where the partner's token goes. Per sample, round ``r`` tries
        the ``attempts`` candidate blocks of ``randoms[r]`` in order and adds the first that
        brings between 1 and ``min(remaining, max_block_tokens)`` new tokens; a sample stops
        growing when it reaches its count or when no candidate of a round fits.
    """
    gh, gw = grid_hw
    rounds, n, attempts, _ = randoms.shape
    device = device if device is not None else num_tokens.device
    target = num_tokens.to(device=device, dtype=torch.long).clamp(0, gh * gw)
    cap = gh * gw if max_block_tokens is None else int(max_block_tokens)
    r = randoms.to(device=device, dtype=torch.float32)
    mask = torch.zeros(n, gh, gw, dtype=torch.bool, device=device)
    count = torch.zeros(n, dtype=torch.long, device=device)
    stopped = torch.zeros(n, dtype=torch.bool, device=device)
    ys = torch.arange(gh, device=device).view(1, 1, gh, 1)
    xs = torch.arange(gw, device=device).view(1, 1, 1, gw)
    log_lo, log_hi = math.log(min_aspect), math.log(1.0 / min_aspect)
    rows = torch.arange(n, device=device)
    for i in range(rounds):
        remaining = target - count
        active = (remaining > 0) & ~stopped
        if i % 4 == 0 and not bool(active.any()):  # occasional early exit (one sync per 4 rounds)
            break
        max_new = remaining.clamp(max=cap).clamp_min(0)  # n
        u = r[i]  # n, A, 4
        lo = float(min_block_tokens)
        area = lo + u[..., 0] * (max_new.unsqueeze(1).float() - lo)
        aspect = torch.exp(log_lo + u[..., 1] * (log_hi - log_lo))
        bh = torch.round(torch.sqrt(area * aspect)).long()
        bw = torch.round(torch.sqrt(area / aspect)).long()
        fits = (bh < gh) & (bw < gw)  # as BEiT: strictly smaller than the grid
        top = (u[..., 2] * (gh - bh + 1).clamp_min(1)).long()
        left = (u[..., 3] * (gw - bw + 1).clamp_min(1)).long()
        block = ((ys >= top[..., None, None]) & (ys < (top + bh)[..., None, None])
                 & (xs >= left[..., None, None]) & (xs < (left + bw)[..., None, None]))  # n, A, h, w
        new = (block & ~mask.unsqueeze(1)).flatten(2).sum(2)  # n, A
        ok = fits & (new > 0) & (new <= max_new.unsqueeze(1))
        found = ok.any(1)
        first = ok.long().argmax(1)  # index of the first acceptable attempt
        take = found & active
        chosen = block[rows, first] & take.view(n, 1, 1)
        mask |= chosen
        count += new[rows, first] * take.long()
        stopped |= active & ~found
    return mask


def token_scores(patch_mask: torch.Tensor, maps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """TokenMix label weights.

    Args:
        patch_mask: (B, P) {0, 1}, 1 where the partner's (``flip(0)``) token was pasted.
        maps: (B, P) non-negative activation maps of the clean images, rows summing to 1.

    Returns:
        ``(w_own, w_partner)``, each (B,) float32 in [0, 1], detached:
        ``w_own = sum (1 - M) A_own``, ``w_partner = sum M A_partner``.
    """
    if patch_mask.shape != maps.shape:
        raise ValueError(f"token mask {tuple(patch_mask.shape)} and activation maps {tuple(maps.shape)} "
                         "differ in shape")
    m = patch_mask.detach().float()
    a = maps.detach().float().to(m.device)
    w_own = ((1.0 - m) * a).sum(1)
    w_partner = (m * a.flip(0)).sum(1)
    return w_own.clamp(0.0, 1.0), w_partner.clamp(0.0, 1.0)


def official_token_targets(labels: torch.Tensor, partner_labels: torch.Tensor, w_own: torch.Tensor,
                           w_partner: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B, K) token-mixed targets with the official TokenMix smoothing:
    ``s/K`` everywhere, plus ``w_own - s/2`` at the own class and ``w_partner - s/2`` at the partner's
    (both added when the classes coincide). Entries can be negative. Weights are detached."""
    if labels.numel() and (int(labels.max()) >= num_classes or int(labels.min()) < 0):
        raise ValueError(f"label {int(labels.max())} out of range for {num_classes} classes")
    s = float(smoothing)
    e_own = one_hot(labels, num_classes)
    e_par = one_hot(partner_labels.to(labels.device), num_classes)
    w1 = w_own.detach().to(e_own.device, torch.float32).view(-1, 1) - s / 2
    w2 = w_partner.detach().to(e_own.device, torch.float32).view(-1, 1) - s / 2
    return s / num_classes + w1 * e_own + w2 * e_par  # elementwise: deterministic on every device


def bce_with_logits(logits: torch.Tensor, targets: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """timm 0.5.4 ``BinaryCrossEntropy()(logits, targets)`` for dense (B, K) targets: the mean over all
    B x K entries of ``softplus(x) - x t``, targets used as given (``clamp``: clamp them to [0, 1] first)."""
    t = targets.float()
    if clamp:
        t = t.clamp(0.0, 1.0)
    return F.binary_cross_entropy_with_logits(logits.float(), t)


class TokenMix(Mixer):
    """Mixup / TokenMix switch with token-level multi-part masks and content-based targets.

    Args:
        num_classes: K.
        mixup_alpha: Beta parameter of the Mixup branch (0 disables Mixup: TokenMix only).
        switch_prob: probability of TokenMix instead of Mixup when Mixup is enabled.
        prob: probability of mixing at all (per batch or sample).
        mode: ``batch`` (one mask for the batch, as the official code) or ``elem`` (one per sample,
            generated batched).
        mask_ratio: share of tokens to take from the partner before ``extra_tokens`` (official 0.5);
            None draws it from Beta(cutmix_alpha, cutmix_alpha).
        cutmix_alpha: Beta parameter when ``mask_ratio`` is None.
        extra_tokens: tokens added to ``int(mask_ratio * P)`` (official 14 at P = 196; default
            ``round(P / 14)``).
        min_block_tokens, max_block_tokens, min_aspect, attempts, max_rounds: block growth (BEiT's).
        patch_size: token size in pixels; None takes ``model.patch_embed.patch_size`` at call time.
        target: ``area``, ``teacher`` or ``label_map``.
        teacher: external model spec (target ``teacher``), see :mod:`pretrain.mixing.teachers`.
        teacher_map: ``auto`` (CLS attention for ViTs, CAM for CNNs), ``attention``, ``cam``, ``activation``.
        teacher_class: ``label`` (CAM of the ground-truth class) or ``pred`` (of the teacher's top-1).
        label_maps: folder of precomputed maps (target ``label_map``), see
            :mod:`pretrain.data.label_maps`.
        renormalize: divide ``w_own, w_partner`` by their sum.
        loss: ``bce`` (official) or ``ce``.
        bce_clamp: clamp BCE targets to [0, 1] (default False: as the official timm ``BinaryCrossEntropy``).
        label_smoothing: label smoothing ``s`` (official 0.1).
        smoothing_rule: ``official`` (default: ``s/K + (w - s/2)`` at each image's class) or ``onehot``
            (timm's smoothing of each one-hot, then weighted) for token-mixed rows.
        zero_map: ``zero`` (default, official: an all-zero map gives weight 0) or ``uniform`` (area share).
        seed: seed of the mixer's generators.
    """

    name = "tokenmix"

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, switch_prob: float = 0.5, prob: float = 1.0,
                 mode: str = "batch", mask_ratio: Optional[float] = 0.5, cutmix_alpha: float = 1.0,
                 extra_tokens: Optional[int] = None, min_block_tokens: int = 1, max_block_tokens: Optional[int] = None,
                 min_aspect: float = 0.3, attempts: int = 10, max_rounds: int = 64,
                 patch_size: Optional[int] = None, target: str = "area", teacher: Any = None,
                 teacher_map: str = "auto", teacher_class: str = "label", label_maps: Optional[str] = None,
                 renormalize: bool = False, loss: str = "bce", bce_clamp: bool = False,
                 label_smoothing: float = 0.1, smoothing_rule: str = "official", zero_map: str = "zero",
                 seed: Optional[int] = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if mode not in MODES:
            raise ValueError(f"unknown TokenMix mode '{mode}'; expected one of {MODES}")
        if target not in TARGETS:
            raise ValueError(f"unknown TokenMix target '{target}'; expected one of {TARGETS}")
        if loss not in LOSSES:
            raise ValueError(f"unknown TokenMix loss '{loss}'; expected one of {LOSSES}")
        if smoothing_rule not in SMOOTHING_RULES:
            raise ValueError(f"unknown TokenMix smoothing_rule '{smoothing_rule}'; expected one of {SMOOTHING_RULES}")
        if zero_map not in ZERO_MAPS:
            raise ValueError(f"unknown TokenMix zero_map '{zero_map}'; expected one of {ZERO_MAPS}")
        if teacher_class not in ("label", "pred"):
            raise ValueError(f"teacher_class must be 'label' or 'pred', got '{teacher_class}'")
        if mask_ratio is not None and not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1], got {mask_ratio}")
        if mask_ratio is None and cutmix_alpha <= 0:
            raise ValueError("mask_ratio: null needs cutmix_alpha > 0")
        if mixup_alpha < 0:
            raise ValueError("mixup_alpha must be >= 0")
        if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ValueError("prob and switch_prob must lie in [0, 1]")
        if not 0.0 < min_aspect <= 1.0:
            raise ValueError(f"min_aspect must lie in (0, 1], got {min_aspect}")
        if min_block_tokens < 1 or attempts < 1 or max_rounds < 1 or (extra_tokens is not None and extra_tokens < 0):
            raise ValueError("min_block_tokens, attempts, max_rounds must be >= 1 and extra_tokens >= 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        if patch_size is not None and int(patch_size) <= 0:
            raise ValueError(f"patch_size must be > 0, got {patch_size}")
        self.num_classes = num_classes
        self.mixup_alpha = float(mixup_alpha)
        self.switch_prob = float(switch_prob) if mixup_alpha > 0 else 1.0
        self.prob = float(prob)
        self.mode = mode
        self.mask_ratio = mask_ratio
        self.cutmix_alpha = float(cutmix_alpha)
        self.extra_tokens = None if extra_tokens is None else int(extra_tokens)
        self.min_block_tokens = int(min_block_tokens)
        self.max_block_tokens = max_block_tokens
        self.min_aspect = float(min_aspect)
        self.attempts = int(attempts)
        self.max_rounds = int(max_rounds)
        self.patch_size = int(patch_size) if patch_size is not None else None
        self.target = target
        self.teacher_map = teacher_map
        self.teacher_class = teacher_class
        self.renormalize = bool(renormalize)
        self.loss_type = loss
        self.bce_clamp = bool(bce_clamp)
        self.label_smoothing = float(label_smoothing)
        self.smoothing_rule = smoothing_rule
        self.zero_map = zero_map
        self.teacher = None
        if target == "teacher":
            self.teacher = build_external(teacher, "TokenMix teacher")
            if teacher_class == "label" and not self.teacher.is_vit and teacher_map in ("auto", "cam"):
                n = self.teacher.model.get_classifier().weight.shape[0]
                if n != num_classes:
                    raise ValueError(f"TokenMix teacher has {n} classes but the data has {num_classes}: "
                                     "the ground-truth-class CAM needs the same label space "
                                     "(use teacher_class: pred for another label space)")
        elif teacher is not None:
            raise ValueError(f"TokenMix: 'teacher' is given but target is '{target}'")
        self.label_maps = label_maps
        if target == "label_map" and not label_maps:
            raise ValueError("TokenMix target 'label_map' needs 'label_maps' (a folder written by "
                             "tools/make_label_maps.py)")
        self._init_rng(seed)

    # ---- plumbing ------------------------------------------------------------------------------
    def to(self, device) -> "TokenMix":
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def wrap_dataset(self, dataset):
        if self.target != "label_map":
            return dataset
        from ..data.label_maps import LabelMapDataset
        return LabelMapDataset(dataset, self.label_maps)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_type == "ce":
            return soft_target_cross_entropy(logits, targets)
        return bce_with_logits(logits, targets, self.bce_clamp)

    def _patch_size(self, model) -> int:
        p = self.patch_size
        if p is None and model is not None:
            p = model_patch_size(model)
        if p is None:
            raise ValueError("TokenMix needs the patch size: set mixer.patch_size or pass a ViT as model")
        return p

    # ---- draws -----------------------------------------------------------------------------------
    def _draw(self, n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(use_token, mixup_lam, mask_ratio) for n draws."""
        rng = self.rng
        mixed = rng.random(n) < self.prob
        use_tok = (rng.random(n) < self.switch_prob) & mixed
        lam_mix = rng.beta(self.mixup_alpha, self.mixup_alpha, n) if self.mixup_alpha > 0 else np.ones(n)
        lam_mix = np.where(mixed & ~use_tok, lam_mix, 1.0)
        if self.mask_ratio is None:
            ratio = 1.0 - rng.beta(self.cutmix_alpha, self.cutmix_alpha, n)
        else:
            ratio = np.full(n, float(self.mask_ratio))
        return use_tok, lam_mix, ratio

    # ---- mixing ----------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor, model=None, extras=None) -> MixedBatch:
        """Mix (B, C, H, W) images with (B,) labels. ``extras`` (label_map target): (B, h', w') maps of
        the augmented views. The input tensor is not modified."""
        check_batch(x, y)
        b, _, h, w = x.shape
        p = self._patch_size(model)
        gh, gw = patch_grid((h, w), p)
        n_tok = gh * gw
        n = 1 if self.mode == "batch" else b
        use_tok, lam_mix, ratio = self._draw(n)
        if self.mode == "batch":
            use_tok, lam_mix, ratio = (np.repeat(v, b) for v in (use_tok, lam_mix, ratio))
        dev = x.device
        images = x
        cut = torch.from_numpy(use_tok).to(dev)
        lam = torch.from_numpy(lam_mix).float()
        aux: Dict[str, Any] = {}
        mask = None
        if use_tok.any():
            extra = self.extra_tokens if self.extra_tokens is not None else int(round(n_tok / 14))
            counts = np.minimum(n_tok, (ratio * n_tok).astype(np.int64) + extra)
            m = n if self.mode == "elem" else 1
            randoms = block_mask_randoms(self.max_rounds, m, self.attempts, self.gen)
            tok = block_token_masks(torch.from_numpy(counts[:m]), (gh, gw), randoms, self.min_block_tokens,
                                    self.max_block_tokens, self.min_aspect, device=dev)
            if self.mode == "elem":
                tok = tok & cut.view(-1, 1, 1)
            # batch mode: every sample is token-mixed with the same mask; build it once and broadcast
            patch_mask = tok.flatten(1).float().expand(b, -1)  # B, P
            mask = tok.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).float()
            mask = mask.expand(b, -1, -1, -1)  # B, 1, H, W
            images = paste(x, mask)
            lam_tok = 1.0 - patch_mask.mean(1)
            lam = torch.where(cut, lam_tok, lam.to(dev))
            aux["patch_mask"] = patch_mask
            aux["grid"] = (gh, gw)
            if self.target == "teacher":
                aux["maps"] = resize_maps(self._teacher_maps(x, y), (gh, gw), zero=self.zero_map)
            elif self.target == "label_map":
                aux["maps"] = resize_maps(self._check_extras(extras, b).to(dev), (gh, gw), zero=self.zero_map)
        mixup = (~cut) & (lam.to(dev) < 1.0)
        if bool(mixup.any()):
            lm = lam.to(device=dev, dtype=x.dtype).view(-1, 1, 1, 1)
            blended = x * lm + x.flip(0) * (1.0 - lm)
            images = torch.where(mixup.view(-1, 1, 1, 1), blended, images)
        return MixedBatch(images=images, labels=y, partner_labels=y.flip(0), lam=lam.to(dev, torch.float32),
                          mask=mask, cut=cut if mask is not None else None, aux=aux)

    def _teacher_maps(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        classes = y if self.teacher_class == "label" else None
        return self.teacher.maps(x, self.teacher_map, classes)

    @staticmethod
    def _check_extras(extras, b: int) -> torch.Tensor:
        if isinstance(extras, dict):
            extras = extras.get("label_map")
        if not isinstance(extras, torch.Tensor):
            raise ValueError("TokenMix target 'label_map' needs the dataset wrapped by mixer.wrap_dataset "
                             "(loader batches of (images, labels, label_maps)); got no label maps")
        if extras.dim() != 3 or extras.shape[0] != b:
            raise ValueError(f"label maps must be (B, h, w) with B = {b}, got shape {tuple(extras.shape)}")
        return extras

    def targets(self, batch: MixedBatch, attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, K) targets; token-mixed rows use :func:`token_scores` (see the module docstring)."""
        lam = batch.lam
        w_own, w_partner = lam, 1.0 - lam
        if batch.mask is not None:
            pm = batch.aux["patch_mask"]
            if self.target == "area":
                s_own, s_partner = 1.0 - pm.mean(1), pm.mean(1)
            else:
                s_own, s_partner = token_scores(pm, batch.aux["maps"])
            if self.renormalize:
                total = (s_own + s_partner).clamp_min(1e-12)
                s_own, s_partner = s_own / total, s_partner / total
            cut = batch.cut.to(lam.device)
            w_own = torch.where(cut, s_own.to(lam.device), w_own)
            w_partner = torch.where(cut, s_partner.to(lam.device), w_partner)
            if self.smoothing_rule == "official":
                tok = official_token_targets(batch.labels, batch.partner_labels, w_own, w_partner,
                                             self.num_classes, self.label_smoothing)
                if self.mode == "batch":  # one draw for the batch: every row is token-mixed
                    return tok
                mixed = weighted_targets(batch.labels, batch.partner_labels, w_own, w_partner, self.num_classes,
                                         self.label_smoothing)  # Mixup / unmixed rows: timm's smoothing
                return torch.where(cut.to(tok.device).view(-1, 1), tok, mixed)
        return weighted_targets(batch.labels, batch.partner_labels, w_own, w_partner, self.num_classes,
                                self.label_smoothing)
