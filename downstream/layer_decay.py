"""Layer-wise learning-rate decay for a ViT inside any model: the one grouping
function behind the MMSegmentation and MMDetection optimizer constructors and
the Detectron2 LazyConfig optimizer.

Layer-wise decay as in "BEiT: BERT Pre-Training of Image Transformers" (Bao,
Dong, Piao, Wei, ICLR 2022, arXiv:2106.08254) and its use for detection in
"Exploring Plain Vision Transformer Backbones for Object Detection" (Li, Mao,
Girshick, He, ECCV 2022, arXiv:2203.16527): with ``L`` blocks, a parameter of
layer ``l`` gets ``lr = base_lr * decay ** (L + 1 - l)``, where

* ``cls_token``, ``pos_embed`` and ``patch_embed.*`` of the ViT are layer 0;
* ``blocks.{i}.*`` of the ViT is layer ``i + 1``;
* everything else (the ViT's final norm, a feature pyramid, necks, heads) is
  layer ``L + 1``: the full learning rate.

The no-weight-decay rule, the same for every framework: a parameter gets
``weight_decay = 0`` when it has at most one dimension (biases, LayerNorm
weights, scalars), when its name ends in ``.bias``, or when its last name
component is one of :data:`downstream.vit.NO_WEIGHT_DECAY` (``pos_embed``,
``cls_token``, ``rel_pos_h``, ``rel_pos_w``). Every other trainable parameter
gets the base weight decay. Frozen parameters (``requires_grad=False``) are in
no group.

Which parameters belong to the ViT: those under the prefix of the first
:class:`downstream.vit.VisionTransformer` found in the model (``backbone.``
for an MMSeg segmentor, ``backbone.vit.`` for a ViTDet detector), unless a
prefix is given; ``blocks.{i}`` elsewhere (a head's ``blocks``) is not taken
for a ViT block.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Tuple

from torch import nn

from .vit import NO_WEIGHT_DECAY, VisionTransformer

__all__ = ["get_layer_id", "is_no_weight_decay", "find_vit", "param_groups_layer_decay"]

_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def get_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a backbone parameter for layer-wise lr decay.

    ``cls_token``, ``pos_embed`` and ``patch_embed.*`` -> 0;
    ``blocks.{i}.*`` -> i + 1; anything else (``norm.*``, heads, necks, the
    feature pyramid) -> ``num_layers + 1``. Any prefix (``backbone.``,
    ``backbone.vit.``) is allowed.

    Args:
        name: parameter name, e.g. ``"backbone.blocks.3.attn.qkv.weight"``.
        num_layers: number of transformer blocks.
    """
    m = _BLOCK_RE.search(name)
    if m:
        return int(m.group(1)) + 1
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("cls_token", "pos_embed", "dist_token") or re.search(r"(?:^|\.)patch_embed\.", name):
        return 0
    return num_layers + 1


def is_no_weight_decay(name: str, param: nn.Parameter, names: Iterable[str] = NO_WEIGHT_DECAY) -> bool:
    """The no-weight-decay rule of this module: ``param.ndim <= 1``, a ``.bias``, or a name in ``names``
    (full name or last component)."""
    skip = set(names)
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or name.endswith(".bias") or name in skip or leaf in skip


def find_vit(model: nn.Module) -> Tuple[Optional[str], Optional[VisionTransformer]]:
    """The first :class:`VisionTransformer` in ``model`` and its parameter-name prefix.

    Returns:
        (prefix, vit): e.g. ``("backbone.vit.", <VisionTransformer>)``, ``("", model)`` when the
        model is the ViT itself, ``(None, None)`` when there is none.
    """
    for name, m in model.named_modules():
        if isinstance(m, VisionTransformer):
            return (name + "." if name else ""), m
    return None, None


def param_groups_layer_decay(
    model: nn.Module,
    base_lr: float,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    num_layers: Optional[int] = None,
    no_weight_decay: Iterable[str] = NO_WEIGHT_DECAY,
    prefix: Optional[str] = None,
) -> List[Dict[str, object]]:
    """Optimizer parameter groups with layer-wise lr decay (rules in the module docstring).

    Args:
        model: a :class:`VisionTransformer`, or a model containing one (a
            segmentor, a detector).
        base_lr: the learning rate of layer ``num_layers + 1``.
        weight_decay: the weight decay of parameters that are not exempt.
        layer_decay: the per-layer factor (1.0: no decay).
        num_layers: number of ViT blocks; by default the depth of the ViT
            found in ``model``. Given and different from that depth, it is an
            error (the decay would not follow the blocks).
        no_weight_decay: parameter names (full or last component) without
            weight decay whatever their shape.
        prefix: only parameters whose names start with it get a decayed layer
            id; all others get ``num_layers + 1``. Default: the prefix of the
            ViT found in ``model`` (no restriction when there is none).

    Returns:
        list of dicts with ``params``, ``lr``, ``lr_scale``, ``weight_decay``,
        ``layer_id`` and ``param_names``, ordered by (layer id, no decay),
        usable by any torch optimizer.
    """
    found_prefix, vit = find_vit(model)
    if prefix is None:
        prefix = found_prefix or ""
    if vit is not None and num_layers is not None and int(num_layers) != vit.depth:
        raise ValueError(
            f"layer decay: num_layers={num_layers} but the ViT at '{found_prefix or '<model>'}' has "
            f"{vit.depth} blocks; set num_layers to the backbone depth (or leave it out)"
        )
    if num_layers is None:
        if vit is not None:
            num_layers = vit.depth
        else:
            ids = [int(m.group(1)) for n, _ in model.named_parameters() for m in [_BLOCK_RE.search(n)] if m]
            num_layers = max(ids) + 1 if ids else 0
    num_layers = int(num_layers)
    skip = tuple(no_weight_decay)
    groups: Dict[Tuple[int, bool], Dict[str, object]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = get_layer_id(name[len(prefix):], num_layers) if name.startswith(prefix) else num_layers + 1
        no_decay = is_no_weight_decay(name, p, skip)
        key = (lid, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - lid)
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": base_lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "layer_id": lid,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]
