"""Entry point: ``python -m pretrain.train --config CONFIG [--resume auto|PATH] [key=value ...]``.

Exit status: 0 when the run finished (or stopped at ``train.max_steps``), 2 for a config error, 75 when a
SIGUSR1/SIGTERM stopped it after writing a checkpoint (resume it with ``--resume auto``).
"""
from __future__ import annotations

import argparse
import sys

from .engine.config import load_config
from .engine.train import INTERRUPTED, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Pretrain a ViT with a sample-mixing method.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/pretrain/)")
    parser.add_argument("--resume", default=None,
                        help="'auto' (the run folder's latest checkpoint, if any) or a run/checkpoint folder; "
                             "same as train.resume=...")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=10")
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides) + ([f"train.resume={args.resume}"] if args.resume else [])
    try:
        cfg = load_config(args.config, overrides)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    summary = train(cfg)
    return INTERRUPTED if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
