"""Checkpoints: weights in safetensors (timm key layout + architecture metadata), training state
beside them as a plain-data torch file; every file written atomically (temp file + rename)."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Optional

import torch
from safetensors.torch import load_file, save_file

FORMAT = "vitmix-vit"


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
                 extra: Optional[Dict[str, Any]] = None) -> None:
    """Write model weights as safetensors with ``format``/``arch`` (and ``extra``) JSON metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {"format": FORMAT, "arch": json.dumps(arch, sort_keys=True)}
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
