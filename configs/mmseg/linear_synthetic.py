# CPU-sized Linear-decoder run on the synthetic ADE20K-layout data
# (pretrain.synthetic / tools/make_synthetic.py):
#   {DIR}/ade/images/{training,validation}/*.jpg
#   {DIR}/ade/annotations/{training,validation}/*.png  (class c stored as c+1, 0 = ignore)
#   {DIR}/classes.json                                 (class names, index order)
# DIR defaults to data/synthetic (relative to the working directory); set the
# environment variable VITMIX_SYNTHETIC_DIR to use another one (it sets both
# the data root and the class list, which is read here, at parse time).
#
#   mim train mmseg configs/mmseg/linear_synthetic.py \
#       --cfg-options model.backbone.pretrained=runs/x/model.safetensors
#
# Without `pretrained` the backbone stays random (a warning is logged).
# Shorter run: add train_cfg.max_iters=20 train_cfg.val_interval=20
# param_scheduler.0.end=20 (the poly schedule's length is separate).
# Other data directory: VITMIX_SYNTHETIC_DIR=DIR (also reads DIR/classes.json),
# or --cfg-options train_dataloader.dataset.data_root=DIR/ade
# val_dataloader.dataset.data_root=DIR/ade test_dataloader.dataset.data_root=DIR/ade
# (the class list then still comes from data/synthetic/classes.json).
# Linear probing of frozen features: model.backbone.frozen_stages=6.
# The backbone (192 wide, 6 blocks, 3 heads, patch 8) must match the
# checkpoint; loading is strict.
# Segmenter mask-transformer variant: mask_synthetic.py.
# 300 iterations at batch 8 take about 2.5 minutes on one CPU thread; on a
# busy machine OMP_NUM_THREADS=1 avoids thread oversubscription.
_base_ = [
    './_base_/models/vitmix_vit-s16_linear.py',
    './_base_/datasets/ade20k_512x512.py',
    './_base_/default_runtime.py',
    './_base_/schedules/segmenter_160k.py',
]
import json
import os
import pathlib

synthetic_dir = os.environ.get('VITMIX_SYNTHETIC_DIR', 'data/synthetic')
data_root = os.path.join(synthetic_dir, 'ade')
classes_file = os.path.join(synthetic_dir, 'classes.json')
if os.path.isfile(classes_file):
    classes = tuple(json.loads(pathlib.Path(classes_file).read_text('utf-8')))
else:
    # not generated yet: the generator's default of 10 classes, named as it names them
    from pretrain.synthetic.world import class_names
    classes = tuple(class_names(10))
num_classes = len(classes)
palette = [[(67 * c + 40) % 256, (151 * c + 90) % 256, (37 * c + 160) % 256]
           for c in range(num_classes)]

max_iters = 300
# The scenes are used at their native size, read from the generator's
# manifest (128x128 by default): their objects then have about the pixel size
# of the objects in the classification images (64x64 by default), and the
# checkpoint's position embedding is resized from the pretraining grid (8x8)
# to the crop grid (16x16) when loading. Predictions are always evaluated at
# the original annotation size.
seg_wh = (128, 128)
manifest_file = os.path.join(synthetic_dir, 'synthetic.json')
if os.path.isfile(manifest_file):
    seg_wh = tuple(json.loads(pathlib.Path(manifest_file).read_text('utf-8'))
                   ['params']['seg_size'])
scale = (int(seg_wh[0]), int(seg_wh[1]))  # (W, H), as mmcv's Resize takes it
crop_size = (int(seg_wh[1]), int(seg_wh[0]))  # (H, W)
data_preprocessor = dict(size=crop_size, test_cfg=dict(size_divisor=8))
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        img_size=crop_size,  # the grid of the fine-tuned pos_embed
        patch_size=8,
        embed_dim=192,
        depth=6,
        num_heads=3,
        mlp_ratio=4.0,
        drop_path_rate=0.0,
        pretrained=None),  # set to runs/<run>/model.safetensors
    decode_head=dict(
        in_channels=192,
        channels=192,
        num_classes=num_classes,
        # average over labelled pixels only (most pixels are background = ignore)
        loss_decode=dict(
            type='CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=1.0,
            avg_non_ignore=True)),
    test_cfg=dict(_delete_=True, mode='whole'))

# MMSeg's ADE20KDataset would remap labels by ADE20K's 150 class names when
# `classes` changes; BaseSegDataset reads the same layout without remapping
# (CheckedSegDataset: BaseSegDataset plus file checks, downstream/mmseg/data.py).
dataset_type = 'CheckedSegDataset'
metainfo = dict(classes=classes, palette=palette)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap'),
    dict(
        type='RandomResize',
        scale=scale,
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    # annotations are loaded after Resize: evaluation at the original size
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap'),
    dict(type='PackSegInputs'),
]
# multi-scale + flip test (--tta): the test scale times each ratio (multiples
# of the patch size for the square scenes), with and without a flip
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(scale[0] * r), int(scale[1] * r)),
                  keep_ratio=True)
             for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='CheckSegMap')],
            [dict(type='PackSegInputs')],
        ]),
]
# the ADE20K dataloaders of the _base_, with the synthetic root, classes and pipelines
synthetic_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    num_workers=1, dataset=dict(**synthetic_dataset, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1, dataset=dict(**synthetic_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

# short schedule: a higher lr than Segmenter's 1e-3 so a few hundred
# iterations train the linear head
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False),
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
env_cfg = dict(cudnn_benchmark=False)
# a fixed seed so that runs from different checkpoints see the same crops and head init
randomness = dict(seed=0)
