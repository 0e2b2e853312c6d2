"""COCO Mask R-CNN (ViTDet recipe, 100 epochs) on DeiT-T/S/B from the ImageNet runs: box and mask AP,
with MMDetection or Detectron2.

    python tools/repro/coco.py --framework mmdet --nproc 8                 # 184,375 iterations per row
    python tools/repro/coco.py --framework detectron2 --nproc 8 --scale 0.01 --only 'maskrcnn_deit_s_*'
    python tools/repro/coco.py --framework mmdet --collect
    python tools/repro/coco.py --framework detectron2 --synthetic --scale 0.2   # CPU, data/synthetic

(``vitmix-repro coco ARGS`` is the same command.)
mmdet: ``mim train mmdet configs/mmdet/mask-rcnn_vitmix-deit-{t,s,b}_vitdet-100e_coco.py`` into
``<row>/train`` then ``mim test`` of the last checkpoint into ``<row>/test`` (CocoMetric's
``coco/bbox_mAP``, ``coco/segm_mAP`` in MMEngine's ``<timestamp>/<timestamp>.json``).
detectron2: ``python tools/train_d2.py --config-file configs/detectron2/mask_rcnn_vitmix_deit_{t,s,b}_100ep.py``
into ``<row>/train`` then ``--eval-only`` on ``model_final.pth`` into ``<row>/test``
(``metrics_eval.json``: COCOEvaluator's bbox/segm AP).
"""
from __future__ import annotations

import os
import sys

from ..args import base_parser, finish_args, synthetic_classes
from ..configs import d2_config, mm_config
from ..errors import Missing, NoDetections
from ..papers import TRANSMIX
from ..paths import DATA, config, python, tool
from ..recipe import d2_recipe, mmdet_recipe
from ..pretrained import METHOD_LABELS, add_pretrained_args, pretrain_run_id, pretrained_file, resolve_pretrained
from ..results import read_d2, read_mmdet
from ..rows import Row, Step
from ..runner import run_main
from ..scaling import d2_scaled_overrides, mm_scaled_options
from ..steps import mim_test_step, mim_train_step
from ..table import Entry, Paper, Table, row_value

MODELS = {"t": "DeiT-T", "s": "DeiT-S", "b": "DeiT-B"}
# TransMix Table 3 is quoted only as a gain of TransMix- over CutMix-pretrained backbones.
GAIN_BOX = Paper(0.5, TRANSMIX.cite("§4.2 (Table 3): +0.5 box AP over CutMix (backbone not stated)"))
GAIN_MASK = Paper(0.6, TRANSMIX.cite("§4.2 (Table 3): +0.6 mask AP over CutMix (backbone not stated)"))


def config_path(framework: str, model: str, synthetic: bool) -> str:
    if framework == "mmdet":
        name = "mask-rcnn_vitmix_synthetic.py" if synthetic else f"mask-rcnn_vitmix-deit-{model}_vitdet-100e_coco.py"
    else:
        name = "mask_rcnn_vitmix_synthetic.py" if synthetic else f"mask_rcnn_vitmix_deit_{model}_100ep.py"
    return config(framework, name)


def _tested(read, test_dir):
    """``done()`` of a test step: its AP is there, or the test ran and found no detections at all."""
    def done() -> bool:
        try:
            read(test_dir)
            return True
        except NoDetections:
            return True
        except Missing:
            return False
    return done


def _mmdet_steps(args, cfg_file, row_dir, ckpt, env):
    cfg = mm_config(cfg_file)
    sched_opts, sched = mm_scaled_options(cfg, args.scale)
    roots = []
    if not args.synthetic:
        root = args.data.rstrip("/") + "/"
        roots = [f"{k}.dataset.data_root={root}" for k in ("train_dataloader", "val_dataloader", "test_dataloader")]
        for ev in ("val_evaluator", "test_evaluator"):
            roots += [f"{ev}.ann_file={root}annotations/instances_val2017.json", f"{ev}.img_dir={root}val2017/"]
    train_dir = os.path.join(row_dir, "train")
    last = os.path.join(train_dir, f"iter_{sched['iters']}.pth")
    steps = [mim_train_step("mmdet", cfg_file, train_dir, [f"model.backbone.pretrained={ckpt}"] + roots
                            + sched_opts + list(args.set), sched["iters"], args.nproc, env),
             mim_test_step("mmdet", cfg_file, last, os.path.join(row_dir, "test"),
                           ["model.backbone.pretrained=None"] + [r for r in roots if r.startswith("test_")],
                           "coco/bbox_mAP", args.nproc, env=env,
                           done=_tested(read_mmdet, os.path.join(row_dir, "test")))]
    info = {"schedule": sched, "batch": f"{int(cfg.train_dataloader.batch_size)} per GPU × {args.nproc or 1} GPU(s)",
            "recipe": mmdet_recipe(cfg, sched["iters"], args.nproc)}
    return steps, info


def _d2_steps(args, cfg_file, row_dir, ckpt, env):
    cfg = d2_config(cfg_file)
    sched_ov, sched = d2_scaled_overrides(cfg, args.scale)
    roots = []
    if not args.synthetic:
        for split, name in (("train", "vitmix_coco_2017_train"), ("val", "vitmix_coco_2017_val")):
            roots += [f"datasets.{name}.json_file={args.data}/annotations/instances_{split}2017.json",
                      f"datasets.{name}.image_root={args.data}/{split}2017"]
    train_dir = os.path.join(row_dir, "train")
    test_dir = os.path.join(row_dir, "test")
    launch = [python(), tool("train_d2.py")] + (["--num-gpus", str(args.nproc)] if args.nproc else [])
    ov = [f"model.backbone.pretrained={ckpt}", f"train.output_dir={train_dir}"] + roots + sched_ov + list(args.set)
    final = os.path.join(train_dir, "model_final.pth")
    train = Step("train", launch + ["--config-file", cfg_file] + ov, env=env,
                 done=lambda: os.path.isfile(final),
                 partial=lambda: os.path.isfile(os.path.join(train_dir, "last_checkpoint")),
                 resume_argv=launch + ["--config-file", cfg_file, "--resume"] + ov)

    test = Step("test", launch + ["--config-file", cfg_file, "--eval-only", "model.backbone.pretrained=null",
                                  f"train.init_checkpoint={final}", f"train.output_dir={test_dir}"] + roots,
                env=env, done=_tested(read_d2, test_dir))
    info = {"schedule": sched, "batch": f"{int(cfg.dataloader.train.total_batch_size)} in total",
            "recipe": d2_recipe(cfg, sched["iters"])}
    return [train, test], info


def build_rows(args):
    env = {"VITMIX_SYNTHETIC_DIR": args.data} if args.synthetic else {}
    if args.synthetic:
        synthetic_classes(args.data)
        os.environ.update(env)  # the synthetic configs read it when they are parsed
    models = ["t"] if args.synthetic else list(MODELS)
    rows = []
    for model in models:
        cfg_file = config_path(args.framework, model, args.synthetic)
        for method in args.methods:
            rid = f"maskrcnn_synthetic_{method}" if args.synthetic else f"maskrcnn_deit_{model}_{method}"
            row_dir = os.path.join(args.out, "runs", args.framework, rid)
            run = pretrain_run_id(model, method, args.synthetic)
            ckpt = pretrained_file(args, model, method)
            make = _mmdet_steps if args.framework == "mmdet" else _d2_steps
            steps, info = make(args, cfg_file, row_dir, ckpt, env)
            label = (f"Mask R-CNN · {'synthetic ViT' if args.synthetic else MODELS[model]} · "
                     f"{METHOD_LABELS[method]} pretraining")
            how = (f"python tools/repro/imagenet.py{' --synthetic' if args.synthetic else ''} --only {run} "
                   f"--out {args.pretrained}")
            rows.append(Row(rid, label, row_dir, steps, {ckpt: how}, info={"config": cfg_file, **info},
                            recipe=info["recipe"]))
    return rows


def read_row(args, row):
    test = os.path.join(row.dir, "test")
    return read_mmdet(test) if args.framework == "mmdet" else read_d2(test)


def build_table(args, rows):
    fw = {"mmdet": "MMDetection 3.3", "detectron2": "Detectron2 0.6"}[args.framework]
    t = Table("coco", f"COCO Mask R-CNN box / mask AP — DeiT-T/S/B backbones, {fw} (TransMix Table 3)"
              + (" — synthetic chain" if args.synthetic else ""), args, stem=f"table_{args.framework}",
              papers=[TRANSMIX])
    paper = Paper(None, "synthetic data: no paper number") if args.synthetic else \
        Paper(None, TRANSMIX.cite("Table 3 is quoted only as gains (below)"))
    for row in rows:
        vals, why = row_value(row, args, lambda: read_row(args, row))
        for metric, key in (("box AP", "box_ap"), ("mask AP", "mask_ap")):
            t.entries.append(Entry(row.label, metric, vals[key] if vals else None, paper, why, row_id=row.id))
    picked = {r.id for r in rows}
    if not args.synthetic:
        for model, name in MODELS.items():
            b, a = f"maskrcnn_deit_{model}_transmix", f"maskrcnn_deit_{model}_cutmix"
            if b in picked and a in picked:
                t.add_gain(f"{name}: TransMix − CutMix", "box AP", b, a, GAIN_BOX)
                t.add_gain(f"{name}: TransMix − CutMix", "mask AP", b, a, GAIN_MASK)
    if rows:
        s = rows[0].info["schedule"]
        t.context["framework"] = fw
        t.context["schedule"] = (f"{s['iters']} iterations (ViTDet recipe: 184375), warm-up {s.get('warmup')}, "
                                 f"lr steps at {s['milestones']}")
        t.context["batch"] = rows[0].info["batch"] + " (ViTDet recipe: 64 in total)"
        t.context["pretrained"] = f"{args.pretrained}/runs/<run>/{args.checkpoint}"
    t.notes.append("AP from pycocotools (MMDetection's CocoMetric, Detectron2's COCOEvaluator with "
                   "use_fast_impl=False) on val2017.")
    return t


def parse(argv=None, prog=None):
    ap = base_parser("coco", __doc__, DATA["coco"], "COCO 2017 root (annotations/, train2017/, val2017/)", prog)
    ap.add_argument("--framework", choices=["mmdet", "detectron2"], default="mmdet")
    add_pretrained_args(ap, ["cutmix", "transmix"], "initialises the backbone",
                        "pretraining runs to transfer (default: CutMix and TransMix, as Table 3)")
    args = finish_args(ap.parse_args(argv))
    resolve_pretrained(args)
    rows = build_rows(args)
    return args, rows, lambda picked: build_table(args, picked)


def main(argv=None, prog=None) -> int:
    return run_main(parse, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
