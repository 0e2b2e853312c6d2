#!/usr/bin/env python
"""`python tools/repro/peers.py ARGS` is `vitmix-repro peers ARGS`: the table lives in
downstream/repro/tables/peers.py (see tools/repro/README.md)."""
import sys

from downstream.repro.tables.peers import main

if __name__ == "__main__":
    sys.exit(main())
