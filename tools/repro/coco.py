#!/usr/bin/env python
"""`python tools/repro/coco.py ARGS` is `vitmix-repro coco ARGS`: the table lives in
downstream/repro/tables/coco.py (see tools/repro/README.md)."""
import sys

from downstream.repro.tables.coco import main

if __name__ == "__main__":
    sys.exit(main())
