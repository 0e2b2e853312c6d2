"""Layer-wise lr decay as an MMEngine optimizer-wrapper constructor (MMSeg and MMDet).

One class, registered as ``VitMixLayerDecayOptimizerConstructor`` in MMSeg's
and MMDet's ``OPTIM_WRAPPER_CONSTRUCTORS`` (MMDet also under its former name
``VitMixDetLayerDecayOptimizerConstructor``)::

    optim_wrapper = dict(
        constructor='VitMixLayerDecayOptimizerConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.65, num_layers=12),
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))

The groups are those of :func:`downstream.layer_decay.param_groups_layer_decay`
(the same function the Detectron2 configs use): the ViT is found in the model
(``backbone.`` in a segmentor, ``backbone.vit.`` in a ViTDet detector);
``num_layers`` may be left out (it is the ViT's depth, and an error if it
differs from it).
"""

from __future__ import annotations

import logging
from typing import List

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from ..layer_decay import param_groups_layer_decay

__all__ = ["VitMixLayerDecayOptimizerConstructor"]


class VitMixLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise lr decay for models with a :class:`downstream.vit.VisionTransformer` backbone.

    ``paramwise_cfg``:
        ``layer_decay_rate``: per-block factor (default 1.0: no decay);
        ``num_layers``: number of ViT blocks (optional, checked against the backbone).

    Block ``i`` gets ``lr * rate ** (num_layers - i)``, the ViT embeddings
    ``lr * rate ** (num_layers + 1)``, everything else (final norm, pyramid,
    necks, heads) the full lr. 1-D parameters, biases, ``pos_embed``,
    ``cls_token`` and relative position tables get no weight decay.
    """

    def add_params(self, params: List[dict], module, **kwargs) -> None:
        num_layers = self.paramwise_cfg.get("num_layers")
        groups = param_groups_layer_decay(
            module,
            base_lr=self.base_lr,
            weight_decay=self.base_wd or 0.0,
            layer_decay=float(self.paramwise_cfg.get("layer_decay_rate", 1.0)),
            num_layers=None if num_layers is None else int(num_layers),
        )
        for g in groups:
            print_log(
                f"layer decay group layer_id={g['layer_id']} wd={g['weight_decay']}: lr_scale={g['lr_scale']:.4f}, "
                f"{len(g['params'])} tensors",
                logger="current",
                level=logging.DEBUG,
            )
            params.append(g)
