"""Attention quality of the ImageNet checkpoints (TransMix §4.4): the thresholded CLS attention as a
foreground mask — Jaccard against Pascal VOC 2012 segmentation, and weakly-supervised object
localisation (WSOL) on ImageNet val boxes.

    python tools/repro/attention.py                                   # DeiT-S: DeiT vs TransMix
    python tools/repro/attention.py --methods deit cutmix transmix tokenmix --keep-mass 0.5 0.6 0.7 0.9
    python tools/repro/attention.py --scale 0.05                      # smoke: 5% of each set
    python tools/repro/attention.py --synthetic                       # after imagenet.py --synthetic

(``vitmix-repro attention ARGS`` is the same command.) Two ``tools/analyze.py attention`` calls over
every checkpoint at once: ``--voc`` into ``<out>/runs/voc_jaccard`` and
``--box-images/--boxes/--class-list`` into ``<out>/runs/wsol``; the table reads their
``attention.json``. Nothing is trained: ``--scale`` below 1 evaluates that fraction of each set
(``--max-batches``).
"""
from __future__ import annotations

import os
import sys

from ..args import base_parser, finish_args, synthetic_classes
from ..papers import TRANSMIX
from ..paths import DATA
from ..pretrained import add_checkpoint_args, checkpoints
from ..results import read_analysis
from ..rows import Row
from ..runner import run_main
from ..steps import analysis_common, analysis_step, max_batches, write_class_list
from ..table import Entry, Paper, Table, row_value

# TransMix §4.4.1 describes both tasks; its results are not quoted here as numbers.
PAPER_SOURCE = TRANSMIX.cite("§4.4.1: its results are not quoted here as numbers")


def build_rows(args):
    ckpts = checkpoints(args)
    names = [n for n, _, _ in ckpts]
    common = analysis_common(args, ckpts) + ["--keep-mass", *map(str, args.keep_mass)]
    bs = int(common[common.index("--batch-size") + 1])
    requires = {p: f"python tools/repro/imagenet.py{' --synthetic' if args.synthetic else ''} --only {n} "
                   f"--out {args.pretrained}" for n, p, _ in ckpts}
    voc_dir, wsol_dir = os.path.join(args.out, "runs", "voc_jaccard"), os.path.join(args.out, "runs", "wsol")
    before = None
    if args.synthetic:
        synthetic_classes(args.data)
        voc = os.path.join(args.data, "voc")
        wsol_data = ["--box-voc", voc, "--class-list", os.path.join(args.data, "classes.json")]
        wsol_images, nominal_wsol = os.path.join(voc, "JPEGImages"), 1449
        voc_req, wsol_req = {voc: "the synthetic world's VOC part"}, {}
    else:
        voc = args.voc
        class_list = os.path.join(args.out, "imagenet_classes.txt")
        before = write_class_list(os.path.join(args.imagenet, "train"), class_list)
        wsol_images, nominal_wsol = os.path.join(args.imagenet, "val"), 50000
        wsol_data = ["--box-images", wsol_images, "--boxes", args.boxes, "--class-list", class_list]
        voc_req = {voc: "Pascal VOC 2012 (JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt)"}
        wsol_req = {args.boxes: "ImageNet val boxes as Pascal-VOC XML files named <image stem>.xml",
                    wsol_images: "ImageNet val images"}
    voc_argv = ["--voc", voc] + common + max_batches(args, os.path.join(voc, "JPEGImages"), 1449, bs)
    wsol_argv = wsol_data + common + max_batches(args, wsol_images, nominal_wsol, bs)
    return [
        Row("voc_jaccard", "VOC 2012 Jaccard", voc_dir,
            [analysis_step("attention", "attention", voc_argv, voc_dir, names)], {**requires, **voc_req},
            {"ckpts": ckpts}),
        Row("wsol", "WSOL", wsol_dir,
            [analysis_step("attention", "attention", wsol_argv, wsol_dir, names, before=before)],
            {**requires, **wsol_req}, {"ckpts": ckpts}),
    ]


def build_table(args, rows):
    t = Table("attention", "Attention quality — VOC 2012 Jaccard and WSOL from the CLS attention (TransMix §4.4)"
              + (" — synthetic chain" if args.synthetic else ""), args, papers=[TRANSMIX])
    paper = Paper(None, "synthetic data: no paper number") if args.synthetic else Paper(None, PAPER_SOURCE)
    metrics = {"voc_jaccard": [("jaccard", "Jaccard (mean per image)")],
               "wsol": [("gt_known_loc", "WSOL GT-known loc. (IoU ≥ 0.5)"), ("top1_loc", "WSOL top-1 loc.")]}
    for row in rows:
        vals, why = row_value(row, args, lambda: read_analysis(row.dir, "attention"))
        data = vals["rows"] if vals else []
        for name, _, label in row.info["ckpts"]:
            for km in args.keep_mass:
                hit = [r for r in data if r.get("checkpoint") == name and abs(float(r["keep_mass"]) - km) < 1e-9]
                for key, metric in metrics[row.id]:
                    v = hit[0].get(key) if hit else None
                    miss = why or (f"{name} at keep mass {km:g} not in {row.dir}" if not hit else
                                   (f"no {key} in the result" if v is None else ""))
                    t.entries.append(Entry(label, f"{metric}, keep mass {km:g}", None if v is None else float(v),
                                           paper, miss, row_id=name))
    t.context["checkpoints"] = ", ".join(f"{n}={p}" for n, p, _ in (rows[0].info["ckpts"] if rows else []))
    t.notes.append("Masks keep the smallest set of highest-attention patches holding the keep-mass share of the "
                   "CLS attention (DINO's rule); a WSOL box is correct at IoU ≥ 0.5 with any ground-truth box.")
    return t


def parse(argv=None, prog=None):
    ap = base_parser("attention", __doc__, DATA["voc"], "Pascal VOC 2012 folder (the Jaccard task)", prog)
    add_checkpoint_args(ap, ["s"], ["deit", "transmix"])
    ap.add_argument("--imagenet", default=DATA["imagenet"], help="ImageNet root (val/ images for WSOL, train/ "
                                                                 "for the class list)")
    ap.add_argument("--boxes", default=os.path.join(DATA["imagenet"], "val_boxes"),
                    help="ImageNet val boxes: Pascal-VOC XML per image (<image stem>.xml)")
    ap.add_argument("--keep-mass", type=float, nargs="+", default=[0.6])
    args = finish_args(ap.parse_args(argv))
    args.voc = args.data
    args.imagenet, args.boxes = os.path.abspath(args.imagenet), os.path.abspath(args.boxes)
    rows = build_rows(args)
    return args, rows, lambda picked: build_table(args, picked)


def main(argv=None, prog=None) -> int:
    return run_main(parse, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
