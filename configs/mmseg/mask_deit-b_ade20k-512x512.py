# Segmenter Mask decoder on DeiT-B/16 (DeiT-Base), ADE20K 512x512 crops: the DeiT-S config's recipe
# (Segmenter: SGD lr 1e-3, poly over 160k iterations, total batch 8, drop path 0.1) with the
# backbone width and head count of this model; see mask_deit-s_ade20k-512x512.py.
#
#   mim train mmseg configs/mmseg/mask_deit-b_ade20k-512x512.py \
#       --cfg-options model.backbone.pretrained=runs/<run>/model.safetensors
#   mim test mmseg configs/mmseg/mask_deit-b_ade20k-512x512.py --checkpoint WORK_DIR/iter_160000.pth [--tta]
_base_ = './mask_deit-s_ade20k-512x512.py'

# edit: the pretrained backbone (a missing file is an error, not a random init)
pretrained = 'checkpoints/deit_base_patch16_224-b5f2ef4d.pth'

model = dict(
    backbone=dict(embed_dim=768, num_heads=12, pretrained=pretrained),
    decode_head=dict(in_channels=768, channels=768, embed_dims=768, num_heads=12))
