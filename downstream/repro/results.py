"""Readers of the files the tools write when a run finishes.

* pretraining (``tools/pretrain.sh``): ``summary.json`` and ``metrics.jsonl``;
* MMEngine (``mim train`` / ``mim test``): ``<work_dir>/<timestamp>/<timestamp>.json`` and
  ``vis_data/scalars.json``, the ``iter_N.pth`` / ``last_checkpoint`` files;
* Detectron2 (``tools/train_d2.py``): ``metrics_eval.json`` or ``metrics.json``;
* analysis (``tools/analyze.py``): ``<study>.json``;
* MixMo: ``eval.json``.

A reader raises :class:`~.errors.Missing` (which file, what is wrong) when the result is not there.
"""
from __future__ import annotations

import glob
import json
import math
import os
import statistics
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .errors import Missing, NoDetections

MMDET_EMPTY = "The testing results of the whole dataset is empty"


def load_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise Missing(f"no {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise Missing(f"{path} is not valid JSON ({e})") from None


def load_jsonl(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        raise Missing(f"no {path}")
    out = []
    with open(path) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise Missing(f"{path}:{i + 1} is not a JSON line") from None
    return out


# ------------------------------------------------------------------------ pretraining
def pretrain_done(run_dir: str, epochs: Optional[int] = None) -> bool:
    """A pretraining run finished: ``summary.json`` without a signal stop (a ``train.max_steps``
    stop counts as finished), and, when ``epochs`` is given, run for that many epochs."""
    try:
        read_pretrain(run_dir, epochs)
        return True
    except Missing:
        return False


def read_pretrain(run_dir: str, epochs: Optional[int] = None) -> Dict[str, Any]:
    """Numbers of one ``tools/pretrain.sh`` run: from ``summary.json`` (best/final top-1, EMA) and
    ``metrics.jsonl`` (per-epoch training throughput ``img_per_s``; the median over epochs is
    reported, the first epoch left out when there are more, as it holds start-up costs)."""
    s = load_json(os.path.join(run_dir, "summary.json"))
    stopped = s.get("stopped")
    if stopped and not str(stopped).startswith("train.max_steps"):
        raise Missing(f"{run_dir} stopped early ({stopped}); rerun to resume")
    if epochs is not None:
        cfg_path = os.path.join(run_dir, "config.yaml")
        if os.path.isfile(cfg_path):
            import yaml
            with open(cfg_path) as f:
                got = int((yaml.safe_load(f) or {}).get("train", {}).get("epochs", -1))
            if got != int(epochs):
                raise Missing(f"{run_dir} was run for {got} epochs, this request is {epochs}")
        final_epoch = (s.get("final") or {}).get("epoch")
        if not stopped and final_epoch is not None and int(final_epoch) != int(epochs) - 1:
            raise Missing(f"{run_dir} ended at epoch {final_epoch + 1} of {epochs}")
    final = s.get("final") or {}
    if "val_top1" not in final:
        raise Missing(f"{run_dir}/summary.json has no final val_top1")
    recs = [r for r in load_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "img_per_s" in r]
    speeds = [float(r["img_per_s"]) for r in recs]
    if len(speeds) > 1:
        speeds = speeds[1:]
    best = s.get("best_top1")
    ema = s.get("best_ema_top1")
    return {"top1": float(best) if best is not None and best >= 0 else float(final["val_top1"]),
            "final_top1": float(final["val_top1"]),
            "ema_top1": float(ema) if ema is not None and ema >= 0 else None,
            "img_per_s": statistics.median(speeds) if speeds else None,
            "steps": s.get("steps"), "stopped": stopped, "epochs_done": int(final.get("epoch", -1)) + 1}


# The number each official training script reports, hence the one compared with the paper (the others are listed):
# DeiT's main.py (the DeiT and CutMix rows) evaluates the model only ("Max accuracy" of the model, the EMA is
# saved, not evaluated); TransMix's train.py replaces the metrics by the EMA's when --model-ema is on
# (``eval_metrics = ema_eval_metrics``: its best checkpoint and "*** Best metric" are the EMA's); TokenMix's
# main.py takes ``max_accuracy`` over the model and its EMA at every epoch. Methods without official code (the
# TransMix Table 8 peers run here with DeiT's recipe) take DeiT's rule.
REPORTED = {"deit": "model", "cutmix": "model", "transmix": "ema", "tokenmix": "max"}
REPORTED_TEXT = {"model": "the model's best", "ema": "the EMA's best", "max": "max(model best, EMA best)"}


def reported_top1(method: str, vals):
    """``(top-1, what it is)`` as ``method``'s official code reports it, from :func:`read_pretrain`'s numbers;
    without an EMA in the run (``model.ema=false``) the model's best, said so."""
    rule = REPORTED.get(method, "model")
    model, ema = vals["top1"], vals.get("ema_top1")
    if rule == "model":
        return model, REPORTED_TEXT[rule]
    if ema is None:
        return model, "the model's best (no EMA in this run; the official code reports " + REPORTED_TEXT[rule] + ")"
    return (ema if rule == "ema" else max(model, ema)), REPORTED_TEXT[rule]


# ---------------------------------------------------------------------------- MMEngine
def mm_result_json(work_dir: str, key: str) -> Dict[str, Any]:
    """The newest ``<work_dir>/<timestamp>/<timestamp>.json`` (what MMEngine's LoggerHook writes after
    a test run) that holds ``key``."""
    cands = sorted(glob.glob(os.path.join(work_dir, "*", "*.json")))
    cands = [p for p in cands if os.path.basename(p)[:-5] == os.path.basename(os.path.dirname(p))]
    for p in reversed(cands):
        try:
            d = load_json(p)
        except Missing:
            continue
        if isinstance(d, dict) and key in d:
            return d
    raise Missing(f"no MMEngine test result with {key} under {work_dir}")


def mm_last_scalar(work_dir: str, key: str) -> Tuple[float, int]:
    """The last ``key`` logged in ``<work_dir>/<timestamp>/vis_data/scalars.json`` (newest run
    first); returns ``(value, step)``."""
    for p in sorted(glob.glob(os.path.join(work_dir, "*", "vis_data", "scalars.json")), reverse=True):
        try:
            recs = load_jsonl(p)
        except Missing:
            continue
        hits = [r for r in recs if key in r]
        if hits:
            return float(hits[-1][key]), int(hits[-1].get("step", -1))
    raise Missing(f"no {key} in {work_dir}/*/vis_data/scalars.json")


def mm_train_done(work_dir: str, iters: int) -> bool:
    return os.path.isfile(os.path.join(work_dir, f"iter_{iters}.pth"))


def mm_resumable(work_dir: str) -> bool:
    return os.path.isfile(os.path.join(work_dir, "last_checkpoint"))


def read_mmdet(work_dir: str) -> Dict[str, float]:
    """Box and mask AP (in %) of a ``mim test mmdet`` run (CocoMetric's ``coco/bbox_mAP`` and
    ``coco/segm_mAP`` are fractions)."""
    try:
        d = mm_result_json(work_dir, "coco/bbox_mAP")
    except Missing:
        logs = sorted(glob.glob(os.path.join(work_dir, "*", "*.log")))
        logs = [p for p in logs if os.path.basename(p)[:-4] == os.path.basename(os.path.dirname(p))]
        if logs:
            with open(logs[-1], errors="replace") as f:
                if MMDET_EMPTY in f.read():
                    raise NoDetections(logs[-1]) from None
        raise
    if "coco/segm_mAP" not in d:
        raise Missing(f"no coco/segm_mAP in the test result under {work_dir}")
    return {"box_ap": 100.0 * float(d["coco/bbox_mAP"]), "mask_ap": 100.0 * float(d["coco/segm_mAP"])}


# --------------------------------------------------------------------------- Detectron2
def _d2_ap(value: Any, where: str) -> float:
    v = float(value)
    if math.isnan(v) or v < 0:
        raise NoDetections(where)
    return v


def read_d2(out_dir: str) -> Dict[str, float]:
    """Box and mask AP of a ``tools/train_d2.py`` run: ``metrics_eval.json`` (the evaluator's nested
    result) or else the last ``bbox/AP`` and ``segm/AP`` of Detectron2's ``metrics.json``."""
    p = os.path.join(out_dir, "metrics_eval.json")
    if os.path.isfile(p):
        d = load_json(p)
        try:
            box, mask = d["bbox"]["AP"], d["segm"]["AP"]
        except (KeyError, TypeError):
            raise Missing(f"{p} has no bbox/segm AP") from None
        return {"box_ap": _d2_ap(box, p), "mask_ap": _d2_ap(mask, p)}
    recs = load_jsonl(os.path.join(out_dir, "metrics.json"))
    hits = [r for r in recs if "bbox/AP" in r and "segm/AP" in r]
    if not hits:
        raise Missing(f"no bbox/AP and segm/AP in {out_dir}/metrics.json")
    where = os.path.join(out_dir, "metrics.json")
    return {"box_ap": _d2_ap(hits[-1]["bbox/AP"], where), "mask_ap": _d2_ap(hits[-1]["segm/AP"], where)}


# ----------------------------------------------------------------------- analysis, MixMo
def read_analysis(out_dir: str, study: str) -> Dict[str, Any]:
    """``<out_dir>/<study>.json`` of ``tools/analyze.py`` (settings + rows)."""
    d = load_json(os.path.join(out_dir, f"{study}.json"))
    if not isinstance(d, dict) or not isinstance(d.get("rows"), list):
        raise Missing(f"{out_dir}/{study}.json has no rows")
    return d


def analysis_done(out_dir: str, study: str, names: Iterable[str]) -> bool:
    try:
        d = read_analysis(out_dir, study)
    except Missing:
        return False
    have = {r.get("checkpoint") for r in d["rows"]}
    return set(names) <= have


def read_mixmo(run_dir: str) -> Dict[str, Any]:
    """MixMo's ``eval.json``: the ensemble's top-1/NLL/ECE and the per-head top-1."""
    d = load_json(os.path.join(run_dir, "eval.json"))
    ens = d.get("ensemble") if isinstance(d, dict) else None
    if not isinstance(ens, dict) or "top1" not in ens:
        raise Missing(f"{run_dir}/eval.json has no ensemble.top1")
    heads = [h.get("top1") for h in d.get("heads", []) if isinstance(h, dict)]
    return {"top1": float(ens["top1"]), "nll": ens.get("nll"), "ece": ens.get("ece"), "heads_top1": heads}
