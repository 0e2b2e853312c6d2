"""Evaluation of MixMo networks: top-1/top-5, NLL and ECE of the ensemble (mean of the heads' logits)
and of every subnetwork.

``python -m pretrain.mixmo.evaluate --config CFG --checkpoint PATH [--out JSON] [key=value ...]``
prints a table and writes ``{"ensemble": {...}, "heads": [...], "checkpoint": ..., "epoch": ...}`` to
``--out`` (default ``<train.out_dir>/eval.json``). ``PATH`` is a ``.safetensors`` weights file, a run
folder (its ``model.safetensors``) or a resume checkpoint folder (``checkpoints/step_*``). A MixMo training
run writes the same file when it ends (:meth:`pretrain.mixmo.objective.MixMoObjective.on_run_end`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

import torch

from ..amp import AMP_DTYPES, autocast
from ..dist import is_dist


@torch.no_grad()
def evaluate_mixmo(model, loader, device, amp_dtype=None, n_bins: int = 15) -> Dict[str, Any]:
    """``MultiHeadMeter.compute()`` of ``model`` (a :class:`MixMoNet`) over ``loader`` (batches
    ``(images, labels)``, None batches skipped), summed over ranks: ``{"ensemble": {top1, top5, nll,
    ece, n}, "heads": [{...}, ...]}`` (top-1/top-5/ECE in %)."""
    from ..metrics import MultiHeadMeter

    was_training = model.training
    model.eval()
    meter = MultiHeadMeter(model.num_members, n_bins=n_bins)
    for batch in loader:
        if batch is None:
            continue
        images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model.head_logits(images)
        meter.update(logits.float(), labels)
    sums = meter.state()
    if is_dist():
        t = sums.to(device=device, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        meter.load_sums(t.cpu())
    model.train(was_training)
    return meter.compute()


def flat_record(result: Dict[str, Any], prefix: str = "val_") -> Dict[str, float]:
    """metrics.jsonl keys of an evaluation: ``val_top1``/``val_top5`` (ensemble), ``val_loss`` = ``val_nll``
    (ensemble NLL), ``val_ece``, ``val_images`` and ``val_head{k}_{top1,nll,ece}`` per head."""
    e = result["ensemble"]
    rec = {f"{prefix}top1": e["top1"], f"{prefix}top5": e["top5"], f"{prefix}loss": e["nll"],
           f"{prefix}nll": e["nll"], f"{prefix}ece": e["ece"], f"{prefix}images": int(e["n"])}
    for k, h in enumerate(result["heads"]):
        for key in ("top1", "nll", "ece"):
            rec[f"{prefix}head{k}_{key}"] = h[key]
    return rec


def format_table(result: Dict[str, Any]) -> str:
    """A plain-text table of an evaluation: the ensemble, every head and their mean
    (:func:`pretrain.metrics.format_table`)."""
    from ..metrics import format_table as table
    return table(result)


def write_eval_json(path: str, result: Dict[str, Any], checkpoint: Optional[str], epoch: Optional[int],
                    extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``{"ensemble", "heads", "checkpoint", "epoch", ...}`` atomically; returns the dict."""
    from ..checkpoint import write_text_atomic
    out = {"ensemble": result["ensemble"], "heads": result["heads"], "checkpoint": checkpoint, "epoch": epoch,
           **(extra or {})}
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    write_text_atomic(path, json.dumps(out, indent=2) + "\n")
    return out


def resolve_weights(path: str) -> str:
    """The weights file a ``--checkpoint`` argument designates (file, run folder or checkpoint folder)."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        cand = os.path.join(path, "model.safetensors")
        if os.path.isfile(cand):
            return cand
        raise FileNotFoundError(f"{path}: no model.safetensors in this folder (pass a .safetensors file, a run "
                                "folder or a checkpoints/step_* folder)")
    raise FileNotFoundError(f"checkpoint not found: {path}")


def load_mixmo_weights(model, path: str) -> Dict[str, str]:
    """Load a MixMo weights file strictly into ``model``; returns the file's metadata. A clear error when
    the file is not a MixMo checkpoint or does not fit the configured network."""
    from ..checkpoint import CheckpointError, read_checkpoint
    from ..checkpoint.formats import MIXMO

    try:
        weights, meta = read_checkpoint(path, expect=MIXMO)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()][1:3]
        arch = json.dumps(meta.get("arch"), sort_keys=True) if isinstance(meta.get("arch"), dict) else meta.get("arch")
        raise ValueError(f"{path} does not fit the configured MixMo network (format {meta.get('format')!r}, arch "
                         f"{arch}): {'; '.join(lines)[:400]}") from None
    return meta


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a MixMo checkpoint: ensemble and per-head top-1, NLL, ECE.")
    parser.add_argument("--config", required=True, help="the run's YAML config (or its saved config.yaml)")
    parser.add_argument("--checkpoint", required=True, help=".safetensors file, run folder or checkpoint folder")
    parser.add_argument("--out", default=None, help="JSON output (default: <train.out_dir>/eval.json)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--bins", type=int, default=15, help="ECE bins")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides, e.g. data.root=/data/cifar")
    args = parser.parse_intermixed_args(argv)

    from ..data.build import build_val_loader
    from ..engine.config import load_config  # the CLI reads an engine config; the library code does not
    from .models import build_mixmo_model

    try:
        cfg = load_config(args.config, args.overrides)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if cfg["objective"] != "mixmo":
        print(f"config error: {args.config} is not a MixMo config (its objective is {cfg['objective']!r}; "
              "set objective: mixmo or mixmo.enabled: true)", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        weights = resolve_weights(args.checkpoint)
        model = build_mixmo_model(cfg)
        meta = load_mixmo_weights(model, weights)
        _, loader = build_val_loader(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model.to(device)
    amp = AMP_DTYPES[cfg["train"]["amp"]] if device.type == "cuda" else None
    result = evaluate_mixmo(model, loader, device, amp, n_bins=args.bins)
    epoch = meta.get("epochs_done")
    epoch = int(json.loads(epoch)) if epoch not in (None, "null") else None
    out = args.out or os.path.join(cfg["train"]["out_dir"], "eval.json")
    write_eval_json(out, result, os.path.abspath(weights), epoch)
    print(format_table(result))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
