# ViTDet: "Exploring Plain Vision Transformer Backbones for Object Detection",
# Li, Mao, Girshick, He, ECCV 2022, arXiv:2203.16527 (reference code:
# facebookresearch/detectron2, projects/ViTDet).
# ViTDet fine-tuning schedule: 184,375 iterations at batch 64 (about 100
# COCO epochs), AdamW (lr 1e-4, betas 0.9/0.999, weight decay 0.1) with
# layer-wise lr decay, 250 warm-up iterations, lr x0.1 at 88.9% and 96.3%,
# mixed precision. `paramwise_cfg.num_layers` must equal the backbone depth
# (it is checked; it may also be left out);
# the decay rate is set per model (0.7 for 12-block models).
# (The runtime underneath: MMDet's default runtime plus TensorBoard, the best
# checkpoints and the pretrained check; ../default_runtime.py.)
_base_ = '../default_runtime.py'
max_iters = 184375
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='VitMixLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.7),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[163889, 177546],
        gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
# the learning rate above is for a total batch of 64 (`--auto-scale-lr` rescales it)
auto_scale_lr = dict(enable=False, base_batch_size=64)
