#!/usr/bin/env python
"""`python tools/repro/robustness.py ARGS` is `vitmix-repro robustness ARGS`: the table lives in
downstream/repro/tables/robustness.py (see tools/repro/README.md)."""
import sys

from downstream.repro.tables.robustness import main

if __name__ == "__main__":
    sys.exit(main())
