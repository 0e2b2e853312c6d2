#!/usr/bin/env python
"""`python tools/repro/ade20k.py ARGS` is `vitmix-repro ade20k ARGS`: the table lives in
downstream/repro/tables/ade20k.py (see tools/repro/README.md)."""
import sys

from downstream.repro.tables.ade20k import main

if __name__ == "__main__":
    sys.exit(main())
