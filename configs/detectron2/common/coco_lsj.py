"""COCO 2017 instances with large-scale jitter at 1024x1024 (Detectron2 LazyConfig).

``datasets`` lists the COCO files; ``tools/train_d2.py`` registers each with
:func:`downstream.detectron2.register_checked_coco_instances` (Detectron2's
``register_coco_instances`` after :mod:`downstream.coco_checks`: unusable files
are refused, bad entries dropped and counted) before the loaders are built.
Evaluation: Detectron2's ``COCOEvaluator`` (pycocotools, ``use_fast_impl=False``)
on the same checked file.
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

image_size = 1024
dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="vitmix_coco_2017_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            # LSJ: resize to 0.1-2.0x of 1024 (aspect kept), crop/pad to 1024x1024
            L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
            L(T.FixedSizeCrop)(crop_size=(image_size, image_size)),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        use_instance_mask=True,
        recompute_boxes=True,
    ),
    total_batch_size=64,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="vitmix_coco_2017_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
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
