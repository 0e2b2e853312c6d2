# Segmenter recipe: SGD, lr 1e-3, momentum 0.9, no weight decay, polynomial
# decay (power 0.9) over 160k iterations, total batch size 8.
# Segmenter: "Segmenter: Transformer for Semantic Segmentation", Strudel, Garcia,
# Laptev, Schmid, ICCV 2021, arXiv:2105.05633.
optimizer = dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=0,
        end=160000,
        by_epoch=False),
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# the learning rate above is for a total batch of 8 (e.g. 1 GPU x 8 or 8 GPUs x 1)
auto_scale_lr = dict(enable=False, base_batch_size=8)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # the last 2 periodic checkpoints, and the best one by validation mIoU
    # (best_mIoU_iter_N.pth; `last_checkpoint` keeps naming the latest periodic one)
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=2,
        save_best='mIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
