#!/usr/bin/env python
"""Write a small learnable stand-in for CIFAR-10, CIFAR-100 or Tiny ImageNet in the real on-disk layout.

Examples::

    python tools/make_synthetic_small.py --format cifar100 --out data/small
    python tools/make_synthetic_small.py --format tiny_imagenet --out data/small --num-classes 20
    # then train with data.format=cifar100 data.root=data/small (reads data/small/cifar-100-python)

The files go to ``OUT/cifar-10-batches-py``, ``OUT/cifar-100-python`` or ``OUT/tiny-imagenet-200``
(the folder names of the official archives), which is printed at the end. The same as
``vitmix-make-synthetic --format FORMAT`` (:mod:`pretrain.synthetic.cli`). Layouts and the
readers: docs/data_small.md.
"""

import sys

from pretrain.synthetic.cli import main_small as main

if __name__ == "__main__":
    sys.exit(main())
