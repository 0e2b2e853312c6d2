"""Reading any checkpoint file the project meets into a flat tensor dict and its metadata.

* our safetensors files (``format``/``arch`` metadata, :mod:`.files`);
* torch pickles (``.pth``/``.pt``/``.bin``) of timm, the official DeiT code (facebookresearch/deit), DINO
  (facebookresearch/dino), MMEngine or a DDP run, read with ``torch.load(weights_only=True)``;
* plain pickles of numpy arrays (Detectron2 model-zoo ``.pkl``), read by the allow-list unpickler of
  :mod:`.pickles`, which runs no code;
* full unpickling only for a file the caller marks as trusted (``trust_pickle=True`` or
  ``VITMIX_TRUST_PICKLE=1``), since unpickling can run any code. The kind of file is told from its first
  bytes (:func:`.pickles.file_kind`, whatever its name), so an empty file, a file that is no checkpoint, a
  truncated or damaged one and a pickle holding Python objects each get their own message, and only the
  last is told how to opt in;
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
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from .formats import DESCRIPTIONS, MIXMO, TIMM, TRUST_PICKLE_ENV, VIT
from .pickles import (EMPTY, KIND_NAMES, PICKLE, SAFETENSORS, TORCH_ZIP, UNKNOWN, RefusedGlobal, file_kind,
                      load_weights_pickle, safetensors_size_problem)

__all__ = ["CheckpointError", "read_checkpoint", "load_object", "unwrap_state_dict", "strip_prefixes", "CONTAINER_KEYS",
           "WRAPPER_PREFIXES"]

CONTAINER_KEYS = ("model", "state_dict", "module", "model_ema", "net", "weights")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile, training-framework wrappers


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""


def is_safetensors(path: str) -> bool:
    """By extension, or by the safetensors header (8-byte little-endian length, then ``{``). The reader
    goes by the header alone."""
    if path.endswith(".safetensors"):
        return True
    try:
        return file_kind(path) == SAFETENSORS
    except OSError:
        return False


def _trusted(trust_pickle: Optional[bool]) -> bool:
    if trust_pickle is not None:
        return bool(trust_pickle)
    return os.environ.get(TRUST_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def _refused_global(e: Exception) -> Optional[str]:
    """The global (or construct) a weights-only unpickler refused, if that is why it failed; None when it
    failed for another reason (a damaged stream)."""
    if isinstance(e, RefusedGlobal):
        return e.qualname
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return m.group(1)
    m = re.search(r"(unrecognized function [^\n]*|Can only (?:build|create)[^\n]*but got [^\n]*)", text)
    return m.group(1).strip() if m else None


def _first_line(e: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Weights only load failed" not in ln]
    if not lines:
        return type(e).__name__
    first = re.split(r"(?<=\.)\s", lines[0])[0].rstrip(".")  # its first sentence
    return f"{type(e).__name__}: {first[:300]}"


def _damaged(path: str, kind: str, e: Exception) -> CheckpointError:
    size = os.path.getsize(path)
    where = ""
    if kind == TORCH_ZIP and not zipfile.is_zipfile(path):
        where = "; the zip directory at its end is missing, so the file was cut short"
    elif kind == TORCH_ZIP:
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            names = None
        if names is not None and not any(n.endswith("data.pkl") for n in names):
            return CheckpointError(f"{path} is a zip archive but not a torch checkpoint (no data.pkl; it holds "
                                   f"{', '.join(names[:5]) or 'nothing'}{', ...' if len(names) > 5 else ''})")
    return CheckpointError(
        f"{path} looks like {KIND_NAMES[kind]} but is truncated or damaged ({size} bytes{where}): {_first_line(e)}. "
        "Copy or download it again, or take another checkpoint of the run.")


def _not_a_checkpoint(path: str, kind: str) -> CheckpointError:
    if kind == EMPTY:
        return CheckpointError(f"{path}: empty file, 0 bytes (not a checkpoint; an interrupted copy or download?)")
    with open(path, "rb") as f:
        head = f.read(8)
    return CheckpointError(
        f"{path} is not a checkpoint: it is neither safetensors, nor a torch file (zip archive or legacy), nor a "
        f"pickle ({os.path.getsize(path)} bytes, starting {head!r})")


def load_object(path: str, trust_pickle: Optional[bool] = None) -> Tuple[Any, str]:
    """The object in a checkpoint file other than safetensors, read without running its code, and its kind
    (:mod:`.pickles`).

    * torch files (zip archive or legacy): ``torch.load(weights_only=True)``;
    * plain pickles (Detectron2 / Caffe2 ``.pkl``, ``pickle.dump`` of numpy arrays):
      :class:`.pickles.WeightsUnpickler` (numpy arrays in plain containers, nothing else);
    * a file whose pickle names other Python objects is refused, naming the first such global, unless
      the caller trusts it (``trust_pickle=True`` or ``VITMIX_TRUST_PICKLE=1``): then it is unpickled in full.

    Every failure is a :class:`CheckpointError` naming the file and saying which case it is: an empty file,
    a file that is no checkpoint at all, a truncated or damaged file (no advice to trust it: that would not
    help), or a pickle holding Python objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    kind = file_kind(path)
    if kind in (EMPTY, UNKNOWN):
        raise _not_a_checkpoint(path, kind)
    if kind == SAFETENSORS:
        raise CheckpointError(f"{path} is a safetensors file: read it with read_checkpoint")
    try:
        if kind == PICKLE:
            return load_weights_pickle(path), kind
        return torch.load(path, map_location="cpu", weights_only=True), kind
    except Exception as e:  # noqa: BLE001 - classified below, re-raised with the file name
        refused = _refused_global(e) if isinstance(e, pickle.UnpicklingError) else None
        if refused is None:
            raise _damaged(path, kind, e) from e
        if not _trusted(trust_pickle):
            raise CheckpointError(
                f"{path} is {KIND_NAMES[kind]} that holds Python objects besides tensors and arrays "
                f"(it names {refused}), so weights-only loading refused it: unpickling it could run any code. "
                f"If the file comes from a source you trust, set {TRUST_PICKLE_ENV}=1 (or pass trust_pickle=True, "
                f"--trust-pickle where the command has it), or re-save just its weights (safetensors, or "
                f"tools/convert_checkpoint.py) where you trust it."
            ) from e
    warnings.warn(f"loading {path} with full unpickling (trusted file)", stacklevel=2)
    try:
        if kind == PICKLE:
            with open(path, "rb") as f:
                return pickle.load(f, encoding="latin1"), kind
        return torch.load(path, map_location="cpu", weights_only=False), kind
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: full unpickling (trusted file) failed too: {_first_line(e)}") from e


def _arrays_to_tensors(obj: Any, depth: int = 0) -> Any:
    """numpy arrays (numeric or bool) in nested dicts as tensors; other values unchanged."""
    import numpy as np

    if isinstance(obj, Mapping) and depth < 6:
        return {k: _arrays_to_tensors(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(obj))
    return obj


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


# key prefixes of timm models that are not a plain VisionTransformer, by family
_FAMILY_KEYS = (("xcit", re.compile(r"^(module\.)?cls_attn_blocks\.")),
                ("cait or ca_swin", re.compile(r"^(module\.)?blocks_token_only\.")),
                ("swin", re.compile(r"^(module\.)?layers\.\d+\.blocks\.")))


def _not_plain_vit(path: str, family: str, model: Optional[str] = None) -> CheckpointError:
    what = f"a {family} model" + (f" ({model})" if model else "")
    return CheckpointError(f"{path} holds {what}, not a plain ViT: the downstream backbones and ViT readers host "
                           f"only timm VisionTransformer weights ({DESCRIPTIONS[VIT]}, format {VIT!r}); "
                           "pretrain a ViT/DeiT for transfer, or evaluate this classifier with timm")


def _check_family(path: str, sd: Dict[str, Any], expect: Optional[str]) -> None:
    """An untagged file of a class-attention or Swin model refused by name where a ViT is expected."""
    if expect != VIT:
        return
    for family, pattern in _FAMILY_KEYS:
        if any(pattern.match(k) for k in sd):
            raise _not_plain_vit(path, family)


def _check_format(path: str, fmt: Optional[str], expect: Optional[str], arch: Any = None) -> None:
    if expect is None or fmt == expect:
        return
    if fmt == TIMM and expect == VIT:
        arch = arch if isinstance(arch, dict) else {}
        raise _not_plain_vit(path, str(arch.get("family", "class-attention")), arch.get("model"))
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
        path: a safetensors file, a torch file (``.pth``/``.pt``/...) or a plain pickle of arrays (``.pkl``).
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
    if file_kind(path) == SAFETENSORS:  # by content: a .safetensors name on another kind is read as that kind
        from safetensors import safe_open

        problem = safetensors_size_problem(path)
        if problem:
            raise CheckpointError(f"{path} is a safetensors file but {problem}. Copy or download it again, or "
                                  "take another checkpoint of the run.")
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise CheckpointError(f"cannot read safetensors file {path}: {e}") from e
    else:
        obj, kind = load_object(path, trust_pickle=trust_pickle)
        if kind == PICKLE:
            obj = _arrays_to_tensors(obj)
        if isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping):
            metadata = dict(obj["meta"])
        sd, notes = unwrap_state_dict(obj, source=path)
    if isinstance(metadata.get("arch"), str):
        try:
            metadata["arch"] = json.loads(metadata["arch"])
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: metadata 'arch' is not valid JSON: {metadata['arch']!r}") from None
    _check_format(path, metadata.get("format"), expect, metadata.get("arch"))
    if metadata.get("format") is None:
        _check_family(path, sd, expect)
    if notes:
        metadata.setdefault("_notes", []).extend(notes)
    return sd, metadata
