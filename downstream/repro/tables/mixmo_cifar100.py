"""MixMo on CIFAR-100 with WRN-28-10: vanilla, CutMix, Linear-MixMo, Cut-MixMo, Cut-MixMo + CutMix
(the MixMo paper's CIFAR-100 table): ensemble top-1, NLL and ECE.

    python tools/repro/mixmo_cifar100.py                         # the 5 runs at the configs' schedule
    python tools/repro/mixmo_cifar100.py --scale 0.02 --only cut_mixmo
    python tools/repro/mixmo_cifar100.py --collect
    python tools/repro/mixmo_cifar100.py --synthetic --scale 0.01 --only vanilla   # CPU chain

(``vitmix-repro mixmo_cifar100 ARGS`` is the same command.) Each row is ``tools/pretrain.sh
configs/mixmo/cifar100_wrn28_10_<row>.yaml data.root=<cifar> train.epochs=...`` into
``<out>/runs/<row>``; the table reads the run's ``eval.json`` (``ensemble.top1/nll/ece`` and the
per-head top-1). ``--synthetic`` runs ``configs/mixmo/synthetic_<row>.yaml`` (a WRN-10-2) on a small
CIFAR-100-layout set that ``tools/make_synthetic_small.py`` writes under ``<out>/data`` (or ``--data``).
"""
from __future__ import annotations

import os
import sys

from ..args import base_parser, finish_args
from ..configs import pretrain_config
from ..papers import MIXMO
from ..recipe import mixmo_recipe
from ..paths import DATA, RUNS, config, python, tool
from ..results import read_mixmo
from ..rows import Row, Step
from ..runner import run_main
from ..scaling import pretrain_scaled_overrides
from ..steps import pretrain_step
from ..table import MISSING, Entry, Paper, Table, row_value

ROWS = {"vanilla": "WRN-28-10 (vanilla)", "cutmix": "WRN-28-10 + CutMix", "linear_mixmo": "Linear-MixMo (M=2)",
        "cut_mixmo": "Cut-MixMo (M=2)", "cut_mixmo_cutmix": "Cut-MixMo (M=2) + CutMix"}
# CIFAR-100 top-1 (%), WRN-28-10, from the MixMo paper's CIFAR-100 table.
MM = MIXMO.cite("CIFAR-100, WRN-28-10")
PAPER = {
    "vanilla": Paper(81.8, f"{MM}: vanilla 81.8"),
    "cutmix": Paper(84.0, f"{MM}: CutMix 84.0"),
    "linear_mixmo": Paper(None, f"no Linear-MixMo number quoted from {MM}"),
    "cut_mixmo": Paper((85.5, 85.6), f"{MM}: Cut-MixMo 85.5–85.6"),
    "cut_mixmo_cutmix": Paper((85.8, 85.9), f"{MM}: + CutMix 85.8–85.9"),
}


def config_path(row: str) -> str:
    return config("mixmo", f"cifar100_wrn28_10_{row}.yaml")


def config_file(row: str, synthetic: bool) -> str:
    return config("mixmo", f"synthetic_{row}.yaml") if synthetic else config_path(row)


def build_rows(args):
    pre = []
    if args.synthetic:  # a small CIFAR-100-layout set written by the project's own generator
        meta = os.path.join(args.data, "cifar-100-python", "meta")
        pre = [Step("data", [python(), tool("make_synthetic_small.py"), "--format", "cifar100", "--out",
                             args.data, "--num-classes", "10"], done=lambda: os.path.isfile(meta))]
    rows = []
    for rid, label in ROWS.items():
        cfg_file = config_file(rid, args.synthetic)
        run_dir = os.path.join(args.out, "runs", rid)
        label = label + (" (synthetic, WRN-10-2)" if args.synthetic else "")
        if not os.path.isfile(cfg_file):
            rows.append(Row(rid, label, run_dir, [], {cfg_file: "the MixMo config (configs/mixmo/)"},
                            info={"schedule": None}))
            continue
        cfg = pretrain_config(cfg_file)
        sched_ov, sched = pretrain_scaled_overrides(cfg, args.scale)
        ov = [f"data.root={args.data}"] + sched_ov + list(args.set)
        run_cfg = pretrain_config(cfg_file, ov)  # every override must be accepted by the real loader
        step = pretrain_step(cfg_file, run_dir, ov, args.nproc, sched["epochs"])
        step.done = (lambda d=run_dir: os.path.isfile(os.path.join(d, "eval.json")))
        rows.append(Row(rid, label, run_dir, pre + [step], info={"schedule": sched, "config": cfg_file},
                        recipe=mixmo_recipe(run_cfg, args.nproc), notes=list(sched.get("notes", ()))))
    return rows


def build_table(args, rows):
    t = Table("mixmo_cifar100", "MixMo — CIFAR-100, WRN-28-10: ensemble top-1 / NLL / ECE (MixMo, CIFAR-100 table)"
              + (" — synthetic chain" if args.synthetic else ""), args, papers=[MIXMO])
    detail = ["| row | top-1 | NLL | ECE | per-head top-1 |", "|---|---:|---:|---:|---|"]
    for row in rows:
        vals, why = row_value(row, args, lambda: read_mixmo(row.dir))
        paper = Paper(None, "synthetic data: no paper number") if args.synthetic else PAPER[row.id]
        t.entries.append(Entry(row.label, "ensemble top-1", vals["top1"] if vals else None, paper, why,
                               row_id=row.id, digits=2 if isinstance(paper.value, tuple) else 1))
        if vals:
            f = lambda v, d=3: MISSING if v is None else f"{float(v):.{d}f}"  # noqa: E731
            detail.append(f"| {row.label} | {f(vals['top1'], 2)} | {f(vals['nll'])} | {f(vals['ece'])} | "
                          + ", ".join(f(h, 2) for h in vals["heads_top1"]) + " |")
    if len(detail) > 2:
        t.blocks.append("Per-run details (eval.json):\n\n" + "\n".join(detail))
    scheds = [r.info["schedule"] for r in rows if r.info.get("schedule")]
    if scheds:
        t.context["schedule"] = f"{scheds[0]['epochs']} epochs (scaled from each config's train.epochs)"
    t.notes.append("A paper range (two runs reported) counts as matched when ours lies inside it; Δ is the distance "
                   "to its nearest end otherwise.")
    return t


def parse(argv=None, prog=None):
    ap = base_parser("mixmo_cifar100", __doc__, DATA["cifar100"],
                     "folder holding cifar-100-python/ (train, test, meta), or that folder itself", prog)
    args = ap.parse_args(argv)
    if args.synthetic and args.data is None:
        args.data = os.path.join(args.out or os.path.join(RUNS, "mixmo_cifar100_synthetic"), "data")
    args = finish_args(args)
    rows = build_rows(args)
    return args, rows, lambda picked: build_table(args, picked)


def main(argv=None, prog=None) -> int:
    return run_main(parse, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
