"""MixMo training: batch repetition, Dirichlet mixing ratios, Linear-/Cut-MixMo coefficient maps, the
Cut-vs-Linear probability schedule, optional CutMix on the inputs, and the weighted multi-head loss.

One training step (:meth:`MixMoTrainer.forward_loss`), for a loader batch of B images and labels:

1. **Batch repetition** ``b``: every input k gets the batch repeated b times under its own random
   permutation (``idx_k = perm_k(B b) mod B``), so each image appears b times per input, paired with
   different partners; the effective batch is N = B b.
2. **Input mixing** (optional, the paper's "+CutMix"): each input stream k is mixed by the configured
   sample mixer (``pretrain.mixing``, e.g. CutMix with probability p) and gets its own soft targets.
3. **Ratios**: lambda ~ Dirichlet(alpha 1_M) per sample, (M, N).
4. **Mixing block**: per sample, Cut-MixMo with probability p(t) (M = 2: a rectangle on the encoder's
   output grid holds one input, chosen at random, the rest the other; the rectangle's area share is drawn
   from lambda and the *realised* area shares replace lambda), otherwise Linear-MixMo
   (coefficients M lambda_k). The merged encoding is ``sum_k coeffs_k * l_k(x_k)``.
5. **Loss**: ``mean_n sum_k w_k(n) CE(head_k(n), target_k(n))`` with
   ``w_k = M lambda_k^(1/r) / sum_j lambda_j^(1/r)``.

All per-sample work is batched; the random draws come from the trainer's own CPU generators (NumPy +
torch), saved by :meth:`state_dict` for exact resume like :class:`pretrain.mixing.Mixer`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..mixing.base import box_masks, rand_bbox
from .models import MixParams

MIXINGS = ("none", "linear", "cut")
INPUT_MIXERS = ("none", "cutmix", "mixup", "mixup_cutmix")


def loss_weights(lam: torch.Tensor, r: float = 3.0) -> torch.Tensor:
    """MixMo's loss weights ``w_k = M lambda_k^(1/r) / sum_j lambda_j^(1/r)``.

    Args:
        lam: (M, N) non-negative mixing ratios of the M inputs per sample (columns sum to 1).
        r: root (r = 1 weighs by lambda itself, r -> inf gives uniform weights 1).
    Returns:
        (M, N) weights; every column sums to M.
    """
    if r <= 0:
        raise ValueError(f"weight root r must be > 0, got {r}")
    p = lam.clamp_min(0).pow(1.0 / r)
    return lam.shape[0] * p / p.sum(0, keepdim=True)


def cut_probability(progress: float, start: float, final: float, anneal_start: float, anneal_end: float) -> float:
    """Probability of Cut-MixMo (vs Linear-MixMo) at training progress ``t`` in [0, 1]: ``start`` until
    ``anneal_start``, linear to ``final`` at ``anneal_end``, ``final`` afterwards."""
    t = float(progress)
    if t <= anneal_start:
        return float(start)
    if t >= anneal_end or anneal_end <= anneal_start:
        return float(final)
    a = (t - anneal_start) / (anneal_end - anneal_start)
    return float(start + (final - start) * a)


def repetition_indices(batch_size: int, repeat: int, num_members: int, generator: torch.Generator) -> torch.Tensor:
    """(M, B b) int64 indices into a batch of B: row k is a random permutation of the batch repeated
    ``repeat`` times (every index appears exactly ``repeat`` times per row)."""
    n = batch_size * repeat
    return torch.stack([torch.randperm(n, generator=generator) % batch_size for _ in range(num_members)])


def cut_masks(lam0: torch.Tensor, grid_hw: Tuple[int, int], generator: torch.Generator,
              rect_member: torch.Tensor, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cut-MixMo masks for M = 2.

    Args:
        lam0: (N,) target share of input 0.
        grid_hw: (h, w) mixing grid.
        generator: CPU generator for the box positions.
        rect_member: (N,) int64 in {0, 1}: which input the rectangle holds.
    Returns:
        ``mask0`` (N, 1, h, w) float {0, 1}, 1 where input 0 is kept, and ``share0`` (N,) float64, its
        realised area share. The rectangle has a target area share of lambda of the input it holds
        (CutMix's box rule: side ``sqrt(share)``, uniform centre, clipped at the border).
    """
    h, w = grid_hw
    lam0 = lam0.double().cpu()
    rect_share = torch.where(rect_member.cpu() == 0, lam0, 1.0 - lam0)
    boxes = rand_bbox((h, w), 1.0 - rect_share, generator=generator)  # rand_bbox's lam = share outside the box
    box = box_masks(boxes, (h, w), device=device)                      # 1 inside the rectangle
    area = ((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])).double() / float(h * w)
    inside0 = (rect_member == 0).to(device).view(-1, 1, 1, 1)
    mask0 = torch.where(inside0, box, 1.0 - box)
    share0 = torch.where(rect_member.cpu() == 0, area, 1.0 - area)
    return mask0, share0


class MixMoTrainer:
    """MixMo's sampling and loss of one step (what :class:`pretrain.mixmo.objective.MixMoObjective` runs).

    Args:
        num_members: M (1 trains a single network: no mixing, unit weights).
        num_classes: K.
        mixing: ``cut`` (Cut-MixMo with probability p(t), Linear-MixMo otherwise), ``linear`` or ``none``
            (M = 1 only).
        alpha: Dirichlet concentration (paper: 2 for M = 2).
        weight_root: r of the loss weights (paper: 3).
        batch_repeat: b (paper: 2-4).
        cut_prob, cut_prob_final, anneal_start, anneal_end: the Cut-MixMo probability schedule over
            training progress (see :func:`cut_probability`).
        input_mixer: a :class:`pretrain.mixing.Mixer` applied to each input stream (CutMix, Mixup, or
            ``none``); it also builds the per-head soft targets (with its label smoothing).
        total_steps: optimizer steps of the run (progress = step / total_steps).
        seed: seed of the trainer's generators.

    ``loss, head_losses = trainer.forward_loss(net, images, labels, step=step)`` runs the forward of
    ``net`` (a :class:`MixMoNet`, possibly DDP-wrapped; pass ``model`` for its mixing grid) and returns
    the scalar weighted loss and the (M,) unweighted per-head cross-entropies (detached).
    """

    needs_attention = False
    needs_model = False
    name = "mixmo"

    def __init__(self, num_members: int, num_classes: int, mixing: str = "cut", alpha: float = 2.0,
                 weight_root: float = 3.0, batch_repeat: int = 2, cut_prob: float = 0.5,
                 cut_prob_final: float = 0.0, anneal_start: float = 0.8, anneal_end: float = 1.0,
                 input_mixer=None, total_steps: int = 0, seed: Optional[int] = None):
        m = int(num_members)
        check_options(m, mixing, alpha, weight_root, batch_repeat, cut_prob, cut_prob_final, anneal_start, anneal_end)
        self.num_members, self.num_classes = m, int(num_classes)
        self.mixing = mixing
        self.alpha, self.weight_root, self.batch_repeat = float(alpha), float(weight_root), int(batch_repeat)
        self.cut_prob, self.cut_prob_final = float(cut_prob), float(cut_prob_final)
        self.anneal_start, self.anneal_end = float(anneal_start), float(anneal_end)
        if input_mixer is None:
            from ..mixing import build_mixer
            input_mixer = build_mixer({"name": "none", "label_smoothing": 0.0}, num_classes, seed=seed)
        if getattr(input_mixer, "needs_attention", False) or getattr(input_mixer, "needs_model", False):
            raise ValueError(f"MixMo input mixing supports {INPUT_MIXERS}; mixer '{input_mixer.name}' needs the "
                             "model or its attention")
        self.input_mixer = input_mixer
        self.total_steps = int(total_steps)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator()
        self.gen.manual_seed(int(self.rng.integers(2**62)))
        self.model = None  # the unwrapped MixMoNet (for its mixing grid), set by MixMoObjective.bind

    # ---- Mixer-like interface used by the objective ----------------------------------------------
    def to(self, device) -> "MixMoTrainer":
        self.input_mixer = self.input_mixer.to(device)
        return self

    def wrap_dataset(self, dataset):
        return self.input_mixer.wrap_dataset(dataset)

    def state_dict(self) -> Dict[str, Any]:
        return {"numpy": self.rng.bit_generator.state, "torch": self.gen.get_state(),
                "input_mixer": self.input_mixer.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["numpy"]
        self.gen.set_state(state["torch"])
        self.input_mixer.load_state_dict(state["input_mixer"])

    # ---- sampling --------------------------------------------------------------------------------
    def cut_probability(self, step: int) -> float:
        if self.mixing != "cut":
            return 0.0
        progress = step / self.total_steps if self.total_steps > 0 else 0.0
        return cut_probability(progress, self.cut_prob, self.cut_prob_final, self.anneal_start, self.anneal_end)

    def sample(self, n: int, grid_hw: Tuple[int, int], step: int = 0, device=None
               ) -> Tuple[MixParams, torch.Tensor, torch.Tensor]:
        """Mixing of n samples on an (h, w) grid.

        Returns:
            ``MixParams`` (coeffs (M, n, 1, h, w), or (M, n, 1, 1, 1) without Cut-MixMo), ``lam`` (M, n)
            float32 realised shares of each input (what the loss weights use) and ``cut`` (n,) bool.
        """
        m = self.num_members
        if m == 1:
            ones = torch.ones(1, n, device=device)
            return MixParams(torch.ones(1, n, 1, 1, 1, device=device)), ones, torch.zeros(n, dtype=torch.bool,
                                                                                        device=device)
        lam = torch.from_numpy(self.rng.dirichlet(np.full(m, self.alpha), size=n).T.copy())  # (M, n) float64
        p = self.cut_probability(step)
        cut = torch.from_numpy(self.rng.random(n) < p) if p > 0 else torch.zeros(n, dtype=torch.bool)
        if not bool(cut.any()):
            coeffs = (m * lam).float().to(device).view(m, n, 1, 1, 1)
            return MixParams(coeffs), lam.float().to(device), cut.to(device)
        rect = torch.from_numpy(self.rng.integers(0, 2, size=n)).long()
        mask0, share0 = cut_masks(lam[0], grid_hw, self.gen, rect, device=device)
        lam_real = torch.where(cut, share0, lam[0])
        lam = torch.stack([lam_real, 1.0 - lam_real])
        h, w = grid_hw
        cut_d = cut.to(device).view(n, 1, 1, 1)
        lin0 = (m * lam[0]).float().to(device).view(n, 1, 1, 1)
        c0 = torch.where(cut_d, m * mask0, lin0.expand(n, 1, h, w))
        c1 = torch.where(cut_d, m * (1.0 - mask0), (m - lin0).expand(n, 1, h, w))
        return MixParams(torch.stack([c0, c1])), lam.float().to(device), cut.to(device)

    # ---- the step --------------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor, labels: torch.Tensor, step: int = 0, extras=None):
        """Inputs, targets and mixing of one step.

        Args:
            images: (B, C, H, W) loader batch; labels: (B,) int64.
        Returns:
            ``x`` (M, N, C, H, W) inputs (N = B b), ``targets`` (M, N, K) soft targets, ``mix``
            (:class:`MixParams`), ``lam`` (M, N) realised shares.
        """
        if images.dim() != 4 or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"expected (B, C, H, W) images and (B,) labels, got {tuple(images.shape)} and "
                             f"{tuple(labels.shape)}")
        if self.model is None:
            raise RuntimeError("MixMoTrainer.model is not set (the unwrapped MixMoNet, for its mixing grid)")
        b = images.shape[0]
        m = self.num_members
        idx = repetition_indices(b, self.batch_repeat, m, self.gen).to(images.device, non_blocking=True)
        xs, ts = [], []
        for k in range(m):  # M input streams (M is 2 or 3: a loop over members, not samples)
            xk, yk = images[idx[k]], labels[idx[k]]
            mb = self.input_mixer(xk, yk)
            xs.append(mb.images)
            ts.append(self.input_mixer.targets(mb))
        x = torch.stack(xs)
        targets = torch.stack(ts)
        mix, lam, _ = self.sample(x.shape[1], self.model.mix_grid(images.shape[-2:]), step, device=images.device)
        return x, targets, mix, lam

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, lam: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``mean_n sum_k w_k(n) CE_k(n)`` and the (M,) detached per-head mean cross-entropies.

        logits (M, N, K), targets (M, N, K) soft targets, lam (M, N) realised shares."""
        ce = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1)  # (M, N)
        w = loss_weights(lam.float(), self.weight_root)
        return (w * ce).sum(0).mean(), ce.detach().mean(1)

    def forward_loss(self, net, images: torch.Tensor, labels: torch.Tensor, extras=None, step: int = 0,
                     autocast=None, channels_last: bool = False):
        """The training forward and loss of one step; see the class docstring. ``autocast`` is a
        context-manager factory wrapped around the network's forward. ``channels_last`` is accepted for
        the objective interface (:meth:`pretrain.objectives.Objective.forward_loss`); the (M, N, C, H, W) input stack stays contiguous (each member's slice is
        a plain NCHW batch), only the weights follow ``train.channels_last``."""
        x, targets, mix, lam = self.prepare(images, labels, step, extras)
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            logits = net(x, mix=mix)
        return self.loss(logits, targets, lam)


def check_options(m: int, mixing: str, alpha: float, weight_root: float, batch_repeat: int, cut_prob: float,
                  cut_prob_final: float, anneal_start: float, anneal_end: float) -> None:
    """Clear errors for bad MixMo options (also used by the config validation)."""
    if m < 1:
        raise ValueError(f"mixmo.num_members must be >= 1, got {m}")
    if mixing not in MIXINGS:
        raise ValueError(f"mixmo.mixing must be one of {MIXINGS}, got {mixing!r}")
    if mixing == "cut" and m != 2:
        raise ValueError(f"Cut-MixMo (mixmo.mixing=cut) needs mixmo.num_members=2, got {m}"
                         + (" (use mixmo.mixing=linear for M > 2)" if m > 2 else ""))
    if mixing == "linear" and m < 2:
        raise ValueError(f"Linear-MixMo needs mixmo.num_members >= 2, got {m} (mixing 'none' trains one network)")
    if mixing == "none" and m != 1:
        raise ValueError(f"mixmo.mixing=none is the single-network baseline and needs mixmo.num_members=1, got {m}")
    if not alpha > 0:
        raise ValueError(f"mixmo.alpha must be > 0, got {alpha}")
    if not weight_root > 0:
        raise ValueError(f"mixmo.weight_root must be > 0, got {weight_root}")
    if int(batch_repeat) < 1:
        raise ValueError(f"mixmo.batch_repeat must be >= 1, got {batch_repeat}")
    for name, v in (("cut_prob", cut_prob), ("cut_prob_final", cut_prob_final)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"mixmo.{name} must lie in [0, 1], got {v}")
    if not 0.0 <= float(anneal_start) <= float(anneal_end) <= 1.0:
        raise ValueError(f"mixmo.anneal_start/anneal_end must satisfy 0 <= start <= end <= 1, got "
                         f"{anneal_start}, {anneal_end}")


def build_trainer(cfg: Dict[str, Any], seed: Optional[int] = None, total_steps: int = 0) -> MixMoTrainer:
    """The trainer of an engine config (``mixmo`` section; ``mixer`` = the per-input mixer)."""
    from ..mixing import build_mixer

    xc = cfg["mixmo"]
    mixer_cfg = dict(cfg.get("mixer") or {"name": "none"})
    name = str(mixer_cfg.get("name", "none")).lower()
    if name not in INPUT_MIXERS:
        raise ValueError(f"with mixmo.enabled, mixer.name (the optional mixing of each input) must be one of "
                         f"{INPUT_MIXERS}, got '{name}'")
    k = int(cfg["data"]["num_classes"])
    input_mixer = build_mixer(mixer_cfg, k, seed=None if seed is None else seed + 7)
    return MixMoTrainer(int(xc["num_members"]), k, mixing=xc["mixing"], alpha=float(xc["alpha"]),
                        weight_root=float(xc["weight_root"]), batch_repeat=int(xc["batch_repeat"]),
                        cut_prob=float(xc["cut_prob"]), cut_prob_final=float(xc["cut_prob_final"]),
                        anneal_start=float(xc["anneal_start"]), anneal_end=float(xc["anneal_end"]),
                        input_mixer=input_mixer, total_steps=total_steps, seed=seed)
