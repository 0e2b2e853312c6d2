"""Mask R-CNN, DeiT-B/16 backbone (768 wide, 12 blocks, 12 heads), COCO, ViTDet recipe:
LSJ 1024, AdamW 1e-4 / wd 0.1, layer decay 0.7, drop path 0.1, windows of 14
with global attention in blocks 2, 5, 8, 11, relative position biases, 184k
iterations at batch 64. See docs/detection.md.

    python tools/train_d2.py --num-gpus 8 --config-file configs/detectron2/mask_rcnn_vitmix_deit_b_100ep.py \
        model.backbone.pretrained=runs/deit_b_transmix/best.safetensors train.output_dir=runs/d2_deit_b
"""
from .common.coco_lsj import dataloader, datasets
from .common.mask_rcnn_vitmix_vitdet import model
from .common.vitdet_schedule import lr_multiplier, optimizer, train

model.backbone.update(
    img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
    drop_path_rate=0.1, window_size=14, global_block_indexes=[2, 5, 8, 11],
)
optimizer.params.update(layer_decay=0.7, num_layers=12)
train.output_dir = "./runs/d2_deit_b"
