"""Sample-mixing methods for ViT pretraining, built by name from a config dict.

Each mixer is called as ``batch = mixer(images, labels, model=model, extras=extras)`` and gives
soft targets through ``mixer.targets(batch, attention)`` and the loss through
``mixer.loss(logits, targets)``; ``mixer.needs_attention`` says whether it wants the model's
last-block CLS attention on the patch grid. See :class:`pretrain.mixing.base.Mixer` and
docs/mixers.md; each method's module cites its paper, and docs/references.md lists them all.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict

from ..values import as_number, kind_of
from .attentive_cutmix import AttentiveCutMix
from .base import MixedBatch, Mixer, mix_targets, soft_target_cross_entropy
from .cutmix import MixupCutMix
from .puzzlemix import PuzzleMix
from .saliencymix import SaliencyMix
from .tokenmix import TokenMix
from .transmix import TransMix, transmix_lambda

# name -> (class, defaults). Defaults follow the DeiT/TransMix recipes.
_REGISTRY: Dict[str, tuple] = {
    "none": (MixupCutMix, dict(mixup_alpha=0.0, cutmix_alpha=0.0)),
    "mixup": (MixupCutMix, dict(mixup_alpha=0.8, cutmix_alpha=0.0)),
    "cutmix": (MixupCutMix, dict(mixup_alpha=0.0, cutmix_alpha=1.0)),
    "mixup_cutmix": (MixupCutMix, dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)),
    "transmix": (TransMix, dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)),
    "tokenmix": (TokenMix, dict(mixup_alpha=0.8, switch_prob=0.5)),
    "saliencymix": (SaliencyMix, dict(alpha=1.0)),
    "attentive_cutmix": (AttentiveCutMix, dict(k=6)),
    "puzzlemix": (PuzzleMix, dict(alpha=1.0)),
}


def _init_options(cls) -> set:
    """Keyword options of a mixer class, following ``**kwargs`` up the class hierarchy."""
    allowed = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        allowed |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return allowed - {"self", "num_classes", "seed"}


def _mro_init_params(cls):
    """``(name, inspect.Parameter)`` of every ``__init__`` along the class's MRO, nearest class first."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            yield from inspect.signature(klass.__init__).parameters.items()


def _init_defaults(cls) -> Dict[str, Any]:
    """Default values of the mixer class's keyword options (the nearest class that states one wins)."""
    out: Dict[str, Any] = {}
    for n, p in _mro_init_params(cls):
        if p.default is not p.empty and n not in out:
            out[n] = p.default
    return out


def _nullable(cls) -> set:
    """Keyword options of a mixer class annotated as accepting None (``Optional[...]``, ``X | None``)."""
    out = set()
    for n, p in _mro_init_params(cls):
        text = str(p.annotation)  # a string: the modules use postponed annotations
        if text.startswith("Optional[") or "None" in [t.strip() for t in text.split("|")]:
            out.add(n)
    return out


def _checked_value(name: str, key: str, value: Any, default: Any, nullable: bool = False) -> Any:
    """``value`` of option ``mixer.<key>`` against the type of its default: numbers written as strings are
    read as numbers; None where the option admits it; a value of the wrong type is a ValueError naming
    the key, the value and the type."""
    if value is None and nullable:
        return None
    if isinstance(default, bool):
        if isinstance(value, bool) or value in (0, 1) and not isinstance(value, str):
            return bool(value)
        raise ValueError(f"mixer.{key} (mixer '{name}') must be true or false, got {value!r}")
    if isinstance(default, (int, float)):
        number = as_number(value)
        if number is None:
            raise ValueError(f"mixer.{key} (mixer '{name}') must be a number (like {default}), "
                             f"got {value!r} ({kind_of(value)})")
        whole = isinstance(default, int) and isinstance(number, float) and number.is_integer()
        return int(number) if whole else number
    return value


def available_mixers():
    return sorted(_REGISTRY)


def mixer_options(cfg: Dict[str, Any]):
    """``(name, class, keyword options)`` of a mixer config ``{'name': ..., **options}``, checked without
    building anything: unknown names or options, and option values of the wrong type (against the type of
    their defaults; numbers written as strings become numbers), raise ValueError naming ``mixer.<key>``."""
    cfg = dict(cfg or {"name": "none"})
    name = str(cfg.pop("name", "none")).lower()
    if name not in _REGISTRY:
        raise ValueError(f"unknown mixer '{name}'; available: {', '.join(available_mixers())}")
    cls, defaults = _REGISTRY[name]
    kwargs = {**defaults, **cfg}
    allowed = _init_options(cls)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for mixer '{name}'; allowed: {', '.join(sorted(allowed))}")
    defaults_of = _init_defaults(cls)
    nullable = _nullable(cls)
    kwargs = {k: _checked_value(name, k, v, defaults_of[k], k in nullable) if k in cfg and k in defaults_of else v
              for k, v in kwargs.items()}
    return name, cls, kwargs


def build_mixer(cfg: Dict[str, Any], num_classes: int, seed=None):
    """Build a mixer from ``{'name': ..., **options}``; bad names or options raise ValueError
    (:func:`mixer_options`)."""
    name, cls, kwargs = mixer_options(cfg)
    try:
        return cls(num_classes, seed=seed, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad option for mixer '{name}': {exc}") from exc

__all__ = ["AttentiveCutMix", "MixedBatch", "Mixer", "MixupCutMix", "PuzzleMix", "SaliencyMix", "TokenMix",
           "TransMix", "build_mixer", "mixer_options", "available_mixers", "mix_targets",
           "soft_target_cross_entropy", "transmix_lambda"]
