# Segmenter "Mask" decoder (mask transformer, 2 layers) on a plain ViT-S/16
# (DeiT-S) backbone: MMSeg's own SegmenterMaskTransformerHead.
# Segmenter: "Segmenter: Transformer for Semantic Segmentation", Strudel, Garcia,
# Laptev, Schmid, ICCV 2021, arXiv:2105.05633.
_base_ = './vitmix_vit-s16_linear.py'

model = dict(
    decode_head=dict(
        _delete_=True,
        type='SegmenterMaskTransformerHead',
        in_channels=384,
        channels=384,
        num_classes=150,
        num_layers=2,
        num_heads=6,
        embed_dims=384,
        dropout_ratio=0.0,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
