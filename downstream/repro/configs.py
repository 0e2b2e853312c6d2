"""The configs of the tools a table runs, loaded with the tools' own loaders (so a dry run proves the
overrides are accepted): MMEngine ``Config``, Detectron2 ``LazyConfig`` and the pretraining YAML."""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Sequence

from .errors import ReproError

_MM_CACHE: Dict[Any, Any] = {}


def mm_config(path: str):
    """An MMEngine config, loaded with MMEngine itself (cached per path)."""
    key = (path, os.environ.get("VITMIX_SYNTHETIC_DIR"))  # the synthetic configs read it when parsed
    if key not in _MM_CACHE:
        if not os.path.isfile(path):
            raise ReproError(f"config file not found: {path}")
        from mmengine.config import Config
        _MM_CACHE[key] = Config.fromfile(path)
    return _MM_CACHE[key]


def parse_cfg_options(options: Sequence[str]) -> Dict[str, Any]:
    """``key=value`` strings parsed exactly as ``--cfg-options`` parses them (MMEngine's DictAction)."""
    from mmengine.config import DictAction
    p = argparse.ArgumentParser()
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    return p.parse_args(["--cfg-options", *options]).cfg_options if options else {}


def mm_check_options(path: str, options: Sequence[str]):
    """Load the config with MMEngine, check that every ``--cfg-options`` key already exists (a typo
    would silently add a new key), merge them, and return the merged config."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    parsed = parse_cfg_options(options)
    for key in parsed:
        node: Any = cfg
        for part in key.split("."):
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif hasattr(node, "keys") and part in node:
                node = node[part]
            else:
                raise ReproError(f"{path}: --cfg-options key '{key}' does not exist in the config")
    cfg.merge_from_dict(parsed)
    return cfg


def pretrain_config(path: str, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """A pretraining config through ``pretrain.engine.config.load_config`` (unknown keys are errors)."""
    from pretrain.engine.config import load_config
    if not os.path.isfile(path):
        raise ReproError(f"config file not found: {path}")
    return load_config(path, list(overrides))


def d2_config(path: str, overrides: Sequence[str] = ()):
    """A Detectron2 LazyConfig with overrides applied; every overridden key must already exist."""
    from detectron2.config import LazyConfig
    from omegaconf import OmegaConf
    if not os.path.isfile(path):
        raise ReproError(f"config file not found: {path}")
    cfg = LazyConfig.load(path)
    for o in overrides:
        key = o.split("=", 1)[0]
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ReproError(f"{path}: override key '{key}' does not exist in the config")
    return LazyConfig.apply_overrides(cfg, list(overrides))
