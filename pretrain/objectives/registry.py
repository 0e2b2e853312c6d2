"""Objectives by name. Entries are ``"module:Class"`` strings imported on first use, so that the engine
and the config loader name no method; :func:`register` adds one (a class or such a string).

A config selects its objective with the top-level key ``objective``. When that is null, an objective whose
config section holds ``enabled: true`` is selected (``mixmo.enabled: true``, the spelling of configs and
saved run configs written before the key existed), else :data:`DEFAULT`.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Type, Union

from .base import Objective

DEFAULT = "classification"

_REGISTRY: Dict[str, Union[str, Type[Objective]]] = {
    "classification": "pretrain.objectives.classification:ClassificationObjective",
    "mixmo": "pretrain.mixmo.objective:MixMoObjective",
}


def register(name: str, target: Union[str, Type[Objective]]) -> None:
    """Register an objective class (or its ``"module:Class"`` path) under ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"objective name must be a non-empty string, got {name!r}")
    _REGISTRY[name] = target


def available_objectives() -> List[str]:
    return sorted(_REGISTRY)


def objective_class(name: str) -> Type[Objective]:
    """The class registered under ``name`` (imported now if needed); ValueError for unknown names."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective '{name}'; available: {', '.join(available_objectives())}")
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = target
    return target


def config_sections() -> Dict[str, Dict[str, Any]]:
    """``{section: defaults}`` of every registered objective that owns a config section (registration order)."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in list(_REGISTRY):
        cls = objective_class(name)
        if cls.config_section:
            out[cls.config_section] = cls.config_defaults
    return out


def resolve_objective(cfg: Dict[str, Any]) -> str:
    """The objective a config selects (see the module docstring); ValueError when it names an unknown one
    or contradicts an ``enabled: true`` section."""
    name: Optional[str] = cfg.get("objective")
    flagged = [n for n in list(_REGISTRY) if _enabled(cfg, objective_class(n))]
    if name in (None, ""):
        if len(flagged) > 1:
            raise ValueError(f"several objectives are enabled ({', '.join(flagged)}); set objective: <name>")
        return flagged[0] if flagged else DEFAULT
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"objective must be one of {available_objectives()} (or null), got {name!r}")
    others = [n for n in flagged if n != name]
    if others:
        section = objective_class(others[0]).config_section
        raise ValueError(f"objective: {name} contradicts {section}.enabled=true (set one of them)")
    return name


def _enabled(cfg: Dict[str, Any], cls: Type[Objective]) -> bool:
    section = cfg.get(cls.config_section) if cls.config_section else None
    return isinstance(section, dict) and bool(section.get("enabled"))


def build_objective(cfg: Dict[str, Any], seed: Optional[int] = None) -> Objective:
    """The objective of a loaded config (``cfg["objective"]``, resolved by the config loader)."""
    return objective_class(resolve_objective(cfg)).from_config(cfg, seed=seed)
