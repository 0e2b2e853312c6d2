"""Mixup / CutMix against timm's ``Mixup``: same draws in, same images and targets out; same laws."""
import numpy as np
import pytest
import torch
from scipy import stats

import timm.data.mixup as timm_mixup
from pretrain.mixing import build_mixer
from pretrain.mixing.base import boxes_from_centres, rand_bbox_minmax

CONFIGS = [
    dict(mixup_alpha=0.8, cutmix_alpha=0.0),
    dict(mixup_alpha=0.0, cutmix_alpha=1.0),
    dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5),
    dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, prob=0.6),
    dict(mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False),
    dict(mixup_alpha=0.0, cutmix_alpha=1.0, cutmix_minmax=(0.2, 0.8)),
]


def run_both(monkeypatch, mode, cfg, seed, b=8, hw=(24, 40), k=5, smoothing=0.1):
    """Run our mixer, record its draws, replay them through timm's Mixup and return both outputs."""
    ours = build_mixer({"name": "mixup_cutmix", "mode": mode, "label_smoothing": smoothing, **cfg}, k, seed=seed)
    rec = {}
    per_sample, boxes_fn = ours._per_sample, ours._boxes

    def rec_per_sample(n):
        rec["lam"], rec["cut"] = per_sample(n)
        return rec["lam"], rec["cut"]

    def rec_boxes(lam, hw_):
        rec["boxes"] = boxes_fn(lam, hw_)
        return rec["boxes"]

    ours._per_sample, ours._boxes = rec_per_sample, rec_boxes
    torch.manual_seed(seed)
    x = torch.randn(b, 3, *hw)
    y = torch.randint(0, k, (b,))
    x_in = x.clone()
    batch = ours(x, y)
    targets = ours.targets(batch)
    assert torch.equal(x, x_in), "the input batch must not be modified"

    lam, cut = rec["lam"].copy(), rec["cut"].copy()
    n = {"batch": 1, "pair": b // 2, "elem": b}[mode]
    box_order = []  # the boxes timm asks for, in its call order
    if "boxes" in rec:
        bx = rec["boxes"].tolist()
        box_order = [bx[i] for i in range(n) if cut[i] and lam[i] != 1.0]
    it = iter(box_order)

    def fake_rand_bbox(img_shape, lam_, margin=0.0, count=None):
        return tuple(next(it))

    def fake_minmax(img_shape, minmax, count=None):
        return tuple(next(it))

    monkeypatch.setattr(timm_mixup, "rand_bbox", fake_rand_bbox)
    monkeypatch.setattr(timm_mixup, "rand_bbox_minmax", fake_minmax)
    tm = timm_mixup.Mixup(num_classes=k, mode=mode, label_smoothing=smoothing,
                          **{key: v for key, v in {**dict(prob=1.0, switch_prob=0.5), **cfg}.items()})
    monkeypatch.setattr(tm, "_params_per_batch", lambda: (float(lam[0]), bool(cut[0])))
    monkeypatch.setattr(tm, "_params_per_elem", lambda m: (lam[:m].astype(np.float32), cut[:m].copy()))
    tx, tt = tm(x.clone(), y.clone())
    return batch, targets, tx, tt


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_same_draws_give_timm_images_and_targets(monkeypatch, mode, cfg):
    for seed in range(3):
        batch, targets, tx, tt = run_both(monkeypatch, mode, cfg, seed)
        torch.testing.assert_close(batch.images, tx, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(targets, tt, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(targets.sum(1), torch.ones(targets.shape[0]))


@pytest.mark.parametrize("hw", [(50, 70), (224, 224), (31, 17)])
def test_box_rule_equals_timm_rand_bbox(monkeypatch, hw):
    """Given the same centres, our boxes are timm's (size int(H sqrt(1-lam)), (cut+1)//2 below the centre)."""
    rng = np.random.default_rng(0)
    lam = torch.from_numpy(rng.uniform(0, 1, 40))
    cy = torch.from_numpy(rng.integers(0, hw[0], 40))
    cx = torch.from_numpy(rng.integers(0, hw[1], 40))
    ours = boxes_from_centres(hw, lam, cy, cx)
    for i in range(40):
        seq = iter([int(cy[i]), int(cx[i])])
        monkeypatch.setattr(timm_mixup.np.random, "randint", lambda lo, hi, size=None: next(seq))
        ref = timm_mixup.rand_bbox((3, *hw), float(lam[i]))
        assert tuple(int(v) for v in ours[i]) == tuple(int(v) for v in ref)


def test_minmax_boxes_follow_timm_ranges():
    g = torch.Generator().manual_seed(0)
    h, w = 100, 60
    boxes = rand_bbox_minmax((h, w), 4000, (0.2, 0.8), generator=g)
    ch, cw = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    # timm: cut_h = randint(int(h*min), int(h*max)); yl = randint(0, h - cut_h + 1)
    assert int(ch.min()) == 20 and int(ch.max()) == 79 and int(cw.min()) == 12 and int(cw.max()) == 47
    assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] <= h).all() and (boxes[:, 3] <= w).all())
    # uniform integer sizes: chi-square against the uniform law over the 60 sizes
    counts = torch.bincount(ch - 20, minlength=60).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_lambda_and_switch_laws():
    mixer = build_mixer({"name": "mixup_cutmix", "mode": "elem", "correct_lam": False, "prob": 0.7,
                         "switch_prob": 0.3}, 10, seed=0)
    lam, cut = mixer._draw(20000)
    mixed = lam < 1.0
    assert abs(mixed.mean() - 0.7) < 0.02
    assert abs(cut[mixed].mean() - 0.3) < 0.02
    assert stats.kstest(lam[mixed & cut], stats.beta(1.0, 1.0).cdf).pvalue > 1e-3
    assert stats.kstest(lam[mixed & ~cut], stats.beta(0.8, 0.8).cdf).pvalue > 1e-3


def test_pair_mode_swaps_regions_and_odd_batch_fails():
    mixer = build_mixer({"name": "cutmix", "mode": "pair"}, 4, seed=1)
    x = torch.randn(6, 3, 16, 16)
    batch = mixer(x, torch.arange(6) % 4)
    torch.testing.assert_close(batch.mask, batch.mask.flip(0))  # pair members share their box
    torch.testing.assert_close(batch.lam, batch.lam.flip(0))
    with pytest.raises(ValueError, match="even batch"):
        mixer(torch.randn(5, 3, 16, 16), torch.arange(5) % 4)
