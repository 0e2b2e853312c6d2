"""Shared pieces of the analysis studies: loading checkpoints as timm classifiers with a CLS
attention tap, evaluation data loaders, batched forward passes and result files.

A checkpoint is named on the command line as ``name=path`` (the name labels rows and plot
lines). It can be

* one of our pretraining checkpoints (safetensors with ``format``/``arch`` metadata, timm keys);
* a timm / official DeiT (facebookresearch/deit) / DINO (facebookresearch/dino; papers in
  docs/references.md) ``.pth`` or ``.safetensors`` file (``model``/``state_dict``
  wrappers and ``module.`` prefixes are unwrapped); the architecture is inferred from the tensor
  shapes, the head count from the width (64 channels per head, as every DeiT/ViT/DINO model)
  unless ``num_heads`` is given;
* ``timm:<model name>`` for timm's own pretrained weights (these must already be in the local
  cache: nothing is downloaded by the studies themselves).

Files without a classifier head (DINO backbones) load with ``num_classes == 0``; they are valid
*saliency* models for the occlusion study but cannot be evaluated for accuracy.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..amp import autocast
from ..checkpoint.files import write_text_atomic
from ..models.vit import ClsAttentionTap, create_vit

log = logging.getLogger("analysis")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class AnalysisError(ValueError):
    """Bad input to an analysis study (missing files, mismatched classes, bad settings)."""


# ------------------------------------------------------------------------------ checkpoints
@dataclass
class LoadedModel:
    """A frozen timm ViT classifier in eval mode with a tap on its last block's CLS attention.

    Attributes:
        name: label used in result rows and plots.
        source: the checkpoint path (or ``timm:<name>``).
        model: the timm ``VisionTransformer`` (on ``device``, ``eval()``, no grad).
        tap: :class:`~pretrain.models.vit.ClsAttentionTap` on the last block.
        img_size: (H, W) input size the model runs at.
        patch_size: patch side in pixels.
        num_classes: classifier outputs (0: no head, saliency use only).
    """

    name: str
    source: str
    model: nn.Module
    tap: ClsAttentionTap
    img_size: Tuple[int, int]
    patch_size: int
    num_classes: int

    @property
    def grid(self) -> Tuple[int, int]:
        """(h, w) patch grid."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        h, w = self.grid
        return h * w

    def forward(self, images: torch.Tensor, amp_dtype: Optional[torch.dtype] = None,
                attention: bool = False):
        """Logits of a batch, optionally with the CLS attention of the same forward pass.

        Args:
            images: (B, 3, H, W) normalised images at ``img_size``.
        Returns:
            logits (B, num_classes) float32, and when ``attention``: (B, h, w) float32 CLS
            attention on the patch tokens, renormalised to sum to 1 per image.
        """
        if tuple(images.shape[-2:]) != tuple(self.img_size):
            raise AnalysisError(f"{self.name}: images are {tuple(images.shape[-2:])}, the model runs at "
                                f"{tuple(self.img_size)}")
        with autocast(images.device, amp_dtype):
            logits = self.model(images)
        logits = logits.float()
        if not attention:
            return logits
        att = self.tap.patch_attention().float()
        att = att / att.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return logits, att.reshape(att.shape[0], *self.grid)

    def attention(self, images: torch.Tensor, amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """(B, h, w) CLS attention of ``images`` (resized bicubically to ``img_size`` if needed)."""
        if tuple(images.shape[-2:]) != tuple(self.img_size):
            images = F.interpolate(images.float(), size=self.img_size, mode="bicubic", align_corners=False)
        return self.forward(images, amp_dtype, attention=True)[1]


def parse_amp(amp: Optional[str]) -> Optional[torch.dtype]:
    """``None``/``"none"``/``"fp32"`` -> None, ``"bf16"``, ``"fp16"`` -> the dtype."""
    if amp is None or str(amp).lower() in ("", "none", "fp32", "no", "off"):
        return None
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if str(amp).lower() not in table:
        raise AnalysisError(f"--amp must be one of none, bf16, fp16; got {amp!r}")
    return table[str(amp).lower()]


def parse_ckpt_specs(specs: Sequence[str]) -> List[Tuple[str, str]]:
    """``["cutmix=runs/a/model.safetensors", "runs/b.pth"]`` -> ``[(name, path), ...]``.

    Without ``name=`` the file's parent folder name (or stem) is used. Names must be unique.
    """
    out: List[Tuple[str, str]] = []
    for spec in specs:
        if "=" in spec and not spec.startswith("timm:"):
            name, path = spec.split("=", 1)
        else:
            path = spec
            base = os.path.basename(os.path.dirname(os.path.abspath(path))) if not spec.startswith("timm:") else ""
            stem = os.path.splitext(os.path.basename(path))[0]
            name = base if stem in ("model", "best", "checkpoint") and base else stem.replace("timm:", "")
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise AnalysisError(f"bad checkpoint spec {spec!r}: expected name=path")
        out.append((name, path))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AnalysisError(f"checkpoint names must be unique; repeated: {', '.join(dup)} (use name=path)")
    if not out:
        raise AnalysisError("no checkpoint given (--ckpt name=path ...)")
    return out


def load_classifier(path: str, name: Optional[str] = None, device: str | torch.device = "cpu",
                    img_size: Optional[int | Sequence[int]] = None, num_heads: Optional[int] = None,
                    trust_pickle: Optional[bool] = None) -> LoadedModel:
    """Load a checkpoint as a frozen timm ViT classifier with a CLS attention tap.

    Args:
        path: checkpoint file (see the module docstring) or ``timm:<name>``.
        name: label (defaults to the file stem).
        img_size: run the model at this input size (position embeddings are resampled
            bicubically, :func:`pretrain.checkpoint.resize_pos_embed`); default: the checkpoint's
            pretraining size.
        num_heads: head count for files without ``arch`` metadata (default: width // 64).

    Raises:
        AnalysisError / pretrain.checkpoint.CheckpointError: unreadable file, not a ViT with a
        CLS token, or keys that do not match the architecture (listed, with the file name).
    """
    from ..checkpoint import (CheckpointError, arch_of, convert_state_dict, read_checkpoint, strip_prefixes,
                              timm_vit_kwargs)

    name = name or os.path.splitext(os.path.basename(path))[0]
    if path.startswith("timm:"):
        import timm

        try:
            model = timm.create_model(path[5:], pretrained=True)
        except Exception as e:  # noqa: BLE001 - offline, unknown name, missing cache
            raise AnalysisError(f"cannot create timm model {path[5:]!r} with pretrained weights "
                                f"(they must be in the local cache): {e}") from e
        if img_size is not None:
            model.set_input_size(img_size=_pair(img_size))
        return _finish(model, name, path, device)

    sd, meta = read_checkpoint(path, trust_pickle=trust_pickle)
    arch = arch_of(sd, meta, source=path)
    if "patch_size" not in arch:
        raise AnalysisError(f"{path}: no 'patch_embed.proj.weight': not a timm ViT state dict "
                            f"(keys: {sorted(sd)[:8]} ...)")
    if not any(k.endswith("cls_token") for k in sd):
        raise AnalysisError(f"{path}: no 'cls_token': the studies need a ViT with a class token")
    if "img_size" not in arch:
        raise AnalysisError(f"{path}: pos_embed is not a square grid")
    head = strip_prefixes(dict(sd))[0].get("head.weight")
    arch["num_classes"] = int(head.shape[0]) if head is not None else 0  # the tensors decide, not the metadata
    try:
        model_name, kwargs = timm_vit_kwargs(arch, num_heads=num_heads,
                                             img_size=_pair(img_size) if img_size is not None else None,
                                             source=path)
    except CheckpointError as e:
        raise AnalysisError(str(e)) from e
    try:
        model = create_vit(model_name, arch["num_classes"], **kwargs)
    except (ValueError, TypeError) as e:
        raise AnalysisError(f"{path}: cannot build timm model {model_name!r} with {kwargs}: {e}") from e
    try:
        mapped, report = convert_state_dict(sd, model, source=path, metadata=meta)
    except CheckpointError as e:
        raise AnalysisError(str(e)) from e
    if report.missing or report.unexpected or report.dropped:
        extra = sorted(report.unexpected) + sorted(report.dropped)
        raise AnalysisError(
            f"{path} does not match timm model {model_name!r} ({arch['depth']} blocks, width "
            f"{arch['embed_dim']}): missing {report.missing[:12]}{' ...' if len(report.missing) > 12 else ''}, "
            f"unexpected {extra[:12]}{' ...' if len(extra) > 12 else ''}")
    model.load_state_dict(mapped, strict=True)
    return _finish(model, name, path, device)


def _finish(model: nn.Module, name: str, source: str, device) -> LoadedModel:
    model.eval().requires_grad_(False).to(device)
    tap = ClsAttentionTap(model)
    pe = model.patch_embed
    return LoadedModel(name=name, source=source, model=model, tap=tap, img_size=tuple(pe.img_size),
                       patch_size=int(pe.patch_size[0]), num_classes=int(model.num_classes))


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise AnalysisError(f"image size must be one or two ints, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def check_same_input(models: Sequence[LoadedModel]) -> Tuple[Tuple[int, int], int]:
    """All evaluated models must share input size and patch size (one data pass feeds them all)."""
    sizes = {(m.img_size, m.patch_size) for m in models}
    if len(sizes) != 1:
        desc = ", ".join(f"{m.name}: {m.img_size[0]}x{m.img_size[1]}/{m.patch_size}" for m in models)
        raise AnalysisError(f"the compared checkpoints need one input size and patch size ({desc}); "
                            "pass --img-size to run them at one size")
    (size, patch), = sizes
    return size, patch


def require_head(models: Iterable[LoadedModel], num_classes: Optional[int] = None) -> None:
    for m in models:
        if m.num_classes == 0:
            raise AnalysisError(f"{m.name} ({m.source}) has no classifier head: it can only serve as a "
                                "saliency model (--saliency)")
        if num_classes is not None and m.num_classes != num_classes:
            raise AnalysisError(f"{m.name} ({m.source}) has {m.num_classes} outputs but the data has "
                                f"{num_classes} classes")


# ------------------------------------------------------------------------------------ data
def rgb_loader(path: str):
    """The engine's decoder (:func:`pretrain.data.folders.load_rgb`): 8-bit RGB, or
    :class:`pretrain.data.folders.UnreadableImageError` naming the file (counted and skipped by the
    sharded studies)."""
    from ..data.folders import load_rgb

    return load_rgb(path)


def eval_transform(img_size: Tuple[int, int], crop_pct: float = 0.875, mean=IMAGENET_MEAN,
                   std=IMAGENET_STD, interpolation: str = "bicubic"):
    """timm's evaluation transform: resize to ``size / crop_pct``, centre crop, normalise."""
    from timm.data import create_transform

    if not 0.0 < float(crop_pct) <= 1.0:
        raise AnalysisError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return create_transform(tuple(img_size), is_training=False, crop_pct=float(crop_pct), mean=tuple(mean),
                            std=tuple(std), interpolation=interpolation)


def image_folder(root: str, img_size: Tuple[int, int], crop_pct: float = 0.875, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD):
    """An ImageNet-layout folder ``root/<class>/*`` with the evaluation transform, read as the engine
    reads its splits (:class:`pretrain.data.folders.RobustImageFolder`: hidden folders are no classes,
    unreadable files raise :class:`pretrain.data.folders.UnreadableImageError`)."""
    from ..data.folders import RobustImageFolder

    if not os.path.isdir(root):
        raise AnalysisError(f"image folder not found: {root} (expected <root>/<class>/<image>)")
    try:
        return RobustImageFolder(root, transform=eval_transform(img_size, crop_pct, mean, std))
    except FileNotFoundError as e:
        raise AnalysisError(f"{root}: {e}") from e


def make_loader(dataset, batch_size: int, workers: int, device: torch.device, collate_fn=None):
    from torch.utils.data import DataLoader

    if int(batch_size) < 1:
        raise AnalysisError(f"batch size must be positive, got {batch_size}")
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=False, num_workers=int(workers),
                      pin_memory=device.type == "cuda", collate_fn=collate_fn,
                      persistent_workers=False)


def resolve_device(device: Optional[str]) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AnalysisError("--device cuda requested but CUDA is not available")
    return dev


def top1_correct(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) bool: arg-max prediction equals the target."""
    return logits.argmax(dim=1).eq(target)


# --------------------------------------------------------------------------------- results
def write_results(out_dir: str, study: str, rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> Dict[str, str]:
    """Write ``<study>.csv`` (one row per measurement) and ``<study>.json`` (meta + rows).

    Returns the paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, f"{study}.csv")
    json_path = os.path.join(out_dir, f"{study}.json")
    fields: List[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text_atomic(csv_path, buf.getvalue())
    write_text_atomic(json_path, json.dumps({"study": study, **meta, "rows": rows}, indent=2) + "\n")
    return {"csv": csv_path, "json": json_path}
