"""Print the quickstart table: per pretraining (random init, CutMix, TransMix, TokenMix) the synthetic val
top-1, the linear-probe top-1 of the frozen backbone and the ADE20K-layout mIoU, with the spread across
generator seeds.

``--out`` holds one folder per generator seed (``seed<N>/``, written by ``tools/quickstart.sh``); with
several, every cell is the mean and the table adds the min-max range across seeds. With one, the table
shows the range recorded for three seeds in ``--reference`` (``docs/results/quickstart_seeds.json``, the
measurement that ``docs/segmentation.md`` reports), so that a reader can judge differences between
mixers against it. ``--write-reference`` rewrites that file from the seeds in ``--out``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from statistics import mean

from downstream.logs import last_scalar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INITS = ("random", "cutmix", "transmix", "tokenmix")
NAMES = {"random": "random init", "cutmix": "CutMix", "transmix": "TransMix", "tokenmix": "TokenMix"}
COLUMNS = (("val_top1", "val top-1"), ("probe_top1", "probe top-1"), ("mIoU", "ADE mIoU"))
REFERENCE = os.path.join(ROOT, "docs", "results", "quickstart_seeds.json")


def seed_rows(run: str, data_root: str) -> list[dict]:
    """The rows of one generator seed's run folder ``run`` (its data in ``data_root``)."""
    import torch

    from pretrain.analysis.common import load_classifier
    from pretrain.analysis.linear_probe import folder_loaders, model_probe_top1
    from pretrain.engine.config import load_config
    from pretrain.objectives.classification import build_vit, evaluate

    cfg = load_config(os.path.join(ROOT, "configs/pretrain/synthetic_base.yaml"),
                      [f"data.root={os.path.join(data_root, 'imagenet')}"])
    loaders = folder_loaders(cfg["data"], batch_size=cfg["data"]["batch_size"])
    k = int(cfg["data"]["num_classes"])
    rows = []
    for init in INITS:
        if init == "random":  # what the segmentation 'random' row starts from
            torch.manual_seed(cfg["train"]["seed"])
            model = build_vit(cfg)
            top1 = evaluate(model, loaders[1], torch.device("cpu"), None)["top1"]
        else:
            ckpt = os.path.join(run, f"pretrain_{init}", "model.safetensors")
            if not os.path.isfile(ckpt):
                rows.append(dict(init=init, val_top1=None, probe_top1=None, mIoU=None))
                continue
            model = load_classifier(ckpt).model
            with open(os.path.join(run, f"pretrain_{init}", "summary.json")) as f:
                top1 = json.load(f)["final"].get("val_top1")
        probe = model_probe_top1(model, loaders, k)
        rows.append(dict(init=init, val_top1=top1, probe_top1=probe,
                         mIoU=last_scalar(os.path.join(run, f"seg_{init}"), "mIoU")))
    return rows


def summarise(per_seed: dict) -> dict:
    """``{init: {column: {"mean", "min", "max", "n"}}}`` over the seeds that have the value."""
    out = {}
    for init in INITS:
        out[init] = {}
        for col, _ in COLUMNS:
            vals = [r[col] for rows in per_seed.values() for r in rows if r["init"] == init and r[col] is not None]
            out[init][col] = (dict(mean=mean(vals), min=min(vals), max=max(vals), n=len(vals)) if vals else None)
    return out


def analysis_lines(path: str) -> list[str]:
    """Occlusion and patch-shuffle top-1 per checkpoint from ``tools/analyze.py all``'s summary.json."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        summary = json.load(f)
    keys = ("occl_random_0", "occl_random_0.5", "occl_random_0.9", "occl_salient_0.5", "occl_nonsalient_0.5",
            "shuffle_mean")
    lines = ["top-1 with patches dropped (random 0 / 50 / 90 %; 50 % salient vs non-salient) and shuffled:"]
    for name, d in summary.items():
        v = ["n/a" if d.get(k) is None else f"{d[k]:.1f}" for k in keys]
        lines.append(f"  {NAMES.get(name, name):<11} {v[0]} / {v[1]} / {v[2]}; salient {v[3]} vs non-salient {v[4]}; "
                     f"shuffled {v[5]}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="quickstart output folder with seed<N>/ run folders")
    ap.add_argument("--data", required=True, help="data folder of seed 0; seed N>0 is <data>-seed<N>")
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="generator seeds (default: every seed<N>/)")
    ap.add_argument("--elapsed", type=int, default=None)
    ap.add_argument("--reference", default=REFERENCE)
    ap.add_argument("--write-reference", action="store_true")
    args = ap.parse_args()
    per_seed = {}
    runs = (sorted(glob.glob(os.path.join(args.out, "seed*"))) if args.seeds is None
            else [os.path.join(args.out, f"seed{s}") for s in args.seeds])
    for run in runs:
        seed = int(os.path.basename(run)[4:])
        per_seed[seed] = seed_rows(run, args.data if seed == 0 else f"{args.data}-seed{seed}")
    if not per_seed:
        raise SystemExit(f"no seed<N>/ run folders in {args.out}")
    summary = summarise(per_seed)
    result = {"seeds": sorted(per_seed), "rows": per_seed, "summary": summary}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    if args.write_reference:
        os.makedirs(os.path.dirname(args.reference), exist_ok=True)
        with open(args.reference, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    ref = None
    if len(per_seed) == 1 and os.path.isfile(args.reference):
        with open(args.reference) as f:
            ref = json.load(f)

    def cell(s):
        return "  n/a" if s is None else f"{s['mean']:5.1f}"

    def spread(s):
        return "" if s is None or s["n"] < 2 else f" [{s['min']:4.1f}-{s['max']:4.1f}]"

    seeds = ", ".join(map(str, sorted(per_seed)))
    width = 82
    print("=" * width)
    print("Quickstart results on the synthetic world (a demo, not a claim: tiny model, few epochs,")
    print("synthetic data; differences here say nothing about ImageNet/ADE20K).")
    print(f"generator seed(s) {seeds}" + (": mean [min-max] across seeds" if len(per_seed) > 1 else ""))
    print("-" * width)
    print(f"{'pretraining':<13}" + "".join(f"{title:>23}" for _, title in COLUMNS))
    for init in INITS:
        print(f"{NAMES[init]:<13}" + "".join(f"{cell(summary[init][c]) + spread(summary[init][c]):>23}"
                                             for c, _ in COLUMNS))
    if ref is not None:
        print("-" * width)
        print(f"spread across generator seeds {', '.join(map(str, ref['seeds']))} (recorded in "
              f"{os.path.relpath(args.reference, ROOT)}): min-max")
        for init in INITS:
            print(f"{NAMES[init]:<13}" + "".join(
                f"{'' if ref['summary'][init][c] is None else spread(ref['summary'][init][c]):>23}" for c, _ in COLUMNS))
    print("-" * width)
    print("val top-1: the pretraining run's validation (random init: the untrained model); probe top-1: a")
    print("logistic regression on the frozen backbone's features; ADE mIoU: the fine-tuned Linear head.")
    analysis = os.path.join(args.out, f"seed{min(per_seed)}", "analysis")
    if os.path.isdir(analysis):
        for line in analysis_lines(os.path.join(analysis, "summary.json")):
            print(line)
        print(f"robustness/attention studies (CSV, JSON, PNG): {analysis}")
    if args.elapsed is not None:
        print(f"wall time after set-up: {args.elapsed // 60} min {args.elapsed % 60} s; "
              f"results in {args.out}/results.json")
    print("=" * width)


if __name__ == "__main__":
    main()
