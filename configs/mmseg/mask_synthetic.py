# CPU-sized Segmenter mask-transformer run on the synthetic ADE20K-layout data:
# linear_synthetic.py (data, backbone, schedule, checks) with MMSeg's
# SegmenterMaskTransformerHead (2 layers, 3 heads, width 192) instead of the
# linear head.
#
#   mim train mmseg configs/mmseg/mask_synthetic.py \
#       --cfg-options model.backbone.pretrained=runs/x/model.safetensors
_base_ = './linear_synthetic.py'

model = dict(
    decode_head=dict(
        _delete_=True,
        type='SegmenterMaskTransformerHead',
        in_channels=192,
        channels=192,
        num_classes={{_base_.num_classes}},
        num_layers=2,
        num_heads=3,
        embed_dims=192,
        dropout_ratio=0.0,
        loss_decode=dict(
            type='CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=1.0,
            avg_non_ignore=True)))
