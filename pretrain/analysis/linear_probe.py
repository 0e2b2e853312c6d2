"""Linear probe: how well a frozen backbone's features tell the classes apart.

The standard transfer measure of self-supervised and pretraining studies (e.g. "Emerging
Properties in Self-Supervised Vision Transformers", Caron et al., ICCV 2021,
arXiv:2104.14294, linear evaluation): the backbone is frozen, its pre-logit features
(timm ``forward_head(pre_logits=True)``: the CLS token after the final norm for DeiT) are
extracted once, and a multinomial logistic regression is fitted on the training split and
scored on the validation split. Ours: full-batch L-BFGS on standardised features with a
small L2 penalty instead of SGD with augmentation, so that the probe is deterministic and
takes seconds on a CPU for a few thousand images.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["extract_features", "fit_logistic", "probe_top1", "folder_loaders", "model_probe_top1"]


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader, device: torch.device | str = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """Pre-logit features ``(N, D)`` float32 and labels ``(N,)`` of every batch ``(images, labels)``."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for batch in loader:
        if batch is None:
            continue
        images = batch[0].to(device)
        feats.append(model.forward_head(model.forward_features(images), pre_logits=True).float().cpu())
        labels.append(batch[1].cpu())
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-4,
                 max_iter: int = 300) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on ``x`` (N, D) with labels ``y`` (N,).

    Minimises mean cross-entropy + ``weight_decay / 2 * ||W||^2`` on features standardised
    with the training mean and std. Returns ``(W (C, D), b (C,), mean (D,), std (D,))``;
    logits of new features ``z`` are ``((z - mean) / std) @ W.T + b``.
    """
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach(), mean, std


def probe_top1(train: Tuple[torch.Tensor, torch.Tensor], val: Tuple[torch.Tensor, torch.Tensor],
               num_classes: int, weight_decay: float = 1e-4) -> float:
    """Top-1 (%) on ``val`` of the probe fitted on ``train``; both are ``(features, labels)``."""
    w, b, mean, std = fit_logistic(*train, num_classes, weight_decay)
    logits = ((val[0].double() - mean) / std) @ w.T + b
    return 100.0 * (logits.argmax(1) == val[1]).double().mean().item()


def folder_loaders(data_cfg, batch_size: int = 64):
    """``(train, val)`` loaders of an ImageNet-style folder (``data.train_split`` / ``data.val_split``)
    with the evaluation transform: the probe's inputs, unaugmented."""
    from torch.utils.data import DataLoader

    from ..data.folders import build_folder_dataset

    return tuple(DataLoader(build_folder_dataset(data_cfg, data_cfg[k], train=False), batch_size=batch_size)
                 for k in ("train_split", "val_split"))


def model_probe_top1(model: torch.nn.Module, loaders, num_classes: int, weight_decay: float = 1e-4) -> float:
    """Top-1 (%) of the probe on ``model``'s frozen features: fitted on ``loaders[0]``, scored on ``loaders[1]``."""
    return probe_top1(extract_features(model, loaders[0]), extract_features(model, loaders[1]), num_classes,
                      weight_decay)
