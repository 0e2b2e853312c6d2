#!/usr/bin/env python
"""`python tools/repro/imagenet.py ARGS` is `vitmix-repro imagenet ARGS`: the table lives in
downstream/repro/tables/imagenet.py (see tools/repro/README.md)."""
import sys

from downstream.repro.tables.imagenet import main

if __name__ == "__main__":
    sys.exit(main())
