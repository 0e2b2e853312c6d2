"""MixMo training: batch repetition, Dirichlet mixing ratios, Linear-/Cut-MixMo coefficient maps, the
Cut-vs-Linear probability schedule, optional CutMix on the inputs, and the weighted multi-head loss.

One training step (:meth:`MixMoTrainer.forward_loss`), for a loader batch of B images and labels:

1. **Batch repetition** ``b``: every input k gets the batch repeated b times under its own random
   permutation (``idx_k = perm_k(B b) mod B``), so each image appears b times per input, paired with
   different partners; the effective batch is N = B b (the official code's ``batch_size`` counts these N).
2. **Ratios**: lambda ~ Dirichlet(alpha 1_M) per sample, (M, N).
3. **Mixing block**: Cut-MixMo with probability p(t) (M = 2: a rectangle on the encoder's output grid
   holds one input, the rest the other; the rectangle's area share is drawn from lambda and the *realised*
   area shares replace lambda), otherwise Linear-MixMo (coefficients M lambda_k). ``draw="batch"``
   (official) draws the Cut/Linear choice and the rectangle's holder once per batch, ``"sample"`` per
   sample; ``box_rule`` is the rectangle's side rule (:mod:`.draws`). The merged encoding is
   ``sum_k coeffs_k * l_k(x_k)``.
4. **Input mixing** (optional, the paper's "+CutMix"): ``cutmix_prob > 0`` is the official per-sample
   CutMix of each input with its lambda recomputed over what survives the MixMo mask and the role swap
   (:func:`.draws.cutmix_inputs`); otherwise a :class:`pretrain.mixing.Mixer` (this project's batch
   CutMix/Mixup with the flipped partner) mixes each stream, or nothing.
5. **Loss**: ``mean_n sum_k w_k(n) CE(head_k(n), target_k(n))`` with
   ``w_k = M lambda_k^(1/r) / sum_j lambda_j^(1/r)``, plus ``l2_reg * sum_p ||p||^2`` over every
   parameter of the network when ``l2_reg > 0`` (the official ``WrapperLoss.l2_reg``).

P(Cut) schedule (:func:`cut_probability`): ``anneal_unit="epoch"`` (official) evaluates it once per epoch at
progress ``(epoch + 1) / epochs``, ``"step"`` at ``step / total_steps``.

All per-sample work is batched; the random draws come from the trainer's own CPU generators (NumPy +
torch), saved by :meth:`state_dict` for exact resume like :class:`pretrain.mixing.Mixer`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..mixing.base import box_masks
from .draws import BOX_RULES, box_rule_boxes, cutmix_inputs
from .models import MixParams

MIXINGS = ("none", "linear", "cut")
INPUT_MIXERS = ("none", "cutmix", "mixup", "mixup_cutmix")
ANNEAL_UNITS = ("epoch", "step")
DRAWS = ("batch", "sample")


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
              rect_member: torch.Tensor, device=None, rule: str = "even") -> Tuple[torch.Tensor, torch.Tensor]:
    """Cut-MixMo masks for M = 2.

    Args:
        lam0: (N,) target share of input 0.
        grid_hw: (h, w) mixing grid.
        generator: CPU generator for the box positions.
        rect_member: (N,) int64 in {0, 1}: which input the rectangle holds.
    Returns:
        ``mask0`` (N, 1, h, w) float {0, 1}, 1 where input 0 is kept, and ``share0`` (N,) float64, its
        realised area share. The rectangle has a target area share of lambda of the input it holds
        (side about ``sqrt(share)``, uniform centre, clipped at the border; ``rule``: ``even`` sides
        ``2 (int(h sqrt(share)) // 2)`` as the official code, ``exact`` ``int(h sqrt(share))`` as timm 1.0).
    """
    h, w = grid_hw
    lam0 = lam0.double().cpu()
    rect_share = torch.where(rect_member.cpu() == 0, lam0, 1.0 - lam0)
    boxes = box_rule_boxes((h, w), rect_share, generator, rule)
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
            training progress (see :func:`cut_probability`; official: 0.5, 0, 11/12, 1).
        anneal_unit: ``epoch`` (official: progress ``(epoch + 1) / epochs``, constant within an epoch) or
            ``step`` (``step / total_steps``).
        epochs: the run's epochs (``epoch`` unit; the epoch of a step is ``step // (total_steps // epochs)``;
            None: the progress is per step, as the ``step`` unit).
        draw: ``batch`` (official: one Cut/Linear choice and one rectangle holder per batch) or ``sample``.
        box_rule: ``even`` (official rectangle sides ``2 (c // 2)``) or ``exact`` (sides ``c``).
        cutmix_prob, cutmix_alpha: the official per-sample CutMix of each input (0 = off; official 0.5 and
            Beta(1, 1)); exclusive with an ``input_mixer`` that mixes.
        l2_reg: coefficient of ``sum_p ||p||^2`` over every parameter of ``model`` added to the loss
            (official ``l2_reg``; 0 = off).
        input_mixer: a :class:`pretrain.mixing.Mixer` applied to each input stream (CutMix, Mixup, or
            ``none``); it also builds the per-head soft targets (with its label smoothing).
        total_steps: optimizer steps of the run.
        seed: seed of the trainer's generators.

    ``loss, head_losses = trainer.forward_loss(net, images, labels, step=step)`` runs the forward of
    ``net`` (a :class:`MixMoNet`, possibly DDP-wrapped; ``model`` is the unwrapped one, for its mixing grid
    and the L2 term) and returns the scalar loss and the (M,) unweighted per-head cross-entropies (detached).
    """

    needs_attention = False
    needs_model = False
    name = "mixmo"

    def __init__(self, num_members: int, num_classes: int, mixing: str = "cut", alpha: float = 2.0,
                 weight_root: float = 3.0, batch_repeat: int = 2, cut_prob: float = 0.5,
                 cut_prob_final: float = 0.0, anneal_start: float = 11.0 / 12.0, anneal_end: float = 1.0,
                 anneal_unit: str = "epoch", epochs: Optional[int] = None, draw: str = "batch",
                 box_rule: str = "even",
                 cutmix_prob: float = 0.0, cutmix_alpha: float = 1.0, l2_reg: float = 0.0,
                 input_mixer=None, total_steps: int = 0, seed: Optional[int] = None):
        m = int(num_members)
        check_options(m, mixing, alpha, weight_root, batch_repeat, cut_prob, cut_prob_final, anneal_start, anneal_end,
                      anneal_unit, draw, box_rule, cutmix_prob, cutmix_alpha, l2_reg)
        self.num_members, self.num_classes = m, int(num_classes)
        self.mixing = mixing
        self.alpha, self.weight_root, self.batch_repeat = float(alpha), float(weight_root), int(batch_repeat)
        self.cut_prob, self.cut_prob_final = float(cut_prob), float(cut_prob_final)
        self.anneal_start, self.anneal_end = float(anneal_start), float(anneal_end)
        self.anneal_unit = anneal_unit
        self.epochs = None if epochs is None else max(1, int(epochs))
        self.draw, self.box_rule = draw, box_rule
        self.cutmix_prob, self.cutmix_alpha = float(cutmix_prob), float(cutmix_alpha)
        self.l2_reg = float(l2_reg)
        if input_mixer is None:
            from ..mixing import build_mixer
            input_mixer = build_mixer({"name": "none", "label_smoothing": 0.0}, num_classes, seed=seed)
        if getattr(input_mixer, "needs_attention", False) or getattr(input_mixer, "needs_model", False):
            raise ValueError(f"MixMo input mixing supports {INPUT_MIXERS}; mixer '{input_mixer.name}' needs the "
                             "model or its attention")
        if self.cutmix_prob > 0 and bool(getattr(input_mixer, "enabled", True)):
            raise ValueError(f"mixmo.cutmix_prob > 0 (the official CutMix of each input) and mixer.name="
                             f"'{input_mixer.name}' would mix the inputs twice; set mixer.name=none")
        self.input_mixer = input_mixer
        self.total_steps = int(total_steps)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator()
        self.gen.manual_seed(int(self.rng.integers(2**62)))
        self.model = None  # the unwrapped MixMoNet (mixing grid, L2 term), set by MixMoObjective.bind

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
    def progress(self, step: int) -> float:
        """Training progress of ``step`` for the P(Cut) schedule: ``(epoch + 1) / epochs`` per epoch
        (official ``set_ratio_epoch(epoch / nb_epochs)`` with 1-based epochs) or ``step / total_steps``."""
        if self.total_steps <= 0:
            return 0.0
        if self.anneal_unit == "step" or self.epochs is None:
            return step / self.total_steps
        per_epoch = max(1, self.total_steps // self.epochs)
        return (min(step // per_epoch, self.epochs - 1) + 1) / self.epochs

    def cut_probability(self, step: int) -> float:
        if self.mixing != "cut":
            return 0.0
        return cut_probability(self.progress(step), self.cut_prob, self.cut_prob_final, self.anneal_start,
                               self.anneal_end)

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
        if p <= 0:
            cut = torch.zeros(n, dtype=torch.bool)
        elif self.draw == "batch":
            cut = torch.full((n,), bool(self.rng.random() < p))
        else:
            cut = torch.from_numpy(self.rng.random(n) < p)
        if not bool(cut.any()):
            coeffs = (m * lam).float().to(device).view(m, n, 1, 1, 1)
            return MixParams(coeffs), lam.float().to(device), cut.to(device)
        if self.draw == "batch":
            rect = torch.full((n,), int(self.rng.integers(0, 2)), dtype=torch.long)
        else:
            rect = torch.from_numpy(self.rng.integers(0, 2, size=n)).long()
        mask0, share0 = cut_masks(lam[0], grid_hw, self.gen, rect, device=device, rule=self.box_rule)
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
        idx_cpu = repetition_indices(b, self.batch_repeat, m, self.gen)
        idx = idx_cpu.to(images.device, non_blocking=True)
        n = idx.shape[1]
        grid = self.model.mix_grid(images.shape[-2:])
        xs, ts = [], []
        if self.cutmix_prob > 0:  # official: the MixMo mixing first, then each input's CutMix against it
            mix, lam, _ = self.sample(n, grid, step, device=images.device)
            keep = (mix.coeffs / m).expand(m, n, 1, *grid) if m > 1 else None
            for k in range(m):  # M input streams (a loop over members, not samples)
                xk, tk, _ = cutmix_inputs(images, labels, idx_cpu[k], self.num_classes, self.rng, self.gen,
                                          self.cutmix_prob, self.cutmix_alpha,
                                          keep[k] if keep is not None else None, self.box_rule)
                xs.append(xk)
                ts.append(tk)
            return torch.stack(xs), torch.stack(ts), mix, lam
        for k in range(m):  # M input streams (M is 2 or 3: a loop over members, not samples)
            xk, yk = images[idx[k]], labels[idx[k]]
            mb = self.input_mixer(xk, yk)
            xs.append(mb.images)
            ts.append(self.input_mixer.targets(mb))
        mix, lam, _ = self.sample(n, grid, step, device=images.device)
        return torch.stack(xs), torch.stack(ts), mix, lam

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, lam: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``mean_n sum_k w_k(n) CE_k(n)`` and the (M,) detached per-head mean cross-entropies.

        logits (M, N, K), targets (M, N, K) soft targets, lam (M, N) realised shares."""
        ce = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1)  # (M, N)
        w = loss_weights(lam.float(), self.weight_root)
        return (w * ce).sum(0).mean(), ce.detach().mean(1)

    def l2_term(self) -> torch.Tensor:
        """``l2_reg * sum_p sum(p ** 2)`` over every trainable parameter of ``model`` (no factor 1/2: its
        gradient is ``2 l2_reg p``, the same update as SGD weight decay ``2 l2_reg``)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return self.l2_reg * torch.stack([p.float().pow(2).sum() for p in params]).sum()

    def forward_loss(self, net, images: torch.Tensor, labels: torch.Tensor, extras=None, step: int = 0,
                     autocast=None, channels_last: bool = False):
        """The training forward and loss of one step; see the class docstring. ``autocast`` is a
        context-manager factory wrapped around the network's forward. ``channels_last`` is accepted for
        the objective interface (:meth:`pretrain.objectives.Objective.forward_loss`); the (M, N, C, H, W) input stack stays contiguous (each member's slice is
        a plain NCHW batch), only the weights follow ``train.channels_last``."""
        x, targets, mix, lam = self.prepare(images, labels, step, extras)
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            logits = net(x, mix=mix)
        loss, heads = self.loss(logits, targets, lam)
        if self.l2_reg > 0:
            loss = loss + self.l2_term()
        return loss, heads


def check_options(m: int, mixing: str, alpha: float, weight_root: float, batch_repeat: int, cut_prob: float,
                  cut_prob_final: float, anneal_start: float, anneal_end: float, anneal_unit: str = "epoch",
                  draw: str = "batch", box_rule: str = "even", cutmix_prob: float = 0.0, cutmix_alpha: float = 1.0,
                  l2_reg: float = 0.0) -> None:
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
    for name, v in (("cut_prob", cut_prob), ("cut_prob_final", cut_prob_final), ("cutmix_prob", cutmix_prob)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"mixmo.{name} must lie in [0, 1], got {v}")
    if not 0.0 <= float(anneal_start) <= float(anneal_end) <= 1.0:
        raise ValueError(f"mixmo.anneal_start/anneal_end must satisfy 0 <= start <= end <= 1, got "
                         f"{anneal_start}, {anneal_end}")
    for name, v, allowed in (("anneal_unit", anneal_unit, ANNEAL_UNITS), ("draw", draw, DRAWS),
                             ("box_rule", box_rule, BOX_RULES)):
        if v not in allowed:
            raise ValueError(f"mixmo.{name} must be one of {allowed}, got {v!r}")
    if not float(cutmix_alpha) > 0:
        raise ValueError(f"mixmo.cutmix_alpha must be > 0, got {cutmix_alpha}")
    if not float(l2_reg) >= 0:
        raise ValueError(f"mixmo.l2_reg must be >= 0, got {l2_reg}")


def trainer_options(xc: Dict[str, Any]) -> Dict[str, Any]:
    """The :class:`MixMoTrainer` keyword arguments of a ``mixmo`` config section."""
    return dict(mixing=xc["mixing"], alpha=float(xc["alpha"]), weight_root=float(xc["weight_root"]),
                batch_repeat=int(xc["batch_repeat"]), cut_prob=float(xc["cut_prob"]),
                cut_prob_final=float(xc["cut_prob_final"]), anneal_start=float(xc["anneal_start"]),
                anneal_end=float(xc["anneal_end"]), anneal_unit=xc["anneal_unit"], draw=xc["draw"],
                box_rule=xc["box_rule"], cutmix_prob=float(xc["cutmix_prob"]),
                cutmix_alpha=float(xc["cutmix_alpha"]), l2_reg=float(xc["l2_reg"]))


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
    return MixMoTrainer(int(xc["num_members"]), k, epochs=int(cfg["train"]["epochs"]), input_mixer=input_mixer,
                        total_steps=total_steps, seed=seed, **trainer_options(xc))
