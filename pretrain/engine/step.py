"""One optimizer step of the engine: the objective's loss, backward, clipping, the non-finite check agreed by
all ranks, the update and the EMA -- with one host synchronisation. The unit ``tools/bench_pretrain.py``
times against a bare timm step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from .. import dist as du
from ..amp import autocast
from .parallel import full_value, gradient_sync


@dataclass
class StepResult:
    loss: float          # this rank's loss (NaN/inf for a skipped step)
    skipped: bool        # non-finite loss or gradient on some rank: no update anywhere
    stop: bool           # some rank was asked to stop (signal)
    grad_norm: Optional[float] = None
    details: Optional[List[float]] = None  # the objective's per-component values (MixMo: each head's loss)


class TrainStep:
    """One training step.

    Args:
        model: the (unwrapped) network; ``net`` is what runs the forward (DDP and/or compiled wrapper of
            ``model``, or ``model`` itself).
        objective: a bound :class:`pretrain.objectives.Objective` (anything with its ``forward_loss``).
        optimizer, scaler: the optimizer and the (fp16-only) grad scaler.
        amp_dtype: autocast dtype or None.
        clip_grad: max global gradient norm or None.
        ema: a timm ``ModelEmaV3`` of ``model`` or None.
        channels_last: the engine's ``train.channels_last`` (passed to the objective).
        accum_steps: ``train.accum_steps``: the batch is cut into this many equal micro-batches, each one's
            forward and backward run in turn (the objective, and so the mixer, draws per micro-batch), each
            loss weighted by its share of the batch so the summed gradient is the full batch's mean; clipping,
            the non-finite check, the update and the EMA follow once; DDP syncs (FSDP reduce-scatters) only on the
            last micro-batch.

    ``step(images, labels, extras, lr=lr, step=s)`` takes a (B, 3, H, W) float batch and (B,) int64 labels
    on the device and returns a :class:`StepResult`. ``loss, details = objective.forward_loss(net, images,
    labels, extras, step=s, autocast=..., channels_last=...)`` gives the scalar loss and None or a 1-D tensor
    of per-component values. One host synchronisation per step: the non-finite and stop flags (max over
    ranks), the loss, the gradient norm and the details travel in one small tensor.
    """

    def __init__(self, model, net, objective, optimizer, scaler, amp_dtype=None, clip_grad=None, ema=None,
                 channels_last: bool = False, accum_steps: int = 1):
        self.model, self.net, self.objective = model, net, objective
        self.accum_steps = int(accum_steps)
        self.optimizer, self.scaler, self.amp_dtype = optimizer, scaler, amp_dtype
        self.clip_grad = float(clip_grad) if clip_grad else None
        self.ema = ema
        self.channels_last = channels_last
        self.device = next(model.parameters()).device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.stop_requested = False
        self._flag = {v: torch.tensor(float(v), device=self.device) for v in (False, True)}  # no H2D copy per step

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def close(self) -> None:
        """Detach the objective from the model (its hooks)."""
        self.objective.close()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, extras=None, lr: Optional[float] = None,
                 step: int = 0) -> StepResult:
        if lr is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        if self.accum_steps > 1:
            loss, details = self._accumulate(images, labels, extras, step)
        else:
            loss, details = self.objective.forward_loss(self.net, images, labels, extras, step=step,
                                                        autocast=self._autocast, channels_last=self.channels_last)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        grad_norm = None
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            # FSDP: the norm over the DTensor shards, a replicated DTensor (as a plain tensor here)
            grad_norm = full_value(torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad, foreach=True))
        bad = ~torch.isfinite(loss.detach())
        if grad_norm is not None and self.amp_dtype != torch.float16:  # fp16: the scaler skips inf grads
            bad = bad | ~torch.isfinite(grad_norm)
        flags = torch.stack([bad.float(), self._flag[bool(self.stop_requested)]])
        du.all_reduce_max_(flags)
        extra = [loss.detach().float().view(1)] + ([grad_norm.detach().float().view(1)] if grad_norm is not None else [])
        if details is not None:
            extra.append(details.detach().float().view(-1))
        values = torch.cat([flags] + extra).tolist()  # the step's one host sync
        skipped, stop = values[0] > 0, values[1] > 0
        n_fixed = 4 if grad_norm is not None else 3
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model)  # fixed decay from the first step (DeiT)
        return StepResult(loss=values[2], skipped=skipped, stop=stop,
                          grad_norm=values[3] if grad_norm is not None else None,
                          details=values[n_fixed:] if details is not None else None)

    def _accumulate(self, images, labels, extras, step: int):
        """Forward and backward of ``accum_steps`` micro-batches; returns the batch's (loss, details), detached."""
        k, b = self.accum_steps, images.shape[0]
        if b % k:
            raise ValueError(f"batch of {b} does not split into train.accum_steps={k} equal micro-batches")
        self.optimizer.zero_grad(set_to_none=True)
        loss = details = None
        for j in range(k):
            sl = slice(j * b // k, (j + 1) * b // k)
            with gradient_sync(self.net, last=j == k - 1):  # DDP no_sync / FSDP2 set_requires_gradient_sync
                li, di = self.objective.forward_loss(self.net, images[sl], labels[sl], _slice(extras, sl, b),
                                                     step=step, autocast=self._autocast,
                                                     channels_last=self.channels_last)
                self.scaler.scale(li / k).backward()
            li = li.detach() / k
            loss = li if loss is None else loss + li
            if di is not None:
                di = di.detach().float() / k
                details = di if details is None else details + di
        return loss, details


def _slice(x, sl: slice, b: int):
    """The micro-batch ``sl`` of a batch's ``extras``: tensors with ``b`` rows are sliced, nested containers
    followed, anything else kept."""
    if isinstance(x, torch.Tensor):
        return x[sl] if x.dim() and x.shape[0] == b else x
    if isinstance(x, dict):
        return {key: _slice(v, sl, b) for key, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_slice(v, sl, b) for v in x)
    return x
