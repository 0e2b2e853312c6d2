"""ADE20K semantic segmentation: Linear and Segmenter (mask transformer) heads on DeiT-T/S/B,
initialised from the ImageNet runs of tools/repro/imagenet.py; single-scale and multi-scale mIoU.

    python tools/repro/ade20k.py --nproc 8                          # 12 runs of 160k iterations
    python tools/repro/ade20k.py --scale 0.01 --only 'mask_deit_s_*'   # smoke: 1.6k iterations
    python tools/repro/ade20k.py --collect
    python tools/repro/ade20k.py --synthetic --scale 0.1            # on data/synthetic, after imagenet.py --synthetic

(``vitmix-repro ade20k ARGS`` is the same command.) Per row: ``mim train mmseg
configs/mmseg/{linear,mask}_deit-{t,s,b}_ade20k-512x512.py`` with
``model.backbone.pretrained=<imagenet run>/best.safetensors`` into ``<row>/train``, then
``mim test`` of the last checkpoint into ``<row>/test_ss`` (single scale) and with ``--tta``
into ``<row>/test_ms`` (scales 0.5–1.75 and flip). The table reads MMEngine's
``<work_dir>/<timestamp>/<timestamp>.json`` test results.
"""
from __future__ import annotations

import os
import sys

from ..args import base_parser, finish_args, synthetic_classes
from ..configs import mm_config
from ..papers import TRANSMIX
from ..paths import DATA, config
from ..recipe import mmseg_recipe
from ..pretrained import METHOD_LABELS, add_pretrained_args, pretrained_file, resolve_pretrained
from ..results import mm_result_json
from ..rows import Row
from ..runner import run_main
from ..scaling import mm_scaled_options
from ..steps import mim_test_step, mim_train_step
from ..table import Entry, Paper, Table, row_value

MODELS = {"t": "DeiT-T", "s": "DeiT-S", "b": "DeiT-B"}
HEADS = {"linear": "Linear", "mask": "Segmenter"}

# TransMix Table 2 is quoted only as gains (DeiT-S, TransMix over the DeiT baseline); no absolute mIoU
# is quoted, so every row's paper number is n/a.
GAINS = [
    ("linear", "DeiT-S Linear: TransMix − DeiT",
     Paper(0.6, TRANSMIX.cite("§4.2 (Table 2): +0.6 mIoU (ss or ms not stated; compared with ss)"))),
    ("mask", "DeiT-S Segmenter: TransMix − DeiT",
     Paper(0.9, TRANSMIX.cite("§4.2 (Table 2): +0.9 mIoU (ss or ms not stated; compared with ss)"))),
]


def config_path(head: str, model: str, synthetic: bool) -> str:
    name = f"{head}_synthetic.py" if synthetic else f"{head}_deit-{model}_ade20k-512x512.py"
    return config("mmseg", name)


def build_rows(args):
    env = {"VITMIX_SYNTHETIC_DIR": args.data} if args.synthetic else {}
    if args.synthetic:
        synthetic_classes(args.data)
        os.environ.update(env)  # the synthetic configs read it when they are parsed
    data_root = os.path.join(args.data, "ade") if args.synthetic else args.data
    models = ["t"] if args.synthetic else list(MODELS)
    rows = []
    for head in HEADS:
        for model in models:
            cfg_file = config_path(head, model, args.synthetic)
            cfg = mm_config(cfg_file)
            sched_opts, sched = mm_scaled_options(cfg, args.scale)
            recipe = mmseg_recipe(cfg, sched["iters"], args.nproc)
            roots = [f"{k}.dataset.data_root={data_root}"
                     for k in ("train_dataloader", "val_dataloader", "test_dataloader")]
            for method in args.methods:
                rid = f"{head}_synthetic_{method}" if args.synthetic else f"{head}_deit_{model}_{method}"
                label = (f"{HEADS[head]} · " + ("synthetic ViT" if args.synthetic else MODELS[model])
                         + f" · {METHOD_LABELS.get(method, method)} pretraining")
                row_dir = os.path.join(args.out, "runs", rid)
                ckpt = pretrained_file(args, model, method)
                train_dir = os.path.join(row_dir, "train")
                train_opts = [f"model.backbone.pretrained={ckpt}"] + roots + sched_opts + list(args.set)
                last = os.path.join(train_dir, f"iter_{sched['iters']}.pth")
                test_opts = ["model.backbone.pretrained=None"] + roots[2:]
                steps = [
                    mim_train_step("mmseg", cfg_file, train_dir, train_opts, sched["iters"], args.nproc, env),
                    mim_test_step("mmseg", cfg_file, last, os.path.join(row_dir, "test_ss"), test_opts, "mIoU",
                                  args.nproc, env=env, name="test_ss"),
                    mim_test_step("mmseg", cfg_file, last, os.path.join(row_dir, "test_ms"), test_opts, "mIoU",
                                  args.nproc, tta=True, env=env, name="test_ms"),
                ]
                how = (f"python tools/repro/imagenet.py{' --synthetic' if args.synthetic else ''} "
                       f"--only {os.path.basename(os.path.dirname(ckpt))} --out {args.pretrained}")
                rows.append(Row(rid, label, row_dir, steps, {ckpt: how},
                                info={"config": cfg_file, "schedule": sched, "pretrained": ckpt,
                                      "batch_per_gpu": int(cfg.train_dataloader.batch_size)}, recipe=recipe))
    return rows


def build_table(args, rows):
    t = Table("ade20k", "ADE20K mIoU — Linear / Segmenter heads on DeiT-T/S/B (TransMix Table 2)"
              + (" — synthetic chain" if args.synthetic else ""), args, papers=[TRANSMIX])
    paper = Paper(None, "synthetic data: no paper number") if args.synthetic else \
        Paper(None, TRANSMIX.cite("Table 2 is quoted only as gains (below)"))
    for row in rows:
        for metric, sub in (("mIoU ss", "test_ss"), ("mIoU ms", "test_ms")):
            vals, why = row_value(row, args, lambda: mm_result_json(os.path.join(row.dir, sub), "mIoU"))
            t.entries.append(Entry(row.label, metric, float(vals["mIoU"]) if vals else None, paper, why,
                                   row_id=row.id))
    picked = {r.id for r in rows}
    if not args.synthetic:
        for head, label, p in GAINS:
            b, a = f"{head}_deit_s_transmix", f"{head}_deit_s_deit"
            if b in picked and a in picked:
                t.add_gain(label, "mIoU ss", b, a, p)
    if rows:
        s = rows[0].info["schedule"]
        t.context["schedule"] = f"{s['iters']} iterations (Segmenter recipe: 160000), evaluation every {s['val_interval']}"
        t.context["batch"] = (f"{rows[0].info['batch_per_gpu']} per GPU × {args.nproc or 1} GPU(s) "
                              "(Segmenter recipe: 8 in total)")
        t.context["pretrained"] = f"{args.pretrained}/runs/<run>/{args.checkpoint}"
    t.notes.append("ss: the config's test mode (sliding 512×512 windows for ADE20K); ms: `--tta`, scales "
                   "0.5–1.75 with flip (configs/mmseg/_base_/datasets/ade20k_512x512.py).")
    return t


def parse(argv=None, prog=None):
    ap = base_parser("ade20k", __doc__, DATA["ade"], "ADEChallengeData2016 folder", prog)
    add_pretrained_args(ap, ["deit", "transmix"], "initialises the backbone",
                        "pretraining runs to transfer (default: the DeiT baseline and TransMix, as Table 2)")
    args = finish_args(ap.parse_args(argv))
    resolve_pretrained(args)
    rows = build_rows(args)
    return args, rows, lambda picked: build_table(args, picked)


def main(argv=None, prog=None) -> int:
    return run_main(parse, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
