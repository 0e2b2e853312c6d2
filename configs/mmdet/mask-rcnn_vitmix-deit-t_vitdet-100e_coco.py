# Mask R-CNN, DeiT-T/16 backbone (192 wide, 12 blocks, 3 heads), COCO, ViTDet
# recipe as the DeiT-B config, with less drop path for the narrow model
# (see docs/detection.md).
#
#   mim train mmdet configs/mmdet/mask-rcnn_vitmix-deit-t_vitdet-100e_coco.py --launcher pytorch --gpus 8 \
#       --cfg-options model.backbone.pretrained=runs/deit_t_transmix/best.safetensors
_base_ = [
    './_base_/models/mask-rcnn_vitmix-vitdet.py',
    './_base_/datasets/coco-instance_lsj-1024.py',
    './_base_/schedules/vitdet_100e.py',
]
model = dict(
    # LSJ: every training batch padded to 1024x1024 (as Detectron2's FixedSizeCrop does)
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=(1024, 1024), pad_mask=True)]),
    backbone=dict(
        img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3,
        drop_path_rate=0.05, window_size=14, global_block_indexes=[2, 5, 8, 11],
        pretrained=None))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.7))
