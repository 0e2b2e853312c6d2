"""Layer-wise lr decay parameter groups for Detectron2 LazyConfig optimizers."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ..layer_decay import param_groups_layer_decay

__all__ = ["layer_decay_param_groups"]


def layer_decay_param_groups(
    model: torch.nn.Module,
    base_lr: float,
    weight_decay: float = 0.1,
    layer_decay: float = 0.7,
    num_layers: Optional[int] = 12,
    prefix: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Optimizer parameter groups with layer-wise lr decay for a Detectron2 model.

    For LazyConfig::

        optimizer = L(torch.optim.AdamW)(
            params=L(layer_decay_param_groups)(base_lr="${..lr}", weight_decay=0.1,
                                               layer_decay=0.7, num_layers=12),
            lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1)

    (the train script sets ``optimizer.params.model``). The groups of
    :func:`downstream.layer_decay.param_groups_layer_decay`, the function the
    MMSeg/MMDet constructor uses: ``num_layers`` must be the backbone depth
    (None: taken from it), ``prefix`` defaults to the ViT's
    (``backbone.vit.``). The groups carry no ``param_names`` (that keeps the
    optimizer state dict small).
    """
    groups = param_groups_layer_decay(
        model, base_lr=base_lr, weight_decay=weight_decay, layer_decay=layer_decay, num_layers=num_layers, prefix=prefix
    )
    for g in groups:
        g.pop("param_names", None)
    return groups
