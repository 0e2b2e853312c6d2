"""``VitMixMaskRCNN`` (MMDet ``MODELS``): MMDet's Mask R-CNN, usable under bf16 autocast."""

from __future__ import annotations

import torch
from mmdet.models.detectors import MaskRCNN
from mmdet.registry import MODELS

__all__ = ["VitMixMaskRCNN"]


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
