"""Entry point: ``python -m pretrain.train --config CONFIG [key=value ...]``."""
from __future__ import annotations

import argparse
import sys

from .engine.config import load_config
from .engine.train import train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Pretrain a ViT with a sample-mixing method.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/pretrain/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=10")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
