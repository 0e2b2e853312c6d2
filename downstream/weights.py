"""The one place where pretrained ViT weights are read, mapped and loaded.

Every downstream consumer (the framework-free backbone, the MMSeg adapter,
the checkpoint converter) goes through :func:`load_pretrained`, which

1. reads the file: safetensors (with our ``format``/``arch`` metadata) or a
   torch pickle (``torch.load(weights_only=True)``; full unpickling only for
   files the caller marks as trusted);
2. unwraps containers (``{'model': ...}``, ``{'state_dict': ...}``) and key
   prefixes (``module.``, ``_orig_mod.``, ``backbone.``);
3. drops what a backbone does not use: classifier heads (``head.*``,
   ``head_dist.*``), ``fc_norm.*``/``norm.*`` when the backbone has none, the
   DeiT distillation token together with its position-embedding row;
4. resizes ``pos_embed`` to the backbone's grid (bicubic, CLS entry kept);
5. validates shapes (patch size, embed dim, depth) with errors naming the
   file, and refuses missing or unexpected keys unless the caller opts out;
6. loads and returns a :class:`LoadReport`.

The key layout is the timm ``VisionTransformer`` one (see
:mod:`downstream.vit`), so no renaming table exists: keys that do not match
after unwrapping are reported, never guessed.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .vit import VisionTransformer, resize_pos_embed, to_2tuple

__all__ = [
    "CheckpointError",
    "LoadReport",
    "read_checkpoint",
    "unwrap_state_dict",
    "arch_from_checkpoint",
    "convert_state_dict",
    "load_pretrained",
    "build_backbone_from_checkpoint",
    "FORMAT_TAG",
]

logger = logging.getLogger(__name__)

FORMAT_TAG = "vitmix-vit"
TRUST_ENV = "VITMIX_TRUST_PICKLE"
_CONTAINER_KEYS = ("model", "state_dict", "module", "model_ema", "net", "weights")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the backbone."""


# --------------------------------------------------------------------- report
@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        source: the checkpoint path (or a description of an in-memory dict).
        loaded: target keys filled from the checkpoint.
        missing: target keys the checkpoint did not provide (left as they were).
        unexpected: checkpoint keys with no place in the target (ignored).
        dropped: checkpoint keys removed on purpose, with the reason.
        resized: keys whose tensor was resized: ``key -> (old shape, new shape)``.
        notes: other remarks (prefixes stripped, distillation token, ...).
        metadata: the checkpoint's metadata (safetensors) or ``meta`` dict.
        allowed_missing / allowed_unexpected: the subsets tolerated by the
            caller's allow-lists (or everything when ``strict=False``).
        new_params: missing keys the backbone declares new (e.g. relative
            position tables), left at their initial values.
    """

    source: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    dropped: Dict[str, str] = field(default_factory=dict)
    resized: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    metadata: Dict[str, Any] = field(default_factory=dict)
    allowed_missing: List[str] = field(default_factory=list)
    allowed_unexpected: List[str] = field(default_factory=list)
    new_params: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every missing key is a declared new parameter and nothing was unexpected."""
        return not self.unexpected and set(self.missing) <= set(self.new_params)

    @property
    def clean(self) -> bool:
        """True when nothing was missing or unexpected."""
        return not self.missing and not self.unexpected

    def to_dict(self) -> Dict[str, Any]:
        return {
            "source": self.source,
            "loaded": list(self.loaded),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "dropped": dict(self.dropped),
            "resized": {k: [list(a), list(b)] for k, (a, b) in self.resized.items()},
            "notes": list(self.notes),
        }

    def summary(self, max_keys: int = 20) -> str:
        """A multi-line human-readable account."""
        lines = [
            f"Loaded {len(self.loaded)} tensors from {self.source}: "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.dropped)} dropped, {len(self.resized)} resized."
        ]
        if self.missing:
            lines.append("  missing (left at their initial values): " + _fmt_keys(self.missing, max_keys))
        if self.unexpected:
            lines.append("  unexpected (ignored): " + _fmt_keys(self.unexpected, max_keys))
        if self.dropped:
            by_reason: Dict[str, List[str]] = {}
            for k, why in self.dropped.items():
                by_reason.setdefault(why, []).append(k)
            for why, keys in by_reason.items():
                lines.append(f"  dropped ({why}): " + _fmt_keys(keys, max_keys))
        for k, (a, b) in self.resized.items():
            lines.append(f"  resized {k}: {list(a)} -> {list(b)}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)

    __str__ = summary


def _fmt_keys(keys: Sequence[str], max_keys: int) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:max_keys])
    if len(keys) > max_keys:
        shown += f", ... ({len(keys) - max_keys} more)"
    return shown


# ---------------------------------------------------------------------- reading
def _is_safetensors(path: str) -> bool:
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
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def read_checkpoint(path: str, trust_pickle: Optional[bool] = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a checkpoint file into a flat tensor dict plus its metadata.

    Args:
        path: a ``.safetensors`` file or a torch pickle (``.pth``/``.pt``/...).
        trust_pickle: allow full unpickling when ``weights_only=True`` refuses
            the file. Only for files from a source you trust: unpickling can
            run arbitrary code. ``None`` reads the ``VITMIX_TRUST_PICKLE``
            environment variable.

    Returns:
        (state_dict, metadata): the unwrapped tensors (prefixes still on) and
        a metadata dict (safetensors metadata, or the pickle's ``meta`` dict).
        ``metadata["arch"]`` is parsed from JSON when it is a string.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    metadata: Dict[str, Any] = {}
    if _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise CheckpointError(f"cannot read safetensors file {path}: {e}") from e
        notes: List[str] = []
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if not _trusted(trust_pickle):
                raise CheckpointError(
                    f"{path} holds Python objects besides tensors, so torch.load(weights_only=True) "
                    f"refused it{_unpickling_detail(e)}. If the file comes from a source you trust, "
                    f"load it with trust_pickle=True (or set {TRUST_ENV}=1), or re-save just the weights "
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
    if metadata.get("format") == "vitmix-mixmo":
        raise CheckpointError(
            f"{path} is a MixMo network (M input encoders 'encoders.*', a shared core 'core.*', M heads "
            "'heads.*'), not a single-input ViT: downstream backbones take a checkpoint written by ordinary "
            "pretraining (format 'vitmix-vit')"
        )
    if notes:
        metadata.setdefault("_notes", []).extend(notes)
    return sd, metadata


def _unpickling_detail(e: Exception) -> str:
    """The line of torch's weights_only message that names the offending global, if any."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    for line in text.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return f" ({line.strip()})"
    return ""


def unwrap_state_dict(obj: Any, source: str = "<checkpoint>") -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Find the tensor dict inside a loaded checkpoint object.

    Accepts a plain state dict or a dict holding one under ``model``,
    ``state_dict``, ``module``, ``model_ema``, ``net`` or ``weights`` (nested
    containers are followed). Non-tensor entries of a plain dict are ignored.

    Returns:
        (state_dict, notes)
    """
    notes: List[str] = []
    for _ in range(4):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                notes.append(f"weights taken from the '{key}' entry")
                obj = obj[key]
                break
        else:
            raise CheckpointError(
                f"{source}: no tensors found; top-level keys are {sorted(map(str, obj.keys()))[:20]} "
                f"(expected a state dict or one of {list(_CONTAINER_KEYS)})"
            )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{source}: no tensors found")
    return sd, notes


def _strip_prefixes(sd: Dict[str, torch.Tensor], report: LoadReport) -> Dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                report.notes.append(f"stripped key prefix '{prefix}'")
                changed = True
    if any(k.startswith("backbone.") for k in sd):
        others = [k for k in sd if not k.startswith("backbone.")]
        for k in others:
            report.dropped[k] = "outside 'backbone.' (e.g. a decode head)"
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
        report.notes.append("took the 'backbone.' sub-dict")
        sd = _strip_prefixes(sd, report) if any(k.startswith(("module.", "_orig_mod.")) for k in sd) else sd
    return sd


# ------------------------------------------------------------------ arch helpers
def _square_grid(n: int) -> Optional[Tuple[int, int]]:
    s = int(round(math.sqrt(n)))
    return (s, s) if s * s == n and s > 0 else None


def _num_blocks(keys: Iterable[str]) -> int:
    ids = [int(m.group(1)) for k in keys for m in [_BLOCK_RE.match(k)] if m]
    return max(ids) + 1 if ids else 0


def _infer_arch(sd: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    arch: Dict[str, Any] = {}
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.dim() == 4:
        arch["embed_dim"] = int(w.shape[0])
        arch["in_chans"] = int(w.shape[1])
        arch["patch_size"] = int(w.shape[2]) if w.shape[2] == w.shape[3] else [int(w.shape[2]), int(w.shape[3])]
    depth = _num_blocks(sd)
    if depth:
        arch["depth"] = depth
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and "embed_dim" in arch:
        arch["mlp_ratio"] = fc1.shape[0] / arch["embed_dim"]
    if "blocks.0.attn.qkv.weight" in sd:
        arch["qkv_bias"] = "blocks.0.attn.qkv.bias" in sd
    arch["has_dist_token"] = "dist_token" in sd
    prefix = int("cls_token" in sd) + int("dist_token" in sd)
    arch["num_prefix_tokens"] = prefix
    pe = sd.get("pos_embed")
    if pe is not None and pe.dim() == 3:
        grid = _square_grid(pe.shape[1] - prefix)
        if grid is None and "cls_token" in sd:
            grid = _square_grid(pe.shape[1])  # pos_embed without prefix rows (no_embed_class)
            if grid is not None:
                arch["pos_embed_has_prefix"] = False
        if grid is not None and isinstance(arch.get("patch_size"), int):
            arch["img_size"] = [grid[0] * arch["patch_size"], grid[1] * arch["patch_size"]]
    head = sd.get("head.weight")
    if head is not None and head.dim() == 2:
        arch["num_classes"] = int(head.shape[0])
    arch["num_heads"] = None  # not recoverable from shapes
    return arch


def arch_from_checkpoint(path: str, trust_pickle: Optional[bool] = None) -> Dict[str, Any]:
    """Architecture of a checkpoint, from its metadata or inferred from shapes.

    Returns a dict with ``img_size`` ([H, W] of pretraining), ``patch_size``,
    ``embed_dim``, ``depth``, ``num_heads`` (``None`` when the file has no
    metadata: head count does not change any tensor shape), ``mlp_ratio``,
    ``qkv_bias``, ``num_prefix_tokens``, ``has_dist_token``, ``num_classes``
    (when a head is present), ``model`` (when recorded) and ``arch_source``
    (``"metadata"`` or ``"shapes"``). Metadata that contradicts the tensor
    shapes raises :class:`CheckpointError`.
    """
    sd, meta = read_checkpoint(path, trust_pickle=trust_pickle)
    report = LoadReport(source=str(path))
    sd = _strip_prefixes(dict(sd), report)
    inferred = _infer_arch(sd)
    arch = dict(inferred)
    meta_arch = meta.get("arch") if isinstance(meta.get("arch"), Mapping) else None
    if meta_arch:
        for key in ("embed_dim", "depth", "patch_size"):
            if key in meta_arch and key in inferred and _norm_val(meta_arch[key]) != _norm_val(inferred[key]):
                raise CheckpointError(
                    f"{path}: metadata says {key}={meta_arch[key]} but the tensors say {key}={inferred[key]}"
                )
        arch.update(meta_arch)
        if "img_size" in arch:
            arch["img_size"] = list(to_2tuple(arch["img_size"]))
        arch["arch_source"] = "metadata"
    else:
        arch["arch_source"] = "shapes"
    if meta.get("format"):
        arch["format"] = meta["format"]
    return arch


def _norm_val(v: Any) -> Any:
    if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
        return int(v[0])
    return v


# ------------------------------------------------------------------- conversion
def _source_grid(
    n_pos: int, n_prefix: int, meta_arch: Optional[Mapping[str, Any]], source: str, report: LoadReport
) -> Tuple[int, int]:
    n_patches = n_pos - n_prefix
    if meta_arch and "img_size" in meta_arch and "patch_size" in meta_arch:
        ih, iw = to_2tuple(meta_arch["img_size"])
        ph, pw = to_2tuple(meta_arch["patch_size"])
        grid = (ih // ph, iw // pw)
        if grid[0] * grid[1] == n_patches:
            return grid
        report.notes.append(
            f"metadata grid {grid} does not match pos_embed ({n_patches} patch entries); assuming a square grid"
        )
    grid = _square_grid(n_patches)
    if grid is None:
        raise CheckpointError(
            f"{source}: pos_embed has {n_patches} patch entries (+{n_prefix} prefix), not a square grid, "
            "and no usable 'arch' metadata (img_size, patch_size) gives its shape"
        )
    return grid


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    target: nn.Module,
    source: str = "<state_dict>",
    metadata: Optional[Mapping[str, Any]] = None,
) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """Map a raw checkpoint state dict onto ``target``'s keys and shapes.

    Args:
        state_dict: tensors as read from the file (prefixes may still be on).
        target: the backbone, a :class:`downstream.vit.VisionTransformer`
            (anything with the same key layout and a ``grid_size`` attribute).
        source: name used in messages (the file path).
        metadata: the file's metadata (for the pretraining grid).

    Returns:
        (mapped, report): ``mapped`` holds the checkpoint's tensors under
        target key names, with ``pos_embed`` resized to ``target.grid_size``;
        keys that do not exist in the target are kept (the caller decides
        whether they are an error) and listed in ``report.unexpected``;
        ``report.missing`` lists target keys absent from ``mapped``.

    Raises:
        CheckpointError: on a shape mismatch (patch size, embed dim, MLP width,
            or any other tensor), naming ``source``.
    """
    metadata = dict(metadata or {})
    report = LoadReport(source=source, metadata=metadata)
    report.notes.extend(metadata.pop("_notes", []) if "_notes" in metadata else [])
    meta_arch = metadata.get("arch") if isinstance(metadata.get("arch"), Mapping) else None
    sd = _strip_prefixes(dict(state_dict), report)
    tgt = {k: tuple(v.shape) for k, v in target.state_dict().items()}

    # classifier and pooling-norm weights a backbone does not use
    for k in list(sd):
        root = k.split(".", 1)[0]
        if k in tgt:
            continue
        if root in ("head", "head_dist"):
            report.dropped[k] = "classifier head"
        elif root == "fc_norm":
            report.dropped[k] = "pooling norm (fc_norm) absent in backbone"
        elif root == "norm" and not any(t.startswith("norm.") for t in tgt):
            report.dropped[k] = "final norm disabled in backbone (final_norm=False)"
        else:
            continue
        del sd[k]

    # prefix tokens and the position embedding
    n_prefix = None
    if meta_arch and "num_prefix_tokens" in meta_arch:
        n_prefix = int(meta_arch["num_prefix_tokens"])
    has_dist = "dist_token" in sd and "dist_token" not in tgt
    if n_prefix is None:
        n_prefix = int("cls_token" in sd) + int("dist_token" in sd)
    if has_dist:
        report.dropped["dist_token"] = "distillation token (DeiT-distilled); its pos_embed row removed too"
        report.notes.append(
            "dropped the distillation token and its pos_embed row; the backbone uses the CLS token only"
        )
        del sd["dist_token"]
    pe = sd.get("pos_embed")
    if pe is not None and "pos_embed" in tgt:
        if pe.dim() != 3 or pe.shape[0] != 1:
            raise CheckpointError(f"{source}: pos_embed has shape {list(pe.shape)}, expected [1, N, C]")
        old_shape = tuple(pe.shape)
        if n_prefix == 0 and "cls_token" in sd:
            n_prefix = 1  # defensive: metadata claiming no prefix while a CLS token exists
        if "cls_token" in sd and _square_grid(pe.shape[1]) is not None and _square_grid(pe.shape[1] - n_prefix) is None:
            # timm no_embed_class layout (DeiT III): the CLS token has no position entry,
            # which is the same as a zero entry added to it.
            pe = torch.cat([pe.new_zeros(1, 1, pe.shape[2]), pe], dim=1)
            report.notes.append("pos_embed had no CLS entry (no_embed_class layout); a zero CLS entry was added")
            n_prefix = 1 + int(has_dist)
        if has_dist:
            if n_prefix < 2:
                raise CheckpointError(f"{source}: has a dist_token but pos_embed does not have 2 prefix rows")
            pe = torch.cat([pe[:, :1], pe[:, 2:]], dim=1)
            n_prefix -= 1
        if n_prefix != 1:
            raise CheckpointError(
                f"{source}: pos_embed has {n_prefix} prefix token rows; the backbone supports exactly one (CLS)"
            )
        src_grid = _source_grid(pe.shape[1], n_prefix, meta_arch, source, report)
        dst_grid = tuple(getattr(target, "grid_size"))
        if pe.shape[2] == tgt["pos_embed"][2]:
            pe = resize_pos_embed(pe, src_grid, dst_grid, n_prefix, mode=getattr(target, "interpolate_mode", "bicubic"))
        if tuple(pe.shape) != old_shape:
            report.resized["pos_embed"] = (old_shape, tuple(pe.shape))
            if tuple(src_grid) != tuple(dst_grid):
                report.notes.append(f"pos_embed grid {src_grid[0]}x{src_grid[1]} -> {dst_grid[0]}x{dst_grid[1]}")
        sd["pos_embed"] = pe

    # shape checks with explanations for the common mistakes
    problems: List[str] = []
    w_src, w_tgt = sd.get("patch_embed.proj.weight"), tgt.get("patch_embed.proj.weight")
    if w_src is not None and w_tgt is not None and tuple(w_src.shape) != w_tgt:
        if w_src.dim() == 4 and tuple(w_src.shape[2:]) != tuple(w_tgt[2:]):
            problems.append(
                f"checkpoint patch size {_size_str(w_src.shape[2:])} vs backbone patch size {_size_str(w_tgt[2:])} "
                "(set the backbone's patch_size to the checkpoint's)"
            )
        if w_src.shape[0] != w_tgt[0]:
            problems.append(
                f"checkpoint embed dim {w_src.shape[0]} vs backbone embed dim {w_tgt[0]} "
                "(set embed_dims/embed_dim to the checkpoint's)"
            )
        if w_src.dim() == 4 and w_src.shape[1] != w_tgt[1]:
            problems.append(f"checkpoint input channels {w_src.shape[1]} vs backbone {w_tgt[1]}")
    fc1_src, fc1_tgt = sd.get("blocks.0.mlp.fc1.weight"), tgt.get("blocks.0.mlp.fc1.weight")
    if fc1_src is not None and fc1_tgt is not None and fc1_src.shape[1] == fc1_tgt[1] and fc1_src.shape[0] != fc1_tgt[0]:
        problems.append(
            f"checkpoint MLP hidden width {fc1_src.shape[0]} vs backbone {fc1_tgt[0]} "
            f"(mlp_ratio {fc1_src.shape[0] / fc1_src.shape[1]:g} vs {fc1_tgt[0] / fc1_tgt[1]:g})"
        )
    mismatched = [
        f"{k}: checkpoint {list(v.shape)} vs backbone {list(tgt[k])}"
        for k, v in sd.items()
        if k in tgt and tuple(v.shape) != tgt[k]
    ]
    if problems or mismatched:
        msg = f"checkpoint {source} does not fit the backbone:\n  " + "\n  ".join(problems)
        if mismatched:
            msg += ("\n  " if problems else "") + "shape mismatches: " + _fmt_keys(mismatched, 12)
        raise CheckpointError(msg)

    report.unexpected = sorted(k for k in sd if k not in tgt)
    report.missing = sorted(k for k in tgt if k not in sd)
    report.loaded = sorted(k for k in sd if k in tgt)
    return sd, report


def _size_str(s: Sequence[int]) -> str:
    s = [int(v) for v in s]
    return str(s[0]) if len(s) == 2 and s[0] == s[1] else "x".join(map(str, s))


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) or key == p for p in patterns)


def _strict_error(report: LoadReport, missing: List[str], unexpected: List[str], target: nn.Module) -> CheckpointError:
    lines = [f"checkpoint {report.source} does not match the backbone's keys (strict loading):"]
    if missing:
        lines.append(f"  missing in checkpoint ({len(missing)}): " + _fmt_keys(missing, 40))
    if unexpected:
        lines.append(f"  unexpected in checkpoint ({len(unexpected)}): " + _fmt_keys(unexpected, 40))
    src_depth = _num_blocks(report.loaded + report.unexpected)
    tgt_depth = _num_blocks(k for k, _ in target.named_parameters())
    if src_depth and tgt_depth and src_depth != tgt_depth:
        lines.append(f"  depth mismatch: checkpoint has {src_depth} blocks, backbone has {tgt_depth} (num_layers/depth)")
    if any(re.match(r"^layers\.\d+\.(ln1|ln2|attn\.attn|ffn)", k) for k in unexpected):
        lines.append(
            "  the keys look like MMSeg's own VisionTransformer layout (layers.N.ln1, ...); this backbone "
            "expects the timm layout (blocks.N.norm1, ...): use the original timm/DeiT checkpoint"
        )
    if report.dropped:
        lines.append(f"  (dropped on purpose: {_fmt_keys(sorted(report.dropped), 8)})")
    lines.append(
        "  to accept this, pass strict=False or allow-list the keys (allow_missing=[...], "
        "allow_unexpected=[...], glob patterns)"
    )
    return CheckpointError("\n".join(lines))


def load_pretrained(
    model: nn.Module,
    path: str,
    strict: bool = True,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
    trust_pickle: Optional[bool] = None,
    log: bool = True,
) -> LoadReport:
    """Load a pretrained checkpoint into a :class:`~downstream.vit.VisionTransformer`.

    Args:
        model: the backbone to fill (parameters are copied in place).
        path: checkpoint file (safetensors or torch pickle).
        strict: raise :class:`CheckpointError` listing any missing or
            unexpected key not covered by the allow-lists. ``False`` loads
            what fits and only reports the rest.
        allow_missing: glob patterns (``fnmatch``) of target keys that may be
            absent from the checkpoint, e.g. ``["norm.*"]``.
        allow_unexpected: glob patterns of checkpoint keys that may be ignored,
            e.g. ``["blocks.1[0-1].*"]``.

    Parameters that the backbone declares new (its ``new_parameter_patterns()``,
    e.g. relative position tables a classification checkpoint has none of)
    may always be missing; the report notes them.
        trust_pickle: see :func:`read_checkpoint`.
        log: log the report summary with the ``logging`` module.

    Returns:
        a :class:`LoadReport`.

    Raises:
        CheckpointError: unreadable file, shape mismatch (always), or key
            mismatch under ``strict``. Nothing is copied into ``model`` when
            an error is raised.
    """
    path = os.fspath(path)
    sd, meta = read_checkpoint(path, trust_pickle=trust_pickle)
    mapped, report = convert_state_dict(sd, model, source=path, metadata=meta)
    allow_missing, allow_unexpected = list(allow_missing), list(allow_unexpected)
    new_params = list(getattr(model, "new_parameter_patterns", lambda: [])())
    if new_params:
        fresh = [k for k in report.missing if _matches(k, new_params)]
        report.new_params = fresh
        if fresh:
            report.notes.append(
                f"{len(fresh)} parameters the checkpoint cannot hold keep their initial values "
                f"(e.g. zero relative position tables): {_fmt_keys(fresh, 4)}"
            )
        allow_missing += new_params
    if strict:
        bad_missing = [k for k in report.missing if not _matches(k, allow_missing)]
        bad_unexpected = [k for k in report.unexpected if not _matches(k, allow_unexpected)]
        if bad_missing or bad_unexpected:
            raise _strict_error(report, bad_missing, bad_unexpected, model)
        report.allowed_missing = list(report.missing)
        report.allowed_unexpected = list(report.unexpected)
    else:
        report.allowed_missing = list(report.missing)
        report.allowed_unexpected = list(report.unexpected)
    to_load = {k: mapped[k] for k in report.loaded}
    result = model.load_state_dict(to_load, strict=False)
    if sorted(result.missing_keys) != report.missing or result.unexpected_keys:
        raise CheckpointError(  # should not happen: the report and torch disagree
            f"internal error while loading {path}: torch reports missing={result.missing_keys}, "
            f"unexpected={result.unexpected_keys}"
        )
    if log:
        logger.info(report.summary())
    return report


def build_backbone_from_checkpoint(
    path: str,
    num_heads: Optional[int] = None,
    trust_pickle: Optional[bool] = None,
    strict: bool = True,
    **kwargs: Any,
) -> Tuple[VisionTransformer, LoadReport]:
    """Create a :class:`VisionTransformer` shaped like the checkpoint and load it.

    Args:
        path: checkpoint file.
        num_heads: needed when the file has no ``arch`` metadata.
        **kwargs: overrides for :class:`VisionTransformer` (e.g. a new
            ``img_size``, ``out_indices``, ``drop_path_rate``).

    Returns:
        (backbone, report)
    """
    arch = arch_from_checkpoint(path, trust_pickle=trust_pickle)
    heads = num_heads if num_heads is not None else arch.get("num_heads")
    if heads is None:
        raise CheckpointError(
            f"{path} has no 'arch' metadata, so the number of attention heads is unknown; pass num_heads"
        )
    missing = [k for k in ("embed_dim", "depth", "patch_size", "img_size") if k not in arch]
    if missing and not all(k in kwargs for k in missing):
        raise CheckpointError(f"{path}: cannot determine {missing} from the checkpoint; pass them explicitly")
    args = dict(
        img_size=arch.get("img_size"),
        patch_size=arch.get("patch_size"),
        embed_dim=arch.get("embed_dim"),
        depth=arch.get("depth"),
        num_heads=heads,
        mlp_ratio=arch.get("mlp_ratio", 4.0),
        qkv_bias=arch.get("qkv_bias", True),
    )
    args.update(kwargs)
    model = VisionTransformer(**args)
    report = load_pretrained(model, path, strict=strict, trust_pickle=trust_pickle)
    return model, report
