"""The one architecture inference: what ViT a checkpoint holds, from its ``arch`` metadata where our
pretraining wrote it, otherwise from the tensor shapes (timm ``VisionTransformer`` key layout).

The head count changes no tensor shape, so a file without metadata cannot tell it: :func:`num_heads_of`
takes the caller's value, else the metadata's, else 64 channels per head, the rule of every ViT, DeiT
and DINO model ("An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", Dosovitskiy
et al., ICLR 2021, arXiv:2010.11929; "Training data-efficient image transformers & distillation through
attention", Touvron et al., ICML 2021, arXiv:2012.12877; "Emerging Properties in Self-Supervised Vision
Transformers", Caron et al., ICCV 2021, arXiv:2104.14294).
"""
from __future__ import annotations

import logging
import math
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch

from .read import CheckpointError, read_checkpoint, strip_prefixes

__all__ = ["infer_arch", "arch_of", "arch_from_checkpoint", "num_heads_of", "timm_vit_kwargs", "num_blocks",
           "square_grid", "to_2tuple", "HEAD_DIM"]

log = logging.getLogger(__name__)

HEAD_DIM = 64  # channels per attention head of ViT/DeiT/DINO models, when nothing says otherwise
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")
_CHECKED = ("embed_dim", "depth", "patch_size")  # metadata must agree with the tensors on these


def to_2tuple(x: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``8 -> (8, 8)``; ``(64, 96) -> (64, 96)`` (lists and OmegaConf ListConfigs too)."""
    if isinstance(x, (tuple, list)) or (hasattr(x, "__len__") and not isinstance(x, (str, bytes))):
        x = list(x)
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair, got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


def square_grid(n: int) -> Optional[Tuple[int, int]]:
    """(s, s) when ``n`` is a positive square ``s * s``, else None."""
    s = int(round(math.sqrt(n)))
    return (s, s) if s * s == n and s > 0 else None


def num_blocks(keys: Iterable[str]) -> int:
    """Number of transformer blocks named ``blocks.{i}.*`` among ``keys``."""
    ids = [int(m.group(1)) for k in keys for m in [_BLOCK_RE.match(k)] if m]
    return max(ids) + 1 if ids else 0


def infer_arch(sd: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Architecture facts readable from the shapes of a timm-layout ViT state dict (prefixes removed).

    Returns the keys it can tell: ``embed_dim``, ``in_chans``, ``patch_size``, ``depth``, ``mlp_ratio``,
    ``qkv_bias``, ``has_dist_token``, ``num_reg_tokens``, ``num_prefix_tokens``, ``img_size`` ([H, W] of
    the position-embedding grid, when square), ``pos_embed_has_prefix`` (False for timm's
    ``no_embed_class`` layout), ``num_classes`` (when a head is present), ``has_norm``, ``has_fc_norm``,
    and ``num_heads = None`` (shapes cannot tell it).
    """
    arch: Dict[str, Any] = {}
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.dim() == 4:
        arch["embed_dim"] = int(w.shape[0])
        arch["in_chans"] = int(w.shape[1])
        arch["patch_size"] = int(w.shape[2]) if w.shape[2] == w.shape[3] else [int(w.shape[2]), int(w.shape[3])]
    depth = num_blocks(sd)
    if depth:
        arch["depth"] = depth
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and "embed_dim" in arch:
        arch["mlp_ratio"] = fc1.shape[0] / arch["embed_dim"]
    if "blocks.0.attn.qkv.weight" in sd:
        arch["qkv_bias"] = "blocks.0.attn.qkv.bias" in sd
    arch["has_dist_token"] = "dist_token" in sd
    reg = sd.get("reg_token")
    arch["num_reg_tokens"] = int(reg.shape[1]) if reg is not None and reg.dim() == 3 else 0
    prefix = int("cls_token" in sd) + int("dist_token" in sd) + arch["num_reg_tokens"]
    arch["num_prefix_tokens"] = prefix
    pe = sd.get("pos_embed")
    if pe is not None and pe.dim() == 3:
        grid = square_grid(pe.shape[1] - prefix)
        if grid is None and "cls_token" in sd:
            grid = square_grid(pe.shape[1])  # pos_embed without prefix rows (no_embed_class)
            if grid is not None:
                arch["pos_embed_has_prefix"] = False
        if grid is not None and isinstance(arch.get("patch_size"), int):
            arch["img_size"] = [grid[0] * arch["patch_size"], grid[1] * arch["patch_size"]]
    head = sd.get("head.weight")
    if head is not None and head.dim() == 2:
        arch["num_classes"] = int(head.shape[0])
    arch["has_norm"] = "norm.weight" in sd
    arch["has_fc_norm"] = "fc_norm.weight" in sd
    arch["num_heads"] = None
    return arch


def _norm_val(v: Any) -> Any:
    if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
        return int(v[0])
    return v


def arch_of(sd: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, Any]] = None,
            source: str = "<checkpoint>") -> Dict[str, Any]:
    """:func:`infer_arch` of ``sd`` (wrapper prefixes removed first) updated with the file's ``arch``
    metadata, which must agree with the tensors on embed dim, depth and patch size.

    Adds ``arch_source`` (``"metadata"`` or ``"shapes"``) and ``format`` (when the file has one).
    """
    sd, _ = strip_prefixes(dict(sd))
    if any(k.startswith("backbone.") for k in sd):  # an MMEngine segmentor/detector: its backbone
        sd, _ = strip_prefixes({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
    inferred = infer_arch(sd)
    arch = dict(inferred)
    metadata = metadata or {}
    meta_arch = metadata.get("arch") if isinstance(metadata.get("arch"), Mapping) else None
    if meta_arch:
        for key in _CHECKED:
            if key in meta_arch and key in inferred and _norm_val(meta_arch[key]) != _norm_val(inferred[key]):
                raise CheckpointError(
                    f"{source}: metadata says {key}={meta_arch[key]} but the tensors say {key}={inferred[key]}")
        arch.update(meta_arch)
        if "img_size" in arch:
            arch["img_size"] = list(to_2tuple(arch["img_size"]))
        arch["arch_source"] = "metadata"
    else:
        arch["arch_source"] = "shapes"
    if metadata.get("format"):
        arch["format"] = metadata["format"]
    return arch


def arch_from_checkpoint(path: str, trust_pickle: Optional[bool] = None) -> Dict[str, Any]:
    """:func:`arch_of` a checkpoint file (see :func:`.read.read_checkpoint` for what it reads)."""
    sd, meta = read_checkpoint(path, trust_pickle=trust_pickle)
    return arch_of(sd, meta, source=str(path))


def num_heads_of(arch: Mapping[str, Any], num_heads: Optional[int] = None, source: str = "<checkpoint>") -> int:
    """The head count to build: ``num_heads`` when given, else the metadata's, else
    ``embed_dim // 64`` (logged, since a wrong count changes the outputs without changing any shape)."""
    if num_heads is not None:
        heads = int(num_heads)
    elif arch.get("num_heads") is not None:
        heads = int(arch["num_heads"])
    else:
        if "embed_dim" not in arch:
            raise CheckpointError(f"{source}: cannot tell the width, so not the head count either; pass num_heads")
        heads = max(1, int(arch["embed_dim"]) // HEAD_DIM)
        log.info("%s has no 'arch' metadata: assuming %d attention heads (%d channels per head); pass num_heads "
                 "if the model was built otherwise", source, heads, HEAD_DIM)
    if "embed_dim" in arch and int(arch["embed_dim"]) % heads:
        raise CheckpointError(f"{source}: embed_dim {arch['embed_dim']} is not divisible by num_heads {heads}; "
                              "pass num_heads")
    return heads


def timm_vit_kwargs(arch: Mapping[str, Any], num_heads: Optional[int] = None, img_size=None,
                    source: str = "<checkpoint>") -> Tuple[str, Dict[str, Any]]:
    """(timm model name, ``timm.create_model`` keyword arguments) that rebuild the ViT ``arch`` describes,
    optionally at another input size. The name is the recorded one, else a base model whose defaults the
    keyword arguments override (a distilled DeiT when the file has a distillation token)."""
    missing = [k for k in ("embed_dim", "depth", "patch_size") if k not in arch]
    if missing:
        raise CheckpointError(f"{source}: not a timm ViT state dict (cannot tell {missing})")
    if "img_size" not in arch and img_size is None:
        raise CheckpointError(f"{source}: cannot tell the input size from the position embedding; pass img_size")
    name = arch.get("model") or ("deit_base_distilled_patch16_224" if arch.get("has_dist_token")
                                 else "vit_base_patch16_224")
    kwargs: Dict[str, Any] = dict(
        img_size=to_2tuple(img_size if img_size is not None else arch["img_size"]),
        patch_size=_norm_val(arch["patch_size"]), embed_dim=int(arch["embed_dim"]), depth=int(arch["depth"]),
        num_heads=num_heads_of(arch, num_heads, source), mlp_ratio=float(arch.get("mlp_ratio", 4.0)),
        qkv_bias=bool(arch.get("qkv_bias", True)))
    if arch.get("has_norm") is False and arch.get("has_fc_norm"):
        kwargs["global_pool"] = "avg"
    return name, kwargs
