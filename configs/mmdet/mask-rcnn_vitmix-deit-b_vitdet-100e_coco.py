# Mask R-CNN, DeiT-B/16 backbone (plain ViT + simple feature pyramid), COCO,
# ViTDet recipe: LSJ 1024, AdamW 1e-4 / wd 0.1, layer decay 0.7, drop path
# 0.1, windows of 14 with global attention in blocks 2, 5, 8, 11, relative
# position biases, 184k iterations at batch 64. See docs/detection.md.
#
#   mim train mmdet configs/mmdet/mask-rcnn_vitmix-deit-b_vitdet-100e_coco.py --launcher pytorch --gpus 8 \
#       --cfg-options model.backbone.pretrained=runs/deit_b_transmix/best.safetensors
_base_ = [
    './_base_/models/mask-rcnn_vitmix-vitdet.py',
    './_base_/datasets/coco-instance_lsj-1024.py',
    './_base_/schedules/vitdet_100e.py',
]
model = dict(
    # official vitdet_mask-rcnn_vit-b-mae_lsj-100e.py:10-13,17: BatchFixedSizePad to 1024x1024;
    # the pipelines' VitMixPad has padded every image to that square already, so it only
    # guarantees the training batch shape
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=(1024, 1024), pad_mask=True)]),
    backbone=dict(
        img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
        drop_path_rate=0.1, window_size=14, global_block_indexes=[2, 5, 8, 11],
        pretrained=None))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.7))
