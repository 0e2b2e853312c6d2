"""Puzzle-Mix, binary-label variant: gradient saliency + mask optimisation.

Paper: "Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal Mixup", Kim et al., ICML 2020,
arXiv:2009.06962; official code: snu-mllab/PuzzleMix.

1. Saliency: an extra forward/backward of the model being trained on the clean batch (hard-label
   cross-entropy), ``s = sqrt(mean_c grad_x^2)`` per pixel, average-pooled to an ``n x n`` block grid
   (``n`` drawn per batch from ``block_counts``, those dividing H and W) and scaled to mean 1 per image.
   Only input gradients are computed (``torch.autograd.grad``): no parameter ``.grad`` is touched.
2. Mask: per pair, a binary labelling ``z`` of the blocks (1 = partner block) minimising

       E(z) = sum_p [(1 - z_p)(-s_own_p) + z_p(-s_partner_p + t)] + beta * sum_{p~q} [z_p != z_q]

   over the 4-neighbourhood. The mixing prior is a cardinality prior: lam ~ Beta(alpha, alpha) is the
   prior own share, and the offset ``t`` (a Lagrange multiplier) is set per pair so that the unary
   optimum pastes exactly ``k = round((1 - lam) n^2)`` blocks, the ones where the partner is most
   salient relative to the own image (ties broken by a tiny seeded jitter). From that optimum,
   ``iters`` sweeps of red-black (checkerboard) iterated conditional modes smooth the mask: all
   blocks of one colour are updated at once, exactly (no two same-colour blocks are neighbours),
   so the energy never increases. Everything is batched over the pairs.
3. Mixing: the partner's blocks are pasted where ``z = 1``; the own-label weight is the own area share.

Deviations from the paper (docs/mixers.md): the paper's multi-label graph-cut (alpha-expansion over
several mixing levels) is replaced by this binary ICM, and the optimal-transport step that moves
salient blocks is not performed; hyper-parameters follow this energy's normalisation, not the paper's.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..amp import amp_mode_dtype, autocast, check_amp_mode
from .base import MixedBatch, Mixer, check_batch, mix_targets, paste


def gradient_saliency(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                      amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """(B, H, W) ``sqrt(mean_c (d CE / d x)^2)`` of the model on the clean batch (no parameter grads)."""
    xin = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        with autocast(x.device, amp_dtype):
            logits = model(xin)
        loss = F.cross_entropy(logits.float(), y)
        (grad,) = torch.autograd.grad(loss, xin)
    return grad.float().pow(2).mean(1).sqrt()


def block_saliency(sal: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, W) pixel saliency -> (B, n, n) block saliency, scaled to mean 1 per image."""
    s = F.adaptive_avg_pool2d(sal.unsqueeze(1), (n, n))[:, 0]
    return s / s.flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1)


def unary_costs(s_own: torch.Tensor, s_partner: torch.Tensor, lam: torch.Tensor,
                jitter: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unary costs (c0, c1), each (B, n, m), of labelling a block own (0) or partner (1).

    ``c0 = -s_own``, ``c1 = -s_partner + t`` with the per-pair offset ``t`` placed half-way between the
    k-th and (k+1)-th largest ``d = s_partner - s_own`` (+ ``jitter``), ``k = round((1 - lam) * n * m)``,
    so that ``c1 < c0`` holds for exactly the k blocks of largest ``d``.
    """
    b, n, m = s_own.shape
    jit = torch.zeros_like(s_own) if jitter is None else jitter.to(s_own.device, s_own.dtype).view(b, n, m)
    d = s_partner + jit - s_own
    flat = d.flatten(1)
    p = flat.shape[1]
    lam = lam.to(d.device, torch.float64).view(-1)
    k = torch.round((1.0 - lam) * p).long().clamp(0, p)
    ds = flat.sort(1, descending=True).values
    ext = torch.cat([ds[:, :1] + 1.0, ds, ds[:, -1:] - 1.0], 1)  # ext[:, k] = ds[k-1], ext[:, k+1] = ds[k]
    rows = torch.arange(b, device=d.device)
    thr = 0.5 * (ext[rows, k] + ext[rows, k + 1])
    c0 = -s_own
    c1 = -(s_partner + jit) + thr.view(b, 1, 1).to(s_own.dtype)
    return c0, c1


def _neighbour_sum(z: torch.Tensor) -> torch.Tensor:
    """(B, n, m) count of 4-neighbours with label 1."""
    p = F.pad(z.unsqueeze(1), (1, 1, 1, 1))[:, 0]
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]


def _neighbour_count(shape, device) -> torch.Tensor:
    one = torch.ones(1, *shape[1:], device=device)
    return _neighbour_sum(one)


def mask_energy(z: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, beta: float) -> torch.Tensor:
    """(B,) energy of (B, n, m) binary labellings (each neighbouring pair counted once)."""
    z = z.float()
    unary = ((1 - z) * c0 + z * c1).flatten(1).sum(1)
    dv = (z[:, 1:, :] != z[:, :-1, :]).flatten(1).sum(1)
    dh = (z[:, :, 1:] != z[:, :, :-1]).flatten(1).sum(1)
    return unary + beta * (dv + dh).float()


def optimize_mask(c0: torch.Tensor, c1: torch.Tensor, beta: float, iters: int = 4) -> torch.Tensor:
    """(B, n, m) float {0, 1} labelling from the unary optimum and ``iters`` red-black ICM sweeps.

    A block takes label 1 iff ``c1 + beta * (#neighbours labelled 0) < c0 + beta * (#neighbours labelled 1)``.
    """
    z = (c1 < c0).float()
    b, n, m = z.shape
    deg = _neighbour_count(z.shape, z.device)
    colour = (torch.arange(n, device=z.device).view(n, 1) + torch.arange(m, device=z.device).view(1, m)) % 2
    for _ in range(iters):
        for c in (0, 1):
            ones = _neighbour_sum(z)
            zeros = deg - ones
            new = (c1 + beta * zeros < c0 + beta * ones).float()
            z = torch.where(colour == c, new, z)
    return z


class PuzzleMix(Mixer):
    """Puzzle-Mix with gradient saliency from the model being trained (``needs_model = True``).

    Args:
        num_classes: K.
        alpha: Beta(alpha, alpha) of the prior own share lam (paper: 1).
        prob: probability of mixing each sample.
        block_counts: candidate numbers of blocks per side (paper: 2, 4, 8, 16).
        beta: smoothness weight (saliency is scaled to mean 1 per image); iters: ICM sweeps.
        amp: ``auto`` (bf16 autocast on CUDA for the saliency pass), ``bf16``, ``fp16``, ``none``.
        label_smoothing: timm-style.
        seed: seed of the mixer's generators.
    """

    name = "puzzlemix"
    needs_model = True

    def __init__(self, num_classes: int, alpha: float = 1.0, prob: float = 1.0,
                 block_counts: Sequence[int] = (2, 4, 8, 16), beta: float = 0.3, iters: int = 4,
                 amp: str = "auto", label_smoothing: float = 0.1, seed: Optional[int] = None):
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError("prob must lie in [0, 1]")
        block_counts = [int(v) for v in block_counts]
        if not block_counts or min(block_counts) < 1:
            raise ValueError(f"block_counts must be positive integers, got {block_counts}")
        if beta < 0 or iters < 0:
            raise ValueError("beta and iters must be >= 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.prob = float(prob)
        self.block_counts = block_counts
        self.beta = float(beta)
        self.iters = int(iters)
        self.amp = check_amp_mode(amp)
        self.label_smoothing = float(label_smoothing)
        self._init_rng(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, model=None, extras=None) -> MixedBatch:
        check_batch(x, y)
        if model is None:
            raise ValueError("Puzzle-Mix needs the model being trained (gradient saliency): "
                             "call mixer(x, y, model=model)")
        b, _, h, w = x.shape
        counts = [n for n in self.block_counts if h % n == 0 and w % n == 0]
        if not counts:
            raise ValueError(f"none of the block counts {self.block_counts} divides the image size {h}x{w}")
        n = int(self.rng.choice(counts))
        lam_prior = self.rng.beta(self.alpha, self.alpha, b)
        mixed = torch.from_numpy(self.rng.random(b) < self.prob).to(x.device)
        sal = gradient_saliency(model, x, y, amp_mode_dtype(self.amp, x.device))
        s = block_saliency(sal, n)
        jitter = 1e-4 * torch.rand(b, n * n, generator=self.gen)
        c0, c1 = unary_costs(s, s.flip(0), torch.from_numpy(lam_prior), jitter)
        z = optimize_mask(c0, c1, self.beta, self.iters) * mixed.view(-1, 1, 1).float()
        mask = z.repeat_interleave(h // n, 1).repeat_interleave(w // n, 2).unsqueeze(1)
        lam = 1.0 - z.flatten(1).mean(1)
        return MixedBatch(images=paste(x, mask), labels=y, partner_labels=y.flip(0), lam=lam.float(),
                          mask=mask, cut=mixed, aux={"blocks": z, "lam_prior": torch.from_numpy(lam_prior)})

    def targets(self, batch: MixedBatch, attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        return mix_targets(batch.labels, batch.partner_labels, batch.lam, self.num_classes, self.label_smoothing)
