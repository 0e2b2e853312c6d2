"""Print the quickstart table: mixer, synthetic val top-1, mIoU (random init vs CutMix/TransMix/TokenMix)."""
from __future__ import annotations

import argparse
import json
import os

from downstream.logs import last_scalar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_init_top1(cfg_path: str, data_root: str) -> float:
    """Val top-1 of the randomly initialised ViT (what the segmentation 'random' row starts from)."""
    import torch
    from torch.utils.data import DataLoader

    from pretrain.data.folders import build_folder_dataset
    from pretrain.engine.config import load_config
    from pretrain.objectives.classification import build_vit, evaluate

    cfg = load_config(cfg_path, [f"data.root={data_root}"])
    torch.manual_seed(cfg["train"]["seed"])
    dc = cfg["data"]
    model = build_vit(cfg)
    loader = DataLoader(build_folder_dataset(dc, dc["val_split"], train=False), batch_size=dc["batch_size"])
    return evaluate(model, loader, torch.device("cpu"), None)["top1"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--elapsed", type=int, default=None)
    args = ap.parse_args()
    rows = []
    for init in ("random", "cutmix", "transmix", "tokenmix"):
        if init == "random":
            top1 = random_init_top1(os.path.join(ROOT, "configs/pretrain/synthetic_base.yaml"),
                                    os.path.join(args.data, "imagenet"))
        else:
            with open(os.path.join(args.out, f"pretrain_{init}", "summary.json")) as f:
                top1 = json.load(f)["final"].get("val_top1")
        rows.append((init, top1, last_scalar(os.path.join(args.out, f"seg_{init}"), "mIoU")))
    table = {"rows": [dict(init=r[0], val_top1=r[1], mIoU=r[2]) for r in rows]}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(table, f, indent=2)

    fmt = lambda v: "  n/a" if v is None else f"{v:5.1f}"  # noqa: E731
    print("=" * 64)
    print("Quickstart results on the synthetic world (a demo, not a claim:")
    print("tiny model, few epochs, synthetic data; differences here say nothing")
    print("about ImageNet/ADE20K and can flip with the seed).")
    print("-" * 64)
    print(f"{'pretraining':<14}{'synthetic val top-1 (%)':>26}{'ADE-layout mIoU (%)':>22}")
    for init, top1, miou in rows:
        name = {"random": "random init", "cutmix": "CutMix", "transmix": "TransMix", "tokenmix": "TokenMix"}[init]
        print(f"{name:<14}{fmt(top1):>26}{fmt(miou):>22}")
    print("-" * 64)
    analysis = os.path.join(args.out, "analysis")
    if os.path.isdir(analysis):
        print(f"robustness/attention studies (CSV, JSON, PNG): {analysis}")
    if args.elapsed is not None:
        print(f"wall time after set-up: {args.elapsed // 60} min {args.elapsed % 60} s; results in {args.out}/results.json")
    print("=" * 64)


if __name__ == "__main__":
    main()
