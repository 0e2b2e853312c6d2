"""Sample-mixing methods for ViT pretraining, built by name from a config dict.

Each mixer is called as ``batch = mixer(images, labels)`` and gives soft targets through
``mixer.targets(batch, attention)``; ``mixer.needs_attention`` says whether it wants the
model's last-block CLS attention on the patch grid.
"""
from __future__ import annotations

from typing import Any, Dict

from .base import MixedBatch, Mixer, mix_targets, soft_target_cross_entropy
from .cutmix import MixupCutMix
from .transmix import TransMix, transmix_lambda

# name -> (class, defaults). Defaults follow the DeiT/TransMix recipes.
_REGISTRY: Dict[str, tuple] = {
    "none": (MixupCutMix, dict(mixup_alpha=0.0, cutmix_alpha=0.0)),
    "mixup": (MixupCutMix, dict(mixup_alpha=0.8, cutmix_alpha=0.0)),
    "cutmix": (MixupCutMix, dict(mixup_alpha=0.0, cutmix_alpha=1.0)),
    "mixup_cutmix": (MixupCutMix, dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)),
    "transmix": (TransMix, dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)),
}


def available_mixers():
    return sorted(_REGISTRY)


def build_mixer(cfg: Dict[str, Any], num_classes: int, seed=None):
    """Build a mixer from ``{'name': ..., **options}``; unknown names or options raise ValueError."""
    cfg = dict(cfg or {"name": "none"})
    name = str(cfg.pop("name", "none")).lower()
    if name not in _REGISTRY:
        raise ValueError(f"unknown mixer '{name}'; available: {', '.join(available_mixers())}")
    cls, defaults = _REGISTRY[name]
    kwargs = {**defaults, **cfg}
    try:
        return cls(num_classes, seed=seed, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad option for mixer '{name}': {exc}") from exc


__all__ = ["MixedBatch", "Mixer", "MixupCutMix", "TransMix", "build_mixer", "available_mixers", "mix_targets",
           "soft_target_cross_entropy", "transmix_lambda"]
