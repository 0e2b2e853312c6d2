"""The command line every table shares (``--data --out --scale --nproc --only --dry-run --collect
--synthetic --set --list``), its defaults, and where a sibling table's output is."""
from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional

from .errors import ReproError
from .paths import REPO, RUNS, SYNTHETIC_DATA


def base_parser(table: str, description: str, data_default: str, data_help: str,
                prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The shared flags of one table; ``prog`` names the command in ``--help`` (default: the script)."""
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None,
                    help=f"{data_help} (default {data_default}; with --synthetic: the synthetic world, "
                         f"default {os.path.relpath(SYNTHETIC_DATA, os.getcwd())})")
    ap.add_argument("--out", default=None, help=f"output folder (default {RUNS}/{table})")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies epochs/iterations (1 = the paper's schedule; e.g. 0.01 for a smoke run)")
    ap.add_argument("--nproc", type=int, default=None, help="processes (GPUs) per run (default: the tool's own)")
    ap.add_argument("--only", nargs="+", default=None, metavar="ROW", help="run/collect only these rows (ids or globs)")
    ap.add_argument("--dry-run", action="store_true", help="print the exact commands, run nothing")
    ap.add_argument("--collect", action="store_true", help="only rebuild the table from finished runs")
    ap.add_argument("--synthetic", action="store_true",
                    help="the CPU-sized synthetic chain (python tools/make_synthetic.py) instead of the real data")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="extra overrides for every training run (the tool's own syntax)")
    ap.add_argument("--list", action="store_true", help="list the row ids and exit")
    ap.set_defaults(table=table, data_default=data_default)
    return ap


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults that depend on other flags; check the scale and that the checkout is there."""
    if args.scale <= 0:
        raise ReproError(f"--scale must be > 0, got {args.scale}")
    if args.nproc is not None and args.nproc < 1:
        raise ReproError(f"--nproc must be >= 1, got {args.nproc}")
    if not os.path.isdir(os.path.join(REPO, "tools")) or not os.path.isdir(os.path.join(REPO, "configs")):
        raise ReproError(f"{REPO} has no tools/ and configs/: the tables run the source checkout's tools; "
                         "install the project editable (pip install -e ., as tools/setup.sh does)")
    if args.data is None:
        args.data = SYNTHETIC_DATA if args.synthetic else args.data_default
    args.data = os.path.abspath(args.data)
    if args.out is None:
        args.out = os.path.join(RUNS, args.table + ("_synthetic" if args.synthetic else ""))
    args.out = os.path.abspath(args.out)
    return args


def sibling_out(args, table: str) -> str:
    """Default output folder of another table beside ``--out``: ``/runs/repro/ade20k`` ->
    ``/runs/repro/imagenet``, ``/x/ade20k_synthetic`` -> ``/x/imagenet_synthetic``."""
    base = os.path.basename(args.out.rstrip("/"))
    name = base.replace(args.table, table, 1) if args.table in base else table
    return os.path.join(os.path.dirname(args.out.rstrip("/")), name)


def synthetic_classes(root: str) -> List[str]:
    """The synthetic world's class names (``classes.json``); a clear error when it is not there."""
    path = os.path.join(root, "classes.json")
    if not os.path.isfile(path):
        raise ReproError(f"{root} is not a synthetic world (no classes.json): run "
                         f"python tools/make_synthetic.py --out {root}")
    with open(path) as f:
        return list(json.load(f))
