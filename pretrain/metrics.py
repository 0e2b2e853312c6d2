"""Streaming classification metrics: top-1/top-5 accuracy, negative log-likelihood and calibration (ECE).

The meters keep only sums (one float64 vector), so that data-parallel evaluation reduces them with a
single ``all_reduce(SUM)`` of :meth:`ClassificationMeter.state` and loads the result back with
:meth:`ClassificationMeter.load_sums` before :meth:`ClassificationMeter.compute`::

    meter = MultiHeadMeter(num_heads=2)
    for images, labels in loader:
        meter.update(model(images), labels)              # (M, N, K) logits of the M heads
    sums = meter.state()                                 # on the logits' device
    torch.distributed.all_reduce(sums)                   # every rank now holds the totals
    meter.load_sums(sums)
    print(format_table(meter.compute()))

Definitions (``N`` samples, ``K`` classes, softmax probabilities ``p``):

* ``top1``/``top5``: % of samples whose label is among the 1/``min(5, K)`` largest logits (ties go
  to the lower class index, as ``torch.topk``/``argmax``);
* ``nll``: mean cross-entropy ``-log p[label]`` in nats (float64 log-softmax);
* ``ece``: top-label expected calibration error ("On Calibration of Modern Neural Networks", Guo et al.,
  ICML 2017, arXiv:1706.04599), in %: the confidence
  ``max_k p_k`` falls in one of ``n_bins`` equal-width bins ``(b/B, (b+1)/B]`` (a confidence exactly on
  an edge belongs to the lower bin; the first bin also holds 0), and
  ``ECE = 100 * sum_b n_b / N * |acc_b - conf_b|`` with ``acc_b``/``conf_b`` the bin's accuracy and mean
  confidence (empty bins contribute nothing).

:class:`MultiHeadMeter` scores the heads of a MixMo network and their ensemble ("MixMo: Mixing Multiple
Inputs for Multiple Outputs via Deep Subnetworks", Ramé et al., ICCV 2021, arXiv:2103.06132; official
code: alexrame/mixmo-pytorch).

Accumulation stays on the device of the logits (no host synchronisation per batch apart from the label
range check).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

__all__ = ["ClassificationMeter", "MultiHeadMeter", "format_table", "bin_edges"]

# state layout: [n, correct@1, correct@5, nll_sum, bin_count[B], bin_conf_sum[B], bin_correct[B]]
_HEAD = 4


def bin_edges(n_bins: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The ``n_bins + 1`` equal-width confidence bin edges ``b / B`` for ``b = 0..B`` (each the correctly
    rounded quotient, so that a confidence computed as exactly ``b / B`` lies on the edge)."""
    return torch.arange(int(n_bins) + 1, dtype=dtype, device=device) / int(n_bins)


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (N,) with N = {logits.shape[0]} (logits {tuple(logits.shape)}), "
                         f"got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")


class ClassificationMeter:
    """Top-1/top-5 accuracy, NLL and top-label ECE over a stream of batches (see the module docstring).

    Args:
        n_bins: number of equal-width confidence bins of the ECE (15, as Guo et al. and MixMo).
    """

    def __init__(self, n_bins: int = 15):
        if int(n_bins) < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = int(n_bins)
        self._sums: Optional[torch.Tensor] = None

    @property
    def state_size(self) -> int:
        return _HEAD + 3 * self.n_bins

    def reset(self) -> None:
        self._sums = None

    def _buffer(self, device) -> torch.Tensor:
        if self._sums is None:
            self._sums = torch.zeros(self.state_size, dtype=torch.float64, device=device)
        return self._sums

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``logits`` ``(N, K)`` (any float dtype, computed in float64), ``labels`` ``(N,)``
        integer class indices in ``[0, K)`` (``ValueError`` otherwise)."""
        _check_logits_labels(logits, labels)
        n, k = logits.shape
        if n == 0:
            return
        if k < 1:
            raise ValueError("logits need at least one class")
        labels = labels.to(device=logits.device, dtype=torch.long)
        bad = (labels < 0) | (labels >= k)
        if bool(bad.any()):
            raise ValueError(f"{int(bad.sum())} labels outside [0, {k}) (e.g. {int(labels[bad][0])}) for logits "
                             f"with {k} classes")
        x = logits.detach().to(torch.float64)
        logp = torch.log_softmax(x, dim=1)
        conf, pred = torch.softmax(x, dim=1).max(dim=1)  # (N,), (N,)
        correct1 = pred.eq(labels)
        top = x.topk(min(5, k), dim=1).indices
        correct5 = top.eq(labels[:, None]).any(dim=1)
        nll = -logp.gather(1, labels[:, None]).squeeze(1)
        # bin b holds conf in (edge_b, edge_{b+1}]; bucketize(right=False) on the inner edges does exactly that
        inner = bin_edges(self.n_bins, device=x.device)[1:-1]
        b = torch.bucketize(conf, inner, right=False)
        s = self._buffer(logits.device)
        B = self.n_bins
        s[0] += n
        s[1] += correct1.sum()
        s[2] += correct5.sum()
        s[3] += nll.sum()
        s[_HEAD:_HEAD + B].index_add_(0, b, torch.ones_like(conf))
        s[_HEAD + B:_HEAD + 2 * B].index_add_(0, b, conf)
        s[_HEAD + 2 * B:].index_add_(0, b, correct1.to(torch.float64))

    def state(self) -> torch.Tensor:
        """The sums as a 1-D float64 tensor of length ``4 + 3 * n_bins`` (a copy; zeros before any update)."""
        if self._sums is None:
            return torch.zeros(self.state_size, dtype=torch.float64)
        return self._sums.clone()

    def load_sums(self, t: torch.Tensor) -> None:
        """Replace the sums by ``t`` (e.g. the all-reduced :meth:`state` of every rank)."""
        t = torch.as_tensor(t)
        if t.dim() != 1 or t.numel() != self.state_size:
            raise ValueError(f"expected a 1-D tensor of {self.state_size} sums (n_bins={self.n_bins}), got shape "
                             f"{tuple(t.shape)}")
        self._sums = t.detach().to(torch.float64).clone()

    def reliability(self) -> Dict[str, List[float]]:
        """Per-bin ``count``, mean ``confidence`` and ``accuracy`` (fractions; NaN for empty bins) and the
        bin ``edges``: the data of a reliability diagram."""
        s = self.state().cpu()
        B = self.n_bins
        cnt, conf, corr = s[_HEAD:_HEAD + B], s[_HEAD + B:_HEAD + 2 * B], s[_HEAD + 2 * B:]
        denom = cnt.clamp_min(1)
        nan = torch.full_like(cnt, float("nan"))
        return {"edges": bin_edges(B).tolist(), "count": cnt.tolist(),
                "confidence": torch.where(cnt > 0, conf / denom, nan).tolist(),
                "accuracy": torch.where(cnt > 0, corr / denom, nan).tolist()}

    def compute(self) -> Dict[str, Any]:
        """``{"top1": %, "top5": %, "nll": nats, "ece": %, "n": int}`` (NaN metrics when ``n == 0``)."""
        s = self.state().cpu()
        n = float(s[0])
        B = self.n_bins
        if n == 0:
            nan = float("nan")
            return {"top1": nan, "top5": nan, "nll": nan, "ece": nan, "n": 0}
        gap = (s[_HEAD + 2 * B:] - s[_HEAD + B:_HEAD + 2 * B]).abs().sum()  # sum_b |correct_b - conf_sum_b|
        return {"top1": 100.0 * float(s[1]) / n, "top5": 100.0 * float(s[2]) / n, "nll": float(s[3]) / n,
                "ece": 100.0 * float(gap) / n, "n": int(round(n))}


class MultiHeadMeter:
    """One :class:`ClassificationMeter` per head plus one for the ensemble of the heads.

    Args:
        num_heads: number of heads ``M`` (MixMo subnetworks).
        n_bins: ECE bins of every meter.
        ensemble: ``"logits"`` (default): the ensemble's logits are the mean of the heads' logits;
            ``"probs"``: the mean of the heads' softmax probabilities (its log is used as logits).
    """

    def __init__(self, num_heads: int, n_bins: int = 15, ensemble: str = "logits"):
        if int(num_heads) < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if ensemble not in ("logits", "probs"):
            raise ValueError(f"ensemble must be 'logits' or 'probs', got {ensemble!r}")
        self.num_heads = int(num_heads)
        self.n_bins = int(n_bins)
        self.ensemble_mode = ensemble
        self.heads = [ClassificationMeter(n_bins) for _ in range(self.num_heads)]
        self.ensemble = ClassificationMeter(n_bins)

    @property
    def _meters(self) -> List[ClassificationMeter]:
        return [self.ensemble] + self.heads

    def reset(self) -> None:
        for m in self._meters:
            m.reset()

    @torch.no_grad()
    def update(self, head_logits, labels: torch.Tensor) -> None:
        """``head_logits``: ``(M, N, K)`` tensor or a sequence of ``M`` ``(N, K)`` tensors; ``labels`` ``(N,)``."""
        if not torch.is_tensor(head_logits):
            head_logits = torch.stack(list(head_logits))
        if head_logits.dim() != 3 or head_logits.shape[0] != self.num_heads:
            raise ValueError(f"head_logits must be (M={self.num_heads}, N, K), got shape {tuple(head_logits.shape)}")
        x = head_logits.detach().to(torch.float64)
        if self.ensemble_mode == "logits":
            ens = x.mean(dim=0)
        else:
            ens = torch.logsumexp(torch.log_softmax(x, dim=2), dim=0) - torch.log(torch.tensor(float(self.num_heads)))
        self.ensemble.update(ens, labels)
        for m, logits in zip(self.heads, x):
            m.update(logits, labels)

    def state(self) -> torch.Tensor:
        """Concatenated sums: the ensemble's, then head 0, 1, ... (1-D float64)."""
        states = [m.state() for m in self._meters]
        dev = next((m._sums.device for m in self._meters if m._sums is not None), torch.device("cpu"))
        return torch.cat([t.to(dev) for t in states])

    def load_sums(self, t: torch.Tensor) -> None:
        t = torch.as_tensor(t)
        size = self._meters[0].state_size
        if t.dim() != 1 or t.numel() != size * (self.num_heads + 1):
            raise ValueError(f"expected a 1-D tensor of {size * (self.num_heads + 1)} sums "
                             f"({self.num_heads} heads + ensemble, n_bins={self.n_bins}), got shape {tuple(t.shape)}")
        for i, m in enumerate(self._meters):
            m.load_sums(t[i * size:(i + 1) * size])

    def compute(self) -> Dict[str, Any]:
        """``{"ensemble": {...}, "heads": [{...}, ...]}`` with :meth:`ClassificationMeter.compute` dicts."""
        return {"ensemble": self.ensemble.compute(), "heads": [m.compute() for m in self.heads]}


def format_table(result: Dict[str, Any]) -> str:
    """A fixed-width table of a :meth:`MultiHeadMeter.compute` result (ensemble row, one row per head,
    and the mean over heads when there are several) or of a single :meth:`ClassificationMeter.compute`."""
    if "ensemble" not in result and "top1" in result:
        rows = [("all", result)]
    else:
        rows = [("ensemble", result["ensemble"])]
        heads = list(result.get("heads", []))
        rows += [(f"head {i}", r) for i, r in enumerate(heads)]
        if len(heads) > 1:
            mean = {k: sum(float(r[k]) for r in heads) / len(heads) for k in ("top1", "top5", "nll", "ece")}
            mean["n"] = heads[0]["n"]
            rows.append(("head mean", mean))
    lines = [f"{'':<10} {'top1 %':>8} {'top5 %':>8} {'NLL':>8} {'ECE %':>8} {'n':>8}"]
    for name, r in rows:
        lines.append(f"{name:<10} {r['top1']:>8.2f} {r['top5']:>8.2f} {r['nll']:>8.4f} {r['ece']:>8.2f} "
                     f"{int(r['n']):>8d}")
    return "\n".join(lines)
