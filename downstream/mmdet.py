"""MMDetection adapter: the ViTDet-style backbone, a channels-first LayerNorm,
a checked COCO dataset and metric, and a layer-decay optimizer constructor,
registered in MMDet's registries.

Configs load it with::

    custom_imports = dict(imports=['downstream.mmdet'], allow_failed_imports=False)

and use ``backbone=dict(type='VitMixViTDet', pretrained=PATH, ...)`` with
``neck=None`` (the simple feature pyramid is part of the backbone, exactly as
in the Detectron2 registration, so both frameworks hold the same module with
the same state-dict keys ``backbone.vit.*``/``backbone.pyramid.*``).

Everything here is a thin subclass of a framework-free part:

=================================  ===========================================
``VitMixViTDet`` (MODELS)          :class:`downstream.vit.ViTPyramidBackbone`;
                                   strict checkpoint loading in ``init_weights``
``VitMixLN2d`` (MODELS)            :class:`downstream.vit.LayerNorm2d` for the
                                   heads' ``norm_cfg`` (ViTDet's conv "LN")
``VitMixCocoDataset`` (DATASETS)   ``CocoDataset`` that runs
                                   :func:`downstream.coco_checks.prepare_coco`
                                   when it loads its annotations
``VitMixCocoMetric`` (METRICS)     ``CocoMetric`` reading the same checked file
``VitMixDetLayerDecay...``         :func:`downstream.vit.param_groups_layer_decay`
(OPTIM_WRAPPER_CONSTRUCTORS)
``VitMixMaskRCNN`` (MODELS)        ``MaskRCNN`` whose RPN and RoI heads run in
                                   float32 under bf16 autocast (mmcv 2.1's
                                   RoIAlign and NMS have no bf16 kernels)
=================================  ===========================================

Importing this module imports ``mmdet.registry``, ``mmdet.datasets.coco`` and
``mmdet.evaluation`` and is safe to repeat (``force=True``).
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence, Union

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.optim import DefaultOptimWrapperConstructor
import torch
from mmdet.datasets.coco import CocoDataset
from mmdet.models.detectors import MaskRCNN
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import DATASETS, METRICS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from .coco_checks import prepare_coco
from .mmengine_checkpoint import register_mmengine_safe_globals
from .vit import LayerNorm2d, ViTPyramidBackbone, param_groups_layer_decay
from .mmengine_common import set_pretrained_options, strict_init_weights

__all__ = [
    "VitMixViTDet",
    "VitMixLN2d",
    "VitMixCocoDataset",
    "VitMixCocoMetric",
    "VitMixDetLayerDecayOptimizerConstructor",
    "VitMixMaskRCNN",
    "BACKBONE_NAME",
]

BACKBONE_NAME = "VitMixViTDet"


# MMEngine's own iter_*.pth (mim test, --resume, load_from) under torch.load's weights-only default
register_mmengine_safe_globals()


@MODELS.register_module(name=BACKBONE_NAME, force=True)
class VitMixViTDet(ViTPyramidBackbone, BaseModule):
    """Plain ViT + simple feature pyramid (ViTDet) for MMDetection, timm key layout.

    Args:
        **kwargs of :class:`downstream.vit.ViTPyramidBackbone` (``img_size``,
            ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ...,
            ``window_size``, ``global_block_indexes``, ``use_rel_pos``,
            ``out_channels``, ``strides``, ``top_block``).
        pretrained: checkpoint path (safetensors or .pth) loaded into the ViT
            in :meth:`init_weights`, strictly; None keeps the random init (a
            warning is logged). ``init_cfg=dict(type='Pretrained',
            checkpoint=P)`` is refused: MMEngine would load it non-strictly.
        strict, allow_missing, allow_unexpected, trust_pickle: see
            :func:`downstream.weights.load_pretrained`.

    Forward: (B, in_chans, H, W), H and W multiples of the largest pyramid
    stride (``pad_size_divisor=32`` in the data preprocessor) -> tuple of
    (B, out_channels, H / s, W / s) for s in ``out_strides`` (default 4, 8,
    16, 32, 64), which is what MMDet's RPN and RoI heads take from a neck.
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        strict: bool = True,
        allow_missing: Sequence[str] = (),
        allow_unexpected: Sequence[str] = (),
        trust_pickle: bool = False,
        init_cfg=None,
        **kwargs,
    ):
        ViTPyramidBackbone.__init__(self, **kwargs)  # -> BaseModule.__init__(init_cfg=None)
        for c in [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg or []):
            if c.get("type") == "Pretrained":
                raise ValueError(
                    f"{BACKBONE_NAME}: use pretrained=PATH, not init_cfg=dict(type='Pretrained'): "
                    "MMEngine's Pretrained init loads non-strictly and would hide a wrong checkpoint"
                )
        self.init_cfg = init_cfg
        set_pretrained_options(self, pretrained, strict, allow_missing, allow_unexpected, trust_pickle)

    def init_weights(self) -> None:
        """Apply ``init_cfg`` (if any), then load ``pretrained`` into the ViT strictly."""
        strict_init_weights(self, BACKBONE_NAME, self.load_pretrained)


@MODELS.register_module(name="VitMixLN2d", force=True)
class VitMixLN2d(LayerNorm2d):
    """``norm_cfg=dict(type='VitMixLN2d', eps=1e-6)``: LayerNorm over the channels of NCHW maps."""


def _img_dir(data_root: Optional[str], data_prefix: dict) -> Optional[str]:
    img = (data_prefix or {}).get("img", (data_prefix or {}).get("img_path"))
    if img is None:
        return None
    if data_root and not os.path.isabs(img):
        img = os.path.join(data_root, img)
    return img


@DATASETS.register_module(name="VitMixCocoDataset", force=True)
class VitMixCocoDataset(CocoDataset):
    """``CocoDataset`` whose annotations are checked before they are parsed.

    :func:`downstream.coco_checks.prepare_coco` runs on ``ann_file`` with the
    image directory ``data_prefix['img']`` and the configured classes: a file
    that cannot be used, or configured class names that are not categories
    of the file, raise :class:`~downstream.coco_checks.CocoDataError` naming
    the file; bad entries are dropped and counted in the log
    (``on_error='skip'``) or refused (``on_error='raise'``).

    Args:
        on_error: ``'skip'`` or ``'raise'``.
        check_images: look for every image file on disk.
        **kwargs: those of ``CocoDataset``.
    """

    def __init__(self, *args, on_error: str = "skip", check_images: bool = True, **kwargs):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"VitMixCocoDataset: on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.check_images = bool(check_images)
        self.check_report = None
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get("img") if self.check_images else None
        classes = self.metainfo.get("classes")
        path, report = prepare_coco(
            self.ann_file, img_dir, on_error=self.on_error, classes=list(classes) if classes else None, log=False
        )
        self.check_report = report
        print_log(report.summary(), logger="current", level=logging.INFO if report.clean else logging.WARNING)
        self.ann_file = path
        return super().load_data_list()


@METRICS.register_module(name="VitMixCocoMetric", force=True)
class VitMixCocoMetric(CocoMetric):
    """``CocoMetric`` that evaluates against the checked annotation file.

    Runs the same :func:`~downstream.coco_checks.prepare_coco` as
    :class:`VitMixCocoDataset` (same options give the same cleaned file), so
    images dropped from the dataset are not counted as missed detections.

    Args:
        img_dir: the image directory of the evaluated split (for the on-disk
            check; None skips it).
        on_error: ``'skip'`` or ``'raise'``.
        **kwargs: those of ``CocoMetric`` (``ann_file`` required).
    """

    def __init__(self, ann_file: Optional[str] = None, img_dir: Optional[str] = None, on_error: str = "skip", **kwargs):
        if ann_file is None:
            raise ValueError("VitMixCocoMetric needs ann_file (the COCO JSON of the evaluated split)")
        path, report = prepare_coco(ann_file, img_dir, on_error=on_error, log=False)
        if not report.clean:
            print_log("VitMixCocoMetric: " + report.summary(), logger="current", level=logging.WARNING)
        self.check_report = report
        super().__init__(ann_file=path, **kwargs)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="VitMixDetLayerDecayOptimizerConstructor", force=True)
class VitMixDetLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise lr decay for detectors with a :class:`VitMixViTDet` backbone.

    ``paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.7)``: parameter
    ``backbone.vit.blocks.{i}.*`` gets ``lr * rate ** (num_layers - i)``, the
    ViT embeddings ``lr * rate ** (num_layers + 1)``, everything else (the
    feature pyramid, RPN and RoI heads) the full lr. 1-D parameters, biases,
    ``pos_embed``, ``cls_token`` and relative position tables get no weight
    decay. The groups come from :func:`downstream.vit.param_groups_layer_decay`,
    the same function the Detectron2 configs use.
    """

    def add_params(self, params: List[dict], module, **kwargs) -> None:
        if "num_layers" not in self.paramwise_cfg:
            raise ValueError("VitMixDetLayerDecayOptimizerConstructor needs paramwise_cfg.num_layers")
        num_layers = int(self.paramwise_cfg["num_layers"])
        rate = float(self.paramwise_cfg.get("layer_decay_rate", 1.0))
        groups = param_groups_layer_decay(
            module,
            base_lr=self.base_lr,
            weight_decay=self.base_wd or 0.0,
            layer_decay=rate,
            num_layers=num_layers,
            prefix="backbone.vit.",
        )
        for g in groups:
            print_log(
                f"layer decay group layer_id={g['layer_id']} wd={g['weight_decay']}: lr_scale={g['lr_scale']:.4f}, "
                f"{len(g['params'])} tensors",
                logger="current",
                level=logging.DEBUG,
            )
            params.append(g)


@MODELS.register_module(name="VitMixMaskRCNN", force=True)
class VitMixMaskRCNN(MaskRCNN):
    """MMDet's ``MaskRCNN``, usable under bf16 autocast (``AmpOptimWrapper(dtype='bfloat16')``).

    mmcv 2.1's CUDA RoIAlign has float32 and float16 kernels only, and its CPU NMS and RoIAlign take
    float32 only, so a bf16 Mask R-CNN stops ("expected scalar type Float but found BFloat16").
    Under bf16 autocast (or any autocast on the CPU) this detector runs the backbone (and neck) in
    the autocast dtype, where nearly all the compute is, and the RPN and RoI heads in float32 with
    autocast off. Without autocast, or under fp16 autocast on CUDA (MMDet's usual AMP), it is
    exactly ``MaskRCNN``.
    """

    _feat_autocast = None  # (device type, dtype) while the heads run with autocast off

    @staticmethod
    def _heads_leave_autocast(x: torch.Tensor):
        """(device type, dtype) when the heads must leave autocast: bf16 anywhere (no bf16 RoIAlign on
        CUDA), or any reduced precision on the CPU (mmcv's CPU NMS/RoIAlign take float32 only)."""
        dev = x.device.type
        if not torch.is_autocast_enabled(dev):
            return None
        dtype = torch.get_autocast_dtype(dev)
        if dtype == torch.bfloat16 or dev == "cpu":
            return dev, dtype
        return None

    def extract_feat(self, batch_inputs: torch.Tensor):
        if self._feat_autocast is None:
            return super().extract_feat(batch_inputs)
        dev, dtype = self._feat_autocast
        with torch.autocast(device_type=dev, dtype=dtype):
            feats = super().extract_feat(batch_inputs)
        return tuple(f.float() for f in feats)

    def _heads_in_fp32(self, fn, batch_inputs, *args, **kwargs):
        amp = self._heads_leave_autocast(batch_inputs)
        if amp is None:
            return fn(batch_inputs, *args, **kwargs)
        self._feat_autocast = amp
        try:
            with torch.autocast(device_type=amp[0], enabled=False):
                return fn(batch_inputs, *args, **kwargs)
        finally:
            self._feat_autocast = None

    def loss(self, batch_inputs, batch_data_samples):
        return self._heads_in_fp32(super().loss, batch_inputs, batch_data_samples)

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        return self._heads_in_fp32(super().predict, batch_inputs, batch_data_samples, rescale=rescale)

    def _forward(self, batch_inputs, batch_data_samples=None):
        return self._heads_in_fp32(super()._forward, batch_inputs, batch_data_samples)
