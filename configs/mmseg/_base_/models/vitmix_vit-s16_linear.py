# Segmenter "Linear" decoder on a plain ViT-S/16 (DeiT-S) backbone.
# The Linear decoder is MMSeg's FCNHead with no conv layers: dropout + one
# 1x1 conv from the last block's patch tokens to the class logits.
# Segmenter: "Segmenter: Transformer for Semantic Segmentation", Strudel, Garcia,
# Laptev, Schmid, ICCV 2021, arXiv:2105.05633.
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ImageNet statistics, as used by DeiT and by our pretraining (timm defaults)
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512),
    # pad test images to a multiple of the patch size (removed again after
    # inference); the backbone refuses sizes that are not multiples of it
    test_cfg=dict(size_divisor=16))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='VitMixViT',
        # architecture (timm's argument names, as in the MMDet and Detectron2
        # backbones; MMSeg's in_channels/embed_dims/num_layers are accepted as
        # aliases): must match the checkpoint (checked when loading)
        # the grid of the backbone's pos_embed: the checkpoint's (e.g. 224/16 =
        # 14x14) is resized to it once, when loading (Segmenter: the crop
        # size); other input sizes are interpolated at forward time
        img_size=512,
        patch_size=16,
        in_chans=3,
        embed_dim=384,
        depth=12,
        num_heads=6,
        mlp_ratio=4.0,
        qkv_bias=True,
        # fine-tuning options
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        out_indices=-1,  # blocks whose outputs are returned (-1: last)
        final_norm=True,  # final LayerNorm on the last block's output
        interpolate_mode='bicubic',
        frozen_stages=-1,  # depth: frozen backbone (linear probing)
        # checkpoint loading (downstream.weights.load_pretrained)
        pretrained=None,  # path to .safetensors / .pth; None = random init
        strict=True,  # missing/unexpected keys are an error ...
        allow_missing=[],  # ... except these glob patterns, e.g. ['norm.*']
        allow_unexpected=[],  # e.g. ['blocks.1[2-9].*']
        trust_pickle=False,  # full unpickling for trusted .pth files only
    ),
    decode_head=dict(
        type='FCNHead',
        in_channels=384,
        in_index=-1,
        channels=384,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=150,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(480, 480)),
)
