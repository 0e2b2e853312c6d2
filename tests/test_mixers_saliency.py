"""SaliencyMix, Attentive-CutMix and Puzzle-Mix against slow, obviously-correct references."""
import itertools
import math

import numpy as np
import pytest
import timm
import torch

from pretrain.mixing import build_mixer
from pretrain.mixing.attentive_cutmix import topk_cell_mask
from pretrain.mixing.puzzlemix import gradient_saliency, mask_energy, optimize_mask, unary_costs
from pretrain.mixing.saliencymix import spectral_residual_saliency
from pretrain.models.vit import create_vit


# ---- SaliencyMix ----------------------------------------------------------------------------------
def slow_spectral_residual(img, size=64, sigma=2.5):
    """numpy version with explicit loops for the filters (reflect padding as numpy's 'reflect')."""
    g = torch.nn.functional.interpolate(img.float().mean(0)[None, None], size=(size, size), mode="bilinear",
                                        align_corners=False)[0, 0].double().numpy()
    spec = np.fft.fft2(g)
    log_amp = np.log(np.abs(spec) + 1e-8)
    pad = np.pad(log_amp, 1, mode="reflect")
    smooth = np.zeros_like(log_amp)
    for i in range(size):
        for j in range(size):
            smooth[i, j] = pad[i:i + 3, j:j + 3].mean()
    sal = np.abs(np.fft.ifft2(np.exp(log_amp - smooth) * np.exp(1j * np.angle(spec)))) ** 2
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(sal, r, mode="reflect")
    tmp = np.array([[np.dot(pad[i + r, j:j + 2 * r + 1], k) for j in range(size)] for i in range(-r, size + r)])
    out = np.array([[np.dot(tmp[i:i + 2 * r + 1, j], k) for j in range(size)] for i in range(size)])
    return out / out.max()


def test_spectral_residual_matches_numpy_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40, 56)
    x[:, :, 10:18, 30:40] += 4.0  # a salient blob
    fast = spectral_residual_saliency(x, size=32)
    for i in range(2):
        ref = slow_spectral_residual(x[i], size=32)
        np.testing.assert_allclose(fast[i].double().numpy(), ref, rtol=2e-3, atol=2e-4)


def test_saliencymix_box_is_centred_on_the_partner_peak_and_pixels_are_exact():
    torch.manual_seed(0)
    b, h, w = 6, 48, 64
    x = torch.randn(b, 3, h, w) * 0.1
    peaks = [(8, 10), (40, 50), (24, 32), (5, 60), (44, 4), (20, 20)]
    for i, (py, px) in enumerate(peaks):
        x[i, :, py - 2:py + 2, px - 2:px + 2] += 6.0
    mixer = build_mixer({"name": "saliencymix"}, 4, seed=0)
    batch = mixer(x, torch.arange(b) % 4)
    for i in range(b):
        m = batch.mask[i, 0]
        ys, xs = torch.nonzero(m, as_tuple=True)
        py, px = peaks[b - 1 - i]  # the partner's salient spot
        if len(ys):
            assert ys.min() <= py <= ys.max() + 1 and xs.min() <= px <= xs.max() + 1
    mm = batch.mask.bool().expand_as(x)
    assert torch.equal(batch.images[mm], x.flip(0)[mm]) and torch.equal(batch.images[~mm], x[~mm])
    torch.testing.assert_close(batch.lam, 1 - batch.mask.flatten(1).mean(1))


# ---- Attentive-CutMix -----------------------------------------------------------------------------
def test_attentive_cutmix_pastes_the_partners_topk_cells():
    torch.manual_seed(0)
    cnn = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    mixer = build_mixer({"name": "attentive_cutmix", "model": cnn, "k": 6}, 3, seed=0)
    x = torch.randn(4, 3, 224, 224)
    batch = mixer(x, torch.arange(4) % 3)
    with torch.no_grad():
        att = cnn.forward_features(x).mean(1)  # 4, 7, 7
    for i in range(4):
        j = 3 - i
        order = sorted(range(49), key=lambda c: -float(att[j].flatten()[c]))[:6]
        cells = torch.zeros(49)
        cells[order] = 1
        ref = cells.view(7, 7).repeat_interleave(32, 0).repeat_interleave(32, 1)
        assert torch.equal(batch.mask[i, 0], ref)
    torch.testing.assert_close(batch.lam, torch.full((4,), 1 - 6 / 49))
    mm = batch.mask.bool().expand_as(x)
    assert torch.equal(batch.images[mm], x.flip(0)[mm]) and torch.equal(batch.images[~mm], x[~mm])
    with pytest.raises(ValueError, match="k = 50 cells"):
        topk_cell_mask(att, 50)
    with pytest.raises(ValueError, match="got a ViT"):
        build_mixer({"name": "attentive_cutmix", "model": create_vit("deit_tiny_patch16_224", 3, img_size=32,
                                                                     patch_size=8, depth=1)}, 3)


# ---- Puzzle-Mix -----------------------------------------------------------------------------------
def slow_icm(c0, c1, beta, iters):
    """Red-black ICM, one block at a time."""
    n, m = c0.shape
    z = [[1 if c1[i, j] < c0[i, j] else 0 for j in range(m)] for i in range(n)]
    for _ in range(iters):
        for colour in (0, 1):
            old = [row[:] for row in z]
            for i in range(n):
                for j in range(m):
                    if (i + j) % 2 != colour:
                        continue
                    nb = [old[a][b] for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
                          if 0 <= a < n and 0 <= b < m]
                    ones = sum(nb)
                    zeros = len(nb) - ones
                    z[i][j] = 1 if c1[i, j] + beta * zeros < c0[i, j] + beta * ones else 0
    return torch.tensor(z, dtype=torch.float32)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (8, 8)])
def test_mask_optimisation_matches_slow_icm_and_never_raises_energy(shape):
    g = torch.Generator().manual_seed(0)
    b = 5
    s_own = torch.rand(b, *shape, generator=g) * 2
    s_par = torch.rand(b, *shape, generator=g) * 2
    lam = torch.rand(b, generator=g, dtype=torch.float64)
    c0, c1 = unary_costs(s_own, s_par, lam)
    # the unary optimum pastes exactly round((1 - lam) * n * m) blocks: those where the partner is most salient
    z0 = (c1 < c0).float()
    p = shape[0] * shape[1]
    for i in range(b):
        k = round((1 - float(lam[i])) * p)
        assert int(z0[i].sum()) == k
        d = (s_par[i] - s_own[i]).flatten()
        top = set(sorted(range(p), key=lambda t: -float(d[t]))[:k])
        assert set(torch.nonzero(z0[i].flatten()).flatten().tolist()) == top
    for beta in (0.0, 0.3, 1.0):
        z = optimize_mask(c0, c1, beta, iters=3)
        for i in range(b):
            assert torch.equal(z[i], slow_icm(c0[i], c1[i], beta, 3))
        e0, e1 = mask_energy(z0, c0, c1, beta), mask_energy(z, c0, c1, beta)
        assert bool((e1 <= e0 + 1e-5).all())
    # exhaustive check of the energy function on a 2x3 grid
    c0s, c1s = c0[:1, :2, :3], c1[:1, :2, :3]
    for bits in itertools.product([0, 1], repeat=6):
        z = torch.tensor(bits, dtype=torch.float32).view(1, 2, 3)
        unary = sum(float(c1s[0, i, j]) if z[0, i, j] else float(c0s[0, i, j]) for i in range(2) for j in range(3))
        cuts = sum(z[0, i, j] != z[0, i + 1, j] for i in range(1) for j in range(3)) + \
            sum(z[0, i, j] != z[0, i, j + 1] for i in range(2) for j in range(2))
        torch.testing.assert_close(mask_energy(z, c0s, c1s, 0.7), torch.tensor([unary + 0.7 * float(cuts)]))


def test_gradient_saliency_matches_per_sample_gradients_and_leaves_params_alone():
    torch.manual_seed(0)
    model = create_vit("deit_tiny_patch16_224", 3, img_size=(16, 24), patch_size=8, depth=1).eval()
    x, y = torch.randn(3, 3, 16, 24), torch.tensor([0, 2, 1])
    sal = gradient_saliency(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xi), y[i:i + 1]) / 3  # share of the batch mean
        loss.backward()
        ref = xi.grad[0].pow(2).mean(0).sqrt()
        torch.testing.assert_close(sal[i], ref, rtol=1e-4, atol=1e-9)


def test_puzzlemix_mixes_by_the_block_mask():
    torch.manual_seed(0)
    model = create_vit("deit_tiny_patch16_224", 4, img_size=(32, 48), patch_size=8, depth=1)
    mixer = build_mixer({"name": "puzzlemix", "block_counts": [4, 8]}, 4, seed=0)
    x = torch.randn(6, 3, 32, 48)
    batch = mixer(x, torch.arange(6) % 4, model=model)
    n = batch.aux["blocks"].shape[1]
    assert n in (4, 8)
    mm = batch.mask.bool().expand_as(x)
    assert torch.equal(batch.images[mm], x.flip(0)[mm]) and torch.equal(batch.images[~mm], x[~mm])
    torch.testing.assert_close(batch.lam, 1 - batch.aux["blocks"].flatten(1).mean(1))
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="needs the model"):
        mixer(x, torch.arange(6) % 4)
    with pytest.raises(ValueError, match="divides the image size"):
        build_mixer({"name": "puzzlemix", "block_counts": [5]}, 4)(x, torch.arange(6) % 4, model=model)
