#!/usr/bin/env python
"""`python tools/repro/attention.py ARGS` is `vitmix-repro attention ARGS`: the table lives in
downstream/repro/tables/attention.py (see tools/repro/README.md)."""
import sys

from downstream.repro.tables.attention import main

if __name__ == "__main__":
    sys.exit(main())
