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
    mask0, share0 = cut_masks(lam0, grid, g, rect)
    # reference: the same boxes (CutMix's rule, the rectangle's target area = lambda of the input it
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
    tr = MixMoTrainer(2, 5, mixing="cut", cut_prob=0.5, batch_repeat=1, seed=11)
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
    tr = MixMoTrainer(2, 5, mixing="cut", cut_prob=0.5, anneal_start=0.5, anneal_end=0.75, total_steps=100, seed=0)
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


def test_trainer_state_dict_resumes_the_same_draws():
    from pretrain.mixing import build_mixer
    cutmix = build_mixer({"name": "cutmix", "prob": 0.5, "label_smoothing": 0.0}, 5, seed=3)
    tr = MixMoTrainer(2, 5, mixing="cut", batch_repeat=2, input_mixer=cutmix, seed=7)
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
