"""ImageNet-style folder datasets (root/<split>/<class>/*.JPEG) with timm's transforms."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Tuple

import torch
from PIL import Image
from torchvision.datasets import ImageFolder

log = logging.getLogger(__name__)


def _rgb_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    if img.mode != "RGB":  # grayscale, CMYK, RGBA, palette, 16-bit: convert, don't crash
        img = img.convert("RGB")
    return img


def build_transforms(data_cfg: Dict[str, Any], train: bool):
    from timm.data import create_transform
    size = int(data_cfg["img_size"])
    if train:
        return create_transform(
            size, is_training=True, auto_augment=data_cfg.get("auto_augment") or None,
            re_prob=float(data_cfg.get("re_prob", 0.0)), re_mode="pixel", re_count=1,
            color_jitter=data_cfg.get("color_jitter", 0.3), interpolation=data_cfg.get("interpolation", "bicubic"))
    return create_transform(size, is_training=False, interpolation=data_cfg.get("interpolation", "bicubic"),
                            crop_pct=float(data_cfg.get("eval_crop_pct", 0.875)))


def build_folder_dataset(data_cfg: Dict[str, Any], split: str, train: bool) -> ImageFolder:
    """An ImageFolder over ``data.root/<split>`` checked against ``data.num_classes``."""
    root = os.path.join(data_cfg["root"], split)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset split not found: {root} (set data.root to a folder holding "
                                f"'{data_cfg.get('train_split', 'train')}/' and '{data_cfg.get('val_split', 'val')}/')")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    empty = [c for c in classes if not any(True for _ in os.scandir(os.path.join(root, c)))]
    if empty:
        raise ValueError(f"{root}: empty class folders: {', '.join(empty[:10])}")
    ds = ImageFolder(root, transform=build_transforms(data_cfg, train), loader=_rgb_loader)
    if len(ds.classes) != int(data_cfg["num_classes"]):
        raise ValueError(f"{root} has {len(ds.classes)} class folders but data.num_classes = "
                         f"{data_cfg['num_classes']}")
    return ds


def accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Tuple[int, ...] = (1, 5)):
    """Number of correct predictions at each k (k capped at the number of classes)."""
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).sum().item() for k in topk]
