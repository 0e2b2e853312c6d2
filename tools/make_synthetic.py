#!/usr/bin/env python
"""Generate the synthetic shapes world in ImageNet / ADE20K / COCO / VOC layouts.

Example::

    python tools/make_synthetic.py --out data/synthetic
    python tools/make_synthetic.py --out /tmp/tiny --train-per-class 20 --only imagenet,voc

Running it again with the same parameters finds the complete set (recorded in
``OUT/synthetic.json``) and exits at once. The same as ``vitmix-make-synthetic``
(:mod:`pretrain.synthetic.cli`), which also writes the CIFAR / Tiny ImageNet stand-ins
(``--format cifar100``).
"""

import sys

from pretrain.synthetic.cli import main

if __name__ == "__main__":
    sys.exit(main())
