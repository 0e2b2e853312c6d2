"""Mask R-CNN with a plain ViT + simple feature pyramid (ViTDet design), as a
Detectron2 LazyConfig.

The detector is Detectron2's own Mask R-CNN (``common/models/mask_rcnn_fpn.py``
of its model zoo: RPN, ROI heads, losses, poolers); only the backbone is ours
(:class:`downstream.detectron2.VitMixViTDet`, the same module and state-dict
keys as the MMDetection backbone). Changes to the R50-FPN model, all following
ViTDet: 2-conv RPN head, 4conv1fc box head and mask head with channels-first
LayerNorm (ViTDet's "LN"), RGB input with ImageNet mean/std (DeiT's normalisation).

ViTDet: "Exploring Plain Vision Transformer Backbones for Object Detection", Li, Mao,
Girshick, He, ECCV 2022, arXiv:2203.16527 (reference code: facebookresearch/detectron2,
projects/ViTDet).
"""
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from downstream.detectron2 import VitMixViTDet
from downstream.pyramid import LayerNorm2d  # timm's channels-first LayerNorm

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.backbone = L(VitMixViTDet)(
    # architecture: must match the checkpoint (checked when loading)
    img_size=224,  # pretraining size: the grid of the stored pos_embed
    patch_size=16,
    embed_dim=768,
    depth=12,
    num_heads=12,
    mlp_ratio=4.0,
    qkv_bias=True,
    # detection options
    drop_path_rate=0.1,
    window_size=14,  # windowed attention in all blocks but these:
    global_block_indexes=[2, 5, 8, 11],
    use_rel_pos=True,  # zero-initialised relative position tables (new parameters)
    rel_pos_grid=[64, 64],  # global blocks' tables for the 1024 px grid (1024 / 16)
    use_cls_token=False,
    final_norm=False,
    out_channels=256,
    strides=[4, 8, 16, 32],
    top_block=True,  # + "p6" at stride 64 by 1x1 max-pool
    # strict checkpoint loading at construction (downstream.weights.load_pretrained);
    # keep train.init_checkpoint empty: Detectron2 would load it non-strictly
    pretrained=None,
    strict=True,
    allow_missing=[],
    allow_unexpected=[],
)
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
model.proposal_generator.head.conv_dims = [-1, -1]
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]
model.roi_heads.box_head.fc_dims = [1024]
# channels-first LayerNorm (eps 1e-6); Detectron2 0.6 has no "LN" norm name
model.roi_heads.box_head.conv_norm = LayerNorm2d
model.roi_heads.mask_head.conv_norm = LayerNorm2d
