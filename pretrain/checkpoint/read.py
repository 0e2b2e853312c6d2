"""Reading any checkpoint file the project meets into a flat tensor dict and its metadata.

* our safetensors files (``format``/``arch`` metadata, :mod:`.files`);
* torch pickles (``.pth``/``.pt``/``.bin``) of timm, the official DeiT code (facebookresearch/deit), DINO
  (facebookresearch/dino), MMEngine or a DDP run, read with ``torch.load(weights_only=True)``; full
  unpickling only for a file the caller marks as trusted (``trust_pickle=True`` or
  ``VITMIX_TRUST_PICKLE=1``), since unpickling can run any code;
* containers (``{'model': ...}``, ``{'state_dict': ...}``, ``{'model_ema': ...}``, nested) are unwrapped,
  non-tensor entries ignored, and a key prefix every key shares (``module.``, ``_orig_mod.``, ``model.``) is
  removed by :func:`strip_prefixes`.

Every error is a :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from .formats import DESCRIPTIONS, MIXMO, TRUST_PICKLE_ENV, VIT

__all__ = ["CheckpointError", "read_checkpoint", "unwrap_state_dict", "strip_prefixes", "CONTAINER_KEYS",
           "WRAPPER_PREFIXES"]

CONTAINER_KEYS = ("model", "state_dict", "module", "model_ema", "net", "weights")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile, training-framework wrappers


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""


def is_safetensors(path: str) -> bool:
    """By extension, or by the safetensors header (8-byte little-endian length, then ``{``)."""
    if path.endswith(".safetensors"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < (1 << 30) and head[8:9] == b"{"


def _trusted(trust_pickle: Optional[bool]) -> bool:
    if trust_pickle is not None:
        return bool(trust_pickle)
    return os.environ.get(TRUST_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def _unpickling_detail(e: Exception) -> str:
    """The line of torch's weights_only message that names the offending global, if any."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    for line in text.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return f" ({line.strip()})"
    return ""


def unwrap_state_dict(obj: Any, source: str = "<checkpoint>") -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The tensor dict inside a loaded checkpoint object: a plain state dict, or one held under
    :data:`CONTAINER_KEYS` (nested containers are followed). Non-tensor entries are ignored.

    Returns:
        (state_dict, notes)
    """
    notes: List[str] = []
    for _ in range(4):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                notes.append(f"weights taken from the '{key}' entry")
                obj = obj[key]
                break
        else:
            raise CheckpointError(
                f"{source}: no tensors found; top-level keys are {sorted(map(str, obj.keys()))[:20]} "
                f"(expected a state dict or one of {list(CONTAINER_KEYS)})"
            )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{source}: no tensors found")
    return sd, notes


def strip_prefixes(sd: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Remove, repeatedly, a prefix of :data:`WRAPPER_PREFIXES` that every key shares.

    Returns:
        (state_dict, the prefixes removed in order)
    """
    removed: List[str] = []
    changed = True
    while changed and sd:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                removed.append(prefix)
                changed = True
    return sd, removed


def _check_format(path: str, fmt: Optional[str], expect: Optional[str]) -> None:
    if expect is None or fmt == expect:
        return
    if expect == MIXMO:  # only our MixMo runs write MixMo networks
        raise CheckpointError(f"{path} is not a MixMo checkpoint (format {fmt!r}): expected "
                              f"{DESCRIPTIONS[MIXMO]}, written by a MixMo run (format {MIXMO!r})")
    if fmt is None:  # timm, DeiT, DINO files carry no tag
        return
    if fmt == MIXMO:
        raise CheckpointError(f"{path} is {DESCRIPTIONS[MIXMO]}, not a single-input ViT: this reader takes "
                              f"{DESCRIPTIONS[VIT]} (format {VIT!r})")
    raise CheckpointError(f"{path} has format {fmt!r}; expected {expect!r} ({DESCRIPTIONS.get(expect, expect)})")


def read_checkpoint(path: str, trust_pickle: Optional[bool] = None,
                    expect: Optional[str] = VIT) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a checkpoint file into a flat tensor dict plus its metadata.

    Args:
        path: a ``.safetensors`` file or a torch pickle (``.pth``/``.pt``/...).
        trust_pickle: allow full unpickling when ``weights_only=True`` refuses the file (only for files
            from a source you trust). ``None`` reads ``VITMIX_TRUST_PICKLE``.
        expect: the format tag the caller can use (:mod:`.formats`); a file tagged with another format is
            refused by name. ``None`` accepts any. Files without a tag (timm, DeiT, DINO) always pass.

    Returns:
        (state_dict, metadata): tensors with containers unwrapped (key prefixes still on, see
        :func:`strip_prefixes`) and the safetensors metadata or the pickle's ``meta`` dict, with
        ``metadata["arch"]`` parsed from JSON and ``metadata["_notes"]`` listing what was unwrapped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    metadata: Dict[str, Any] = {}
    notes: List[str] = []
    if is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise CheckpointError(f"cannot read safetensors file {path}: {e}") from e
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if not _trusted(trust_pickle):
                raise CheckpointError(
                    f"{path} holds Python objects besides tensors, so torch.load(weights_only=True) "
                    f"refused it{_unpickling_detail(e)}. If the file comes from a source you trust, "
                    f"load it with trust_pickle=True (or set {TRUST_PICKLE_ENV}=1), or re-save just the weights "
                    "with tools/convert_checkpoint.py."
                ) from e
            warnings.warn(f"loading {path} with full unpickling (trusted file)", stacklevel=2)
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
        if isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping):
            metadata = dict(obj["meta"])
        sd, notes = unwrap_state_dict(obj, source=path)
    if isinstance(metadata.get("arch"), str):
        try:
            metadata["arch"] = json.loads(metadata["arch"])
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: metadata 'arch' is not valid JSON: {metadata['arch']!r}") from None
    _check_format(path, metadata.get("format"), expect)
    if notes:
        metadata.setdefault("_notes", []).extend(notes)
    return sd, metadata
