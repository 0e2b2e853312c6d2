"""Entry point: ``python -m pretrain.train --config CONFIG [--resume auto|PATH] [key=value ...]``.

Exit status: 0 when the run finished (or stopped at ``train.max_steps``); 2 for an error in the command (a
config error, a ``train.out_dir`` that is a file or in use by another run), with a one-line message; 75
when a SIGUSR1/SIGTERM stopped it after writing a checkpoint (resume it with ``--resume auto``); 1 for
anything else (a full disk says "no space left on <folder>, N MiB needed"). ``--check-config`` only checks
the config and the run folder (what ``tools/pretrain.sh`` does before starting its processes).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from .checkpoint.files import DiskFullError
from .checkpoint.resume import CheckpointDamaged
from .engine.config import load_config
from .engine.runfolder import BREAK_LOCK_ENV, RunFolderError, preflight
from .engine.runlog import die_with_launcher, write_exit_status
from .engine.train import INTERRUPTED, train
from .mixing import mixer_options

CONFIG_ERROR = 2


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "python -m pretrain.train",
                                     description="Pretrain a ViT with a sample-mixing method.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/pretrain/)")
    parser.add_argument("--resume", default=None,
                        help="'auto' (the run folder's newest intact checkpoint, if any) or a run/checkpoint "
                             "folder; same as train.resume=...")
    parser.add_argument("--break-lock", action="store_true",
                        help=f"take over a run lock left on another host by a dead run (same as {BREAK_LOCK_ENV}=1)")
    parser.add_argument("--check-config", action="store_true",
                        help="check the config and the run folder, then exit (0 = fine, 2 = error)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=10")
    return parser


class CommandError(Exception):
    """An error in the command (config, run folder): exit status 2 with this one-line message."""


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


_said: List[str] = []


def _say(msg: str) -> None:
    _said.append(msg)
    if _is_rank0():
        print(msg, file=sys.stderr, flush=True)


def parse_command(argv: Optional[List[str]], prog: Optional[str] = None) -> Tuple[argparse.Namespace, Dict[str, Any]]:
    """(arguments, loaded config); :class:`CommandError` for a config error (message ``config error: ...``)."""
    args = build_parser(prog).parse_intermixed_args(argv)
    if args.break_lock:
        os.environ[BREAK_LOCK_ENV] = "1"
    overrides = list(args.overrides) + ([f"train.resume={args.resume}"] if args.resume else [])
    try:
        cfg = load_config(args.config, overrides)
        mixer_options(cfg["mixer"])  # the mixer's option names and types, before any process starts
    except KeyError as exc:  # KeyError's str() quotes its message
        raise CommandError(f"config error: {exc.args[0] if exc.args else exc}") from None
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise CommandError(f"config error: {exc}") from None
    return args, cfg


def check_command(argv: Optional[List[str]], check_lock: bool = True, prog: Optional[str] = None) -> Dict[str, Any]:
    """The config of a command, its run folder checked (``check_lock``: that no live run holds it);
    :class:`CommandError` otherwise."""
    _, cfg = parse_command(argv, prog)
    try:
        preflight(cfg, check_lock=check_lock)
    except RunFolderError as exc:
        raise CommandError(f"error: {exc}") from None
    return cfg


def _main(argv) -> int:
    try:
        args, cfg = parse_command(argv)
        if args.check_config:
            try:
                preflight(cfg)
            except RunFolderError as exc:
                raise CommandError(f"error: {exc}") from None
            _say(f"config OK: {cfg['objective']} run into {cfg['train']['out_dir']}")
            return 0
    except CommandError as exc:
        _say(str(exc))
        return CONFIG_ERROR
    try:
        summary = train(cfg)
    except RunFolderError as exc:
        _say(f"error: {exc}")
        return CONFIG_ERROR
    except (DiskFullError, CheckpointDamaged) as exc:
        _say(f"error: {exc}")
        return 1
    except FileNotFoundError as exc:
        if not str(exc).startswith("train.resume"):
            raise
        _say(f"error: {exc}")
        return CONFIG_ERROR
    except KeyboardInterrupt:
        _say("interrupted (SIGINT): stopped without a new checkpoint; --resume auto continues from the last one")
        return 130
    return INTERRUPTED if summary.get("interrupted") else 0


def main(argv=None) -> int:
    die_with_launcher()
    code = 1
    try:
        code = _main(argv)
    except SystemExit as exc:  # argparse: --help, bad arguments
        code = exc.code if isinstance(exc.code, int) else 1
        raise
    finally:  # the launcher reads every process's status (torchrun reports none after a signal)
        write_exit_status(code, _said[-1] if _said and code else "")
    return code


if __name__ == "__main__":
    sys.exit(main())
