#!/usr/bin/env python
"""`python tools/make_label_maps.py ARGS` is `vitmix-make-label-maps ARGS`: TokenMix's precomputed
teacher label maps (pretrain/mixing/label_maps_cli.py; --help for the options)."""
import sys

from pretrain.mixing.label_maps_cli import main

if __name__ == "__main__":
    sys.exit(main())
