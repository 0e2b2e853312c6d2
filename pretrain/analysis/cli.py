"""Command line of the analysis studies: ``vitmix-analyze <study> ...`` (or ``python tools/analyze.py
<study> ...``).

Studies: ``occlusion``, ``shuffle``, ``natural-adversarial``, ``attention``, and ``all`` (every
study on a synthetic world written by ``tools/make_synthetic.py``). Each writes
``<out>/<study>.csv``, ``<out>/<study>.json`` and ``<out>/<study>.png``. Under torchrun the ranks share
the images and rank 0 writes the files, the same as one process writes; finished shards are kept for a
rerun after a kill and unreadable images are counted and skipped (:mod:`.sharded`, :mod:`pretrain.jobs`).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch

from ..checkpoint.files import write_text_atomic
from .. import jobs
from ..dist import cleanup
from . import plots, sharded
from .attention_quality import (BoxedImages, VOCForeground, attention_counts, attention_rows, collate_boxes,
                                merge_attention_counts)
from .common import (IMAGENET_MEAN, IMAGENET_STD, AnalysisError, LoadedModel, check_same_input, image_folder,
                     load_classifier, parse_amp, parse_ckpt_specs, require_head, resolve_device, write_results)
from .natural_adversarial import (merge_subset_counts, read_class_list, read_subset_map, subset_counts,
                                  subset_map_from_class_list, subset_rows)
from .occlusion import DEFAULT_RATIOS, MODES, merge_counts, occlusion_counts, occlusion_rows
from .shuffle import DEFAULT_GRIDS, shuffle_counts, shuffle_rows, valid_grid_sizes

log = logging.getLogger("analysis")


# ------------------------------------------------------------------------------ arguments
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _common(p: argparse.ArgumentParser, data_help: Optional[str]) -> None:
    if data_help:
        p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--ckpt", nargs="+", required=True, metavar="NAME=PATH",
                   help="checkpoints to compare (safetensors/.pth, or timm:<name> from the local cache)")
    p.add_argument("--out", required=True, help="output folder for CSV/JSON/PNG")
    p.add_argument("--img-size", type=int, default=None, help="run every model at this size (default: its own)")
    p.add_argument("--num-heads", type=int, default=None, help="head count for files without arch metadata")
    p.add_argument("--crop-pct", type=float, default=0.875, help="evaluation centre-crop fraction (timm)")
    p.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN)
    p.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--amp", default="none", help="none, bf16 or fp16 autocast")
    p.add_argument("--max-batches", type=_positive_int, default=None, help="stop after this many batches (quick looks)")
    p.add_argument("--seed", type=int, default=0, help="seed of random drops / shuffles (same for all models)")
    jobs.add_job_args(p)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="analyze.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="study", required=True)

    p = sub.add_parser("occlusion", help="patch dropping: random, salient, non-salient")
    _common(p, "ImageNet-layout val folder (<data>/<class>/<image>)")
    p.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--saliency", default=None, metavar="PATH",
                   help="external frozen saliency model (e.g. a DINO ViT-S/16 checkpoint, or timm:<name>); "
                        "default: each model's own clean CLS attention")

    p = sub.add_parser("shuffle", help="shuffle g x g image pieces")
    _common(p, "ImageNet-layout val folder (<data>/<class>/<image>)")
    p.add_argument("--grid-sizes", type=int, nargs="+", default=list(DEFAULT_GRIDS))

    p = sub.add_parser("natural-adversarial", help="class-subset test sets: ImageNet-A, ImageNet-R, ...")
    _common(p, "test folder with one sub-folder per subset class (<data>/<wnid>/<image>)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--subset-map", help="model index of each sorted class folder ('<index>' or '<folder> <index>' "
                                        "lines, or JSON)")
    g.add_argument("--class-list", help="the model's classes in output order (text or JSON list)")
    p.add_argument("--name", default="imagenet-a", help="dataset label in the results")

    p = sub.add_parser("attention", help="CLS attention as a mask: VOC Jaccard and WSOL box accuracy")
    _common(p, None)
    p.add_argument("--voc", default=None, help="VOC2012 folder for the Jaccard (SegmentationClass) task")
    p.add_argument("--voc-split", default="val")
    p.add_argument("--box-images", default=None, help="image tree for WSOL (e.g. ImageNet val)")
    p.add_argument("--boxes", default=None, help="folder of Pascal-VOC XML boxes named <image stem>.xml")
    p.add_argument("--box-voc", default=None, help="or: a VOC2012 folder (JPEGImages + Annotations) for WSOL")
    p.add_argument("--class-list", default=None, help="model classes in output order, for top-1 localisation")
    p.add_argument("--keep-mass", type=float, nargs="+", default=[0.6])
    p.add_argument("--connectivity", type=int, default=8, choices=(4, 8))
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--examples", type=int, default=4, help="images in the overlay figure")

    p = sub.add_parser("all", help="every study on a synthetic world (tools/make_synthetic.py)")
    _common(p, "synthetic root (holding imagenet/, voc/, classes.json)")
    p.add_argument("--saliency", default=None, metavar="PATH", help="external saliency model for occlusion")
    p.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS),
                   help="occlusion drop ratios (default 0.0 ... 0.9; the summary reads 0, 0.5 and 0.9)")
    p.set_defaults(crop_pct=1.0, batch_size=64, workers=2)
    return ap


# --------------------------------------------------------------------------------- helpers
def _load_models(args) -> List[LoadedModel]:
    device = resolve_device(args.device)
    out = []
    for name, path in parse_ckpt_specs(args.ckpt):
        m = load_classifier(path, name=name, device=device, img_size=args.img_size, num_heads=args.num_heads)
        log.info("loaded %s from %s: %s input, patch %d, %d classes", name, path, m.img_size, m.patch_size,
                 m.num_classes)
        out.append(m)
    return out


def _meta(args, models: Sequence[LoadedModel], **extra) -> Dict:
    return {"checkpoints": {m.name: m.source for m in models}, "img_size": list(models[0].img_size),
            "patch_size": models[0].patch_size, "device": args.device_label, "amp": args.amp,
            "seed": args.seed, "torch": torch.__version__, **extra}


def _folder(args, root: str, models: Sequence[LoadedModel]):
    img_size, _ = check_same_input(models)
    return image_folder(root, img_size, args.crop_pct, args.mean, args.std)


def _check_classes(ds, root: str, models: Sequence[LoadedModel]) -> None:
    require_head(models)
    for m in models:
        if m.num_classes != len(ds.classes):
            raise AnalysisError(f"{root} has {len(ds.classes)} class folders but {m.name} has {m.num_classes} "
                                "outputs (for a class subset use the natural-adversarial study)")


# ----------------------------------------------------------------------------------- studies
def run_occlusion(args, models=None) -> Optional[Dict]:
    models = models or _load_models(args)
    device = resolve_device(args.device)
    ds = _folder(args, args.data, models)
    _check_classes(ds, args.data, models)
    sal = None
    if args.saliency:
        sal = load_classifier(args.saliency, name="saliency", device=device, num_heads=args.num_heads)
    amp = parse_amp(args.amp)
    counts, job = sharded.run_study(args, "occlusion", ds, lambda loader, skip: occlusion_counts(
        models, loader, device, ratios=args.ratios, modes=args.modes, saliency_model=sal, amp_dtype=amp,
        seed=args.seed, skip_batches=skip, batch_size=args.batch_size), merge_counts)
    if job is None:
        return None
    rows = occlusion_rows(models, args.ratios, args.modes, sal, counts)
    meta = _meta(args, models, data=args.data, saliency=args.saliency or "self (own clean CLS attention)",
                 drop_value="0 after normalisation", **sharded.unreadable_meta(job))
    files = write_results(args.out, "occlusion", rows, meta)
    files["png"] = plots.plot_occlusion(rows, os.path.join(args.out, "occlusion.png"))
    job.finish()
    return {"rows": rows, "files": files}


def run_shuffle(args, models=None) -> Optional[Dict]:
    models = models or _load_models(args)
    device = resolve_device(args.device)
    ds = _folder(args, args.data, models)
    _check_classes(ds, args.data, models)
    amp = parse_amp(args.amp)
    counts, job = sharded.run_study(args, "shuffle", ds, lambda loader, skip: shuffle_counts(
        models, loader, device, grid_sizes=args.grid_sizes, amp_dtype=amp, seed=args.seed, skip_batches=skip,
        batch_size=args.batch_size), merge_counts)
    if job is None:
        return None
    rows = shuffle_rows(models, args.grid_sizes, counts)
    files = write_results(args.out, "shuffle", rows, _meta(args, models, data=args.data,
                                                           **sharded.unreadable_meta(job)))
    files["png"] = plots.plot_shuffle(rows, os.path.join(args.out, "shuffle.png"))
    job.finish()
    return {"rows": rows, "files": files}


def run_natural_adversarial(args, models=None) -> Optional[Dict]:
    models = models or _load_models(args)
    device = resolve_device(args.device)
    ds = _folder(args, args.data, models)
    if args.subset_map:
        indices = read_subset_map(args.subset_map, ds.classes)
    else:
        indices = subset_map_from_class_list(ds.classes, read_class_list(args.class_list), args.class_list)
    amp = parse_amp(args.amp)
    counts, job = sharded.run_study(args, "natural_adversarial", ds, lambda loader, skip: subset_counts(
        models, loader, indices, device, amp_dtype=amp), merge_subset_counts)
    if job is None:
        return None
    rows = subset_rows(models, indices, args.name, counts)
    meta = _meta(args, models, data=args.data, subset_map=args.subset_map or args.class_list,
                 subset_indices=list(map(int, indices)), **sharded.unreadable_meta(job))
    files = write_results(args.out, "natural_adversarial", rows, meta)
    files["png"] = plots.plot_subset(rows, os.path.join(args.out, "natural_adversarial.png"))
    job.finish()
    return {"rows": rows, "files": files}


def run_attention(args, models=None) -> Optional[Dict]:
    models = models or _load_models(args)
    device = resolve_device(args.device)
    img_size, _ = check_same_input(models)
    seg = boxed = None
    if args.voc:
        seg = VOCForeground(args.voc, img_size, args.voc_split, args.mean, args.std)
    classes = read_class_list(args.class_list) if args.class_list else None
    if args.box_voc:
        boxed = BoxedImages.from_voc(args.box_voc, img_size, args.voc_split, classes=classes, mean=args.mean,
                                     std=args.std)
    elif args.box_images or args.boxes:
        if not (args.box_images and args.boxes):
            raise AnalysisError("WSOL needs both --box-images and --boxes")
        boxed = BoxedImages.from_folders(args.box_images, args.boxes, img_size, classes=classes, mean=args.mean,
                                         std=args.std)
    if seg is None and boxed is None:
        raise AnalysisError("attention: give --voc (Jaccard) and/or --box-voc / --box-images + --boxes (WSOL)")
    amp = parse_amp(args.amp)

    def counts_of(kind: str):
        def counts(loader, skip):
            first = skip == 0 and (kind == "seg" or seg is None)  # the overlay examples: one pass's first batch
            return attention_counts(models, device, loader if kind == "seg" else None,
                                    loader if kind == "box" else None, keep_masses=args.keep_mass,
                                    connectivity=args.connectivity, iou_threshold=args.iou, amp_dtype=amp,
                                    num_examples=args.examples, examples_from=kind if first else None)
        return counts

    parts, runs = [], []
    for kind, ds, collate in (("seg", seg, None), ("box", boxed, collate_boxes)):
        if ds is not None:
            merged, job = sharded.run_study(args, f"attention_{kind}", ds, counts_of(kind), merge_attention_counts,
                                            collate_fn=collate)
            parts.append(merged)
            runs.append(job)
    if runs[0] is None:
        return None
    counts = merge_attention_counts(parts)
    rows, examples = attention_rows(models, args.keep_mass, counts), counts["examples"]
    meta = _meta(args, models, voc=args.voc, boxes=args.box_voc or args.boxes, keep_mass=args.keep_mass,
                 connectivity=args.connectivity, iou_threshold=args.iou,
                 skipped={"voc": len(seg.skipped) if seg is not None else 0,
                          "boxes": len(getattr(boxed, "skipped", [])) if boxed is not None else 0},
                 wsol_convention="correct when IoU >= threshold with any ground-truth box of the image",
                 **sharded.unreadable_meta(*runs))
    files = write_results(args.out, "attention", rows, meta)
    files["png"] = plots.plot_attention_quality(rows, os.path.join(args.out, "attention.png"))
    ov = plots.plot_attention_overlays(examples, os.path.join(args.out, "attention_overlays.png"),
                                       keep_mass=0.6 if 0.6 in args.keep_mass else args.keep_mass[0],
                                       mean=args.mean, std=args.std)
    if ov:
        files["overlays"] = ov
    for job in runs:
        job.finish()
    return {"rows": rows, "files": files}


def _make_subset_folder(val: str, dest: str, classes: Sequence[str]) -> str:
    """An ImageNet-A-like test folder from the synthetic val set: every other class, with a
    subset map (``<folder> <index>`` lines) beside it. Returns the map's path."""
    import shutil

    os.makedirs(dest, exist_ok=True)
    picked = [c for i, c in enumerate(classes) if i % 2 == 1] or list(classes)
    for c in sorted(os.listdir(dest)):
        if c not in picked:
            shutil.rmtree(os.path.join(dest, c), ignore_errors=True)
    for c in picked:
        src = os.path.join(val, c)
        if not os.path.isdir(src):
            raise AnalysisError(f"class folder {src} missing from the synthetic val set")
        d = os.path.join(dest, c)
        os.makedirs(d, exist_ok=True)
        for f in sorted(os.listdir(src)):
            link = os.path.join(d, f)
            if not os.path.lexists(link):
                try:
                    os.symlink(os.path.abspath(os.path.join(src, f)), link)
                except OSError:
                    shutil.copy2(os.path.join(src, f), link)
    map_path = dest.rstrip("/") + "_subset_map.txt"
    with open(map_path, "w") as f:
        f.write("# folder  model-index\n")
        for c in picked:
            f.write(f"{c} {classes.index(c)}\n")
    return map_path


def run_all(args) -> Dict:
    root = args.data
    for sub in ("imagenet/val", "voc", "classes.json"):
        if not os.path.exists(os.path.join(root, sub)):
            raise AnalysisError(f"{root} is not a synthetic world: no {sub} (python tools/make_synthetic.py --out "
                                f"{root})")
    models = _load_models(args)
    classes = read_class_list(os.path.join(root, "classes.json"))
    val = os.path.join(root, "imagenet", "val")
    results = {}
    base = vars(args).copy()

    def ns(**kw):
        return argparse.Namespace(**{**base, **kw})

    results["occlusion"] = run_occlusion(ns(data=val, ratios=list(args.ratios), modes=list(MODES)), models)
    grids = [g for g in valid_grid_sizes(models[0].img_size, models[0].patch_size)]
    results["shuffle"] = run_shuffle(ns(data=val, grid_sizes=grids), models)
    subset_dir = os.path.join(args.out, "data", "subset_val")
    map_path = subset_dir.rstrip("/") + "_subset_map.txt"
    sharded.main_only(args, lambda: _make_subset_folder(val, subset_dir, classes))
    results["natural_adversarial"] = run_natural_adversarial(
        ns(data=subset_dir, subset_map=map_path, class_list=None, name="synthetic class subset"), models)
    voc = os.path.join(root, "voc")
    results["attention"] = run_attention(
        ns(voc=voc, voc_split="val", box_voc=voc, box_images=None, boxes=None,
           class_list=os.path.join(root, "classes.json"), keep_mass=[0.5, 0.6, 0.7, 0.9], connectivity=8, iou=0.5,
           examples=4), models)
    if not sharded.context(args).is_main:
        return {}
    summary = summarise(results)
    write_text_atomic(os.path.join(args.out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    return results


def summarise(results: Dict) -> Dict:
    """One line of headline numbers per checkpoint."""
    out: Dict[str, Dict] = {}
    for r in results.get("occlusion", {}).get("rows", []):
        if r["ratio"] in (0.0, 0.5, 0.9):
            out.setdefault(r["checkpoint"], {})[f"occl_{r['mode']}_{r['ratio']:g}"] = round(r["top1"], 2)
    for r in results.get("shuffle", {}).get("rows", []):
        if r["grid_size"] == "mean":
            out.setdefault(r["checkpoint"], {})["shuffle_mean"] = round(r["top1"], 2)
    for r in results.get("natural_adversarial", {}).get("rows", []):
        out.setdefault(r["checkpoint"], {})["subset_top1"] = round(r["top1"], 2)
    for r in results.get("attention", {}).get("rows", []):
        if abs(r["keep_mass"] - 0.6) < 1e-9:
            d = out.setdefault(r["checkpoint"], {})
            for k in ("jaccard", "gt_known_loc", "top1_loc"):
                if r.get(k) is not None:
                    d[k] = round(r[k], 2)
    return out


def format_summary(summary: Dict) -> str:
    cols = ["occl_random_0", "occl_random_0.5", "occl_salient_0.5", "occl_nonsalient_0.5", "shuffle_mean",
            "subset_top1", "jaccard", "gt_known_loc"]
    head = f"{'checkpoint':<16}" + "".join(f"{c:>20}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, d in summary.items():
        lines.append(f"{name:<16}" + "".join(f"{d.get(c, float('nan')):>20.1f}" for c in cols))
    return "\n".join(lines)


RUNNERS = {"occlusion": run_occlusion, "shuffle": run_shuffle, "natural-adversarial": run_natural_adversarial,
           "attention": run_attention}


def run(argv: Optional[Sequence[str]] = None) -> Dict:
    """Parse ``argv`` and run the study (or ``all``); returns its results. Bad inputs raise
    :class:`AnalysisError` (or the checkpoint reader's error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        sharded.jobs.shard_size_for(args.shard_size, args.batch_size)
    except sharded.jobs.JobError as e:
        raise AnalysisError(str(e)) from e
    sharded.start(args)
    res = run_all(args) if args.study == "all" else RUNNERS[args.study](args)
    sharded.finish(args)  # not after an error: a barrier there could meet another rank's collective
    if args.study == "all" or res is None:  # a rank other than 0 returns {}: rank 0 wrote the results
        return res or {}
    for k, v in res["files"].items():
        print(f"{k}: {v}")
    return res


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``vitmix-analyze`` / ``python tools/analyze.py``: :func:`run`, a bad input reported as
    ``error: ...`` with exit status 2."""
    from ..checkpoint import CheckpointError

    try:
        run(argv)
    except (AnalysisError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    return 0
