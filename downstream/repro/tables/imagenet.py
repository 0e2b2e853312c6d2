"""ImageNet-1k pretraining: DeiT-T/S/B x {DeiT baseline (Mixup/CutMix), CutMix, TransMix, TokenMix}.

    python tools/repro/imagenet.py --nproc 8                              # the 12 runs, 300 epochs each
    python tools/repro/imagenet.py --nproc 8 --scale 0.01 --only 'deit_s_*'   # smoke: 3 epochs each
    python tools/repro/imagenet.py --collect                              # the table from finished runs
    python tools/repro/imagenet.py --synthetic --scale 0.25               # the CPU chain on data/synthetic

(``vitmix-repro imagenet ARGS`` is the same command.) Each row is one ``tools/pretrain.sh`` run of
``configs/pretrain/deit_{t,s,b}_<method>.yaml`` into ``<out>/runs/<row>``; the table reads
``summary.json`` (best top-1, EMA) and ``metrics.jsonl`` and compares with the paper the number each method's
official code reports (``results.REPORTED``). The dry-run plan prints each row's recipe values. TokenMix
trains on precomputed teacher label maps (``--label-maps``, made once with ``tools/make_label_maps.py``; see
the config's header).
The other tables (ADE20K, COCO, robustness, attention) start from these runs' ``best.safetensors``.
"""
from __future__ import annotations

import os
import sys

from ..args import base_parser, finish_args, synthetic_classes
from ..configs import pretrain_config
from ..errors import ReproError
from ..papers import TOKENMIX, TRANSMIX
from ..recipe import pretrain_recipe
from ..paths import DATA
from ..pretrained import pretrain_config_file, pretrain_run_id
from ..results import REPORTED, REPORTED_TEXT, read_pretrain, reported_top1
from ..rows import Row
from ..runner import run_main
from ..scaling import pretrain_scaled_overrides
from ..steps import pretrain_step
from ..table import MISSING, NA, Entry, Paper, Table, row_value

MODELS = {"t": "DeiT-T", "s": "DeiT-S", "b": "DeiT-B"}
METHODS = {"deit": "DeiT (Mixup+CutMix)", "cutmix": "CutMix", "transmix": "TransMix", "tokenmix": "TokenMix"}
SYN_METHODS = ["deit", "cutmix", "transmix", "tokenmix"]  # cutmix before tokenmix: it is TokenMix's teacher

# Paper numbers (ImageNet-1k val top-1, %).
TOKENMIX_TSB = TOKENMIX.cite("(ImageNet-1k): DeiT-T/S/B 73.2 / 80.8 / 82.9")
PAPER = {
    "deit_t_deit": NA,
    "deit_s_deit": Paper(79.8, TRANSMIX.cite("Table 1, DeiT-S baseline: 79.8 → 80.7 with TransMix")),
    "deit_b_deit": Paper(81.8, TRANSMIX.cite("Table 1, DeiT-B baseline: 81.8 → 82.4 with TransMix")),
    "deit_t_cutmix": NA,
    "deit_s_cutmix": NA,
    "deit_b_cutmix": NA,
    # no DeiT-T number is quoted from the TransMix paper: this is an independent re-run's
    "deit_t_transmix": Paper(74.6, "independent re-run of TransMix with DeiT-T (not a number of the paper's Table 1)"),
    "deit_s_transmix": Paper(80.7, TRANSMIX.cite("Table 1: DeiT-S 79.8 → 80.7")),
    "deit_b_transmix": Paper(82.4, TRANSMIX.cite("Table 1: DeiT-B 81.8 → 82.4 (independent re-run: 82.5)")),
    "deit_t_tokenmix": Paper(73.2, TOKENMIX_TSB),
    "deit_s_tokenmix": Paper(80.8, TOKENMIX_TSB),
    "deit_b_tokenmix": Paper(82.9, TOKENMIX_TSB),
}
TOKENMIX_GAIN = TOKENMIX.cite("abstract: '+1%' for DeiT-T/S/B (rounded)")
GAINS = [  # (label, metric, row_b, row_a, paper gain)
    ("DeiT-S: TransMix − DeiT", "s", "transmix", "deit",
     Paper(0.9, TRANSMIX.cite("§4.1 (Table 1): TransMix raises DeiT-S top-1 by 0.9"))),
    ("DeiT-T: TokenMix − DeiT", "t", "tokenmix", "deit", Paper(1.0, TOKENMIX_GAIN)),
    ("DeiT-S: TokenMix − DeiT", "s", "tokenmix", "deit", Paper(1.0, TOKENMIX_GAIN)),
    ("DeiT-B: TokenMix − DeiT", "b", "tokenmix", "deit", Paper(1.0, TOKENMIX_GAIN)),
]


def build_rows(args):
    rows = []
    combos = [("t", m) for m in SYN_METHODS] if args.synthetic else \
        [(mo, me) for mo in MODELS for me in METHODS]
    extra_syn = []
    if args.synthetic:
        classes = synthetic_classes(args.data) if os.path.isdir(args.data) else None
        if classes is None:
            raise ReproError(f"synthetic world {args.data} not found: python tools/make_synthetic.py --out {args.data}")
        extra_syn = [f"data.num_classes={len(classes)}", "train.log_interval=0", "train.progress=false"]
    for model, method in combos:
        rid = pretrain_run_id(model, method, args.synthetic)
        cfg_file = pretrain_config_file(model, method, args.synthetic)
        run_dir = os.path.join(args.out, "runs", rid)
        data_root = os.path.join(args.data, "imagenet") if args.synthetic else args.data
        cfg = pretrain_config(cfg_file)
        sched_ov, sched = pretrain_scaled_overrides(cfg, args.scale)
        ov = [f"data.root={data_root}"] + sched_ov + extra_syn
        requires = {}
        if method == "tokenmix":
            if args.synthetic:
                teacher = os.path.join(args.out, "runs", "synthetic_cutmix", "model.safetensors")
                ov.append(f"mixer.teacher.checkpoint={teacher}")
                requires[teacher] = "the synthetic_cutmix row's weights (TokenMix's teacher; that row runs first)"
            else:
                ov.append(f"mixer.label_maps={args.label_maps}")
                requires[args.label_maps] = ("TokenMix's teacher label maps: python tools/make_label_maps.py --data "
                                             f"{args.data}/train --out {args.label_maps} --teacher ... (see "
                                             "configs/pretrain/deit_t_tokenmix.yaml)")
        ov += list(args.set)
        run_cfg = pretrain_config(cfg_file, ov)  # every override must be accepted by the real loader
        step = pretrain_step(cfg_file, run_dir, ov, args.nproc, sched["epochs"])
        label = ("synthetic ViT" if args.synthetic else MODELS[model]) + " + " + METHODS[method]
        recipe = pretrain_recipe(run_cfg, args.nproc)
        recipe["reported"] = REPORTED_TEXT[REPORTED[method]]
        rows.append(Row(rid, label, run_dir, [step], requires,
                        info={"config": cfg_file, "schedule": sched, "batch_per_process": cfg["data"]["batch_size"],
                              "method": method, "total_batch": recipe["total batch"].split()[0],
                              "recipe_batch": int(cfg["data"]["batch_size"]) * 8},
                        recipe=recipe, notes=list(sched.get("notes", ()))))
    return rows


def schedule_context(rows) -> str:
    """The rows' (scaled) schedules, one entry per distinct schedule with the rows that use it."""
    groups = {}
    for r in rows:
        s = r.info["schedule"]
        groups.setdefault((s["epochs"], s.get("cooldown_epochs", 0), s["warmup_epochs"]), []).append(r.id)
    return "; ".join(f"{e} epochs" + (f" ({c} of them cooldown at min lr)" if c else "") + f", warm-up {w} epochs"
                     + (f" ({', '.join(ids)})" if len(groups) > 1 else "") for (e, c, w), ids in groups.items())


def build_table(args, rows):
    t = Table("imagenet", "ImageNet-1k top-1 — DeiT-T/S/B × DeiT / CutMix / TransMix / TokenMix "
              "(TransMix Table 1, TokenMix)" + (" — synthetic chain" if args.synthetic else ""), args,
              papers=[TRANSMIX, TOKENMIX])
    detail = ["| row | compared (as the official code reports) | best top-1 | final top-1 | best EMA top-1 | epochs "
              "| train img/s (median) |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        epochs = row.info["schedule"]["epochs"]
        vals, why = row_value(row, args, lambda: read_pretrain(row.dir, epochs))
        paper = Paper(None, "synthetic data: no paper number") if args.synthetic else PAPER[row.id]
        ours, what = reported_top1(row.info["method"], vals) if vals else (None, "")
        t.entries.append(Entry(row.label, "top-1 (best epoch)", ours, paper, why, row_id=row.id))
        if vals:
            f = lambda v: MISSING if v is None else f"{v:.2f}"  # noqa: E731
            detail.append(f"| {row.label} | {f(ours)}: {what} | {f(vals['top1'])} | {f(vals['final_top1'])} | "
                          f"{f(vals['ema_top1'])} | {vals['epochs_done']} | {f(vals['img_per_s'])} |")
    if not args.synthetic:
        picked = {r.id for r in rows}
        for label, model, b, a, paper in GAINS:
            rb, ra = f"deit_{model}_{b}", f"deit_{model}_{a}"
            if rb in picked and ra in picked:
                t.add_gain(label, "top-1 (best epoch)", rb, ra, paper)
    if len(detail) > 2:
        t.blocks.append("Per-run details (summary.json, metrics.jsonl):\n\n" + "\n".join(detail))
    bs = {r.info["batch_per_process"] for r in rows}
    recipe_totals = sorted({r.info["recipe_batch"] for r in rows}, reverse=True)
    by_total = {n: ", ".join(r.id for r in rows if r.info["recipe_batch"] == n) for n in recipe_totals}
    t.context["batch"] = (f"{'/'.join(map(str, sorted(bs)))} per process × "
                          f"{args.nproc or 'one process per visible GPU (1 on a CPU)'}"
                          + ("" if args.synthetic else
                             " (the recipes' totals over 8 processes: "
                             + "; ".join(f"{n} for {ids}" for n, ids in by_total.items())
                             + "; the lr scales linearly with the actual total)"))
    t.context["schedule"] = schedule_context(rows) if rows else "—"
    t.notes.append("'best epoch' is the highest validation top-1 over the evaluated epochs. Each row is compared with "
                   "the paper as its method's official code reports it: DeiT and CutMix (DeiT's main.py) the model's "
                   "best; TransMix (train.py: eval_metrics = ema_eval_metrics with --model-ema) the EMA's best; "
                   "TokenMix (main.py max_accuracy) the max of the model's and the EMA's best. The per-run details "
                   "list the model's best, final and EMA numbers too.")
    return t


def parse(argv=None, prog=None):
    ap = base_parser("imagenet", __doc__, DATA["imagenet"], "ImageNet root holding train/ and val/", prog)
    ap.add_argument("--label-maps", default="/data/imagenet_label_maps",
                    help="TokenMix's precomputed teacher label maps (tools/make_label_maps.py)")
    args = finish_args(ap.parse_args(argv))
    args.label_maps = os.path.abspath(args.label_maps)
    rows = build_rows(args)
    return args, rows, lambda picked: build_table(args, picked)


def main(argv=None, prog=None) -> int:
    return run_main(parse, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
