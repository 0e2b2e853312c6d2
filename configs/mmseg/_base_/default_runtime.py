# Runtime shared by all MMSeg configs of this repository.
# `downstream.mmseg` registers the `VitMixViT` backbone (timm key layout, strict
# checkpoint loading); it must be importable: `pip install -e .` at the
# repository root, or PYTHONPATH=<repo root>.
custom_imports = dict(imports=['downstream.mmseg'], allow_failed_imports=False)

default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
# scalars go to <work_dir>/<timestamp>/vis_data/scalars.json (LocalVisBackend) and
# to TensorBoard event files in the same folder (`tensorboard --logdir WORK_DIR`)
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
# `load_from` restores a whole segmentor (non-strict, MMEngine's loader).
# Backbone pretraining weights go through `model.backbone.pretrained` instead.
# torch>=2.6 loads with weights_only=True by default; MMEngine's own training
# checkpoints (iter_*.pth) also hold message-hub objects and numpy arrays.
# Importing downstream.mmseg allow-lists exactly those types for the
# weights-only loader (downstream/mmengine/checkpoint.py), so `mim test`,
# --resume and load_from=<work_dir>/iter_N.pth work without
# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1; anything else is still refused.
load_from = None
resume = False

tta_model = dict(type='SegTTAModel')

# when training starts, check that the backbone still equals its `pretrained`
# checkpoint (an error listing the keys otherwise; a warning when load_from is set)
custom_hooks = [dict(type='PretrainedCheckHook')]
