"""A timm ``config.json`` beside the weights of a run folder, so that
``timm.create_model('local-dir:RUN', pretrained=True)`` rebuilds the network and loads
``RUN/model.safetensors``, and the folder can be uploaded to the Hugging Face Hub as a timm model.

The layout is timm's own (huggingface/pytorch-image-models, ``timm.models._hub.save_config_for_hf``):
``architecture``, ``num_classes``, ``num_features``, ``model_args`` (the keyword arguments that change the
architecture from the named model's defaults) and ``pretrained_cfg`` (input size, interpolation, crop,
mean/std, label names).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence

from .arch import to_2tuple
from .files import write_text_atomic

__all__ = ["timm_config", "write_timm_config", "CONFIG_NAME"]

CONFIG_NAME = "config.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def timm_config(arch: Mapping[str, Any], img_size: Optional[int] = None, interpolation: str = "bicubic",
                crop_pct: float = 0.875, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                label_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The config dict for a ViT whose checkpoint metadata is ``arch`` (:func:`pretrain.models.vit.vit_arch`).

    Args:
        arch: at least ``model``, ``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``,
            ``mlp_ratio``, ``qkv_bias``, ``num_classes``.
        img_size: evaluation input side (default: ``arch["img_size"]``).
        interpolation, crop_pct, mean, std: the evaluation transform (timm's ``pretrained_cfg`` fields).
        label_names: class names in index order (the training folder's classes).
    """
    h, w = to_2tuple(arch["img_size"] if img_size is None else img_size)
    model_args = {"img_size": [h, w], "patch_size": int(arch["patch_size"]), "embed_dim": int(arch["embed_dim"]),
                  "depth": int(arch["depth"]), "num_heads": int(arch["num_heads"]),
                  "mlp_ratio": float(arch["mlp_ratio"]), "qkv_bias": bool(arch["qkv_bias"])}
    pretrained_cfg: Dict[str, Any] = {
        "input_size": [3, h, w], "interpolation": interpolation, "crop_pct": float(crop_pct),
        "crop_mode": "center", "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "num_classes": int(arch["num_classes"]), "pool_size": None, "first_conv": "patch_embed.proj",
        "classifier": "head"}
    cfg: Dict[str, Any] = {"architecture": arch["model"], "num_classes": int(arch["num_classes"]),
                           "num_features": int(arch["embed_dim"]), "global_pool": "token",
                           "model_args": model_args, "pretrained_cfg": pretrained_cfg}
    if label_names:
        cfg["label_names"] = list(label_names)
    return cfg


def write_timm_config(run_dir: str, arch: Mapping[str, Any], **kwargs: Any) -> str:
    """Write :func:`timm_config` as ``run_dir/config.json`` (atomically); returns the path."""
    path = os.path.join(run_dir, CONFIG_NAME)
    write_text_atomic(path, json.dumps(timm_config(arch, **kwargs), indent=2) + "\n")
    return path
