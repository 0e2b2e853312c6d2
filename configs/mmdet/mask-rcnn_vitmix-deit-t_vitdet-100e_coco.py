# Mask R-CNN, DeiT-T/16 backbone (192 wide, 12 blocks, 3 heads), COCO: the ViTDet recipe
# of the DeiT-B config, only the backbone width changes
# with less drop path for the narrow model (see docs/detection.md).
#
#   mim train mmdet configs/mmdet/mask-rcnn_vitmix-deit-t_vitdet-100e_coco.py --launcher pytorch --gpus 8 \
#       --cfg-options model.backbone.pretrained=runs/deit_t_transmix/best.safetensors
_base_ = './mask-rcnn_vitmix-deit-b_vitdet-100e_coco.py'
model = dict(backbone=dict(embed_dim=192, num_heads=3, drop_path_rate=0.05))
