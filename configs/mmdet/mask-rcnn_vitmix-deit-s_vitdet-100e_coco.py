# Mask R-CNN, DeiT-S/16 backbone (384 wide, 12 blocks, 6 heads), COCO: the ViTDet recipe
# of the DeiT-B config, only the backbone width changes (see docs/detection.md).
#
#   mim train mmdet configs/mmdet/mask-rcnn_vitmix-deit-s_vitdet-100e_coco.py --launcher pytorch --gpus 8 \
#       --cfg-options model.backbone.pretrained=runs/deit_s_transmix/best.safetensors
_base_ = './mask-rcnn_vitmix-deit-b_vitdet-100e_coco.py'
model = dict(backbone=dict(embed_dim=384, num_heads=6))
