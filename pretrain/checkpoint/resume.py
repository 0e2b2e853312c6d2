"""Resume checkpoints of a pretraining run.

A resume checkpoint is a folder ``<out_dir>/checkpoints/step_<step>/`` holding ``model.safetensors``,
``ema.safetensors`` (when EMA is on), ``state.pt`` and ``manifest.json`` (each file's size and sha256,
taken when it was written). It is written under a temporary name and renamed when complete;
``checkpoints/latest`` (written atomically afterwards) names the newest one, and the oldest folders beyond
the ``keep`` newest are removed only after that. A run killed at any moment leaves ``latest`` naming a
complete checkpoint; a file damaged later (a truncated copy, a bad disk) is found by
:func:`verify_checkpoint`, and :func:`find_intact_checkpoint` falls back to the newest intact one.

A FSDP run's checkpoint also holds ``sharded/`` (model, optimizer and EMA shards written by
``torch.distributed.checkpoint``, :mod:`.sharded`): every rank writes its shards into the temporary folder
(:func:`begin_checkpoint`) before rank 0 completes it, and the manifest lists the shards too.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import torch

from .files import (DiskFullError, fsync_dir, is_disk_full, load_state, load_weights, save_state,
                    save_weights, sha256_file, tensor_bytes, write_text_atomic)
from .formats import VIT

__all__ = ["CKPT_DIR", "LATEST", "MANIFEST", "CheckpointDamaged", "begin_checkpoint", "save_checkpoint", "find_checkpoint",
           "find_intact_checkpoint", "verify_checkpoint", "list_checkpoints", "load_checkpoint"]

log = logging.getLogger("pretrain")

CKPT_DIR = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
_STEP = re.compile(r"^step_(\d+)$")


class CheckpointDamaged(FileNotFoundError):
    """No intact checkpoint where one was expected; the message names each damaged file."""


def begin_checkpoint(out_dir: str, step: int) -> str:
    """A fresh temporary folder for the checkpoint of ``step`` (under ``<out_dir>/checkpoints``), for writers
    that put files into it before :func:`save_checkpoint` completes it (the shards of a FSDP run)."""
    root = os.path.join(out_dir, CKPT_DIR)
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-step_{int(step):09d}-", dir=root)
    os.chmod(tmp, 0o755)
    return tmp


def _listed_files(folder: str) -> List[str]:
    """What a manifest lists: the folder's files (not its dot files: temporaries) and every file of its
    subfolders (a DCP folder's ``.metadata`` included), as paths relative to ``folder``."""
    out = []
    for n in sorted(os.listdir(folder)):
        path = os.path.join(folder, n)
        if os.path.isdir(path):
            for dirpath, dirs, names in os.walk(path):
                dirs.sort()
                out.extend(os.path.relpath(os.path.join(dirpath, m), folder) for m in sorted(names))
        elif not n.startswith("."):
            out.append(n)
    return out


def save_checkpoint(out_dir: str, step: int, weights: Dict[str, Dict[str, torch.Tensor]], state: Dict[str, Any],
                    arch: Dict[str, Any], extra: Optional[Dict[str, Any]] = None, keep: int = 1,
                    fmt: str = VIT, tmp: Optional[str] = None) -> str:
    """Write a resume checkpoint; returns its folder.

    Args:
        out_dir: run folder.
        step: optimizer step the checkpoint is taken after (names the folder).
        weights: ``{"model": state_dict, "ema": state_dict, ...}``, each written as ``<name>.safetensors``.
        state: everything else (optimizer, scaler, RNG, sampler position, counters): tensors and plain data.
        arch, extra, fmt: safetensors metadata (see :func:`.files.save_weights`).
        keep: number of newest checkpoint folders kept.
        tmp: a folder of :func:`begin_checkpoint` already holding files of this checkpoint (they join the
            manifest); None: a new one.

    Raises:
        DiskFullError: the file system is full ("no space left on <folder>, N MiB needed"); the earlier
            checkpoints and ``latest`` are untouched and no temporary folder is left.
    """
    root = os.path.join(out_dir, CKPT_DIR)
    os.makedirs(root, exist_ok=True)
    name = f"step_{int(step):09d}"
    final = os.path.join(root, name)
    needed = sum(tensor_bytes(sd) for sd in weights.values()) + tensor_bytes(state) + 64 * 1024
    tmp = begin_checkpoint(out_dir, step) if tmp is None else tmp
    try:
        meta = {**(extra or {}), "step": int(step)}
        for key, sd in weights.items():
            save_weights(os.path.join(tmp, f"{key}.safetensors"), sd, arch, meta, fmt=fmt)
        save_state(os.path.join(tmp, "state.pt"), {**state, "step": int(step), "weights": sorted(weights)})
        files = {n: {"size": os.path.getsize(os.path.join(tmp, n)), "sha256": sha256_file(os.path.join(tmp, n))}
                 for n in _listed_files(tmp)}
        write_text_atomic(os.path.join(tmp, MANIFEST), json.dumps({"step": int(step), "files": files}, indent=1))
        for n in os.listdir(tmp):  # the folders of other writers (FSDP's sharded/), then the checkpoint's own
            if os.path.isdir(os.path.join(tmp, n)):
                fsync_dir(os.path.join(tmp, n))
        fsync_dir(tmp)
        if os.path.isdir(final):  # same step saved twice (e.g. epoch end right after a step save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, DiskFullError) or is_disk_full(exc, root, needed):
            raise DiskFullError(root, needed, f"the checkpoint of step {int(step)}") from exc
        raise
    write_text_atomic(os.path.join(root, LATEST), name + "\n")
    _prune(root, keep, protect=name)
    return final


def _prune(root: str, keep: int, protect: str) -> None:
    names = sorted(n for n in os.listdir(root) if _STEP.match(n))
    for n in names[:-max(1, keep)]:
        if n != protect:
            shutil.rmtree(os.path.join(root, n), ignore_errors=True)
    for n in os.listdir(root):  # leftovers of a run killed while writing
        if n.startswith(".tmp-"):
            p = os.path.join(root, n)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


def _is_checkpoint_folder(path: str) -> bool:
    return bool(_STEP.match(os.path.basename(os.path.normpath(path)))) and \
        os.path.isfile(os.path.join(path, "state.pt"))


def verify_checkpoint(ckpt: str) -> Optional[str]:
    """None when the checkpoint folder is intact, else why not, naming the file: missing, another size
    than its manifest says (truncated), another sha256 (damaged). A folder written before manifests
    existed is checked by reading its files."""
    manifest = os.path.join(ckpt, MANIFEST)
    if not os.path.isfile(os.path.join(ckpt, "state.pt")):
        return f"{os.path.join(ckpt, 'state.pt')} is missing"
    if not os.path.isfile(manifest):  # an older checkpoint: read it
        try:
            state = load_state(os.path.join(ckpt, "state.pt"))
        except Exception as exc:  # noqa: BLE001 - any reader error means "damaged"
            return f"{os.path.join(ckpt, 'state.pt')} cannot be read ({str(exc).splitlines()[0][:200]})"
        for k in state.get("weights", ["model"]):
            path = os.path.join(ckpt, f"{k}.safetensors")
            try:
                load_weights(path)
            except Exception as exc:  # noqa: BLE001
                return f"{path} cannot be read ({str(exc).splitlines()[0][:200]})"
        return None
    try:
        with open(manifest) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{manifest} cannot be read ({exc})"
    for n, want in files.items():
        path = os.path.join(ckpt, n)
        if not os.path.isfile(path):
            return f"{path} is missing"
        size = os.path.getsize(path)
        if size != want["size"]:
            how = "truncated" if size < want["size"] else "too long"
            return f"{path} has {size} bytes, its manifest says {want['size']} ({how})"
        if sha256_file(path) != want["sha256"]:
            return f"{path} does not match its sha256 in {MANIFEST} (damaged)"
    return None


def list_checkpoints(run: str) -> List[str]:
    """The checkpoint folders of a run folder, newest (highest step) first."""
    root = os.path.join(run, CKPT_DIR)
    if not os.path.isdir(root):
        return []
    names = sorted((n for n in os.listdir(root) if _STEP.match(n) and os.path.isdir(os.path.join(root, n))),
                   key=lambda n: int(_STEP.match(n).group(1)), reverse=True)
    return [os.path.join(root, n) for n in names]


def find_intact_checkpoint(path: str, verify: bool = True) -> Tuple[Optional[str], List[str]]:
    """(the checkpoint to resume from, why each newer one was passed over).

    ``path`` is a checkpoint folder (it is verified, no fallback: an error when damaged) or a run folder:
    its checkpoints from the newest on, the first intact one. ``(None, [])`` for a run folder without any
    checkpoint; :class:`CheckpointDamaged` when it has some but none is intact."""
    if _is_checkpoint_folder(path):
        reason = verify_checkpoint(path) if verify else None
        if reason:
            raise CheckpointDamaged(f"checkpoint {path} is damaged: {reason}")
        return path, []
    latest = os.path.join(path, CKPT_DIR, LATEST)
    damaged: List[str] = []
    candidates = list_checkpoints(path)
    if os.path.isfile(latest):
        with open(latest) as f:
            name = f.read().strip()
        named = os.path.join(path, CKPT_DIR, name)
        if not os.path.isfile(os.path.join(named, "state.pt")):
            damaged.append(f"{latest} names {name}, but {named}/state.pt is missing")
    if not candidates and not damaged:
        return None, []
    for ckpt in candidates:
        reason = verify_checkpoint(ckpt) if verify else (
            None if os.path.isfile(os.path.join(ckpt, "state.pt")) else f"{ckpt}/state.pt is missing")
        if reason is None:
            return ckpt, damaged
        damaged.append(reason)
    raise CheckpointDamaged(f"no intact checkpoint in {os.path.join(path, CKPT_DIR)}: " + "; ".join(damaged)
                            + ". Start a new run (train.resume unset) or restore the files")


def find_checkpoint(path: str, verify: bool = True) -> Optional[str]:
    """The checkpoint folder that ``path`` designates: a checkpoint folder itself, or a run folder (its newest
    intact checkpoint, a warning naming each damaged newer one). None when a run folder has no checkpoint
    yet; :class:`CheckpointDamaged` (a FileNotFoundError) when it has only damaged ones."""
    ckpt, damaged = find_intact_checkpoint(path, verify)
    for reason in damaged:
        log.warning("checkpoint passed over: %s; resuming from the newest intact one, %s", reason, ckpt)
    return ckpt


def load_checkpoint(ckpt: str) -> Tuple[Dict[str, Dict[str, torch.Tensor]], Dict[str, Any]]:
    """(weights by name, state) of a checkpoint folder written by :func:`save_checkpoint`."""
    state = load_state(os.path.join(ckpt, "state.pt"))
    weights = {k: load_weights(os.path.join(ckpt, f"{k}.safetensors")) for k in state.get("weights", ["model"])}
    return weights, state
