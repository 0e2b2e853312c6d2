"""COCO 2017 instances with large-scale jitter at 1024x1024 (Detectron2 LazyConfig).

``datasets`` lists the COCO files; ``tools/train_d2.py`` registers each with
:func:`downstream.detectron2.register_checked_coco_instances` (Detectron2's
``register_coco_instances`` after :mod:`downstream.coco_checks`: unusable files
are refused, bad entries dropped and counted) before the loaders are built.
Evaluation: Detectron2's ``COCOEvaluator`` (pycocotools, ``use_fast_impl=False``)
on the same checked file.

Training: flip, LSJ resize (0.1-2.0x), random crop to at most 1024x1024, no pad
in the mapper; test: long side 1024. The model
(:class:`downstream.detectron2.VitMixGeneralizedRCNN`) pads every batch to the
``image_size`` square, as the official ViTDet model does (``square_pad``).
"""
import os

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator
from omegaconf import OmegaConf

coco_root = os.environ.get("VITMIX_COCO_DIR", "data/coco")
datasets = dict(
    vitmix_coco_2017_train=dict(
        json_file=os.path.join(coco_root, "annotations/instances_train2017.json"),
        image_root=os.path.join(coco_root, "train2017"),
        on_error="skip",  # "raise": refuse a file with any bad entry
    ),
    vitmix_coco_2017_val=dict(
        json_file=os.path.join(coco_root, "annotations/instances_val2017.json"),
        image_root=os.path.join(coco_root, "val2017"),
        on_error="skip",
    ),
)

# Where each value comes from. "official" = facebookresearch/detectron2,
# projects/ViTDet/configs/common/coco_loader_lsj.py (line numbers given);
# "paper" = Li, Mao, Girshick, He, "Exploring Plain Vision Transformer Backbones
# for Object Detection", ECCV 2022, arXiv:2203.16527 (appendix, implementation details).
image_size = 1024  # official :6; paper: 1024x1024 LSJ crops. Also the model's square_pad
# (common/mask_rcnn_vitmix_vitdet.py imports it), as official square_pad=1024
dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="vitmix_coco_2017_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            # official :8-14, in its order: flip first, so that the crop's pad is never
            # mirrored to the left/top
            L(T.RandomFlip)(horizontal=True),  # official :9 (p = 0.5, Detectron2's default)
            # LSJ: resize to 0.1-2.0x of 1024 (aspect kept): official :10-12, paper [0.1, 2.0]
            L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
            # random 1024x1024 crop of larger images, no pad here (official :13, pad=False): the
            # model pads every batch to the 1024 square after normalising, with 0 = pixel_mean
            # (downstream.detectron2.VitMixGeneralizedRCNN, official square_pad=1024)
            L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
        ],
        image_format="RGB",  # official :15
        use_instance_mask=True,  # Detectron2's common/data/coco.py
        recompute_boxes=True,  # official :18 (boxes from the cropped masks)
    ),
    total_batch_size=64,  # official :16; paper: batch 64
    num_workers=4,  # Detectron2's common/data/coco.py
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="vitmix_coco_2017_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        # long side 1024 (official :20-22); the model then pads to the 1024 square (bottom/right)
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    tasks=("bbox", "segm"),
    use_fast_impl=False,  # pycocotools' own evaluation (no compiled ops needed)
    output_dir=None,  # set by tools/train_d2.py to <output_dir>/inference
)
