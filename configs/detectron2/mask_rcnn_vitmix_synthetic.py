"""CPU-sized Mask R-CNN run on the synthetic COCO-format set (Detectron2 LazyConfig).

Data: {DIR}/coco/annotations/instances_{train,val}.json, {DIR}/coco/{train,val}/*.jpg
from tools/make_synthetic.py; DIR defaults to data/synthetic,
VITMIX_SYNTHETIC_DIR=DIR selects another one.

    python tools/train_d2.py --config-file configs/detectron2/mask_rcnn_vitmix_synthetic.py \\
        model.backbone.pretrained=runs/x/model.safetensors

The same scaled-down recipe as configs/mmdet/mask-rcnn_vitmix_synthetic.py:
the synthetic pretraining backbone (192 wide, 6 blocks, 3 heads, patch 8,
pretrained at 64x64), 128x128 LSJ crops (every batch padded to the 128 square),
64-channel pyramid and heads, windows
of 8 with global blocks 2 and 5, AdamW 2e-4 with layer decay 0.8, 60 iterations
at batch 2, on the CPU.
"""
import json
import os

from detectron2.layers import ShapeSpec

from .common.coco_lsj import dataloader, datasets
from .common.mask_rcnn_vitmix_vitdet import model
from .common.vitdet_schedule import lr_multiplier, optimizer, train

synthetic_dir = os.environ.get("VITMIX_SYNTHETIC_DIR", "data/synthetic")
_classes_file = os.path.join(synthetic_dir, "classes.json")
num_classes = len(json.load(open(_classes_file))) if os.path.isfile(_classes_file) else 10

datasets.clear()
for split in ("train", "val"):
    datasets[f"vitmix_synthetic_{split}"] = dict(
        json_file=os.path.join(synthetic_dir, "coco", "annotations", f"instances_{split}.json"),
        image_root=os.path.join(synthetic_dir, "coco", split),
        on_error="skip",
    )

image_size = 128
ch = 64  # pyramid and head width
model.backbone.update(
    img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3,
    drop_path_rate=0.0, window_size=8, global_block_indexes=[2, 5], rel_pos_grid=[16, 16],
    out_channels=ch,
    square_pad=image_size,  # every batch padded to the 128 px LSJ square (as 1024 in the COCO configs)
)
model.proposal_generator.head.in_channels = ch
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]  # 128 px images
model.proposal_generator.pre_nms_topk = (500, 500)
model.proposal_generator.post_nms_topk = (200, 200)
model.roi_heads.num_classes = num_classes
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.input_shape = ShapeSpec(channels=ch, height=7, width=7)
model.roi_heads.box_head.conv_dims = [ch, ch, ch, ch]
model.roi_heads.box_head.fc_dims = [256]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.box_predictor.test_topk_per_image = 50
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=ch, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [ch, ch, ch, ch, ch]

dataloader.train.dataset.names = "vitmix_synthetic_train"
# augmentations: [RandomFlip, ResizeScale, FixedSizeCrop] (common/coco_lsj.py, the official order)
dataloader.train.mapper.augmentations[1].update(min_scale=0.5, max_scale=2.0, target_height=image_size, target_width=image_size)
dataloader.train.mapper.augmentations[2].crop_size = (image_size, image_size)
dataloader.train.mapper.instance_mask_format = "bitmask"  # the synthetic set mixes polygons and RLE
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "vitmix_synthetic_val"
dataloader.test.mapper.augmentations[0].update(short_edge_length=image_size, max_size=image_size)
dataloader.test.num_workers = 0

max_iter = 60
optimizer.lr = 2e-4
optimizer.weight_decay = 0.05
optimizer.params.update(layer_decay=0.8, num_layers=6)
lr_multiplier.scheduler.update(values=[1.0, 0.1], milestones=[int(max_iter * 0.9)], num_updates=max_iter)
lr_multiplier.update(warmup_length=10 / max_iter, warmup_factor=0.1)
train.update(
    output_dir="./runs/d2_synthetic",
    max_iter=max_iter,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=max_iter, max_to_keep=1),
    eval_period=max_iter,
    log_period=10,
    device="cpu",
    seed=0,
)
