"""Mask R-CNN with a plain ViT + simple feature pyramid (ViTDet design), as a
Detectron2 LazyConfig.

The detector is Detectron2's own Mask R-CNN (``common/models/mask_rcnn_fpn.py``
of its model zoo: RPN, ROI heads, losses, poolers) run by
:class:`downstream.detectron2.VitMixGeneralizedRCNN` (``GeneralizedRCNN`` that
pads every batch to the backbone's ``square_pad``, which Detectron2 0.6 cannot
do itself); the backbone is ours (:class:`downstream.detectron2.VitMixViTDet`,
the same module and state-dict keys as the MMDetection backbone). Changes to
the R50-FPN model, all following ViTDet: 2-conv RPN head, 4conv1fc box head
and mask head with channels-first LayerNorm (ViTDet's "LN"), RGB input with
ImageNet mean/std, every image padded to the 1024x1024 training square.

ViTDet: "Exploring Plain Vision Transformer Backbones for Object Detection", Li, Mao,
Girshick, He, ECCV 2022, arXiv:2203.16527 (reference code: facebookresearch/detectron2,
projects/ViTDet). "official :N" below = line N of facebookresearch/detectron2
configs/common/models/mask_rcnn_vitdet.py; "ours" = a choice of this repository.
"""
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from downstream.detectron2 import VitMixGeneralizedRCNN, VitMixViTDet
from downstream.pyramid import LayerNorm2d  # timm's channels-first LayerNorm

from .coco_lsj import image_size  # the LSJ crop side: the square every batch is padded to

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model  # official :7
# GeneralizedRCNN + the official square pad (Detectron2 0.6 has no padding_constraints)
model._target_ = VitMixGeneralizedRCNN
model.backbone = L(VitMixViTDet)(
    # architecture: must match the checkpoint (checked when loading)
    img_size=224,  # ours: the pretraining size, the grid of the stored pos_embed (official :19
    # builds the embedding at 1024 / 16 = 64x64; ours resizes the stored one to each input's grid)
    patch_size=16,  # official :20
    embed_dim=768,  # official :15 (ViT-B; the DeiT-T/S configs change it)
    depth=12,  # official :15
    num_heads=12,  # official :15
    mlp_ratio=4.0,  # official :26
    qkv_bias=True,  # official :27
    # detection options
    drop_path_rate=0.1,  # official :15/:24; paper: 0.1 for ViT-B
    window_size=14,  # official :25; windowed attention in all blocks but these:
    global_block_indexes=[2, 5, 8, 11],  # official :29-39 (window_block_indexes = the others)
    use_rel_pos=True,  # official :41; zero-initialised relative position tables (new parameters)
    rel_pos_grid=[64, 64],  # global blocks' tables for the 1024 px grid (1024 / 16), as official
    use_cls_token=False,  # official ViT has none; the CLS pos_embed entry of DeiT is dropped
    final_norm=False,  # official ViT has no final norm
    out_channels=256,  # official :45
    strides=[4, 8, 16, 32],  # official :46, scale_factors (4, 2, 1, 0.5) at patch 16
    top_block=True,  # official :47, LastLevelMaxPool: "p6" at stride 64 by 1x1 max-pool
    # official :49 (square_pad=1024): every batch, training and test, is padded (bottom/right,
    # with 0 after normalisation = pixel_mean) to the LSJ square of the data config
    square_pad=image_size,
    # strict checkpoint loading at construction (downstream.weights.load_pretrained);
    # keep train.init_checkpoint empty: Detectron2 would load it non-strictly
    pretrained=None,
    strict=True,
    allow_missing=[],
    allow_unexpected=[],
)
model.pixel_mean = [123.675, 116.28, 103.53]  # official :10 (ImageNet RGB mean, 0-255)
model.pixel_std = [58.395, 57.12, 57.375]  # official :11
model.input_format = "RGB"  # official :12
model.proposal_generator.head.conv_dims = [-1, -1]  # official :55, 2 convs in the RPN head
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]  # official :58, 4conv1fc
model.roi_heads.box_head.fc_dims = [1024]  # official :59
# official :52 ("LN"): channels-first LayerNorm (eps 1e-6); Detectron2 0.6 has no "LN" norm name
model.roi_heads.box_head.conv_norm = LayerNorm2d
model.roi_heads.mask_head.conv_norm = LayerNorm2d
