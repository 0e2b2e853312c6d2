# Segmenter mask-transformer decoder (2 layers) on DeiT-S/16, ADE20K 512x512,
# same schedule and loading rules as linear_deit-s_ade20k-512x512.py.
_base_ = './linear_deit-s_ade20k-512x512.py'

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
