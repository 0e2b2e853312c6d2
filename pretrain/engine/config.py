"""Pretraining configs: YAML files over built-in defaults, with ``key.sub=value`` overrides.

A config may name a parent with ``_base_: other.yaml`` (relative to itself); the child's keys
override the parent's, recursively. Unknown keys are an error, so a typo never silently
falls back to a default.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List

import yaml

DEFAULTS: Dict[str, Any] = {
    "model": {
        "name": "deit_small_patch16_224",  # any timm ViT with a class token
        "kwargs": {},                        # architecture overrides: img_size, patch_size, depth, ...
        "drop_path": 0.1,
    },
    "data": {
        "root": "data/imagenet",             # ImageNet folder layout: root/{train,val}/<class>/*.JPEG
        "train_split": "train",
        "val_split": "val",
        "num_classes": 1000,
        "img_size": 224,
        "batch_size": 128,                   # per process
        "workers": 8,
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "re_prob": 0.25,
        "color_jitter": 0.3,
        "interpolation": "bicubic",
        "eval_crop_pct": 0.875,
    },
    "mixer": {"name": "mixup_cutmix", "label_smoothing": 0.1},
    "optim": {
        "lr": 5.0e-4,                        # for a total batch of lr_base_batch; scaled linearly
        "lr_base_batch": 512,
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "warmup_epochs": 5,
        "warmup_lr": 1.0e-6,
        "min_lr": 1.0e-5,
        "clip_grad": None,
    },
    "train": {
        "epochs": 300,
        "amp": "none",                       # none | bf16 | fp16
        "seed": 0,
        "log_interval": 50,
        "eval_interval": 1,                  # epochs
        "out_dir": "runs/pretrain",
        "max_bad_steps": 10,                 # non-finite losses in a row before stopping
        "channels_last": False,
        "compile": False,
    },
}


def _merge(base: Dict[str, Any], new: Dict[str, Any], path: str = "") -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        key = f"{path}{k}"
        if k not in out:
            raise KeyError(f"unknown config key '{key}'")
        free = key in ("mixer", "model.kwargs")  # option dicts passed through to the builders
        if isinstance(out[k], dict) and isinstance(v, dict) and not free:
            out[k] = _merge(out[k], v, key + ".")
        elif isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = {**out[k], **copy.deepcopy(v)}
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping at the top level")
    base = data.pop("_base_", None)
    if base is None:
        return data
    parent = _load_yaml(os.path.join(os.path.dirname(path), base))
    return _merge_free(parent, data)


def _merge_free(base: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(out.get(k), dict) and isinstance(v, dict) and k != "mixer":
            out[k] = _merge_free(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(cfg: Dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) in place."""
    if "=" not in item:
        raise ValueError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw)
    parts = key.strip().split(".")
    node = cfg
    for i, p in enumerate(parts[:-1]):
        if p not in node or not isinstance(node[p], dict):
            raise KeyError(f"unknown config key '{'.'.join(parts[:i + 1])}' in override '{item}'")
        node = node[p]
    last = parts[-1]
    free = ".".join(parts[:-1]) in ("mixer", "model.kwargs")
    if last not in node and not free:
        raise KeyError(f"unknown config key '{key}' in override '{item}'")
    node[last] = value


def load_config(path: str, overrides: List[str] = ()) -> Dict[str, Any]:
    cfg = _merge(DEFAULTS, _load_yaml(path))
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def validate(cfg: Dict[str, Any]) -> None:
    d, o, t = cfg["data"], cfg["optim"], cfg["train"]
    checks = [
        (int(d["num_classes"]) >= 2, f"data.num_classes must be >= 2, got {d['num_classes']}"),
        (int(d["batch_size"]) >= 2, f"data.batch_size must be >= 2 for mixing, got {d['batch_size']}"),
        (int(d["img_size"]) > 0, f"data.img_size must be > 0, got {d['img_size']}"),
        (float(o["lr"]) > 0, f"optim.lr must be > 0, got {o['lr']}"),
        (int(t["epochs"]) >= 1, f"train.epochs must be >= 1, got {t['epochs']}"),
        (t["amp"] in ("none", "bf16", "fp16"), f"train.amp must be none|bf16|fp16, got {t['amp']}"),
        (float(o["warmup_epochs"]) >= 0, "optim.warmup_epochs must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
