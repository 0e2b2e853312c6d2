"""Shared pieces of the analysis studies: loading checkpoints as timm classifiers with a CLS
attention tap, evaluation data loaders, batched forward passes and result files.

A checkpoint is named on the command line as ``name=path`` (the name labels rows and plot
lines). It can be

* one of our pretraining checkpoints (safetensors with ``format``/``arch`` metadata, timm keys);
* a timm / official DeiT / DINO ``.pth`` or ``.safetensors`` file (``model``/``state_dict``
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
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..amp import autocast
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


def _strip(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for prefix in ("module.", "_orig_mod.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _arch_from_state_dict(sd: Mapping[str, torch.Tensor], source: str) -> Dict[str, Any]:
    w = sd.get("patch_embed.proj.weight")
    if w is None or w.dim() != 4:
        raise AnalysisError(f"{source}: no 'patch_embed.proj.weight': not a timm ViT state dict "
                            f"(keys: {sorted(sd)[:8]} ...)")
    if "cls_token" not in sd:
        raise AnalysisError(f"{source}: no 'cls_token': the studies need a ViT with a class token")
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    embed = int(w.shape[0])
    patch = int(w.shape[2])
    prefix = 1 + int("dist_token" in sd) + (int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0)
    n = int(sd["pos_embed"].shape[1]) - prefix
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise AnalysisError(f"{source}: pos_embed has {n} patch rows, not a square grid")
    head = sd.get("head.weight")
    return {
        "model": "deit_base_distilled_patch16_224" if "dist_token" in sd else "vit_base_patch16_224",
        "img_size": [side * patch, side * patch], "patch_size": patch, "embed_dim": embed,
        "depth": depth, "num_heads": max(1, embed // 64),
        "mlp_ratio": sd["blocks.0.mlp.fc1.weight"].shape[0] / embed,
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
        "num_classes": int(head.shape[0]) if head is not None else 0,
        "has_norm": "norm.weight" in sd, "has_fc_norm": "fc_norm.weight" in sd,
    }


def load_classifier(path: str, name: Optional[str] = None, device: str | torch.device = "cpu",
                    img_size: Optional[int | Sequence[int]] = None, num_heads: Optional[int] = None,
                    trust_pickle: Optional[bool] = None) -> LoadedModel:
    """Load a checkpoint as a frozen timm ViT classifier with a CLS attention tap.

    Args:
        path: checkpoint file (see the module docstring) or ``timm:<name>``.
        name: label (defaults to the file stem).
        img_size: run the model at this input size (position embeddings are resampled
            bicubically); default: the checkpoint's pretraining size.
        num_heads: head count for files without ``arch`` metadata (default: width // 64).

    Raises:
        AnalysisError / downstream.weights.CheckpointError: unreadable file, not a ViT with a
        CLS token, or keys that do not match the architecture (listed, with the file name).
    """
    from timm.layers import resample_abs_pos_embed

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

    from downstream.weights import read_checkpoint

    sd, meta = read_checkpoint(path, trust_pickle=trust_pickle)
    sd = _strip(dict(sd))
    inferred = _arch_from_state_dict(sd, path)
    arch = dict(inferred)
    meta_arch = meta.get("arch") if isinstance(meta.get("arch"), Mapping) else None
    if meta_arch:
        for key in ("embed_dim", "depth", "patch_size"):
            if key in meta_arch and int(meta_arch[key]) != int(inferred[key]):
                raise AnalysisError(f"{path}: metadata says {key}={meta_arch[key]} but the tensors say "
                                    f"{key}={inferred[key]}")
        arch.update({k: v for k, v in meta_arch.items() if k in arch or k == "model"})
        arch["num_classes"] = inferred["num_classes"]
    if num_heads is not None:
        arch["num_heads"] = int(num_heads)
    if arch["embed_dim"] % arch["num_heads"]:
        raise AnalysisError(f"{path}: embed_dim {arch['embed_dim']} is not divisible by num_heads "
                            f"{arch['num_heads']}; pass num_heads")
    ckpt_size = _pair(arch["img_size"])
    run_size = _pair(img_size) if img_size is not None else ckpt_size
    kwargs = dict(img_size=run_size, patch_size=arch["patch_size"], embed_dim=arch["embed_dim"],
                  depth=arch["depth"], num_heads=arch["num_heads"], mlp_ratio=arch["mlp_ratio"],
                  qkv_bias=arch["qkv_bias"])
    if not inferred["has_norm"] and inferred["has_fc_norm"]:
        kwargs["global_pool"] = "avg"
    try:
        model = create_vit(arch.get("model") or "vit_base_patch16_224", arch["num_classes"], **kwargs)
    except (ValueError, TypeError) as e:
        raise AnalysisError(f"{path}: cannot build timm model {arch.get('model')!r} with {kwargs}: {e}") from e
    pe = sd.get("pos_embed")
    tgt_pe = model.pos_embed
    if pe is not None and tuple(pe.shape) != tuple(tgt_pe.shape):
        grid_old = [s // arch["patch_size"] for s in ckpt_size]
        grid_new = [s // arch["patch_size"] for s in run_size]
        sd["pos_embed"] = resample_abs_pos_embed(pe.float(), new_size=grid_new, old_size=grid_old,
                                                 num_prefix_tokens=model.num_prefix_tokens).to(pe.dtype)
    target = model.state_dict()
    missing = sorted(k for k in target if k not in sd)
    unexpected = sorted(k for k in sd if k not in target)
    if missing or unexpected:
        raise AnalysisError(
            f"{path} does not match timm model {arch.get('model')!r} ({arch['depth']} blocks, width "
            f"{arch['embed_dim']}): missing {missing[:12]}{' ...' if len(missing) > 12 else ''}, unexpected "
            f"{unexpected[:12]}{' ...' if len(unexpected) > 12 else ''}")
    bad = [f"{k}: {list(sd[k].shape)} vs {list(v.shape)}" for k, v in target.items() if sd[k].shape != v.shape]
    if bad:
        raise AnalysisError(f"{path}: shape mismatches: {bad[:8]}")
    model.load_state_dict(sd, strict=True)
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
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    return img.convert("RGB") if img.mode != "RGB" else img


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
    """An ImageNet-layout folder ``root/<class>/*`` with the evaluation transform."""
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(root):
        raise AnalysisError(f"image folder not found: {root} (expected <root>/<class>/<image>)")
    try:
        return ImageFolder(root, transform=eval_transform(img_size, crop_pct, mean, std), loader=rgb_loader)
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
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    with open(json_path, "w") as f:
        json.dump({"study": study, **meta, "rows": rows}, f, indent=2)
        f.write("\n")
    return {"csv": csv_path, "json": json_path}
