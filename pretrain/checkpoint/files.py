"""Writing and reading the project's own files: safetensors weights with JSON metadata, plain-data
training state, text; every write atomic (a temporary file in the same folder, fsync, rename)."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, Optional

import torch

from .formats import VIT

__all__ = ["atomic_write", "write_text_atomic", "fsync_dir", "save_weights", "load_weights", "read_metadata",
           "save_state", "load_state"]


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, fsync it and rename it to ``path``; a
    failure (or an interrupt) leaves ``path`` as it was and removes the temporary file."""
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


def write_text_atomic(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def fsync_dir(path: str) -> None:
    """Make a rename inside ``path`` durable (best effort: some file systems refuse directory fsync)."""
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


def save_weights(path: str, state_dict: Dict[str, torch.Tensor], arch: Dict[str, Any],
                 extra: Optional[Dict[str, Any]] = None, fmt: str = VIT) -> None:
    """Write model weights as safetensors with metadata ``format`` (``fmt``), ``arch`` (JSON) and the
    entries of ``extra`` (strings as they are, anything else as JSON)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {"format": fmt, "arch": json.dumps(arch, sort_keys=True)}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_weights(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file (CPU)."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return load_file(path)


def read_metadata(path: str) -> Dict[str, str]:
    """The raw (string) metadata of a safetensors file; ``{}`` when it has none."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def save_state(path: str, state: Dict[str, Any]) -> None:
    """Training state (optimizer, scheduler position, RNG, counters): tensors and plain data only, so
    :func:`load_state` reads it back with ``torch.load(weights_only=True)``."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
