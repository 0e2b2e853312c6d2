#!/usr/bin/env python
"""ImageNet-1k pretraining: DeiT-T/S/B x {DeiT baseline (Mixup/CutMix), CutMix, TransMix, TokenMix}.

    python tools/repro/imagenet.py --nproc 8                              # the 12 runs, 300 epochs each
    python tools/repro/imagenet.py --nproc 8 --scale 0.01 --only 'deit_s_*'   # smoke: 3 epochs each
    python tools/repro/imagenet.py --collect                              # the table from finished runs
    python tools/repro/imagenet.py --synthetic --scale 0.25               # the CPU chain on data/synthetic

Each row is one ``tools/pretrain.sh`` run of ``configs/pretrain/deit_{t,s,b}_<method>.yaml`` into
``<out>/runs/<row>``; the table reads ``summary.json`` (best top-1, EMA) and ``metrics.jsonl``.
TokenMix trains on precomputed teacher label maps (``--label-maps``, made once with
``tools/make_label_maps.py``; see the config's header). The other tables (ADE20K, COCO,
robustness, attention) start from these runs' ``best.safetensors``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reprolib as R  # noqa: E402

MODELS = {"t": "DeiT-T", "s": "DeiT-S", "b": "DeiT-B"}
METHODS = {"deit": "DeiT (Mixup+CutMix)", "cutmix": "CutMix", "transmix": "TransMix", "tokenmix": "TokenMix"}
SYN_METHODS = ["deit", "cutmix", "transmix", "tokenmix"]  # cutmix before tokenmix: it is TokenMix's teacher

# Paper numbers (ImageNet-1k val top-1, %), only from /work/shared/seeds and /work/shared/notes/method-facts.md.
MF = "method-facts.md"
PAPER = {
    "deit_t_deit": R.NA,
    "deit_s_deit": R.Paper(79.8, f"seed 000 (TransMix) Table 1 baseline, via {MF}: 'DeiT-S 79.8 → 80.7'"),
    "deit_b_deit": R.Paper(81.8, f"seed 000 (TransMix) Table 1 baseline, via {MF}: 'DeiT-B 81.8 → 82.4'"),
    "deit_t_cutmix": R.NA,
    "deit_s_cutmix": R.NA,
    "deit_b_cutmix": R.NA,
    # the TransMix paper's DeiT-T number is not in the seeds; method-facts gives an independent re-run
    "deit_t_transmix": R.Paper(74.6, f"{MF}: independent re-run of TransMix DeiT-T (not the paper's table)"),
    "deit_s_transmix": R.Paper(80.7, f"seed 000 (TransMix) Table 1, via {MF}: 'DeiT-S 79.8 → 80.7'"),
    "deit_b_transmix": R.Paper(82.4, f"seed 000 (TransMix) Table 1, via {MF}: 'DeiT-B 81.8 → 82.4' "
                                     "(independent re-run: 82.5)"),
    "deit_t_tokenmix": R.Paper(73.2, f"seed 002 (TokenMix), via {MF}: 'DeiT-T/S/B 73.2 / 80.8 / 82.9'"),
    "deit_s_tokenmix": R.Paper(80.8, f"seed 002 (TokenMix), via {MF}: 'DeiT-T/S/B 73.2 / 80.8 / 82.9'"),
    "deit_b_tokenmix": R.Paper(82.9, f"seed 002 (TokenMix), via {MF}: 'DeiT-T/S/B 73.2 / 80.8 / 82.9'"),
}
GAINS = [  # (label, metric, row_b, row_a, paper gain)
    ("DeiT-S: TransMix − DeiT", "s", "transmix", "deit",
     R.Paper(0.9, "seed 000 §4.1 (Table 1): TransMix raises DeiT-S top-1 by 0.9")),
    ("DeiT-T: TokenMix − DeiT", "t", "tokenmix", "deit",
     R.Paper(1.0, "seed 002 abstract: '+1%' for DeiT-T/S/B (rounded)")),
    ("DeiT-S: TokenMix − DeiT", "s", "tokenmix", "deit",
     R.Paper(1.0, "seed 002 abstract: '+1%' for DeiT-T/S/B (rounded)")),
    ("DeiT-B: TokenMix − DeiT", "b", "tokenmix", "deit",
     R.Paper(1.0, "seed 002 abstract: '+1%' for DeiT-T/S/B (rounded)")),
]


def build_rows(args):
    rows = []
    combos = [("t", m) for m in SYN_METHODS] if args.synthetic else \
        [(mo, me) for mo in MODELS for me in METHODS]
    extra_syn = []
    if args.synthetic:
        classes = R.synthetic_classes(args.data) if os.path.isdir(args.data) else None
        if classes is None:
            raise R.ReproError(f"synthetic world {args.data} not found: python tools/make_synthetic.py --out {args.data}")
        extra_syn = [f"data.num_classes={len(classes)}", "train.log_interval=0", "train.progress=false"]
    for model, method in combos:
        rid = R.pretrain_run_id(model, method, args.synthetic)
        cfg_file = R.pretrain_config_file(model, method, args.synthetic)
        run_dir = os.path.join(args.out, "runs", rid)
        data_root = os.path.join(args.data, "imagenet") if args.synthetic else args.data
        cfg = R.pretrain_config(cfg_file)
        sched_ov, sched = R.pretrain_scaled_overrides(cfg, args.scale)
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
        R.pretrain_config(cfg_file, ov)  # every override must be accepted by the real loader
        step = R.pretrain_step(cfg_file, run_dir, ov, args.nproc, sched["epochs"])
        label = ("synthetic ViT" if args.synthetic else MODELS[model]) + " + " + METHODS[method]
        rows.append(R.Row(rid, label, run_dir, [step], requires,
                          info={"config": cfg_file, "schedule": sched, "batch_per_process": cfg["data"]["batch_size"]}))
    return rows


def build_table(args, rows):
    t = R.Table("imagenet", "ImageNet-1k top-1 — DeiT-T/S/B × DeiT / CutMix / TransMix / TokenMix "
                "(TransMix Table 1, TokenMix)" + (" — synthetic chain" if args.synthetic else ""), args)
    detail = ["| row | best top-1 | final top-1 | best EMA top-1 | epochs | train img/s (median) |",
              "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        epochs = row.info["schedule"]["epochs"]
        vals, why = R.row_value(row, args, lambda: R.read_pretrain(row.dir, epochs))
        paper = R.Paper(None, "synthetic data: no paper number") if args.synthetic else PAPER[row.id]
        t.entries.append(R.Entry(row.label, "top-1 (best epoch)", vals["top1"] if vals else None, paper, why,
                                 row_id=row.id))
        if vals:
            f = lambda v: R.MISSING if v is None else f"{v:.2f}"  # noqa: E731
            detail.append(f"| {row.label} | {f(vals['top1'])} | {f(vals['final_top1'])} | {f(vals['ema_top1'])} | "
                          f"{vals['epochs_done']} | {f(vals['img_per_s'])} |")
    if not args.synthetic:
        picked = {r.id for r in rows}
        for label, model, b, a, paper in GAINS:
            rb, ra = f"deit_{model}_{b}", f"deit_{model}_{a}"
            if rb in picked and ra in picked:
                t.add_gain(label, "top-1 (best epoch)", rb, ra, paper)
    if len(detail) > 2:
        t.blocks.append("Per-run details (summary.json, metrics.jsonl):\n\n" + "\n".join(detail))
    bs = {r.info["batch_per_process"] for r in rows}
    t.context["batch"] = (f"{'/'.join(map(str, sorted(bs)))} per process × "
                          f"{args.nproc or 'one process per visible GPU (1 on a CPU)'}"
                          + ("" if args.synthetic else " (DeiT recipe: 1024 in total; the lr scales linearly with it)"))
    sched = rows[0].info["schedule"] if rows else {}
    t.context["schedule"] = f"{sched.get('epochs')} epochs, warm-up {sched.get('warmup_epochs')} epochs" if rows else "—"
    t.notes.append("'best epoch' is the highest validation top-1 over the evaluated epochs (summary.json best_top1), "
                   "as the official DeiT/TransMix code reports; the final-epoch and EMA numbers are listed too.")
    return t


def parse(argv=None):
    ap = R.base_parser("imagenet", __doc__, R.DATA["imagenet"], "ImageNet root holding train/ and val/")
    ap.add_argument("--label-maps", default="/data/imagenet_label_maps",
                    help="TokenMix's precomputed teacher label maps (tools/make_label_maps.py)")
    args = R.finish_args(ap.parse_args(argv))
    args.label_maps = os.path.abspath(args.label_maps)
    rows = build_rows(args)
    return args, rows, lambda picked: build_table(args, picked)


def main(argv=None) -> int:
    return R.run_main(parse, argv)


if __name__ == "__main__":
    sys.exit(main())
