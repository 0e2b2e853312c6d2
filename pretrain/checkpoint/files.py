"""Writing and reading the project's own files: safetensors weights with JSON metadata, plain-data
training state, text; every write atomic (a temporary file in the same folder, fsync, rename). A write that
fails on a full disk (``ENOSPC``/``EDQUOT``, also when torch or safetensors wrap it in their own error)
raises :class:`DiskFullError` naming the folder and the space needed, and leaves the old file and no
temporary file behind."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Optional

import torch

from .formats import VIT

__all__ = ["DiskFullError", "is_disk_full", "atomic_write", "copy_file_atomic", "write_text_atomic", "fsync_dir",
           "sha256_file", "tensor_bytes", "save_weights", "load_weights", "read_metadata", "save_state",
           "load_state"]

MIB = 1024 * 1024
# how torch's zip writer and safetensors report a write the file system refused (no errno attached)
_WRAPPED_WRITE_ERRORS = ("no space left", "os error 28", "disk quota", "os error 122", "iostream error",
                         "unexpected pos", "file write failed", "pytorchstreamwriter failed")


class DiskFullError(OSError):
    """A write refused for lack of space: ``"no space left on <folder>, N MiB needed (M MiB free)"``."""

    def __init__(self, path: str, needed: int, what: str = ""):
        self.path, self.needed = path, int(needed)
        try:
            free = f"{shutil.disk_usage(path).free / MIB:.1f} MiB free there"
        except OSError:
            free = ""
        need = f", {max(self.needed, 1) / MIB:.1f} MiB needed" if self.needed > 0 else ""
        detail = "; ".join(x for x in (what, free) if x)
        super().__init__(errno.ENOSPC, f"no space left on {path}{need}{f' ({detail})' if detail else ''}: free "
                                       "space there or move train.out_dir; the files written before are intact")

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(exc: BaseException, folder: Optional[str] = None, needed: int = 0) -> bool:
    """Whether ``exc`` is a write that failed for lack of space: an OSError ENOSPC/EDQUOT, or torch's or
    safetensors' error wrapping one (their messages name no errno: ``unexpected pos``, ``iostream error``...
    count only when ``folder`` has less than ``needed`` bytes free, or when they say so)."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, (RuntimeError, OSError)) and type(exc).__name__ != "SafetensorError":
        return False
    msg = str(exc).lower()
    if "no space left" in msg or "os error 28" in msg or "disk quota" in msg or "os error 122" in msg:
        return True
    if folder is not None and any(m in msg for m in _WRAPPED_WRITE_ERRORS):
        try:
            return shutil.disk_usage(folder).free < max(needed, 1)
        except OSError:
            return False
    return False


def atomic_write(path: str, write: Callable[[str], None], needed: int = 0) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, fsync it and rename it to ``path``; a
    failure (or an interrupt) leaves ``path`` as it was and removes the temporary file. ``needed``: the
    expected size in bytes, for the message of a :class:`DiskFullError`."""
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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if not isinstance(exc, DiskFullError) and is_disk_full(exc, d, needed):
            raise DiskFullError(d, needed, os.path.basename(path)) from exc
        raise


def copy_file_atomic(src: str, dst: str) -> None:
    """``dst`` becomes a copy of ``src`` (its own file, not a link), replaced atomically."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp), needed=os.path.getsize(src))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested structure (dicts, lists, tuples): a size estimate of its file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


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
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), needed=tensor_bytes(tensors))


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
    :func:`load_state` reads it back with ``torch.load(weights_only=True)``. Written through a Python file
    object, so that a full disk surfaces as ``OSError(ENOSPC)`` instead of torch's ``unexpected pos``."""
    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(state, f)
    atomic_write(path, write, needed=tensor_bytes(state) + 64 * 1024)


def load_state(path: str) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
