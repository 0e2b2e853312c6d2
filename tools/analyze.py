#!/usr/bin/env python
"""Robustness and attention-quality studies of ViT checkpoints (see docs/analysis.md); the same as
``vitmix-analyze`` (pretrain/analysis/cli.py).

Examples::

    python tools/analyze.py occlusion --data /data/imagenet/val --out runs/analysis \
        --ckpt cutmix=runs/deit_s_cutmix/best.safetensors transmix=runs/deit_s_transmix/best.safetensors
    python tools/analyze.py shuffle --data /data/imagenet/val --out runs/analysis --ckpt ...
    python tools/analyze.py natural-adversarial --data /data/imagenet-a --subset-map imagenet_a_in1k.txt \
        --out runs/analysis --ckpt ...
    python tools/analyze.py attention --voc /data/VOCdevkit/VOC2012 --box-images /data/imagenet/val \
        --boxes /data/imagenet/val_boxes --out runs/analysis --ckpt ...
    python tools/analyze.py all --data data/synthetic --out runs/analysis_synthetic --ckpt ...
    torchrun --nproc-per-node 8 tools/analyze.py occlusion ...   # the same files, 8 processes

A rerun of a killed command skips its finished shards (docs/analysis.md, "Several GPUs, resuming,
unreadable images").
"""
import sys

from pretrain.analysis.cli import main

if __name__ == "__main__":
    sys.exit(main())
