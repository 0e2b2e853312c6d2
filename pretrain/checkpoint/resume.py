"""Resume checkpoints of a pretraining run.

A resume checkpoint is a folder ``<out_dir>/checkpoints/step_<step>/`` holding ``model.safetensors``,
``ema.safetensors`` (when EMA is on) and ``state.pt``. It is written under a temporary name and renamed
when complete; ``checkpoints/latest`` (written atomically afterwards) names the newest one, and older
folders are removed only after that. A run killed at any moment leaves ``latest`` naming a complete
checkpoint.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch

from .files import fsync_dir, load_state, load_weights, save_state, save_weights, write_text_atomic
from .formats import VIT

__all__ = ["CKPT_DIR", "LATEST", "save_checkpoint", "find_checkpoint", "load_checkpoint", "link_or_copy"]

CKPT_DIR = "checkpoints"
LATEST = "latest"


def save_checkpoint(out_dir: str, step: int, weights: Dict[str, Dict[str, torch.Tensor]], state: Dict[str, Any],
                    arch: Dict[str, Any], extra: Optional[Dict[str, Any]] = None, keep: int = 1,
                    fmt: str = VIT) -> str:
    """Write a resume checkpoint; returns its folder.

    Args:
        out_dir: run folder.
        step: optimizer step the checkpoint is taken after (names the folder).
        weights: ``{"model": state_dict, "ema": state_dict, ...}``, each written as ``<name>.safetensors``.
        state: everything else (optimizer, scaler, RNG, sampler position, counters): tensors and plain data.
        arch, extra, fmt: safetensors metadata (see :func:`.files.save_weights`).
        keep: number of newest checkpoint folders kept.
    """
    root = os.path.join(out_dir, CKPT_DIR)
    os.makedirs(root, exist_ok=True)
    name = f"step_{int(step):09d}"
    final = os.path.join(root, name)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root)
    os.chmod(tmp, 0o755)
    try:
        meta = {**(extra or {}), "step": int(step)}
        for key, sd in weights.items():
            save_weights(os.path.join(tmp, f"{key}.safetensors"), sd, arch, meta, fmt=fmt)
        save_state(os.path.join(tmp, "state.pt"), {**state, "step": int(step), "weights": sorted(weights)})
        fsync_dir(tmp)
        if os.path.isdir(final):  # same step saved twice (e.g. epoch end right after a step save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(os.path.join(root, LATEST), name + "\n")
    _prune(root, keep, protect=name)
    return final


def _prune(root: str, keep: int, protect: str) -> None:
    names = sorted(n for n in os.listdir(root) if n.startswith("step_"))
    for n in names[:-max(1, keep)]:
        if n != protect:
            shutil.rmtree(os.path.join(root, n), ignore_errors=True)
    for n in os.listdir(root):  # leftovers of a run killed while writing
        if n.startswith(".tmp-"):
            p = os.path.join(root, n)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


def find_checkpoint(path: str) -> Optional[str]:
    """The checkpoint folder that ``path`` designates: a checkpoint folder itself, or a run folder (its
    ``checkpoints/latest``). None when a run folder has no checkpoint yet."""
    if os.path.isfile(os.path.join(path, "state.pt")) and os.path.isfile(os.path.join(path, "model.safetensors")) \
            and os.path.basename(os.path.normpath(path)).startswith("step_"):
        return path
    latest = os.path.join(path, CKPT_DIR, LATEST)
    if not os.path.isfile(latest):
        return None
    with open(latest) as f:
        name = f.read().strip()
    ckpt = os.path.join(path, CKPT_DIR, name)
    if not os.path.isfile(os.path.join(ckpt, "state.pt")):
        raise FileNotFoundError(f"{latest} names {name}, but {ckpt}/state.pt is missing")
    return ckpt


def load_checkpoint(ckpt: str) -> Tuple[Dict[str, Dict[str, torch.Tensor]], Dict[str, Any]]:
    """(weights by name, state) of a checkpoint folder written by :func:`save_checkpoint`."""
    state = load_state(os.path.join(ckpt, "state.pt"))
    weights = {k: load_weights(os.path.join(ckpt, f"{k}.safetensors")) for k in state.get("weights", ["model"])}
    return weights, state


def link_or_copy(src: str, dst: str) -> None:
    """Make ``dst`` a hard link to ``src`` (a copy where links are not possible), replacing it atomically."""
    d = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(d, f".tmp-{os.getpid()}-{os.path.basename(dst)}")
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
