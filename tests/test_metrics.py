"""Tests of pretrain/metrics.py against slow per-sample / per-bin references written out in loops."""
from __future__ import annotations

import math

import pytest
import torch

from pretrain.metrics import ClassificationMeter, MultiHeadMeter, format_table


def reference(logits, labels, n_bins):
    """top1/top5/nll/ece from first principles: Python floats, one sample at a time, one bin at a time."""
    rows, ys = logits.double().tolist(), labels.tolist()
    n = len(rows)
    confs, hits, top1, top5, nll = [], [], 0, 0, 0.0
    for row, y in zip(rows, ys):
        m = max(row)
        exps = [math.exp(v - m) for v in row]
        z = sum(exps)
        probs = [e / z for e in exps]
        pred = 0
        for k in range(len(row)):  # first index of the maximum
            if row[k] > row[pred]:
                pred = k
        # rank of the label: classes strictly larger, or equal with a lower index, come first
        rank = sum(1 for k in range(len(row)) if row[k] > row[y] or (row[k] == row[y] and k < y))
        top1 += pred == y
        top5 += rank < min(5, len(row))
        nll += -(row[y] - m - math.log(z))
        confs.append(max(probs))
        hits.append(1.0 if pred == y else 0.0)
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if lo < confs[i] <= hi or (b == 0 and confs[i] == 0.0)]
        if not members:
            continue
        acc = sum(hits[i] for i in members) / len(members)
        conf = sum(confs[i] for i in members) / len(members)
        ece += len(members) / n * abs(acc - conf)
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "nll": nll / n, "ece": 100.0 * ece, "n": n}


def assert_close(got, ref, tol=1e-9):
    assert got["n"] == ref["n"]
    for k in ("top1", "top5", "nll", "ece"):
        assert got[k] == pytest.approx(ref[k], rel=tol, abs=tol), k


def _random_case(seed, n=300, k=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * scale
    labels = torch.randint(0, k, (n,), generator=g)
    # make about half of the predictions right so that accuracy is not near 0
    right = torch.rand(n, generator=g) < 0.5
    labels[right] = logits.argmax(1)[right]
    return logits, labels


@pytest.mark.parametrize("n_bins", [15, 10, 1])
def test_matches_reference_over_several_updates(n_bins):
    logits, labels = _random_case(0)
    meter = ClassificationMeter(n_bins)
    for lo, hi in ((0, 7), (7, 150), (150, 151), (151, 300)):
        meter.update(logits[lo:hi], labels[lo:hi])
    assert_close(meter.compute(), reference(logits, labels, n_bins))


def test_float16_logits_are_evaluated_like_their_float64_values():
    logits, labels = _random_case(1)
    half = logits.half()
    meter = ClassificationMeter()
    meter.update(half, labels)
    assert_close(meter.compute(), reference(half.double(), labels, 15))


def test_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    # K=4 with equal logits: confidence exactly 0.25 = edge 2/8; K=2 equal logits: exactly 0.5 = edge 4/8
    logits = torch.cat([torch.zeros(6, 4), torch.tensor([[0.0, 0.0, -50.0, -50.0]] * 4)])
    labels = torch.tensor([0, 1, 2, 3, 0, 0, 0, 1, 1, 1])
    meter = ClassificationMeter(8)
    meter.update(logits, labels)
    counts = meter.reliability()["count"]
    assert counts[1] == 6 and counts[3] == 4 and sum(counts) == 10  # (1/8, 2/8] and (3/8, 4/8]
    assert_close(meter.compute(), reference(logits, labels, 8))
    # by hand: the prediction is class 0 everywhere (first maximum); bin (1/8, 2/8]: 3 of 6 right at
    # confidence .25; bin (3/8, 4/8]: 1 of 4 right at confidence .5 (1 + e^-50 rounds to 1 in float64)
    expected = 6 / 10 * abs(3 / 6 - 0.25) + 4 / 10 * abs(1 / 4 - 0.5)
    assert meter.compute()["ece"] == pytest.approx(100 * expected, abs=1e-12)


def test_empty_bins_contribute_nothing_and_k2_top5_is_all():
    # K=2: confidences in [0.5, 1]: the lower half of the bins is empty
    logits, labels = _random_case(2, n=200, k=2, scale=2.0)
    meter = ClassificationMeter(15)
    meter.update(logits, labels)
    rel = meter.reliability()
    assert rel["count"][:7] == [0.0] * 7 and all(math.isnan(a) for a in rel["accuracy"][:7])
    got = meter.compute()
    assert_close(got, reference(logits, labels, 15))
    assert got["top5"] == 100.0 and not math.isnan(got["ece"])


def test_calibration_extremes():
    n, k = 40, 5
    labels = torch.arange(n) % k
    sure = torch.full((n, k), -100.0)
    sure[torch.arange(n), labels] = 100.0  # certain and right
    m = ClassificationMeter()
    m.update(sure, labels)
    r = m.compute()
    assert r["top1"] == 100.0 and r["ece"] == pytest.approx(0.0, abs=1e-9) and r["nll"] == pytest.approx(0.0, abs=1e-9)
    m = ClassificationMeter()
    m.update(sure, (labels + 1) % k)  # certain and wrong
    r = m.compute()
    assert r["top1"] == 0.0 and r["ece"] == pytest.approx(100.0, abs=1e-6) and r["nll"] == pytest.approx(200.0, rel=1e-6)
    m = ClassificationMeter()
    m.update(torch.zeros(n, k), labels)  # uniform: NLL = log K
    assert m.compute()["nll"] == pytest.approx(math.log(k), rel=1e-12)


def test_two_meters_summed_equal_one_pass():
    logits, labels = _random_case(3, n=250, k=7)
    whole = ClassificationMeter(12)
    whole.update(logits, labels)
    a, b = ClassificationMeter(12), ClassificationMeter(12)
    a.update(logits[:90], labels[:90])
    b.update(logits[90:200], labels[90:200])
    b.update(logits[200:], labels[200:])
    merged = ClassificationMeter(12)
    merged.load_sums(a.state() + b.state())  # what an all_reduce(SUM) over two ranks gives
    torch.testing.assert_close(merged.state(), whole.state(), rtol=1e-12, atol=1e-9)
    assert_close(merged.compute(), whole.compute(), tol=1e-12)
    assert whole.state().dtype == torch.float64 and whole.state().dim() == 1


def test_multihead_ensemble_is_the_meter_of_the_mean_logits():
    g = torch.Generator().manual_seed(4)
    heads = torch.randn(3, 120, 9, generator=g) * 2
    labels = torch.randint(0, 9, (120,), generator=g)
    mh = MultiHeadMeter(3, n_bins=10)
    mh.update(heads[:, :50], labels[:50])
    mh.update(list(heads[:, 50:]), labels[50:])  # a list of (N, K) tensors works too
    res = mh.compute()
    assert_close(res["ensemble"], reference(heads.double().mean(0), labels, 10))
    assert len(res["heads"]) == 3
    for h in range(3):
        assert_close(res["heads"][h], reference(heads[h], labels, 10))
    # state / load_sums round trip, split across two "ranks"
    r1, r2 = MultiHeadMeter(3, n_bins=10), MultiHeadMeter(3, n_bins=10)
    r1.update(heads[:, :70], labels[:70])
    r2.update(heads[:, 70:], labels[70:])
    merged = MultiHeadMeter(3, n_bins=10)
    merged.load_sums(r1.state() + r2.state())
    for key in ("top1", "top5", "nll", "ece", "n"):
        assert merged.compute()["ensemble"][key] == pytest.approx(res["ensemble"][key], rel=1e-12)
        assert merged.compute()["heads"][2][key] == pytest.approx(res["heads"][2][key], rel=1e-12)


def test_multihead_probability_ensemble():
    g = torch.Generator().manual_seed(5)
    heads = torch.randn(2, 80, 6, generator=g) * 3
    labels = torch.randint(0, 6, (80,), generator=g)
    mh = MultiHeadMeter(2, ensemble="probs")
    mh.update(heads, labels)
    mean_p = heads.double().softmax(-1).mean(0)
    assert_close(mh.compute()["ensemble"], reference(mean_p.log(), labels, 15))


def test_bad_inputs_are_clear_errors():
    m = ClassificationMeter()
    with pytest.raises(ValueError, match="outside \\[0, 3\\)"):
        m.update(torch.zeros(4, 3), torch.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="labels must be \\(N,\\)"):
        m.update(torch.zeros(4, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="logits must be \\(N, K\\)"):
        m.update(torch.zeros(4), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="integer class indices"):
        m.update(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D tensor of 49 sums"):
        m.load_sums(torch.zeros(10))
    with pytest.raises(ValueError, match="M=2"):
        MultiHeadMeter(2).update(torch.zeros(3, 4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_bins"):
        ClassificationMeter(0)
    empty = ClassificationMeter().compute()
    assert empty["n"] == 0 and math.isnan(empty["top1"]) and math.isnan(empty["ece"])


def test_format_table_lists_ensemble_and_heads():
    heads = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(6))
    labels = torch.arange(30) % 4
    mh = MultiHeadMeter(2)
    mh.update(heads, labels)
    res = mh.compute()
    lines = format_table(res).splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["ensemble", "head", "head", "head"]
    assert lines[1].split()[1:] == [f"{res['ensemble']['top1']:.2f}", f"{res['ensemble']['top5']:.2f}",
                                    f"{res['ensemble']['nll']:.4f}", f"{res['ensemble']['ece']:.2f}", "30"]
    assert lines[3].split()[2] == f"{res['heads'][1]['top1']:.2f}"
    mean_top1 = (res["heads"][0]["top1"] + res["heads"][1]["top1"]) / 2
    assert lines[4].startswith("head mean") and lines[4].split()[2] == f"{mean_top1:.2f}"
