# Mask R-CNN with a plain ViT + simple feature pyramid (ViTDet design) on
# MMDetection's own Mask R-CNN: RPN, RoI heads, losses and assigners are
# MMDet's (mask-rcnn_r50_fpn base), only the backbone is ours.
# ViTDet: "Exploring Plain Vision Transformer Backbones for Object Detection",
# Li, Mao, Girshick, He, ECCV 2022, arXiv:2203.16527 (reference code:
# facebookresearch/detectron2, projects/ViTDet).
#
# Changes to the R50-FPN base, all following ViTDet:
# * backbone: VitMixViTDet (timm key layout, strict loading of `pretrained`);
#   it contains the simple feature pyramid (strides 4/8/16/32 + a max-pooled
#   stride-64 level for the RPN), so there is no neck;
# * RPN head with 2 convs; 4conv1fc box head and 4-conv mask head, with a
#   channels-first LayerNorm (VitMixLN2d) in their convs;
# * VitMixMaskRCNN: MaskRCNN whose RPN/RoI heads run in float32 under bf16
#   autocast (mmcv 2.1 has no bf16 RoIAlign/NMS); identical otherwise;
# * ImageNet RGB normalisation (what DeiT and our pretraining use), padding to
#   a multiple of 32 (the largest pyramid stride); the pipelines have already
#   padded every image to the 1024x1024 square with 114 (VitMixPad in
#   ../datasets/coco-instance_lsj-1024.py, as the official MMDet ViTDet configs).
#
# "official :N" = line N of open-mmlab/mmdetection
# projects/ViTDet/configs/vitdet_mask-rcnn_vit-b-mae_lsj-100e.py; the
# normalisation is that of its base, configs/_base_/models/mask-rcnn_r50_fpn.py.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['downstream.mmdet'], allow_failed_imports=False)

norm_cfg = dict(type='VitMixLN2d', eps=1e-6)
model = dict(
    # MaskRCNN that also trains under bf16 autocast (heads in float32; downstream/mmdet/detector.py)
    type='VitMixMaskRCNN',
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],  # mask-rcnn_r50_fpn.py (ImageNet RGB, 0-255)
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32),  # official :17
    backbone=dict(
        _delete_=True,
        type='VitMixViTDet',
        # architecture: must match the checkpoint (checked when loading)
        img_size=224,  # ours: pretraining size, the grid of the stored pos_embed (official :21: 1024)
        patch_size=16,  # official :22
        embed_dim=768,  # official :23
        depth=12,  # official :24
        num_heads=12,  # official :25
        mlp_ratio=4.0,  # official :28
        qkv_bias=True,  # official :29
        # detection options
        drop_path_rate=0.1,  # official :26; paper: 0.1 for ViT-B
        window_size=14,  # official :27; windowed attention in all blocks but these:
        global_block_indexes=[2, 5, 8, 11],  # official :31-40 (window_block_indexes = the others)
        use_rel_pos=True,  # official :41; zero-initialised relative position tables (new parameters)
        rel_pos_grid=[64, 64],  # global blocks' tables for the 1024 px grid (1024 / 16)
        use_cls_token=False,  # patch tokens only; the CLS pos_embed entry is dropped
        final_norm=False,
        out_channels=256,  # official neck SimpleFPN out_channels=256
        strides=[4, 8, 16, 32],  # official neck SimpleFPN (4 levels)
        top_block=True,  # + stride 64 by 1x1 max-pool (RPN level p6; SimpleFPN num_outs=5)
        # checkpoint loading (downstream.weights.load_pretrained)
        pretrained=None,  # path to .safetensors / .pth; None = random init
        strict=True,
        allow_missing=[],
        allow_unexpected=[],
        trust_pickle=False),
    neck=None,
    rpn_head=dict(num_convs=2),  # official: rpn_head num_convs=2
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
