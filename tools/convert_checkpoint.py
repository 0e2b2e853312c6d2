#!/usr/bin/env python
"""Convert a pretrained ViT checkpoint into an MMSeg-ready backbone checkpoint (``vitmix-convert``).

    python tools/convert_checkpoint.py SRC DST [--img-size H [W]] [--num-heads N] ...

The tool lives in :mod:`downstream.convert`; see its docstring.
"""
import sys

from downstream.convert import main

if __name__ == "__main__":
    sys.exit(main())
