# Segmenter Mask decoder (MMSeg's SegmenterMaskTransformerHead, 2 layers) on
# DeiT-S/16 (DeiT-Small), ADE20K 512x512 crops. Segmenter recipe: SGD lr 1e-3
# (momentum 0.9, no weight decay), poly decay over 160k iterations, total batch 8,
# drop path 0.1, sliding-window test (512x512 windows, stride 480).
#
#   mim train mmseg configs/mmseg/mask_deit-s_ade20k-512x512.py \
#       --cfg-options model.backbone.pretrained=runs/<run>/model.safetensors
#   mim test mmseg configs/mmseg/mask_deit-s_ade20k-512x512.py --checkpoint WORK_DIR/iter_160000.pth [--tta]
#
# `pretrained` accepts our pretraining output (model.safetensors), official
# DeiT/timm .pth files ({'model': ...}; distilled ones lose the dist token),
# plain/DDP state dicts and tools/convert_checkpoint.py output. Loading is
# strict: a checkpoint that does not fit (patch size, width, depth, key
# names) stops the run with the offending keys listed. See docs/segmentation.md.
_base_ = [
    './_base_/models/vitmix_vit-s16_mask.py',
    './_base_/datasets/ade20k_512x512.py',
    './_base_/default_runtime.py',
    './_base_/schedules/segmenter_160k.py',
]

# edit: the ADEChallengeData2016 directory
data_root = 'data/ade/ADEChallengeData2016'
# edit: the pretrained backbone (a missing file is an error, not a random init)
pretrained = 'checkpoints/deit_small_patch16_224-cd65a155.pth'

model = dict(
    backbone=dict(
        img_size=512,  # pos_embed resized once from the checkpoint's grid
        patch_size=16,
        embed_dim=384,
        depth=12,
        num_heads=6,
        drop_path_rate=0.1,
        pretrained=pretrained),
    decode_head=dict(
        in_channels=384,
        channels=384,
        embed_dims=384,
        num_heads=6,
        num_classes=150))

# total batch 8: 1 GPU x 8 here; with 8 GPUs use batch_size=1
train_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
