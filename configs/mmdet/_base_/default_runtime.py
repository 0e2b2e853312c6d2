# Runtime of the MMDet configs of this repository: MMDetection's default runtime
# (hooks, environment, logging) with
# * TensorBoard beside the local JSON log: scalars go to
#   <work_dir>/<timestamp>/vis_data/scalars.json and to TensorBoard event files in
#   the same folder (`tensorboard --logdir WORK_DIR`);
# * the best checkpoint kept per validation metric, box and mask AP
#   (best_coco_bbox_mAP_iter_N.pth, best_coco_segm_mAP_iter_N.pth) besides the
#   periodic ones (`last_checkpoint`, used by --resume, keeps naming the latest
#   periodic one);
# * PretrainedCheckHook: when training starts, the backbone's ViT must still equal
#   its `pretrained` checkpoint (an error listing the keys otherwise; a warning
#   when load_from is set). Registered by downstream.mmdet, which the model base
#   imports (custom_imports in ./models/mask-rcnn_vitmix-vitdet.py).
_base_ = 'mmdet::_base_/default_runtime.py'

vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(vis_backends=vis_backends)
default_hooks = dict(
    checkpoint=dict(save_best=['coco/bbox_mAP', 'coco/segm_mAP'], rule='greater'))
custom_hooks = [dict(type='PretrainedCheckHook')]
