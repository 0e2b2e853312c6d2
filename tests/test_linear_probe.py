"""The linear probe (pretrain/analysis/linear_probe.py): the fitted regression is the optimum of its
objective (gradient restated in numpy), it separates separable classes, and features come from the
frozen model's pre-logits."""
from __future__ import annotations

import numpy as np
import torch

from pretrain.analysis.linear_probe import extract_features, fit_logistic, probe_top1


def _blobs(n_per: int, k: int, d: int, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 3.0
    y = torch.arange(k).repeat_interleave(n_per)
    return centres[y] + spread * torch.randn(len(y), d, generator=g), y


def test_fit_is_the_optimum_of_penalised_cross_entropy():
    x, y = _blobs(40, 4, 6, 2.0, 0)  # overlapping: the optimum is finite
    wd = 1e-2
    w, b, mean, std = fit_logistic(x, y, 4, weight_decay=wd)
    z = ((x.double() - mean) / std).numpy()
    np.testing.assert_allclose(mean.numpy(), x.double().numpy().mean(0), rtol=1e-12)
    logits = z @ w.numpy().T + b.numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(4)[y.numpy()]
    grad_w = (p - onehot).T @ z / len(y) + wd * w.numpy()
    grad_b = (p - onehot).mean(0)
    assert np.abs(grad_w).max() < 1e-6 and np.abs(grad_b).max() < 1e-6
    # and a perturbed solution has a higher objective
    def objective(wm, bm):
        lg = z @ wm.T + bm
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        return (lse - lg[np.arange(len(y)), y.numpy()]).mean() + 0.5 * wd * (wm ** 2).sum()
    assert objective(w.numpy(), b.numpy()) < objective(w.numpy() + 1e-2, b.numpy())


def test_separable_classes_are_all_told_apart_and_chance_stays_chance():
    train, val = _blobs(30, 5, 8, 0.3, 1), _blobs(10, 5, 8, 0.3, 1)
    assert probe_top1(train, val, 5) == 100.0
    g = torch.Generator().manual_seed(2)
    noise_train = (torch.randn(200, 8, generator=g), torch.randint(0, 5, (200,), generator=g))
    noise_val = (torch.randn(400, 8, generator=g), torch.randint(0, 5, (400,), generator=g))
    assert probe_top1(noise_train, noise_val, 5) < 35.0  # labels unrelated to the features: about 20%


def test_features_are_the_models_pre_logits():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=3)
    images = torch.randn(6, 3, 32, 32)
    loader = [(images[:4], torch.tensor([0, 1, 2, 0])), None, (images[4:], torch.tensor([1, 2]))]
    model.train()
    x, y = extract_features(model, loader)
    assert model.training and x.shape == (6, model.embed_dim) and y.tolist() == [0, 1, 2, 0, 1, 2]
    model.eval()
    with torch.no_grad():
        want = model.forward_features(images)[:, 0]  # the CLS token after the final norm
    torch.testing.assert_close(x, want)
    torch.testing.assert_close(model.head(x), model(images), rtol=1e-5, atol=1e-5)
