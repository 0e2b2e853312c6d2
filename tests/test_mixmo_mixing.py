"""MixMo mixing and loss against slow, obviously-correct references: loss weights, Cut-/Linear-MixMo
merging (CNN feature maps and ViT tokens), realised mask shares, batch repetition, the Cut probability
schedule, generator resume and bad options."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.mixing.base import rand_bbox
from pretrain.mixmo import (MixMoTrainer, build_mixmo_vit, build_mixmo_wrn, cut_masks, cut_probability,
                            loss_weights, repetition_indices)
from pretrain.mixmo.draws import box_rule_boxes, cutmix_inputs


def test_loss_weights_follow_the_formula():
    torch.manual_seed(0)
    for m, r in [(2, 3.0), (2, 6.0), (3, 1.0), (3, 3.0)]:
        lam = torch.distributions.Dirichlet(torch.full((m,), 2.0)).sample((50,)).T  # (M, N)
        lam[:, 0] = torch.tensor([1.0] + [0.0] * (m - 1))  # a degenerate column: one input only
        w = loss_weights(lam, r)
        for n in range(lam.shape[1]):
            col = [float(v) for v in lam[:, n]]
            denom = sum(v ** (1.0 / r) for v in col)
            for k in range(m):
                assert math.isclose(float(w[k, n]), m * col[k] ** (1.0 / r) / denom, rel_tol=1e-5, abs_tol=1e-6)
    # r = 1 weighs by lambda itself; a large r tends to uniform weights 1
    lam = torch.tensor([[0.2, 0.9], [0.8, 0.1]])
    torch.testing.assert_close(loss_weights(lam, 1.0), 2 * lam)
    assert torch.allclose(loss_weights(lam, 1e6), torch.ones(2, 2), atol=1e-4)
    with pytest.raises(ValueError, match="weight root"):
        loss_weights(lam, 0.0)


def test_trainer_loss_is_the_weighted_sum_of_head_cross_entropies():
    torch.manual_seed(1)
    m, n, k = 2, 6, 5
    logits = torch.randn(m, n, k)
    labels = torch.randint(0, k, (m, n))
    targets = F.one_hot(labels, k).float()
    lam0 = torch.rand(n)
    lam = torch.stack([lam0, 1 - lam0])
    tr = MixMoTrainer(2, k, mixing="linear", weight_root=3.0, seed=0)
    loss, heads = tr.loss(logits, targets, lam)
    total, per_head = 0.0, [0.0, 0.0]
    for i in range(n):
        d = lam0[i] ** (1 / 3) + (1 - lam0[i]) ** (1 / 3)
        for h, share in enumerate((lam0[i], 1 - lam0[i])):
            ce = float(F.cross_entropy(logits[h, i:i + 1], labels[h, i:i + 1]))
            total += 2 * share ** (1 / 3) / d * ce
            per_head[h] += ce / n
    assert math.isclose(float(loss), float(total) / n, rel_tol=1e-5)
    torch.testing.assert_close(heads, torch.tensor(per_head), rtol=1e-5, atol=1e-6)


def test_batch_repetition_gives_each_input_its_own_permutation_of_b_copies():
    g = torch.Generator().manual_seed(0)
    idx = repetition_indices(8, 3, 2, g)
    assert idx.shape == (2, 24) and idx.dtype == torch.int64
    for row in idx:
        counts = np.bincount(row.numpy(), minlength=8)
        assert (counts == 3).all()
    assert not torch.equal(idx[0], idx[1])  # different pairings
    assert not torch.equal(idx[0], torch.arange(24) % 8)  # shuffled
    # the trainer feeds input k the images at idx[k] and their labels
    tr = MixMoTrainer(2, 8, mixing="linear", batch_repeat=3, seed=3)
    tr.model = build_mixmo_wrn(8, 2, depth=10, widen_factor=1)
    images = torch.arange(8).float().view(8, 1, 1, 1).expand(8, 3, 32, 32).contiguous()
    labels = torch.arange(8)
    x, targets, mix, lam = tr.prepare(images, labels)
    assert x.shape == (2, 24, 3, 32, 32) and targets.shape == (2, 24, 8) and lam.shape == (2, 24)
    for k in range(2):
        ids = x[k, :, 0, 0, 0].long()
        assert (np.bincount(ids.numpy(), minlength=8) == 3).all()
        torch.testing.assert_close(targets[k], F.one_hot(ids, 8).float())  # the label follows its image


def test_cut_masks_match_a_loop_reference_and_report_the_realised_share():
    n, grid = 64, (8, 8)
    rng = np.random.default_rng(0)
    lam0 = torch.from_numpy(rng.dirichlet([2.0, 2.0], n)[:, 0])
    rect = torch.from_numpy(rng.integers(0, 2, n)).long()
    g = torch.Generator().manual_seed(5)
    g_ref = torch.Generator().manual_seed(5)
    mask0, share0 = cut_masks(lam0, grid, g, rect, rule="exact")
    # reference: the same boxes (timm 1.0's CutMix rule, the rectangle's target area = lambda of the input it
    # holds), painted with a loop
    own = torch.tensor([float(lam0[i]) if rect[i] == 0 else 1 - float(lam0[i]) for i in range(n)],
                       dtype=torch.float64)
    boxes = rand_bbox(grid, 1 - own, generator=g_ref)
    for i in range(n):
        y0, y1, x0, x1 = (int(v) for v in boxes[i])
        ref = np.zeros(grid) if rect[i] == 0 else np.ones(grid)
        for y in range(y0, y1):
            for x in range(x0, x1):
                ref[y, x] = 1.0 if rect[i] == 0 else 0.0
        assert np.array_equal(mask0[i, 0].numpy(), ref), i
        assert math.isclose(float(share0[i]), ref.mean(), abs_tol=1e-12)
        # the rectangle never exceeds its target area (integer sides, clipping only shrink it)
        area = (y1 - y0) * (x1 - x0) / 64.0
        assert area <= float(own[i]) + 1e-12


def _net(kind):
    torch.manual_seed(0)
    if kind == "wrn":
        return build_mixmo_wrn(5, 2, depth=10, widen_factor=1).eval()
    return build_mixmo_vit("deit_tiny_patch16_224", 5, 2, img_size=32, patch_size=8, depth=1, embed_dim=32,
                           num_heads=2).eval()


@pytest.mark.parametrize("kind", ["wrn", "vit"])
def test_merged_encoding_matches_a_per_sample_reference(kind):
    """Cut samples are binary on the grid (a rectangle of one input, the rest of the other, area share =
    the lambda the loss uses); Linear samples are M (lambda_0 l_0 + lambda_1 l_1)."""
    net = _net(kind)
    tr = MixMoTrainer(2, 5, mixing="cut", cut_prob=0.5, batch_repeat=1, draw="sample", seed=11)
    tr.model = net
    n = 24
    x = torch.randn(2, n, 3, 32, 32)
    grid = net.mix_grid((32, 32))
    mix, lam, cut = tr.sample(n, grid)
    assert 0 < int(cut.sum()) < n  # both kinds present
    with torch.no_grad():
        z = net.encode_mixed(x, mix)
        for i in range(n):
            e0 = net.encoders[0](x[0, i:i + 1])[0]
            e1 = net.encoders[1](x[1, i:i + 1])[0]
            zi = z[i]
            if kind == "vit":  # tokens (N, D) -> (D, h, w) to reason on the grid
                e0, e1, zi = (t.T.reshape(-1, *grid) for t in (e0, e1, zi))
            if not cut[i]:
                torch.testing.assert_close(zi, 2 * (lam[0, i] * e0 + lam[1, i] * e1), rtol=1e-4, atol=1e-5)
                continue
            from0 = torch.isclose(zi, 2 * e0, atol=1e-5).all(0)
            from1 = torch.isclose(zi, 2 * e1, atol=1e-5).all(0)
            assert bool((from0 | from1).all())  # every position is one input's, no blend
            share = float(from0.float().mean())
            assert math.isclose(share, float(lam[0, i]), abs_tol=1e-6)
            assert math.isclose(float(lam[0, i] + lam[1, i]), 1.0, abs_tol=1e-6)
            # one of the two regions is an axis-aligned rectangle
            ok = False
            for region in (from0 & ~from1, from1 & ~from0):
                ys, xs = torch.nonzero(region, as_tuple=True)
                if len(ys) == 0:
                    ok = True
                    continue
                box = torch.zeros_like(region)
                box[int(ys.min()):int(ys.max()) + 1, int(xs.min()):int(xs.max()) + 1] = True
                ok |= bool(torch.equal(box, region))
            assert ok


def test_cut_frequency_member_choice_and_schedule():
    tr = MixMoTrainer(2, 5, mixing="cut", cut_prob=0.5, anneal_start=0.5, anneal_end=0.75, total_steps=100,
                      anneal_unit="step", draw="sample", seed=0)
    _, lam, cut = tr.sample(4000, (16, 16), step=0)
    assert abs(float(cut.float().mean()) - 0.5) < 0.04
    assert abs(float(lam[0].mean()) - 0.5) < 0.03  # symmetric Dirichlet(2, 2), rectangle member at random
    _, _, cut = tr.sample(4000, (16, 16), step=90)  # after the annealing window: Linear only
    assert not bool(cut.any())
    assert cut_probability(0.25, 0.5, 0.0, 0.5, 0.75) == 0.5
    assert math.isclose(cut_probability(0.625, 0.5, 0.0, 0.5, 0.75), 0.25)
    assert cut_probability(0.8, 0.5, 0.1, 0.5, 0.75) == 0.1
    assert [tr.cut_probability(s) for s in (0, 50, 75, 99)] == [0.5, 0.5, 0.0, 0.0]
    lin = MixMoTrainer(2, 5, mixing="linear", seed=0)
    mix, lam, cut = lin.sample(100, (8, 8))
    assert not bool(cut.any()) and mix.coeffs.shape == (2, 100, 1, 1, 1)
    torch.testing.assert_close(mix.coeffs.view(2, 100), 2 * lam)
    # lambda ~ Dirichlet(alpha): mean 1/M, variance (1/M)(1-1/M)/(M alpha + 1)
    lin3 = MixMoTrainer(3, 5, mixing="linear", alpha=2.0, seed=0)
    _, lam3, _ = lin3.sample(20000, (8, 8))
    torch.testing.assert_close(lam3.sum(0), torch.ones(20000))
    assert abs(float(lam3.mean()) - 1 / 3) < 0.01
    assert abs(float(lam3[0].var()) - (1 / 3) * (2 / 3) / 7) < 0.004


@pytest.mark.parametrize("official", [False, True])
def test_trainer_state_dict_resumes_the_same_draws(official):
    from pretrain.mixing import build_mixer
    cutmix = build_mixer({"name": "none" if official else "cutmix", "prob": 0.5, "label_smoothing": 0.0}, 5, seed=3)
    tr = MixMoTrainer(2, 5, mixing="cut", batch_repeat=2, input_mixer=cutmix, seed=7, cut_prob=1.0,
                      cutmix_prob=0.5 if official else 0.0)
    tr.model = build_mixmo_wrn(5, 2, depth=10, widen_factor=1)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    tr.prepare(images, labels)  # advance
    state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tr.state_dict().items()}
    import copy
    state = copy.deepcopy(state)
    first = [tr.prepare(images, labels) for _ in range(3)]
    tr.load_state_dict(state)
    again = [tr.prepare(images, labels) for _ in range(3)]
    for a, b in zip(first, again):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2].coeffs, b[2].coeffs)
        assert torch.equal(a[3], b[3])
    assert not torch.equal(first[0][2].coeffs, first[1][2].coeffs)  # the draws do change from step to step


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="Cut-MixMo .* needs mixmo.num_members=2, got 1"):
        MixMoTrainer(1, 5, mixing="cut")
    with pytest.raises(ValueError, match="got 3 .*use mixmo.mixing=linear"):
        MixMoTrainer(3, 5, mixing="cut")
    with pytest.raises(ValueError, match="mixing=none .*num_members=1, got 2"):
        MixMoTrainer(2, 5, mixing="none")
    with pytest.raises(ValueError, match="alpha"):
        MixMoTrainer(2, 5, mixing="linear", alpha=0)
    with pytest.raises(ValueError, match="batch_repeat"):
        MixMoTrainer(2, 5, mixing="linear", batch_repeat=0)
    with pytest.raises(ValueError, match="anneal"):
        MixMoTrainer(2, 5, anneal_start=0.9, anneal_end=0.5)
    from pretrain.mixing import build_mixer
    with pytest.raises(ValueError, match="input mixing supports"):
        MixMoTrainer(2, 5, input_mixer=build_mixer({"name": "transmix"}, 5, seed=0))
    net = build_mixmo_wrn(5, 2, depth=10, widen_factor=1)
    tr = MixMoTrainer(2, 5, seed=0)
    with pytest.raises(RuntimeError, match="model is not set"):
        tr.prepare(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    tr.model = net
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) images and \(B,\) labels"):
        tr.prepare(torch.randn(4, 3, 32, 32), torch.zeros(3, dtype=torch.long))
    mix, _, _ = tr.sample(4, (32, 32))
    with pytest.raises(ValueError, match=r"must be \(M=2, B, C, H, W\)"):
        net(torch.randn(4, 3, 32, 32), mix=mix)


# ---- the official code's behaviour (alexrame/mixmo-pytorch), re-stated slowly -----------------------------
def official_cut_prob(epoch1: int, nb_epochs: int, p: float = 0.5) -> float:
    """``MixMoDataset.get_mixmo_mix_method_at_ratio_epoch`` with ratio = epoch / nb_epochs (1-based epochs,
    scripts/train.py) and RATIO_EPOCH_DECREASE = 11/12 (mixmo/utils/config.py)."""
    ratio = epoch1 / nb_epochs
    if ratio < 11 / 12:
        return p
    return p * max(0.0, (1 - ratio) / (1 - 11 / 12))


def test_cut_probability_follows_the_official_per_epoch_schedule():
    epochs, per_epoch = 300, 7
    tr = MixMoTrainer(2, 5, total_steps=epochs * per_epoch, epochs=epochs, seed=0)  # the defaults are official
    for e0 in (0, 100, 273, 274, 275, 276, 290, 298, 299):
        ref = official_cut_prob(e0 + 1, epochs)
        for s in (e0 * per_epoch, e0 * per_epoch + per_epoch // 2, e0 * per_epoch + per_epoch - 1):
            assert math.isclose(tr.cut_probability(s), ref, abs_tol=1e-12), (e0, s)
    # by hand: 0.5 through the 275th epoch, then 0.5 * 12 (1 - e / 300): 0.48 in the 276th, 0 in the 300th
    assert tr.cut_probability(274 * per_epoch) == pytest.approx(0.5, abs=1e-12)
    assert tr.cut_probability(275 * per_epoch) == pytest.approx(0.48, abs=1e-12)
    assert tr.cut_probability(290 * per_epoch) == pytest.approx(0.5 * 12 * 9 / 300, abs=1e-12)
    assert tr.cut_probability(299 * per_epoch) == 0.0
    # this project's former per-step window stays reachable
    st = MixMoTrainer(2, 5, total_steps=1000, anneal_start=0.8, anneal_unit="step", seed=0)
    assert st.cut_probability(800) == 0.5 and math.isclose(st.cut_probability(900), 0.25)
    assert st.cut_probability(801) < 0.5  # per step, not constant over an epoch


def test_cut_choice_and_rectangle_holder_are_drawn_per_batch(monkeypatch):
    import pretrain.mixmo.mixing as mm
    holders = []
    real = mm.cut_masks

    def spy(lam0, grid, g, rect, **kw):
        holders.append(rect.clone())
        return real(lam0, grid, g, rect, **kw)

    monkeypatch.setattr(mm, "cut_masks", spy)
    tr = MixMoTrainer(2, 5, cut_prob=0.5, seed=1)  # draw="batch" by default
    cuts = []
    for _ in range(400):
        _, _, cut = tr.sample(16, (8, 8))
        assert bool(cut.all()) or not bool(cut.any())  # one choice for the whole batch
        cuts.append(bool(cut[0]))
    assert 0.42 < np.mean(cuts) < 0.58
    assert len(holders) == sum(cuts)
    assert all(bool((h == h[0]).all()) for h in holders)  # one rectangle holder per batch
    assert 0.38 < np.mean([int(h[0]) for h in holders]) < 0.62
    holders.clear()
    per_sample = MixMoTrainer(2, 5, cut_prob=0.5, draw="sample", seed=1)
    _, _, cut = per_sample.sample(400, (8, 8))
    assert 100 < int(cut.sum()) < 300
    assert 0 < int(holders[0].sum()) < 400


def test_even_box_rule_is_the_official_rectangle():
    """Official ``_rand_bbox_of_area_lam``: c = int(H sqrt(lam)), uniform centre, corners centre -/+ c // 2."""
    n, (h, w) = 300, (32, 24)
    share = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    boxes = box_rule_boxes((h, w), share, torch.Generator().manual_seed(3), "even")
    u = torch.rand(2, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # the same centres
    for i in range(n):
        ch, cw = int(h * math.sqrt(float(share[i]))), int(w * math.sqrt(float(share[i])))
        cy, cx = int(float(u[0, i]) * h), int(float(u[1, i]) * w)
        ref = (min(max(cy - ch // 2, 0), h), min(max(cy + ch // 2, 0), h),
               min(max(cx - cw // 2, 0), w), min(max(cx + cw // 2, 0), w))
        assert tuple(int(v) for v in boxes[i]) == ref, i
    # an unclipped box has 2 (c // 2) rows: for share 0.3 on 32x32, c = 17 -> 16 x 16 = 0.25 of the grid at
    # most, where the exact rule reaches 17 x 17 = 0.282
    s3 = torch.full((2000,), 0.3, dtype=torch.float64)
    area = lambda bx: ((bx[:, 1] - bx[:, 0]) * (bx[:, 3] - bx[:, 2])).double() / 1024  # noqa: E731
    even = area(box_rule_boxes((32, 32), s3, torch.Generator().manual_seed(1), "even"))
    exact = area(box_rule_boxes((32, 32), s3, torch.Generator().manual_seed(1), "exact"))
    assert float(even.max()) == 0.25 and float(exact.max()) == 289 / 1024
    # the realised share of Cut-MixMo follows the rule (the default is the official one)
    rect = torch.zeros(50, dtype=torch.long)
    _, share0 = cut_masks(torch.full((50,), 0.3, dtype=torch.float64), (32, 32), torch.Generator().manual_seed(2), rect)
    assert float(share0.max()) == 0.25


def _slow_official_cutmix(images, labels, idx, keep, rng, gen, prob, alpha, k):
    """``MSDADataset.call_msda`` per sample with the trainer's draws (in the same order), written with loops."""
    b, _, hh, ww = images.shape
    n = idx.shape[0]
    apply = rng.random(n) < prob
    shift = rng.integers(1, b, size=n)
    lam_draw = rng.dirichlet((alpha, alpha), size=n)[:, 0]
    u = torch.rand(2, n, generator=gen, dtype=torch.float64)
    out_x, out_t, out_lam, swaps = images[idx].clone(), torch.zeros(n, k), [], []
    for i in range(n):
        own = int(idx[i])
        partner = (own + int(shift[i])) % b
        if not apply[i]:
            out_t[i, labels[own]] = 1.0
            out_lam.append(1.0)
            swaps.append(None)
            continue
        ch, cw = int(hh * math.sqrt(lam_draw[i])), int(ww * math.sqrt(lam_draw[i]))
        cy, cx = int(float(u[0, i]) * hh), int(float(u[1, i]) * ww)
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, hh)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, ww)
        box = [[1.0 if (y0 <= y < y1 and x0 <= x < x1) else 0.0 for x in range(ww)] for y in range(hh)]
        if keep is None:
            lam = sum(map(sum, box)) / (hh * ww)
            swap = False
        else:  # the box averaged over each grid cell, then mean(box * mask) / mean(mask)
            gh, gw = keep.shape[-2:]
            fy, fx = hh // gh, ww // gw
            num = den = 0.0
            for gy in range(gh):
                for gx in range(gw):
                    cell = sum(box[gy * fy + a][gx * fx + c] for a in range(fy) for c in range(fx)) / (fy * fx)
                    num += cell * float(keep[i, 0, gy, gx])
                    den += float(keep[i, 0, gy, gx])
            lam = num / den if den > 0 else 0.0
            swap = lam < 0.5
            if swap:
                lam = 1.0 - lam
        for y in range(hh):
            for x in range(ww):
                from_own = (box[y][x] == 1.0) != swap
                out_x[i, :, y, x] = images[own if from_own else partner, :, y, x]
        out_t[i, labels[own]] += lam
        out_t[i, labels[partner]] += 1.0 - lam
        out_lam.append(lam)
        swaps.append(swap)
    return out_x, out_t, torch.tensor(out_lam, dtype=torch.float64), swaps


@pytest.mark.parametrize("stride", [1, 2])
def test_input_cutmix_recomputes_lambda_over_the_kept_region_and_swaps_roles(stride):
    import copy
    b, n, k, hh = 6, 60, 5, 8
    gh = hh // stride
    images = (torch.arange(b).float().view(b, 1, 1, 1) * 100 + torch.arange(hh * hh).float().view(1, 1, hh, hh))
    images = images.expand(b, 2, hh, hh).contiguous()  # every pixel of every image distinct
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    idx = torch.from_numpy(np.random.default_rng(0).integers(0, b, n))
    g = torch.Generator().manual_seed(4)
    keep = torch.zeros(n, 1, gh, gh)
    for i in range(n):  # Cut-MixMo masks (rectangles or their complements) and Linear-MixMo constants
        if i % 3 == 2:
            keep[i] = float(torch.rand(1, generator=g))
            continue
        y0, x0 = (int(v) for v in torch.randint(0, gh, (2,), generator=g))
        y1, x1 = (int(v) for v in torch.randint(1, gh + 1, (2,), generator=g))
        keep[i, 0, min(y0, y1 - 1):y1, min(x0, x1 - 1):x1] = 1.0
        if i % 3 == 1:
            keep[i] = 1.0 - keep[i]
    rng, gen = np.random.default_rng(5), torch.Generator().manual_seed(9)
    rng_ref, gen_ref = copy.deepcopy(rng), torch.Generator()
    gen_ref.set_state(gen.get_state())
    x, t, lam = cutmix_inputs(images, labels, idx, k, rng, gen, prob=0.7, alpha=1.0, keep_mask=keep)
    rx, rt, rlam, swaps = _slow_official_cutmix(images, labels, idx, keep, rng_ref, gen_ref, 0.7, 1.0, k)
    assert torch.equal(x, rx)
    torch.testing.assert_close(lam, rlam, rtol=0, atol=1e-12)
    torch.testing.assert_close(t, rt, rtol=0, atol=1e-6)
    applied = [s for s in swaps if s is not None]
    assert 20 < len(applied) < n and any(applied) and not all(applied)  # CutMix per sample, both roles seen
    assert bool((lam >= 0.5).all())  # the own image covers at least half of what the MixMo mask keeps
    # one network (no MixMo mask): the box's own area, no swap
    rng, gen = np.random.default_rng(5), torch.Generator().manual_seed(9)
    rng_ref, gen_ref = copy.deepcopy(rng), torch.Generator()
    gen_ref.set_state(gen.get_state())
    x1, t1, lam1 = cutmix_inputs(images, labels, idx, k, rng, gen, prob=0.7, alpha=1.0, keep_mask=None)
    rx1, rt1, rlam1, _ = _slow_official_cutmix(images, labels, idx, None, rng_ref, gen_ref, 0.7, 1.0, k)
    assert torch.equal(x1, rx1) and torch.allclose(lam1, rlam1) and torch.allclose(t1, rt1, atol=1e-6)
    assert bool((lam1 < 0.5).any())


def test_trainer_uses_the_official_input_cutmix_against_its_mixmo_masks():
    """Inside the trainer, each member's CutMix lambda is the share of its own image in the region the MixMo
    coefficient map gives it, and the loss weights stay those of the MixMo mask."""
    net = build_mixmo_wrn(6, 2, depth=10, widen_factor=1)
    tr = MixMoTrainer(2, 6, cut_prob=1.0, batch_repeat=2, cutmix_prob=1.0, seed=2)
    tr.model = net
    images = torch.arange(6).float().view(6, 1, 1, 1) * 2000 + torch.arange(32 * 32).float().view(1, 1, 32, 32)
    images = images.expand(6, 3, 32, 32).contiguous()
    labels = torch.arange(6)  # image j has label j
    x, targets, mix, lam = tr.prepare(images, labels)
    assert x.shape == (2, 12, 3, 32, 32) and targets.shape == (2, 12, 6)
    own_img = (x[..., 0, :, :] // 2000).long()  # (M, N, 32, 32): which loader image every pixel came from
    for k in range(2):
        keep = mix.coeffs[k, :, 0] / 2  # (N, 32, 32) binary
        torch.testing.assert_close(keep.mean((1, 2)), lam[k].float(), rtol=0, atol=1e-6)
        for i in range(12):
            counts = torch.bincount(own_img[k, i][keep[i] > 0], minlength=6).double()
            if counts.sum() == 0:
                continue
            top = int(counts.argmax())
            share = float(counts[top] / counts.sum())
            assert share >= 0.5  # the own image holds at least half of the kept region
            assert math.isclose(float(targets[k, i, top]), share, abs_tol=1e-6)  # the recomputed CutMix lambda
            torch.testing.assert_close(targets[k, i].sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="mix the inputs twice"):
        from pretrain.mixing import build_mixer
        MixMoTrainer(2, 5, cutmix_prob=0.5, input_mixer=build_mixer({"name": "cutmix"}, 5, seed=0))
