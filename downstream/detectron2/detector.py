"""``VitMixGeneralizedRCNN``: Detectron2 0.6's ``GeneralizedRCNN`` with the ViTDet square pad.

The official ViTDet model pads every batch, in training and at test time, to
the 1024x1024 training square: its backbone has ``square_pad=1024``
(facebookresearch/detectron2 ``configs/common/models/mask_rcnn_vitdet.py``),
which ``GeneralizedRCNN.preprocess_image`` hands to
``ImageList.from_tensors(..., padding_constraints=...)`` (``modeling/meta_arch/rcnn.py``,
``structures/image_list.py`` of later Detectron2 versions). Detectron2 0.6 has
neither, so a 683x1024 test image would reach the ViT as 704x1024, a 44x64
token grid it never trained on. This meta architecture restores the official
preprocessing:

* normalise each image, ``(x - pixel_mean) / pixel_std``, then pad it at the
  bottom and the right with 0, i.e. with ``pixel_mean`` in pixel space (the
  official pad value: ``ImageList.from_tensors``' default ``pad_value=0.0``
  applied after the normalisation);
* to the square ``backbone.padding_constraints["square_size"]`` (when > 0),
  then to a multiple of ``backbone.size_divisibility``;
* ``ImageList.image_sizes`` keep the unpadded sizes, so proposals and boxes are
  clipped to the real image and ``detector_postprocess`` rescales them to the
  requested output size exactly as before (the pad is bottom/right, so no
  coordinate shifts).

An image larger than the square is an error (the official code would crop it
silently: its padding amount becomes negative).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList

__all__ = ["VitMixGeneralizedRCNN", "pad_images"]


def pad_images(
    images: Sequence[torch.Tensor],
    size_divisibility: int = 0,
    square_size: int = 0,
    pad_value: float = 0.0,
) -> ImageList:
    """Batch (C, Hi, Wi) tensors into an ``ImageList``: each image at the top left, padded with
    ``pad_value`` at the bottom and the right to ``square_size`` x ``square_size`` (if > 0; else to
    the largest image), rounded up to a multiple of ``size_divisibility``. ``image_sizes`` are the
    unpadded (Hi, Wi)."""

    if not images:
        raise ValueError("pad_images needs at least one image")
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    if square_size and square_size > 0:
        if h > square_size or w > square_size:
            raise ValueError(
                f"an input image of {h}x{w} is larger than the {square_size}x{square_size} square the model pads "
                "to (backbone square_pad); resize test images to at most that size (ResizeShortestEdge max_size)"
            )
        h = w = int(square_size)
    if size_divisibility and size_divisibility > 1:
        d = int(size_divisibility)
        h, w = -(-h // d) * d, -(-w // d) * d
    batch = images[0].new_full((len(images), *images[0].shape[:-2], h, w), pad_value)
    for dst, im in zip(batch, images):
        dst[..., : im.shape[-2], : im.shape[-1]].copy_(im)
    return ImageList(batch.contiguous(), sizes)


class VitMixGeneralizedRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` whose ``preprocess_image`` honours ``backbone.padding_constraints``
    (``square_size``), as the official ViTDet model does; identical to ``GeneralizedRCNN`` for a
    backbone without it or with ``square_size=0``. LazyConfig: ``model._target_ =
    VitMixGeneralizedRCNN``; yacs: ``MODEL.META_ARCHITECTURE = "VitMixGeneralizedRCNN"``."""

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return dict(getattr(self.backbone, "padding_constraints", None) or {})

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> ImageList:
        """Normalise, then pad bottom/right with 0 to the backbone's square (and size divisibility)."""
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        pc = self.padding_constraints
        return pad_images(
            images,
            size_divisibility=pc.get("size_divisibility", self.backbone.size_divisibility),
            square_size=pc.get("square_size", 0),
        )


if "VitMixGeneralizedRCNN" in META_ARCH_REGISTRY:  # module re-executed (reload)
    META_ARCH_REGISTRY._obj_map.pop("VitMixGeneralizedRCNN")
META_ARCH_REGISTRY.register(VitMixGeneralizedRCNN)
