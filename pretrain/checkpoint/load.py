"""Mapping a checkpoint onto a model with the timm ViT key layout, and loading it strictly.

:func:`convert_state_dict` takes the tensors as read (:mod:`.read`) and

1. removes wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``) and takes the ``backbone.`` sub-dict
   of an MMEngine segmentor or detector;
2. drops what the model has no place for: classifier heads (``head.*``, ``head_dist.*``), ``fc_norm.*`` /
   ``norm.*`` when the model has none, the DeiT distillation token with its position-embedding row ("Training
   data-efficient image transformers & distillation through attention", Touvron et al., ICML 2021,
   arXiv:2012.12877);
3. resizes ``pos_embed`` to the model's patch grid (:func:`.pos_embed.resize_pos_embed`);
4. checks shapes, naming the file and explaining the usual mistakes (patch size, width, MLP ratio).

:func:`load_pretrained` then refuses missing or unexpected keys unless the caller opts out (``strict=False``
or glob allow-lists) and returns a :class:`.report.LoadReport`. The key layout is timm's, so there is no
renaming table: keys that do not match after unwrapping are reported, never guessed.

The target is any module with timm's layout: our downstream backbones (which expose ``grid_size``), timm's
``VisionTransformer`` (``patch_embed.grid_size``), or any other timm network (no position embedding to
resize; heads kept when the model has them).
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .arch import num_blocks, square_grid, to_2tuple
from .formats import VIT
from .pos_embed import resize_pos_embed
from .read import CheckpointError, read_checkpoint, strip_prefixes
from .report import LoadReport, format_keys

__all__ = ["convert_state_dict", "load_pretrained", "load_state_dict_checked"]

logger = logging.getLogger(__name__)


def _strip(sd: Dict[str, torch.Tensor], report: LoadReport) -> Dict[str, torch.Tensor]:
    sd, removed = strip_prefixes(sd)
    report.notes.extend(f"stripped key prefix '{p}'" for p in removed)
    if any(k.startswith("backbone.") for k in sd):
        for k in [k for k in sd if not k.startswith("backbone.")]:
            report.dropped[k] = "outside 'backbone.' (e.g. a decode head)"
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
        report.notes.append("took the 'backbone.' sub-dict")
        sd, removed = strip_prefixes(sd)
        report.notes.extend(f"stripped key prefix '{p}'" for p in removed)
    return sd


def _target_grid(target: nn.Module) -> Optional[Tuple[int, int]]:
    grid = getattr(target, "grid_size", None)
    if grid is None:
        grid = getattr(getattr(target, "patch_embed", None), "grid_size", None)
    return tuple(int(v) for v in grid) if grid is not None else None


def _source_grid(n_pos: int, n_prefix: int, meta_arch: Optional[Mapping[str, Any]], source: str,
                 report: LoadReport) -> Tuple[int, int]:
    n_patches = n_pos - n_prefix
    if meta_arch and "img_size" in meta_arch and "patch_size" in meta_arch:
        ih, iw = to_2tuple(meta_arch["img_size"])
        ph, pw = to_2tuple(meta_arch["patch_size"])
        grid = (ih // ph, iw // pw)
        if grid[0] * grid[1] == n_patches:
            return grid
        report.notes.append(
            f"metadata grid {grid} does not match pos_embed ({n_patches} patch entries); assuming a square grid")
    grid = square_grid(n_patches)
    if grid is None:
        raise CheckpointError(
            f"{source}: pos_embed has {n_patches} patch entries (+{n_prefix} prefix), not a square grid, "
            "and no usable 'arch' metadata (img_size, patch_size) gives its shape")
    return grid


def _drop_unused(sd: Dict[str, torch.Tensor], tgt: Mapping[str, Tuple[int, ...]], report: LoadReport) -> None:
    """Classifier and pooling-norm weights the model has no place for."""
    for k in list(sd):
        if k in tgt:
            continue
        root = k.split(".", 1)[0]
        if root in ("head", "head_dist"):
            report.dropped[k] = "classifier head"
        elif root == "fc_norm":
            report.dropped[k] = "pooling norm (fc_norm) absent in backbone"
        elif root == "norm" and not any(t.startswith("norm.") for t in tgt):
            report.dropped[k] = "final norm disabled in backbone (final_norm=False)"
        else:
            continue
        del sd[k]


def _map_pos_embed(sd: Dict[str, torch.Tensor], target: nn.Module, tgt: Mapping[str, Tuple[int, ...]],
                   meta_arch: Optional[Mapping[str, Any]], source: str, report: LoadReport) -> None:
    """Prefix rows of ``pos_embed`` made to match the model's, patch rows resized to its grid."""
    n_prefix = int(meta_arch["num_prefix_tokens"]) if meta_arch and "num_prefix_tokens" in meta_arch else None
    has_dist = "dist_token" in sd and "dist_token" not in tgt
    if n_prefix is None:
        n_prefix = int("cls_token" in sd) + int("dist_token" in sd)
    if has_dist:
        report.dropped["dist_token"] = "distillation token (DeiT-distilled); its pos_embed row removed too"
        report.notes.append("dropped the distillation token and its pos_embed row; the backbone uses the CLS token only")
        del sd["dist_token"]
    pe = sd.get("pos_embed")
    if pe is None or "pos_embed" not in tgt:
        return
    if pe.dim() != 3 or pe.shape[0] != 1:
        raise CheckpointError(f"{source}: pos_embed has shape {list(pe.shape)}, expected [1, N, C]")
    old_shape = tuple(pe.shape)
    if n_prefix == 0 and "cls_token" in sd:
        n_prefix = 1  # defensive: metadata claiming no prefix while a CLS token exists
    if "cls_token" in sd and square_grid(pe.shape[1]) is not None and square_grid(pe.shape[1] - n_prefix) is None:
        # timm's no_embed_class layout ("DeiT III: Revenge of the ViT", Touvron et al., ECCV 2022,
        # arXiv:2204.07118): the prefix tokens have no position rows, which is the same as zero rows added
        # to them
        pe = torch.cat([pe.new_zeros(1, n_prefix, pe.shape[2]), pe], dim=1)
        report.notes.append("pos_embed had no CLS entry (no_embed_class layout); a zero CLS entry was added")
    if has_dist:
        if n_prefix < 2:
            raise CheckpointError(f"{source}: has a dist_token but pos_embed does not have 2 prefix rows")
        pe = torch.cat([pe[:, :1], pe[:, 2:]], dim=1)
        n_prefix -= 1
    dst_grid = _target_grid(target)
    if dst_grid is None:
        raise CheckpointError(f"{source}: the model has a pos_embed but no grid_size / patch_embed.grid_size")
    want_prefix = tgt["pos_embed"][1] - dst_grid[0] * dst_grid[1]
    if n_prefix != want_prefix:
        what = "exactly one (CLS)" if want_prefix == 1 else f"{want_prefix}"
        raise CheckpointError(
            f"{source}: pos_embed has {n_prefix} prefix token rows; the backbone supports {what}")
    src_grid = _source_grid(pe.shape[1], n_prefix, meta_arch, source, report)
    if pe.shape[2] == tgt["pos_embed"][2]:
        pe = resize_pos_embed(pe, src_grid, dst_grid, n_prefix, mode=getattr(target, "interpolate_mode", "bicubic"))
    if tuple(pe.shape) != old_shape:
        report.resized["pos_embed"] = (old_shape, tuple(pe.shape))
        if tuple(src_grid) != tuple(dst_grid):
            report.notes.append(f"pos_embed grid {src_grid[0]}x{src_grid[1]} -> {dst_grid[0]}x{dst_grid[1]}")
    sd["pos_embed"] = pe


def _size_str(s: Sequence[int]) -> str:
    s = [int(v) for v in s]
    return str(s[0]) if len(s) == 2 and s[0] == s[1] else "x".join(map(str, s))


def _check_shapes(sd: Mapping[str, torch.Tensor], tgt: Mapping[str, Tuple[int, ...]], source: str) -> None:
    problems: List[str] = []
    w_src, w_tgt = sd.get("patch_embed.proj.weight"), tgt.get("patch_embed.proj.weight")
    if w_src is not None and w_tgt is not None and tuple(w_src.shape) != w_tgt:
        if w_src.dim() == 4 and tuple(w_src.shape[2:]) != tuple(w_tgt[2:]):
            problems.append(f"checkpoint patch size {_size_str(w_src.shape[2:])} vs backbone patch size "
                            f"{_size_str(w_tgt[2:])} (set the backbone's patch_size to the checkpoint's)")
        if w_src.shape[0] != w_tgt[0]:
            problems.append(f"checkpoint embed dim {w_src.shape[0]} vs backbone embed dim {w_tgt[0]} "
                            "(set embed_dims/embed_dim to the checkpoint's)")
        if w_src.dim() == 4 and w_src.shape[1] != w_tgt[1]:
            problems.append(f"checkpoint input channels {w_src.shape[1]} vs backbone {w_tgt[1]}")
    fc1_src, fc1_tgt = sd.get("blocks.0.mlp.fc1.weight"), tgt.get("blocks.0.mlp.fc1.weight")
    if fc1_src is not None and fc1_tgt is not None and fc1_src.shape[1] == fc1_tgt[1] and fc1_src.shape[0] != fc1_tgt[0]:
        problems.append(f"checkpoint MLP hidden width {fc1_src.shape[0]} vs backbone {fc1_tgt[0]} "
                        f"(mlp_ratio {fc1_src.shape[0] / fc1_src.shape[1]:g} vs {fc1_tgt[0] / fc1_tgt[1]:g})")
    mismatched = [f"{k}: checkpoint {list(v.shape)} vs backbone {list(tgt[k])}"
                  for k, v in sd.items() if k in tgt and tuple(v.shape) != tgt[k]]
    if problems or mismatched:
        msg = f"checkpoint {source} does not fit the backbone:\n  " + "\n  ".join(problems)
        if mismatched:
            msg += ("\n  " if problems else "") + "shape mismatches: " + format_keys(mismatched, 12)
        raise CheckpointError(msg)


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], target: nn.Module, source: str = "<state_dict>",
                       metadata: Optional[Mapping[str, Any]] = None) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """Map a raw checkpoint state dict onto ``target``'s keys and shapes.

    Args:
        state_dict: tensors as read from the file (prefixes may still be on).
        target: the model (timm key layout; see the module docstring).
        source: name used in messages (the file path).
        metadata: the file's metadata (for the pretraining grid and prefix count).

    Returns:
        (mapped, report): ``mapped`` holds the checkpoint's tensors under target key names, with
        ``pos_embed`` resized to the target's grid; keys that do not exist in the target are kept (the
        caller decides whether they are an error) and listed in ``report.unexpected``; ``report.missing``
        lists target keys absent from ``mapped``.

    Raises:
        CheckpointError: on a shape mismatch (patch size, embed dim, MLP width, or any other tensor),
            naming ``source``.
    """
    metadata = dict(metadata or {})
    report = LoadReport(source=source, metadata=metadata)
    report.notes.extend(metadata.pop("_notes", []))
    meta_arch = metadata.get("arch") if isinstance(metadata.get("arch"), Mapping) else None
    sd = _strip(dict(state_dict), report)
    tgt = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    _drop_unused(sd, tgt, report)
    _map_pos_embed(sd, target, tgt, meta_arch, source, report)
    _check_shapes(sd, tgt, source)
    report.unexpected = sorted(k for k in sd if k not in tgt)
    report.missing = sorted(k for k in tgt if k not in sd)
    report.loaded = sorted(k for k in sd if k in tgt)
    return sd, report


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) or key == p for p in patterns)


def _strict_error(report: LoadReport, missing: List[str], unexpected: List[str], target: nn.Module) -> CheckpointError:
    lines = [f"checkpoint {report.source} does not match the backbone's keys (strict loading):"]
    if missing:
        lines.append(f"  missing in checkpoint ({len(missing)}): " + format_keys(missing, 40))
    if unexpected:
        lines.append(f"  unexpected in checkpoint ({len(unexpected)}): " + format_keys(unexpected, 40))
    src_depth = num_blocks(report.loaded + report.unexpected)
    tgt_depth = num_blocks(k for k, _ in target.named_parameters())
    if src_depth and tgt_depth and src_depth != tgt_depth:
        lines.append(f"  depth mismatch: checkpoint has {src_depth} blocks, backbone has {tgt_depth} (num_layers/depth)")
    if any(re.match(r"^layers\.\d+\.(ln1|ln2|attn\.attn|ffn)", k) for k in unexpected):
        lines.append("  the keys look like MMSeg's own VisionTransformer layout (layers.N.ln1, ...); this backbone "
                     "expects the timm layout (blocks.N.norm1, ...): use the original timm/DeiT checkpoint")
    if report.dropped:
        lines.append(f"  (dropped on purpose: {format_keys(sorted(report.dropped), 8)})")
    lines.append("  to accept this, pass strict=False or allow-list the keys (allow_missing=[...], "
                 "allow_unexpected=[...], glob patterns)")
    return CheckpointError("\n".join(lines))


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                            metadata: Optional[Mapping[str, Any]] = None, source: str = "<state_dict>",
                            strict: bool = True, allow_missing: Sequence[str] = (),
                            allow_unexpected: Sequence[str] = (), log: bool = True) -> LoadReport:
    """:func:`convert_state_dict`, then load into ``model`` (see :func:`load_pretrained` for the options).
    Nothing is copied into ``model`` when an error is raised."""
    mapped, report = convert_state_dict(state_dict, model, source=source, metadata=metadata)
    allow_missing, allow_unexpected = list(allow_missing), list(allow_unexpected)
    new_params = list(getattr(model, "new_parameter_patterns", lambda: [])())
    if new_params:
        fresh = [k for k in report.missing if _matches(k, new_params)]
        report.new_params = fresh
        if fresh:
            report.notes.append(f"{len(fresh)} parameters the checkpoint cannot hold keep their initial values "
                                f"(e.g. zero relative position tables): {format_keys(fresh, 4)}")
        allow_missing += new_params
    if strict:
        bad_missing = [k for k in report.missing if not _matches(k, allow_missing)]
        bad_unexpected = [k for k in report.unexpected if not _matches(k, allow_unexpected)]
        if bad_missing or bad_unexpected:
            raise _strict_error(report, bad_missing, bad_unexpected, model)
    report.allowed_missing = list(report.missing)
    report.allowed_unexpected = list(report.unexpected)
    result = model.load_state_dict({k: mapped[k] for k in report.loaded}, strict=False)
    if sorted(result.missing_keys) != report.missing or result.unexpected_keys:
        raise CheckpointError(  # should not happen: the report and torch disagree
            f"internal error while loading {source}: torch reports missing={result.missing_keys}, "
            f"unexpected={result.unexpected_keys}")
    if log:
        logger.info(report.summary())
    return report


def load_pretrained(model: nn.Module, path: str, strict: bool = True, allow_missing: Sequence[str] = (),
                    allow_unexpected: Sequence[str] = (), trust_pickle: Optional[bool] = None, log: bool = True,
                    expect: Optional[str] = VIT) -> LoadReport:
    """Load a pretrained checkpoint file into ``model`` (parameters are copied in place).

    Args:
        model: a module with the timm key layout (a downstream backbone, a timm ViT classifier, ...).
        path: checkpoint file (safetensors or torch pickle; see :func:`.read.read_checkpoint`).
        strict: raise :class:`CheckpointError` listing any missing or unexpected key not covered by the
            allow-lists. ``False`` loads what fits and only reports the rest.
        allow_missing: glob patterns (``fnmatch``) of target keys that may be absent, e.g. ``["norm.*"]``.
        allow_unexpected: glob patterns of checkpoint keys that may be ignored, e.g. ``["blocks.1[0-1].*"]``.
            Parameters the model declares new (its ``new_parameter_patterns()``, e.g. relative position
            tables a classification checkpoint has none of) may always be missing; the report notes them.
        trust_pickle: see :func:`.read.read_checkpoint`.
        log: log the report summary with the ``logging`` module.
        expect: the format tag ``model`` can hold (``None``: any).

    Returns:
        a :class:`LoadReport`.

    Raises:
        CheckpointError: unreadable file, shape mismatch (always), or key mismatch under ``strict``.
            Nothing is copied into ``model`` when an error is raised.
    """
    path = os.fspath(path)
    sd, meta = read_checkpoint(path, trust_pickle=trust_pickle, expect=expect)
    return load_state_dict_checked(model, sd, meta, source=path, strict=strict, allow_missing=allow_missing,
                                   allow_unexpected=allow_unexpected, log=log)
