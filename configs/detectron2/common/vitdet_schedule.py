"""ViTDet fine-tuning schedule (Detectron2 LazyConfig): 184,375 iterations at
batch 64 (about 100 COCO epochs), AdamW (lr 1e-4, betas 0.9/0.999, weight
decay 0.1) with layer-wise lr decay (0.7 for 12 blocks), 250 warm-up
iterations, lr x0.1 at 88.9% and 96.3%, mixed precision. The same numbers as
configs/mmdet/_base_/schedules/vitdet_100e.py. ViTDet: "Exploring Plain Vision
Transformer Backbones for Object Detection", Li, Mao, Girshick, He, ECCV 2022,
arXiv:2203.16527.

"official :N" = line N of facebookresearch/detectron2
projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py; the AdamW values are
those of its ``common/optim.py`` ``AdamW`` (lr 1e-4, betas (0.9, 0.999), weight
decay 0.1, none on norms). Ours differs in the decay-free parameters (also
none on biases and the relative position tables; official: only norms and
``pos_embed``), because the layer-decay groups are shared with MMSeg/MMDet
(``downstream/layer_decay.py``, BEiT/MAE convention); see docs/detection.md.
"""
import torch
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from downstream.detectron2 import layer_decay_param_groups

max_iter = 184375  # official :25 (100 epochs at batch 64); paper: 100 epochs for ViT-B
optimizer = L(torch.optim.AdamW)(
    # the train script (downstream/detectron2/train.py) sets params.model to the built model
    params=L(layer_decay_param_groups)(
        # official :39 get_vit_lr_decay_rate(num_layers=12, lr_decay_rate=0.7); paper: 0.7 for ViT-B
        base_lr="${..lr}", weight_decay="${..weight_decay}", layer_decay=0.7, num_layers=12
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[163889, 177546],  # official :30 (epochs 88 and 96)
        num_updates=max_iter,
    ),
    warmup_length=250 / max_iter,  # official :33; paper: 250 warm-up iterations
    warmup_factor=0.001,  # official :34
)
train = dict(
    output_dir="./runs/d2",
    init_checkpoint="",  # a Detectron2 detector checkpoint only; the ViT loads via model.backbone.pretrained
    max_iter=max_iter,
    amp=dict(enabled=True),  # official :16; needs CUDA (Detectron2's AMPTrainer)
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=True),  # official :17
    checkpointer=dict(period=5000, max_to_keep=2),
    # also keep the best model by each validation metric (Detectron2's BestCheckpointer):
    # model_best_bbox_AP.pth, model_best_segm_AP.pth
    best_checkpointer=dict(val_metrics=["bbox/AP", "segm/AP"], mode="max"),
    eval_period=max_iter // 4,
    log_period=20,
    device="cuda",
    seed=0,
)
