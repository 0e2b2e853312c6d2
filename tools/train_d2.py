#!/usr/bin/env python
"""Train and evaluate a Detectron2 LazyConfig detector: ``vitmix-train-d2`` as a script.

    python tools/train_d2.py --config-file configs/detectron2/mask_rcnn_vitmix_synthetic.py \
        model.backbone.pretrained=runs/x/model.safetensors

The whole command lives in :mod:`downstream.detectron2.train` (``--help`` lists the options).
"""

import sys

from downstream.detectron2.train import main

if __name__ == "__main__":
    sys.exit(main())
