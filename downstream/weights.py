"""Pretrained ViT weights for the downstream backbones.

Reading, mapping and strict loading live in the project's one checkpoint module,
:mod:`pretrain.checkpoint` (re-exported here under the names downstream users know); this module adds
only what needs the downstream backbone class: :func:`build_backbone_from_checkpoint`.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from pretrain.checkpoint import (CheckpointError, LoadReport, arch_from_checkpoint, convert_state_dict,
                                 load_pretrained, num_heads_of, read_checkpoint, unwrap_state_dict)
from pretrain.checkpoint.formats import TRUST_PICKLE_ENV, VIT

from .vit import VisionTransformer

__all__ = [
    "CheckpointError",
    "LoadReport",
    "read_checkpoint",
    "unwrap_state_dict",
    "arch_from_checkpoint",
    "convert_state_dict",
    "load_pretrained",
    "build_backbone_from_checkpoint",
    "FORMAT_TAG",
]

FORMAT_TAG = VIT
TRUST_ENV = TRUST_PICKLE_ENV


def build_backbone_from_checkpoint(
    path: str,
    num_heads: Optional[int] = None,
    trust_pickle: Optional[bool] = None,
    strict: bool = True,
    **kwargs: Any,
) -> Tuple[VisionTransformer, LoadReport]:
    """Create a :class:`~downstream.vit.VisionTransformer` shaped like the checkpoint and load it.

    Args:
        path: checkpoint file.
        num_heads: the head count; default the file's metadata, else 64 channels per head
            (:func:`pretrain.checkpoint.num_heads_of`).
        **kwargs: overrides for :class:`VisionTransformer` (e.g. a new ``img_size``, ``out_indices``,
            ``drop_path_rate``).

    Returns:
        (backbone, report)
    """
    arch = arch_from_checkpoint(path, trust_pickle=trust_pickle)
    missing = [k for k in ("embed_dim", "depth", "patch_size", "img_size") if k not in arch]
    if missing and not all(k in kwargs for k in missing):
        raise CheckpointError(f"{path}: cannot determine {missing} from the checkpoint; pass them explicitly")
    args = dict(
        img_size=arch.get("img_size"),
        patch_size=arch.get("patch_size"),
        embed_dim=arch.get("embed_dim"),
        depth=arch.get("depth"),
        num_heads=num_heads_of(arch, num_heads, source=str(path)),
        mlp_ratio=arch.get("mlp_ratio", 4.0),
        qkv_bias=arch.get("qkv_bias", True),
    )
    args.update(kwargs)
    model = VisionTransformer(**args)
    report = load_pretrained(model, path, strict=strict, trust_pickle=trust_pickle)
    return model, report
