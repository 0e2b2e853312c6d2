# Mask R-CNN, DeiT-S/16 backbone (384 wide, 12 blocks, 6 heads), COCO, ViTDet
# recipe as the DeiT-B config (see docs/detection.md for the choices).
#
#   mim train mmdet configs/mmdet/mask-rcnn_vitmix-deit-s_vitdet-100e_coco.py --launcher pytorch --gpus 8 \
#       --cfg-options model.backbone.pretrained=runs/deit_s_transmix/best.safetensors
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
        img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
        drop_path_rate=0.1, window_size=14, global_block_indexes=[2, 5, 8, 11],
        pretrained=None))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.7))
