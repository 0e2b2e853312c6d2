"""Checkpoints: weights in safetensors (timm key layout + architecture metadata), training state
beside them as a plain-data torch file; every file written atomically (temp file + rename)."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

FORMAT = "vitmix-vit"            # timm ViT weights (what downstream loaders read)
MIXMO_FORMAT = "vitmix-mixmo"    # MixMo networks (encoders.*, core.*, heads.*; pretrain.mixmo)


def _atomic(path: str, write) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=d)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_weights(path: str, state_dict: Dict[str, torch.Tensor], arch: Dict[str, Any],
                 extra: Optional[Dict[str, Any]] = None, fmt: str = FORMAT) -> None:
    """Write model weights as safetensors with ``format`` (``fmt``)/``arch`` (and ``extra``) JSON metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {"format": fmt, "arch": json.dumps(arch, sort_keys=True)}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_weights(path: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return load_file(path)


def save_state(path: str, state: Dict[str, Any]) -> None:
    """Training state (optimizer, scheduler position, RNG, counters): tensors and plain data only."""
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- resume checkpoints ------------------------------------------------------------------------
# A resume checkpoint is a folder ``<out_dir>/checkpoints/step_<step>/`` holding ``model.safetensors``,
# ``ema.safetensors`` (when EMA is on) and ``state.pt``. It is written under a temporary name and
# renamed when complete; ``checkpoints/latest`` (written atomically afterwards) names the newest one,
# and older folders are removed only after that. A run killed at any moment leaves ``latest`` naming
# a complete checkpoint.
CKPT_DIR = "checkpoints"
LATEST = "latest"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    _atomic(path, write)


def save_checkpoint(out_dir: str, step: int, weights: Dict[str, Dict[str, torch.Tensor]], state: Dict[str, Any],
                    arch: Dict[str, Any], extra: Optional[Dict[str, Any]] = None, keep: int = 1,
                    fmt: str = FORMAT) -> str:
    """Write a resume checkpoint; returns its folder.

    Args:
        out_dir: run folder.
        step: optimizer step the checkpoint is taken after (names the folder).
        weights: ``{"model": state_dict, "ema": state_dict, ...}``, each written as ``<name>.safetensors``.
        state: everything else (optimizer, scaler, RNG, sampler position, counters): tensors and plain data.
        arch, extra, fmt: safetensors metadata (see :func:`save_weights`).
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
        _fsync_dir(tmp)
        if os.path.isdir(final):  # same step saved twice (e.g. epoch end right after a step save)
            import shutil
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(os.path.join(root, LATEST), name + "\n")
    _prune(root, keep, protect=name)
    return final


def _prune(root: str, keep: int, protect: str) -> None:
    import shutil
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
    import shutil
    d = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(d, f".tmp-{os.getpid()}-{os.path.basename(dst)}")
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
