# COCO 2017 instances with large-scale jitter (LSJ) at 1024x1024, read through
# VitMixCocoDataset (MMDet's CocoDataset + downstream.coco_checks: unusable
# files are refused and bad entries dropped and counted before training) and
# evaluated by MMDet's CocoMetric (pycocotools) on the same checked file.
# Layout: {data_root}/annotations/instances_{train,val}2017.json,
#         {data_root}/{train,val}2017/*.jpg
# (the types are registered by downstream.mmdet, imported by the model base)
#
# Where each value comes from: "official :N" = line N of open-mmlab/mmdetection
# projects/ViTDet/configs/lsj-100e_coco-instance.py; "paper" = Li, Mao, Girshick,
# He, "Exploring Plain Vision Transformer Backbones for Object Detection", ECCV 2022,
# arXiv:2203.16527; "ours" = a choice of this repository.
dataset_type = 'VitMixCocoDataset'  # ours (official :6 CocoDataset, + checks)
data_root = 'data/coco/'
image_size = (1024, 1024)  # official :8; paper: 1024x1024 LSJ crops
backend_args = None
# the pad value of the official MMDet pipelines (official :28, :35), in pixel space
# before normalisation (the official Detectron2 model pads with its pixel mean instead)
pad_val = dict(img=(114, 114, 114))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    # official order (:15-28): flip first, so that the pad always lies bottom/right
    dict(type='RandomFlip', prob=0.5),  # official :15
    # LSJ: resize to 0.1-2.0x of 1024 (aspect kept): official :16-20, paper [0.1, 2.0]
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(  # official :21-26: a random crop of at most 1024x1024
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),  # official :27
    # official :28 Pad(size=image_size, 114): pad bottom/right to the square. VitMixPad =
    # that Pad, keeping img_shape at the unpadded size (boxes clipped to the real image;
    # downstream/mmdet/transforms.py)
    dict(type='VitMixPad', size=image_size, pad_val=pad_val),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),  # official :34: long side 1024
    # official :35: pad to the 1024 square (bottom/right, 114), as in training
    dict(type='VitMixPad', size=image_size, pad_val=pad_val),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,  # official :44; x 16 GPUs = 64, the ViTDet batch (paper: 64)
    num_workers=4,  # ours (official :45: 8)
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # ours (official :47 DefaultSampler; iteration-based loop)
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        on_error='skip',  # 'raise': refuse a file with any bad entry
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        on_error='skip',
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='VitMixCocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    img_dir=data_root + 'val2017/',
    metric=['bbox', 'segm'],
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
