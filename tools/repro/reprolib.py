"""Shared machinery of the reproduction scripts in ``tools/repro/``.

Every script describes its table as a list of :class:`Row` objects, each a short chain of
:class:`Step` subprocess calls to the project's own tools (``tools/pretrain.sh``, ``mim train`` /
``mim test``, ``tools/train_d2.py``, ``tools/analyze.py``, ``tools/bench_mixers.py``), plus a
``collect`` function that reads the numbers back from the files those tools write. This module
holds what the scripts share:

* the common command line (``--data --out --scale --nproc --only --dry-run --collect --synthetic
  --set``);
* schedule scaling (:func:`scale_epochs`, :func:`scale_iters`): ``--scale F`` multiplies epochs or
  iterations, keeps warm-up, milestones and evaluation/checkpoint intervals at the same fraction of
  the run, and never goes below a valid schedule (at least one epoch or iteration, strictly
  increasing milestones inside the run);
* the runner: a finished step is never re-run, an interrupted one resumes (``--resume auto`` for
  pretraining, ``--resume`` for MMEngine and Detectron2), every step logs to ``<row>/logs/``; a row
  remembers the scale it was started with (``repro_row.json``) and refuses to mix scales;
* readers of the tools' result files (pretraining ``summary.json``/``metrics.jsonl``, MMEngine's
  ``<timestamp>/<timestamp>.json`` and ``vis_data/scalars.json``, Detectron2's
  ``metrics_eval.json``/``metrics.json``, the analysis JSON, MixMo's ``eval.json``);
* the table: ours, the paper's number (with its source), the difference, written as markdown and
  JSON, with the scale and a smoke/synthetic warning in the header.
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import glob
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Dataset roots inside the Docker image's /data volume (docker/README.md).
DATA = {
    "imagenet": "/data/imagenet",
    "ade": "/data/ade/ADEChallengeData2016",
    "coco": "/data/coco",
    "voc": "/data/VOCdevkit/VOC2012",
    "imagenet-a": "/data/imagenet-a",
    "cifar100": "/data/cifar100",
}
SYNTHETIC_DATA = os.path.join(REPO, "data", "synthetic")
RUNS = "/runs/repro"
MISSING = "—"


class ReproError(RuntimeError):
    """A problem with the request itself (bad flag, unknown row, mixed scales): reported, not run."""


# ------------------------------------------------------------------------------------ scaling
def _round(x: float) -> int:
    """Round half up (Python's ``round`` rounds half to even)."""
    return int(math.floor(x + 0.5))


def scale_count(n: int, f: float, minimum: int = 1) -> int:
    """``n`` epochs or iterations times the scale ``f``, rounded, and at least ``minimum``."""
    if f <= 0:
        raise ReproError(f"--scale must be > 0, got {f}")
    return max(int(minimum), _round(n * f))


def scale_epochs(epochs: int, warmup_epochs: float, f: float) -> Tuple[int, float]:
    """An epoch schedule at scale ``f``: ``(epochs', warmup')``.

    ``epochs' = max(1, round(epochs * f))``; the warm-up keeps its share of the run,
    ``warmup' = warmup * epochs' / epochs`` (fractional epochs are fine for the engine's
    per-step warm-up), rounded to 4 decimals. ``f = 1`` returns the schedule unchanged.
    """
    e = scale_count(int(epochs), f)
    if float(warmup_epochs) <= 0:
        return e, 0.0
    return e, round(float(warmup_epochs) * e / int(epochs), 4)


def scale_iters(iters: int, f: float, warmup: Optional[int] = None, milestones: Sequence[int] = (),
                intervals: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """An iteration schedule at scale ``f``.

    Returns ``{"iters", "warmup", "milestones", **intervals}``:

    * ``iters = max(round(iters * f), 1 + len(milestones))`` (a multi-step schedule needs its
      milestones strictly inside the run);
    * ``warmup = round(warmup * iters' / iters)``, at least 1 when the recipe has a warm-up, and at
      most ``iters'``;
    * each milestone ``round(m * iters' / iters)``, then pushed to be strictly increasing within
      ``[1, iters' - 1]``;
    * each interval (evaluation, checkpoint) ``round(v * iters' / iters)``, within ``[1, iters']``.
    """
    iters = int(iters)
    n = scale_count(iters, f, minimum=1 + len(milestones))
    r = n / iters
    out: Dict[str, Any] = {"iters": n}
    if warmup is not None:
        out["warmup"] = 0 if warmup <= 0 else min(n, max(1, _round(warmup * r)))
    ms = [min(max(1, _round(m * r)), n - 1) for m in milestones]
    for i in range(len(ms)):  # strictly increasing, room left for the ones after
        lo = ms[i - 1] + 1 if i else 1
        hi = n - (len(ms) - i)
        ms[i] = min(max(ms[i], lo), hi)
    out["milestones"] = ms
    for k, v in (intervals or {}).items():
        out[k] = min(n, max(1, _round(int(v) * r)))
    return out


def fmt_scale(f: float) -> str:
    return f"{f:g}"


# ------------------------------------------------------------------------------------- steps
@dataclass
class Step:
    """One subprocess call of a row.

    ``done()`` says its results exist (then it is skipped); ``partial()`` that an interrupted run
    left a resumable state (then ``resume_argv`` runs instead of ``argv``).
    """

    name: str
    argv: List[str]
    done: Callable[[], bool]
    env: Dict[str, str] = field(default_factory=dict)
    partial: Callable[[], bool] = lambda: False
    resume_argv: Optional[List[str]] = None
    before: Optional[Callable[[], None]] = None  # prepares inputs (e.g. writes a class list) at run time

    def command(self, resume: bool = False) -> str:
        argv = self.resume_argv if resume and self.resume_argv else self.argv
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(argv)


@dataclass
class Row:
    """One row of a table: an id (for ``--only``), a label in the paper's form, its folder, steps,
    and the files it needs from other tables (``requires``: path -> how to make it)."""

    id: str
    label: str
    dir: str
    steps: List[Step]
    requires: Dict[str, str] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)


def select_rows(rows: Sequence[Row], only: Optional[Sequence[str]]) -> List[Row]:
    """Rows whose id matches any ``--only`` pattern (exact id or shell glob); all without it."""
    if not only:
        return list(rows)
    ids = [r.id for r in rows]
    for pat in only:
        if not any(fnmatch.fnmatchcase(i, pat) for i in ids):
            raise ReproError(f"--only {pat}: no such row (rows: {', '.join(ids)})")
    return [r for r in rows if any(fnmatch.fnmatchcase(r.id, p) for p in only)]


# --------------------------------------------------------------------------- command line
def base_parser(table: str, description: str, data_default: str, data_help: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None,
                    help=f"{data_help} (default {data_default}; with --synthetic: the synthetic world, "
                         f"default {os.path.relpath(SYNTHETIC_DATA, os.getcwd())})")
    ap.add_argument("--out", default=None, help=f"output folder (default {RUNS}/{table})")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies epochs/iterations (1 = the paper's schedule; e.g. 0.01 for a smoke run)")
    ap.add_argument("--nproc", type=int, default=None, help="processes (GPUs) per run (default: the tool's own)")
    ap.add_argument("--only", nargs="+", default=None, metavar="ROW", help="run/collect only these rows (ids or globs)")
    ap.add_argument("--dry-run", action="store_true", help="print the exact commands, run nothing")
    ap.add_argument("--collect", action="store_true", help="only rebuild the table from finished runs")
    ap.add_argument("--synthetic", action="store_true",
                    help="the CPU-sized synthetic chain (python tools/make_synthetic.py) instead of the real data")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="extra overrides for every training run (the tool's own syntax)")
    ap.add_argument("--list", action="store_true", help="list the row ids and exit")
    ap.set_defaults(table=table, data_default=data_default)
    return ap


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults that depend on other flags; check the scale."""
    if args.scale <= 0:
        raise ReproError(f"--scale must be > 0, got {args.scale}")
    if args.nproc is not None and args.nproc < 1:
        raise ReproError(f"--nproc must be >= 1, got {args.nproc}")
    if args.data is None:
        args.data = SYNTHETIC_DATA if args.synthetic else args.data_default
    args.data = os.path.abspath(args.data)
    if args.out is None:
        args.out = os.path.join(RUNS, args.table + ("_synthetic" if args.synthetic else ""))
    args.out = os.path.abspath(args.out)
    return args


def sibling_out(args, table: str) -> str:
    """Default output folder of another table beside ``--out``: ``/runs/repro/ade20k`` ->
    ``/runs/repro/imagenet``, ``/x/ade20k_synthetic`` -> ``/x/imagenet_synthetic``."""
    base = os.path.basename(args.out.rstrip("/"))
    name = base.replace(args.table, table, 1) if args.table in base else table
    return os.path.join(os.path.dirname(args.out.rstrip("/")), name)


# ------------------------------------------------ the ImageNet pretraining runs (tools/repro/imagenet.py)
METHOD_LABELS = {"deit": "DeiT", "cutmix": "CutMix", "transmix": "TransMix", "tokenmix": "TokenMix"}


def pretrain_run_id(model: str, method: str, synthetic: bool) -> str:
    """Id of a pretraining row (its folder under ``<out>/runs`` and its config's name): ``deit_<t|s|b>_<method>``,
    or ``synthetic_<method>`` on the synthetic world, which has one model."""
    return f"synthetic_{method}" if synthetic else f"deit_{model}_{method}"


def pretrain_config_file(model: str, method: str, synthetic: bool) -> str:
    return os.path.join(REPO, "configs", "pretrain", pretrain_run_id(model, method, synthetic) + ".yaml")


def add_pretrained_args(ap: argparse.ArgumentParser, methods: Sequence[str], use: str,
                        methods_help: Optional[str] = None) -> None:
    """``--pretrained`` / ``--checkpoint`` / ``--methods`` of a table that starts from the ImageNet runs;
    ``use`` says what the checkpoint is for ("initialises the backbone", "is analysed")."""
    ap.add_argument("--pretrained", default=None,
                    help="output folder of tools/repro/imagenet.py (default: beside --out, e.g. /runs/repro/imagenet)")
    ap.add_argument("--checkpoint", default="best.safetensors",
                    help=f"which file of each ImageNet run {use} (best/model/ema.safetensors)")
    ap.add_argument("--methods", nargs="+", default=list(methods), choices=list(METHOD_LABELS), help=methods_help)


def resolve_pretrained(args) -> None:
    """``args.pretrained``: the given folder, else the ImageNet table's beside ``--out``; made absolute."""
    if args.pretrained is None:
        args.pretrained = sibling_out(args, "imagenet")
    args.pretrained = os.path.abspath(args.pretrained)


def pretrained_file(args, model: str, method: str) -> str:
    """The checkpoint file (``--checkpoint``) of one ImageNet run under ``args.pretrained``."""
    return os.path.join(args.pretrained, "runs", pretrain_run_id(model, method, args.synthetic), args.checkpoint)


def synthetic_classes(root: str) -> List[str]:
    """The synthetic world's class names (``classes.json``); a clear error when it is not there."""
    path = os.path.join(root, "classes.json")
    if not os.path.isfile(path):
        raise ReproError(f"{root} is not a synthetic world (no classes.json): run "
                         f"python tools/make_synthetic.py --out {root}")
    with open(path) as f:
        return list(json.load(f))


def python() -> str:
    return sys.executable


def tool(*parts: str) -> str:
    return os.path.join(REPO, "tools", *parts)


# ------------------------------------------------------------------------------- the runner
def _meta_path(row: Row) -> str:
    return os.path.join(row.dir, "repro_row.json")


def row_meta(row_dir: str) -> Optional[Dict[str, Any]]:
    p = os.path.join(row_dir, "repro_row.json")
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return json.load(f)


def check_row_scale(row: Row, args) -> None:
    meta = row_meta(row.dir)
    if meta is not None and (float(meta.get("scale", -1)) != float(args.scale)
                             or bool(meta.get("synthetic")) != bool(args.synthetic)):
        raise ReproError(f"{row.dir} holds a run started at scale {meta.get('scale')}"
                         f"{' (synthetic)' if meta.get('synthetic') else ''}; this request is scale "
                         f"{fmt_scale(args.scale)}{' (synthetic)' if args.synthetic else ''}. "
                         "Use another --out, or remove that folder to start over")


def print_plan(rows: Sequence[Row], args, out=None) -> None:
    out = out or sys.stdout
    print(f"# {args.table}: {len(rows)} row(s), scale {fmt_scale(args.scale)}"
          f"{' (synthetic)' if args.synthetic else ''}, output {args.out}", file=out)
    for row in rows:
        print(f"\n# --- {row.id}: {row.label}", file=out)
        for path, how in row.requires.items():
            state = "present" if os.path.exists(path) else "MISSING"
            print(f"#   needs {path} ({state}; {how})", file=out)
        for s in row.steps:
            if s.done():
                print(f"# [{s.name}] done, would be skipped:", file=out)
                print("#   " + s.command(), file=out)
            elif s.partial() and s.resume_argv:
                print(f"# [{s.name}] interrupted, would resume:", file=out)
                print(s.command(resume=True), file=out)
            else:
                print(f"# [{s.name}]", file=out)
                print(s.command(), file=out)


def run_rows(rows: Sequence[Row], args) -> Dict[str, str]:
    """Run every step not done yet; returns ``{row id: failure reason}`` for rows that failed."""
    failures: Dict[str, str] = {}
    for row in rows:
        check_row_scale(row, args)
    path = os.environ.get("PATH", "")
    venv_bin = os.path.dirname(sys.executable)
    env_base = dict(os.environ, PATH=venv_bin + os.pathsep + path,
                    PYTHONPATH=REPO + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    for row in rows:
        missing = [f"{p} ({how})" for p, how in row.requires.items() if not os.path.exists(p)]
        if missing:
            failures[row.id] = "needs " + "; ".join(missing)
            print(f"[{args.table}] {row.id}: skipped, needs {'; '.join(missing)}", flush=True)
            continue
        os.makedirs(os.path.join(row.dir, "logs"), exist_ok=True)
        meta = row_meta(row.dir) or {"row": row.id, "label": row.label, "scale": args.scale,
                                     "synthetic": bool(args.synthetic),
                                     "started": datetime.datetime.now().isoformat(timespec="seconds")}
        meta["commands"] = {s.name: s.command() for s in row.steps}
        meta.update(row.info)
        with open(_meta_path(row), "w") as f:
            json.dump(meta, f, indent=2)
        failed_marker = os.path.join(row.dir, "repro_failed.json")
        for s in row.steps:
            if s.done():
                print(f"[{args.table}] {row.id} / {s.name}: done, skipped", flush=True)
                continue
            resume = bool(s.partial() and s.resume_argv)
            if s.before is not None:
                try:
                    s.before()
                except (OSError, ValueError, ReproError) as e:
                    failures[row.id] = f"{s.name}: could not prepare its inputs: {e}"
                    print(f"[{args.table}] {row.id}: FAILED: {failures[row.id]}", flush=True)
                    break
            log = os.path.join(row.dir, "logs", f"{s.name}.log")
            print(f"[{args.table}] {row.id} / {s.name}: {'resuming' if resume else 'running'} "
                  f"(log {log})\n    {s.command(resume)}", flush=True)
            with open(log, "a") as f:
                f.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')} {s.command(resume)}\n")
                f.flush()
                rc = subprocess.call(s.resume_argv if resume else s.argv, cwd=REPO, env={**env_base, **s.env},
                                     stdout=f, stderr=subprocess.STDOUT)
            if rc != 0 or not s.done():
                reason = (f"{s.name} exited with status {rc}" if rc != 0
                          else f"{s.name} exited 0 but its results are not there") + f" (log {log})"
                failures[row.id] = reason
                with open(failed_marker, "w") as f:
                    json.dump({"step": s.name, "rc": rc, "log": log, "reason": reason}, f, indent=2)
                print(f"[{args.table}] {row.id}: FAILED: {reason}\n" + tail(log), flush=True)
                break
        else:
            if os.path.exists(failed_marker):
                os.remove(failed_marker)
    return failures


def tail(path: str, n: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()[-n:]
    except OSError:
        return ""
    return "".join("    | " + x for x in lines)


def row_missing_reason(row: Row) -> str:
    """Why a row has no result: never started, failed (with the log), or unfinished."""
    failed = os.path.join(row.dir, "repro_failed.json")
    if os.path.isfile(failed):
        with open(failed) as f:
            return "failed: " + json.load(f).get("reason", "see the logs")
    if not os.path.isdir(row.dir):
        missing = [p for p in row.requires if not os.path.exists(p)]
        return "not run" + (f" (needs {missing[0]})" if missing else "")
    todo = [s.name for s in row.steps if not s.done()]
    return f"unfinished ({', '.join(todo)} not done; rerun the same command to resume)" if todo else "no result"


# ------------------------------------------------------------------------------------ readers
class Missing(Exception):
    """A result file is absent or incomplete; the message says which."""


def _load_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise Missing(f"no {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise Missing(f"{path} is not valid JSON ({e})") from None


def _load_jsonl(path: str) -> List[Dict[str, Any]]:
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
    s = _load_json(os.path.join(run_dir, "summary.json"))
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
    recs = [r for r in _load_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "img_per_s" in r]
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


def mm_result_json(work_dir: str, key: str) -> Dict[str, Any]:
    """The newest ``<work_dir>/<timestamp>/<timestamp>.json`` (what MMEngine's LoggerHook writes after
    a test run) that holds ``key``."""
    cands = sorted(glob.glob(os.path.join(work_dir, "*", "*.json")))
    cands = [p for p in cands if os.path.basename(p)[:-5] == os.path.basename(os.path.dirname(p))]
    for p in reversed(cands):
        try:
            d = _load_json(p)
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
            recs = _load_jsonl(p)
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


class NoDetections(Missing):
    """The test ran but the detector kept no detection above its score threshold (a model this early in
    training scores background everywhere): COCO AP is undefined (pycocotools -1, Detectron2 NaN,
    MMDetection's CocoMetric returns nothing). The test step is done; the table says why it has no AP."""

    def __init__(self, where: str):
        super().__init__(f"no detections above the test score threshold, AP undefined ({where}); "
                         "the detector needs a longer schedule")


MMDET_EMPTY = "The testing results of the whole dataset is empty"


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
        d = _load_json(p)
        try:
            box, mask = d["bbox"]["AP"], d["segm"]["AP"]
        except (KeyError, TypeError):
            raise Missing(f"{p} has no bbox/segm AP") from None
        return {"box_ap": _d2_ap(box, p), "mask_ap": _d2_ap(mask, p)}
    recs = _load_jsonl(os.path.join(out_dir, "metrics.json"))
    hits = [r for r in recs if "bbox/AP" in r and "segm/AP" in r]
    if not hits:
        raise Missing(f"no bbox/AP and segm/AP in {out_dir}/metrics.json")
    where = os.path.join(out_dir, "metrics.json")
    return {"box_ap": _d2_ap(hits[-1]["bbox/AP"], where), "mask_ap": _d2_ap(hits[-1]["segm/AP"], where)}


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


def read_analysis(out_dir: str, study: str) -> Dict[str, Any]:
    """``<out_dir>/<study>.json`` of ``tools/analyze.py`` (settings + rows)."""
    d = _load_json(os.path.join(out_dir, f"{study}.json"))
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
    d = _load_json(os.path.join(run_dir, "eval.json"))
    ens = d.get("ensemble") if isinstance(d, dict) else None
    if not isinstance(ens, dict) or "top1" not in ens:
        raise Missing(f"{run_dir}/eval.json has no ensemble.top1")
    heads = [h.get("top1") for h in d.get("heads", []) if isinstance(h, dict)]
    return {"top1": float(ens["top1"]), "nll": ens.get("nll"), "ece": ens.get("ece"), "heads_top1": heads}


# -------------------------------------------------------------------------------------- table
Number = Union[float, Tuple[float, float], None]


@dataclass
class Paper:
    """A number from the seed papers: a value, a ``(low, high)`` range, or None (n/a), and where it
    is from."""

    value: Number = None
    source: str = ""

    def text(self, digits: int = 1) -> str:
        if self.value is None:
            return "n/a"
        if isinstance(self.value, tuple):
            return f"{self.value[0]:.{digits}f}–{self.value[1]:.{digits}f}"
        return f"{self.value:.{digits}f}"

    def diff(self, ours: Optional[float]) -> Optional[float]:
        """ours − paper; for a range, the distance to its nearest end (0 inside)."""
        if ours is None or self.value is None:
            return None
        if isinstance(self.value, tuple):
            lo, hi = self.value
            return 0.0 if lo <= ours <= hi else (ours - lo if ours < lo else ours - hi)
        return ours - self.value


NA = Paper(None, "not given in the seed texts")


@dataclass
class Entry:
    row: str          # label in the paper's form
    metric: str
    ours: Optional[float]
    paper: Paper = field(default_factory=lambda: NA)
    missing: str = ""  # why ours is absent
    row_id: str = ""
    unit: str = "%"
    digits: int = 1


@dataclass
class Table:
    """A results table: entries (our number next to the paper's), gains (a difference between two
    of our rows next to the paper's stated difference), notes and extra markdown blocks."""

    key: str
    title: str
    args: Any
    entries: List[Entry] = field(default_factory=list)
    gains: List[Entry] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    blocks: List[str] = field(default_factory=list)
    context: Dict[str, Any] = field(default_factory=dict)
    stem: str = "table"  # <out>/<stem>.md and <stem>.json

    def lookup(self, row_id: str, metric: str) -> Optional[float]:
        for e in self.entries:
            if e.row_id == row_id and e.metric == metric:
                return e.ours
        return None

    def add_gain(self, label: str, metric: str, row_b: str, row_a: str, paper: Paper, digits: int = 1) -> None:
        """Our ``row_b − row_a`` for ``metric`` next to the paper's stated gain."""
        b, a = self.lookup(row_b, metric), self.lookup(row_a, metric)
        ours = None if a is None or b is None else b - a
        miss = "" if ours is not None else f"needs both {row_b} and {row_a}"
        self.gains.append(Entry(label, metric, ours, paper, miss, digits=digits))

    # ---- header
    def header(self) -> List[str]:
        a = self.args
        smoke = float(a.scale) != 1.0
        lines = [f"# {self.title}", ""]
        lines.append(f"- scale: **{fmt_scale(a.scale)}**"
                     + (" — **SMOKE RUN: a shortened schedule, not a reproduction; do not compare with the paper**"
                        if smoke else " (the paper's schedule)"))
        if a.synthetic:
            lines.append("- data: **SYNTHETIC** (tools/make_synthetic.py or tools/make_synthetic_small.py) — "
                         "exercises the chain only; the numbers say nothing about the paper's datasets")
        else:
            lines.append(f"- data: {a.data}")
        for k, v in self.context.items():
            lines.append(f"- {k}: {v}")
        lines.append(f"- runs: {a.out}")
        lines.append(f"- written: {datetime.datetime.now().isoformat(timespec='seconds')}")
        return lines

    def _cell(self, v: Optional[float], digits: int) -> str:
        return MISSING if v is None else f"{v:.{digits}f}"

    def _diff(self, d: Optional[float], digits: int) -> str:
        return MISSING if d is None else f"{d:+.{digits}f}"

    def markdown(self) -> str:
        lines = self.header() + ["", "| row | metric | ours | paper | Δ (ours − paper) | paper source |",
                                 "|---|---|---:|---:|---:|---|"]
        for e in self.entries:
            ours = self._cell(e.ours, e.digits) if e.ours is not None else f"{MISSING} ({e.missing})"
            lines.append(f"| {e.row} | {e.metric} | {ours} | {e.paper.text(e.digits)} | "
                         f"{self._diff(e.paper.diff(e.ours), e.digits)} | {e.paper.source} |")
        if self.gains:
            lines += ["", "Differences between rows (the seed texts state some results only as gains):", "",
                      "| comparison | metric | ours | paper | Δ (ours − paper) | paper source |",
                      "|---|---|---:|---:|---:|---|"]
            for e in self.gains:
                ours = f"{e.ours:+.{e.digits}f}" if e.ours is not None else f"{MISSING} ({e.missing})"
                p = e.paper
                ptxt = "n/a" if p.value is None else (p.text(e.digits) if isinstance(p.value, tuple)
                                                      else f"{p.value:+.{e.digits}f}")
                lines.append(f"| {e.row} | {e.metric} | {ours} | {ptxt} | "
                             f"{self._diff(p.diff(e.ours), e.digits)} | {p.source} |")
        for b in self.blocks:
            lines += ["", b]
        if self.notes:
            lines += ["", "Notes:"] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_json(self) -> Dict[str, Any]:
        a = self.args

        def ent(e: Entry) -> Dict[str, Any]:
            return {"row": e.row, "row_id": e.row_id, "metric": e.metric, "ours": e.ours,
                    "paper": list(e.paper.value) if isinstance(e.paper.value, tuple) else e.paper.value,
                    "paper_source": e.paper.source, "diff": e.paper.diff(e.ours), "missing": e.missing or None}

        return {"table": self.key, "title": self.title, "scale": a.scale, "smoke": float(a.scale) != 1.0,
                "synthetic": bool(a.synthetic), "data": a.data, "out": a.out, "context": self.context,
                "entries": [ent(e) for e in self.entries], "gains": [ent(e) for e in self.gains],
                "notes": self.notes}

    def write(self) -> Tuple[str, str]:
        os.makedirs(self.args.out, exist_ok=True)
        md = os.path.join(self.args.out, f"{self.stem}.md")
        js = os.path.join(self.args.out, f"{self.stem}.json")
        with open(md, "w") as f:
            f.write(self.markdown())
        with open(js, "w") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
        return md, js


def row_value(row: Row, args, read: Callable[[], Dict[str, Any]]) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(numbers, "")`` from a finished row, or ``(None, reason)``: wrong scale, failed, missing."""
    meta = row_meta(row.dir)
    if meta is not None and (float(meta.get("scale", -1)) != float(args.scale)
                             or bool(meta.get("synthetic")) != bool(args.synthetic)):
        return None, (f"run made at scale {meta.get('scale')}{' (synthetic)' if meta.get('synthetic') else ''};"
                      f" collect it with --scale {meta.get('scale')}{' --synthetic' if meta.get('synthetic') else ''}")
    try:
        return read(), ""
    except NoDetections as e:  # the test ran: say what it found
        return None, str(e)
    except Missing as e:
        reason = row_missing_reason(row)
        return None, reason if reason != "no result" else str(e)


# ---------------------------------------------------------------------------------------- main
def main_flow(args, rows: List[Row], build_table: Callable[[List[Row]], Table]) -> int:
    """What every script does after building its rows: list / dry-run / run, then the table."""
    if args.list:
        for r in rows:
            print(f"{r.id:32s} {r.label}")
        return 0
    picked = select_rows(rows, args.only)
    if args.dry_run:
        print_plan(picked, args)
        return 0
    failures: Dict[str, str] = {}
    if not args.collect:
        failures = run_rows(picked, args)
    table = build_table(picked)
    md, js = table.write()
    print()
    print(table.markdown())
    print(f"table: {md}\n       {js}")
    if failures:
        print(f"{len(failures)} row(s) failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()),
              file=sys.stderr)
        return 1
    return 0


def run_main(parse: Callable[[Optional[Sequence[str]]], Tuple[Any, List[Row], Callable]],
             argv: Optional[Sequence[str]] = None) -> int:
    try:
        args, rows, build_table = parse(argv)
        return main_flow(args, rows, build_table)
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------- configs (real loaders)
_MM_CACHE: Dict[Any, Any] = {}


def mm_config(path: str):
    """An MMEngine config, loaded with MMEngine itself (cached per path)."""
    key = (path, os.environ.get("VITMIX_SYNTHETIC_DIR"))  # the synthetic configs read it when parsed
    if key not in _MM_CACHE:
        if not os.path.isfile(path):
            raise ReproError(f"config file not found: {path}")
        from mmengine.config import Config
        _MM_CACHE[key] = Config.fromfile(path)
    return _MM_CACHE[key]


def parse_cfg_options(options: Sequence[str]) -> Dict[str, Any]:
    """``key=value`` strings parsed exactly as ``--cfg-options`` parses them (MMEngine's DictAction)."""
    from mmengine.config import DictAction
    p = argparse.ArgumentParser()
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    return p.parse_args(["--cfg-options", *options]).cfg_options if options else {}


def mm_check_options(path: str, options: Sequence[str]):
    """Load the config with MMEngine, check that every ``--cfg-options`` key already exists (a typo
    would silently add a new key), merge them, and return the merged config."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    parsed = parse_cfg_options(options)
    for key in parsed:
        node: Any = cfg
        for part in key.split("."):
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif hasattr(node, "keys") and part in node:
                node = node[part]
            else:
                raise ReproError(f"{path}: --cfg-options key '{key}' does not exist in the config")
    cfg.merge_from_dict(parsed)
    return cfg


def pretrain_config(path: str, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """A pretraining config through ``pretrain.engine.config.load_config`` (unknown keys are errors)."""
    from pretrain.engine.config import load_config
    if not os.path.isfile(path):
        raise ReproError(f"config file not found: {path}")
    return load_config(path, list(overrides))


def d2_config(path: str, overrides: Sequence[str] = ()):
    """A Detectron2 LazyConfig with overrides applied; every overridden key must already exist."""
    from detectron2.config import LazyConfig
    from omegaconf import OmegaConf
    if not os.path.isfile(path):
        raise ReproError(f"config file not found: {path}")
    cfg = LazyConfig.load(path)
    for o in overrides:
        key = o.split("=", 1)[0]
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ReproError(f"{path}: override key '{key}' does not exist in the config")
    return LazyConfig.apply_overrides(cfg, list(overrides))


def mm_schedule(cfg) -> Dict[str, Any]:
    """The iteration schedule of an MMEngine config: iterations, validation and checkpoint
    intervals, the linear warm-up (a ``LinearLR`` first) and multi-step milestones."""
    iters = int(cfg.train_cfg.max_iters)
    out = {"iters": iters, "val_interval": int(cfg.train_cfg.get("val_interval", iters)),
           "ckpt_interval": int(cfg.default_hooks.checkpoint.get("interval", iters)),
           "warmup": None, "warmup_index": None, "main_index": None, "milestones": []}
    for i, s in enumerate(cfg.param_scheduler):
        if s["type"] == "LinearLR" and i == 0 and len(cfg.param_scheduler) > 1:
            out["warmup"], out["warmup_index"] = int(s["end"]), i
        else:
            out["main_index"] = i
            out["main_end"] = int(s.get("end", iters))
            if s["type"] == "MultiStepLR":
                out["milestones"] = [int(m) for m in s["milestones"]]
    return out


def mm_scaled_options(cfg, f: float) -> Tuple[List[str], Dict[str, Any]]:
    """``--cfg-options`` that put an MMEngine config's schedule at scale ``f``; also returns the
    scaled schedule."""
    s = mm_schedule(cfg)
    sc = scale_iters(s["iters"], f, warmup=s["warmup"], milestones=s["milestones"],
                     intervals={"val_interval": s["val_interval"], "ckpt_interval": s["ckpt_interval"]})
    n = sc["iters"]
    opts = [f"train_cfg.max_iters={n}", f"train_cfg.val_interval={sc['val_interval']}",
            f"default_hooks.checkpoint.interval={sc['ckpt_interval']}"]
    if s["warmup_index"] is not None:
        opts.append(f"param_scheduler.{s['warmup_index']}.end={sc['warmup']}")
    if s["main_index"] is not None:
        opts.append(f"param_scheduler.{s['main_index']}.end={n}")
        if s["milestones"]:
            opts.append(f"param_scheduler.{s['main_index']}.milestones=[{','.join(map(str, sc['milestones']))}]")
    return opts, sc


def d2_scaled_overrides(cfg, f: float) -> Tuple[List[str], Dict[str, Any]]:
    """Detectron2 LazyConfig overrides for the schedule at scale ``f`` (iterations, multi-step
    milestones and ``num_updates``, warm-up length as a fraction, evaluation/checkpoint periods)."""
    iters = int(cfg.train.max_iter)
    sched = cfg.lr_multiplier.scheduler
    ms = [int(m) for m in sched.milestones]
    warm = int(_round(float(cfg.lr_multiplier.warmup_length) * iters))
    sc = scale_iters(iters, f, warmup=warm, milestones=ms,
                     intervals={"eval_period": int(cfg.train.eval_period),
                                "ckpt_interval": int(cfg.train.checkpointer.period)})
    n = sc["iters"]
    ov = [f"train.max_iter={n}", f"lr_multiplier.scheduler.milestones=[{','.join(map(str, sc['milestones']))}]",
          f"lr_multiplier.scheduler.num_updates={n}",
          f"lr_multiplier.warmup_length={sc['warmup'] / n if warm else 0.0!r}",
          f"train.eval_period={sc['eval_period']}", f"train.checkpointer.period={sc['ckpt_interval']}"]
    return ov, sc


def pretrain_scaled_overrides(cfg: Dict[str, Any], f: float) -> Tuple[List[str], Dict[str, Any]]:
    """Pretraining overrides for scale ``f``: epochs, warm-up epochs, and any epoch milestones
    (list-valued ``optim.*milestones*`` keys) at the same fraction of the run."""
    e0 = int(cfg["train"]["epochs"])
    e, w = scale_epochs(e0, float(cfg["optim"].get("warmup_epochs", 0) or 0), f)
    ov = [f"train.epochs={e}"]
    if float(cfg["optim"].get("warmup_epochs", 0) or 0) > 0:
        ov.append(f"optim.warmup_epochs={w}")
    sched = {"epochs": e, "warmup_epochs": w}
    for k, v in cfg["optim"].items():
        if "milestone" in k and isinstance(v, list) and v:
            ms = scale_iters(e0, f, milestones=[int(m) for m in v])["milestones"] if e > len(v) else \
                [min(e, max(1, _round(int(m) * e / e0))) for m in v]
            ov.append(f"optim.{k}=[{','.join(map(str, ms))}]")
            sched[k] = ms
    return ov, sched


def pretrain_step(config: str, run_dir: str, overrides: Sequence[str], nproc: Optional[int],
                  epochs: int, name: str = "pretrain", env: Optional[Dict[str, str]] = None) -> Step:
    """``tools/pretrain.sh`` for one run; resumes with ``--resume auto`` when checkpoints exist."""
    launch = ["bash", tool("pretrain.sh")] + (["--nproc", str(nproc)] if nproc else [])
    ov = list(overrides) + [f"train.out_dir={run_dir}"]
    return Step(name, launch + [config] + ov, done=lambda: pretrain_done(run_dir, epochs), env=env or {},
                partial=lambda: os.path.isdir(os.path.join(run_dir, "checkpoints")),
                resume_argv=launch + [config, "--resume", "auto"] + ov)


def mim_train_step(package: str, config: str, work_dir: str, options: Sequence[str], iters: int,
                   nproc: Optional[int], env: Optional[Dict[str, str]] = None, name: str = "train") -> Step:
    launch = ["--launcher", "pytorch", "--gpus", str(nproc)] if nproc and nproc > 1 else []
    argv = ["mim", "train", package, config, "--work-dir", work_dir] + launch + ["--cfg-options", *options]
    resume = ["mim", "train", package, config, "--work-dir", work_dir] + launch + ["--resume", "--cfg-options",
                                                                                   *options]
    return Step(name, argv, done=lambda: mm_train_done(work_dir, iters), env=env or {},
                partial=lambda: mm_resumable(work_dir), resume_argv=resume)


def mim_test_step(package: str, config: str, checkpoint: str, work_dir: str, options: Sequence[str],
                  key: str, nproc: Optional[int], tta: bool = False, env: Optional[Dict[str, str]] = None,
                  name: str = "test", done: Optional[Callable[[], bool]] = None) -> Step:
    """``mim test`` into ``work_dir``; done when a result holding ``key`` is there (or when ``done()`` says so)."""
    launch = ["--launcher", "pytorch", "--gpus", str(nproc)] if nproc and nproc > 1 else []

    def has_result() -> bool:
        try:
            mm_result_json(work_dir, key)
            return True
        except Missing:
            return False

    argv = ["mim", "test", package, config, "--checkpoint", checkpoint, "--work-dir", work_dir] + launch \
        + (["--tta"] if tta else []) + ["--cfg-options", *options]
    return Step(name, argv, done=done or has_result, env=env or {})


# ------------------------------------------------------------------- analysis (no training)
MODEL_LABELS = {"t": "DeiT-T", "s": "DeiT-S", "b": "DeiT-B"}
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def add_checkpoint_args(ap: argparse.ArgumentParser, models: Sequence[str], methods: Sequence[str]) -> None:
    add_pretrained_args(ap, methods, "is analysed")
    ap.add_argument("--models", nargs="+", default=list(models), choices=list(MODEL_LABELS))
    ap.add_argument("--device", default="auto", help="analysis device (cuda, cpu; default: cuda when available)")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast of the analysis")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)


def checkpoints(args) -> List[Tuple[str, str, str]]:
    """``(name, path, label)`` of the ImageNet runs to analyse; names are the run ids."""
    if args.set:
        raise ReproError("--set passes overrides to training runs; this table trains nothing")
    resolve_pretrained(args)
    out = []
    models = ["t"] if args.synthetic else args.models
    for model in models:
        for method in args.methods:
            name = pretrain_run_id(model, method, args.synthetic)
            label = ("synthetic ViT" if args.synthetic else MODEL_LABELS[model]) + " · " + METHOD_LABELS[method]
            out.append((name, pretrained_file(args, model, method), label))
    return out


def analysis_common(args, ckpts) -> List[str]:
    """The options every ``tools/analyze.py`` study of a table shares."""
    argv = ["--ckpt"] + [f"{n}={p}" for n, p, _ in ckpts] + ["--device", args.device, "--amp", args.amp]
    bs = args.batch_size or (64 if args.synthetic else 128)
    argv += ["--batch-size", str(bs)]
    if args.workers is not None or args.synthetic:
        argv += ["--workers", str(args.workers if args.workers is not None else 2)]
    if args.synthetic:
        argv += ["--crop-pct", "1.0"]
    return argv


def count_images(folder: str, nominal: int) -> int:
    """Images under ``folder`` (recursively), or ``nominal`` when it is not there (dry runs)."""
    if not os.path.isdir(folder):
        return nominal
    n = 0
    for _, _, files in os.walk(folder, followlinks=True):
        n += sum(1 for f in files if f.lower().endswith(IMAGE_EXT))
    return n


def max_batches(args, folder: str, nominal: int, batch: int) -> List[str]:
    """``--max-batches`` for ``--scale`` below 1 (a fraction of the evaluation set, at least one
    batch); nothing at scale 1 or above."""
    if args.scale >= 1:
        return []
    total = math.ceil(count_images(folder, nominal) / batch)
    return ["--max-batches", str(scale_count(total, args.scale))]


def analysis_step(name: str, study: str, study_argv: List[str], out_dir: str, names: Sequence[str],
                  before: Optional[Callable[[], None]] = None, json_name: Optional[str] = None) -> Step:
    argv = [python(), tool("analyze.py"), study] + study_argv + ["--out", out_dir]
    jn = json_name or study.replace("-", "_")
    return Step(name, argv, done=lambda: analysis_done(out_dir, jn, names), before=before)


def write_class_list(train_dir: str, dest: str) -> Callable[[], None]:
    """A ``before`` hook writing the model's classes in output order (sorted class folders, as
    ``ImageFolder`` orders them) for ``--class-list``."""
    def make() -> None:
        if not os.path.isdir(train_dir):
            raise ReproError(f"{train_dir} not found: the class list is the sorted class folders of the "
                             "ImageNet training set")
        classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w") as f:
            f.write("\n".join(classes) + "\n")
    return make
