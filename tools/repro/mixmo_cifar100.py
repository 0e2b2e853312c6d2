#!/usr/bin/env python
"""`python tools/repro/mixmo_cifar100.py ARGS` is `vitmix-repro mixmo_cifar100 ARGS`: the table lives in
downstream/repro/tables/mixmo_cifar100.py (see tools/repro/README.md)."""
import sys

from downstream.repro.tables.mixmo_cifar100 import main

if __name__ == "__main__":
    sys.exit(main())
