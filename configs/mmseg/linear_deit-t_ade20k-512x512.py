# Linear head on DeiT-Ti/16 (DeiT-Tiny), ADE20K 512x512 crops: the DeiT-S config's recipe
# (Segmenter: SGD lr 1e-3, poly over 160k iterations, total batch 8, drop path 0.1) with the
# backbone width and head count of this model; see linear_deit-s_ade20k-512x512.py.
#
#   mim train mmseg configs/mmseg/linear_deit-t_ade20k-512x512.py \
#       --cfg-options model.backbone.pretrained=runs/<run>/model.safetensors
#   mim test mmseg configs/mmseg/linear_deit-t_ade20k-512x512.py --checkpoint WORK_DIR/iter_160000.pth [--tta]
_base_ = './linear_deit-s_ade20k-512x512.py'

# edit: the pretrained backbone (a missing file is an error, not a random init)
pretrained = 'checkpoints/deit_tiny_patch16_224-a1311bcf.pth'

model = dict(
    backbone=dict(embed_dim=192, num_heads=3, pretrained=pretrained),
    decode_head=dict(in_channels=192, channels=192))
