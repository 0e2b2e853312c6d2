"""``VitMixPad`` (MMDet ``TRANSFORMS``): the ViTDet square pad that keeps the image's real size.

The official MMDetection ViTDet configs (open-mmlab/mmdetection
``projects/ViTDet/configs/lsj-100e_coco-instance.py``) end both pipelines
with ``Pad(size=(1024, 1024), pad_val=dict(img=(114, 114, 114)))``: every
image reaches the model as the 1024x1024 training square, padded at the
bottom and the right with 114 before normalisation. ``VitMixPad`` is that
``Pad`` with one difference: MMDet's ``Pad`` also sets ``img_shape`` to the
padded square, so the RPN and the box head treat the pad as image (proposals
and boxes in the pad, not clipped to the image); ``VitMixPad`` keeps
``img_shape`` at the unpadded size, the role ``pad_size_divisor`` padding has
in MMDet and the one the official Detectron2 model gives its square pad
(``ImageList.image_sizes``), so boxes are clipped to the real image in both
frameworks. ``pad_shape`` is the square. An image larger than ``size`` is an
error (``mmcv.impad`` would leave it larger, off the training grid).
"""

from __future__ import annotations

from mmdet.datasets.transforms import Pad
from mmdet.registry import TRANSFORMS

__all__ = ["VitMixPad"]


@TRANSFORMS.register_module(name="VitMixPad", force=True)
class VitMixPad(Pad):
    """MMDet's ``Pad`` (image, masks, segmentation; bottom/right) that leaves ``img_shape`` unpadded.

    Args: those of ``mmdet.datasets.transforms.Pad`` (``size=(w, h)``, ``size_divisor``,
    ``pad_val``, ...). Modified keys: ``img``, ``gt_masks``, ``gt_seg_map``; added: ``pad_shape``,
    ``pad_fixed_size``, ``pad_size_divisor``; ``img_shape`` is unchanged.
    """

    def transform(self, results: dict) -> dict:
        h, w = results["img"].shape[:2]
        if self.size is not None:
            tw, th = self.size
            if h > th or w > tw:
                raise ValueError(
                    f"VitMixPad: a {h}x{w} image is larger than the {th}x{tw} pad size; resize it first "
                    "(Resize(scale=image_size, keep_ratio=True) / RandomCrop(crop_size=image_size))"
                )
        results = super().transform(results)
        results["img_shape"] = (h, w)
        return results
