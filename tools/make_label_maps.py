#!/usr/bin/env python
"""`python tools/make_label_maps.py ARGS` is `vitmix-make-label-maps ARGS`: TokenMix's precomputed
teacher label maps (pretrain/mixing/label_maps_cli.py; --help for the options).
`torchrun --nproc-per-node N tools/make_label_maps.py ARGS` shares the images among N processes; a rerun
of the same command after a kill skips the finished shards (docs/mixers.md, "Making the label maps")."""
import sys

from pretrain.mixing.label_maps_cli import main

if __name__ == "__main__":
    sys.exit(main())
