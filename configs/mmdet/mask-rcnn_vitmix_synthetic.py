# CPU-sized Mask R-CNN run on the synthetic COCO-format set
# (pretrain.synthetic / tools/make_synthetic.py):
#   {DIR}/coco/annotations/instances_{train,val}.json, {DIR}/coco/{train,val}/*.jpg
#   {DIR}/classes.json (class names, index order = category ids 1..K)
# DIR defaults to data/synthetic; VITMIX_SYNTHETIC_DIR=DIR selects another one
# (read here, at parse time).
#
#   mim train mmdet configs/mmdet/mask-rcnn_vitmix_synthetic.py \
#       --cfg-options model.backbone.pretrained=runs/x/model.safetensors
#
# The backbone (192 wide, 6 blocks, 3 heads, patch 8, pretrained at 64x64)
# matches configs/pretrain/synthetic_*.yaml; loading is strict. Same recipe as
# the COCO configs (LSJ, AdamW, layer decay, windows + global blocks, relative
# positions), scaled down: 128x128 crops, 64-channel pyramid and heads,
# windows of 8 on the 16x16 token grid, 60 iterations at batch 2; every image
# padded to the 128 px square.
_base_ = [
    './_base_/models/mask-rcnn_vitmix-vitdet.py',
    './_base_/datasets/coco-instance_lsj-1024.py',
    './_base_/schedules/vitdet_100e.py',
]
import json
import os
import pathlib

synthetic_dir = os.environ.get('VITMIX_SYNTHETIC_DIR', 'data/synthetic')
data_root = os.path.join(synthetic_dir, 'coco') + '/'
classes_file = os.path.join(synthetic_dir, 'classes.json')
if os.path.isfile(classes_file):
    classes = tuple(json.loads(pathlib.Path(classes_file).read_text('utf-8')))
else:
    # not generated yet: the generator's default of 10 classes, named as it names them
    from pretrain.synthetic.world import class_names
    classes = tuple(class_names(10))
num_classes = len(classes)
metainfo = dict(classes=classes)

max_iters = 60
image_size = (128, 128)
pad_val = dict(img=(114, 114, 114))  # the COCO configs' (official MMDet ViTDet) pad value
ch = 64  # pyramid and head width
model = dict(
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3,
        drop_path_rate=0.0, window_size=8, global_block_indexes=[2, 5],
        rel_pos_grid=[16, 16], out_channels=ch, pretrained=None),
    rpn_head=dict(
        in_channels=ch, feat_channels=ch,
        anchor_generator=dict(scales=[4])),  # 16-256 px anchors for 128 px images
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=dict(in_channels=ch, conv_out_channels=ch, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(in_channels=ch, conv_out_channels=ch, num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200), rcnn=dict(max_per_img=50)))

# the COCO pipelines (official order: flip, LSJ resize, crop, pad to the square with 114;
# _base_/datasets/coco-instance_lsj-1024.py) at 128 px
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='VitMixPad', size=image_size, pad_val=pad_val),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='VitMixPad', size=image_size, pad_val=pad_val),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True, min_size=8),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json', img_dir=data_root + 'val/')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',  # AMP needs a GPU
    paramwise_cfg=dict(num_layers=6, layer_decay_rate=0.8),
    optimizer=dict(lr=2e-4, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[int(max_iters * 0.9)], gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
