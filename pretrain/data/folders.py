"""ImageNet-style folder datasets (``root/<split>/<class>/*.JPEG``) with timm's transforms and robust decoding.

Layout problems are errors raised before training starts (missing split folder, no or empty class
folders, class folders without images, a class count that differs from ``data.num_classes``, train
and val splits with different classes). Problems of single files are not: :func:`load_rgb` turns
every decodable image into 8-bit RGB (grayscale, CMYK, palette, RGBA/LA composited on white, 16-bit
PNGs scaled to 8 bits) and raises :class:`UnreadableImageError` for files that cannot be decoded
(truncated or corrupt JPEGs, non-images, vanished files), which
:class:`pretrain.data.robust.KeyedDataset` counts, logs and replaces.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

log = logging.getLogger(__name__)

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class UnreadableImageError(OSError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB.

    Alpha (RGBA, LA, palette with transparency) is composited on white; 16-bit and 32-bit integer
    grayscale is scaled from its full range (65535) to 8 bits instead of being clipped at 255;
    float images are clipped to [0, 255] (or scaled from [0, 1] when that is their range).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _16BIT_MODES or mode == "I":
        a = np.asarray(img).astype(np.int64)
        scale = 257.0 if mode in _16BIT_MODES or a.max(initial=0) > 255 else 1.0
        a = np.clip(np.rint(a / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, P


def load_rgb(path: str) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image; :class:`UnreadableImageError` when it cannot be."""
    permissive = ImageFile.LOAD_TRUNCATED_IMAGES  # another library may have switched it on: not for us
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: truncated data fails here, not later inside a transform
        return to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, UnreadableImageError):
            raise
        raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = permissive


def _posterize(img: Image.Image, bits_to_keep: int, **_):
    """timm's posterize op, also for ``bits_to_keep <= 0`` (a black image, as Pillow < 13 gave).

    RandAugment's ``PosterizeIncreasing`` asks for 0 bits at magnitude 10, which ``rand-m9-mstd0.5``
    draws for about 2 % of its posterize ops; Pillow >= 13 rejects 0 bits with a ValueError that would
    stop a run in its first minutes."""
    from PIL import ImageOps
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size, 0)
    return ImageOps.posterize(img, int(bits_to_keep))


def _patch_timm_posterize() -> None:
    from timm.data import auto_augment
    for name, fn in list(auto_augment.NAME_TO_OP.items()):
        if name.startswith("Posterize") and fn is not _posterize:
            auto_augment.NAME_TO_OP[name] = _posterize


def build_transforms(data_cfg: Dict[str, Any], train: bool):
    """timm's ``create_transform``: RandomResizedCrop + flip + RandAugment + random erasing for training,
    resize + centre crop (``eval_crop_pct``) for evaluation. Training uses ``train_interpolation`` (``random``:
    bilinear or bicubic per image, as timm's train.py default) when set, else ``interpolation``, which also
    sets the eval resize. Returns a (3, S, S) float tensor per image."""
    from timm.data import create_transform
    _patch_timm_posterize()
    size = int(data_cfg["img_size"])
    if train:
        return create_transform(
            size, is_training=True, auto_augment=data_cfg.get("auto_augment") or None,
            re_prob=float(data_cfg.get("re_prob", 0.0)), re_mode=data_cfg.get("re_mode", "pixel"),
            re_count=int(data_cfg.get("re_count", 1)), color_jitter=data_cfg.get("color_jitter", 0.3),
            scale=tuple(data_cfg.get("crop_scale", (0.08, 1.0))),
            interpolation=data_cfg.get("train_interpolation") or data_cfg.get("interpolation", "bicubic"))
    return create_transform(size, is_training=False, interpolation=data_cfg.get("interpolation", "bicubic"),
                            crop_pct=float(data_cfg.get("eval_crop_pct", 0.875)))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _is_hidden(name: str) -> bool:
    """Dot-names (``.ipynb_checkpoints``, ``.DS_Store``, ``._x.JPEG``, ``.git``) are never data."""
    return name.startswith(".")


def class_folders(root: str) -> Tuple[List[str], List[str]]:
    """``(classes, hidden)``: the sorted class folders of a split and the hidden folders left out.

    The one rule of class discovery, shared by :func:`check_folder_layout` and :class:`RobustImageFolder`:
    torchvision's ``ImageFolder`` would count ``.ipynb_checkpoints/`` as a class, which sorts first and
    shifts every label by one."""
    dirs = [e.name for e in os.scandir(root) if e.is_dir()]
    return sorted(n for n in dirs if not _is_hidden(n)), sorted(n for n in dirs if _is_hidden(n))


def check_folder_layout(root: str, num_classes: int) -> List[str]:
    """Class names of ``root/<class>/<images>``; ``ValueError``/``FileNotFoundError`` naming the problem.
    Hidden folders (dot-names) are not classes (:func:`class_folders`)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset split not found: {root}")
    classes, _ = class_folders(root)
    if not classes:
        raise ValueError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    empty, no_images = [], []
    for c in classes:
        names = [e.name for e in os.scandir(os.path.join(root, c)) if e.is_file() or e.is_symlink()]
        if not names:
            empty.append(c)
        elif not any(_is_image(n) for n in names):
            no_images.append(c)
    if empty:
        raise ValueError(f"{root}: empty class folders: {', '.join(empty[:10])}"
                         + (f" and {len(empty) - 10} more" if len(empty) > 10 else ""))
    if no_images:
        raise ValueError(f"{root}: class folders without image files ({', '.join(IMG_EXTENSIONS)}): "
                         f"{', '.join(no_images[:10])}")
    if len(classes) != int(num_classes):
        raise ValueError(f"{root} has {len(classes)} class folders but data.num_classes = {num_classes}")
    return classes


class RobustImageFolder(ImageFolder):
    """``ImageFolder`` whose loader is :func:`load_rgb` (unreadable files raise
    :class:`UnreadableImageError` with the path instead of a bare PIL error) and that, like
    :func:`check_folder_layout`, ignores hidden names: dot-folders are not classes (a
    ``.ipynb_checkpoints/`` would otherwise become class 0 and shift every label by one) and dot-files
    or files under dot-folders inside a class are not images. What was left out is logged and kept in
    ``hidden`` (the hidden class folders) and ``hidden_files`` (their count inside class folders)."""

    def __init__(self, root: str, transform=None):
        self.hidden: List[str] = []
        self.hidden_files = 0
        self._root = os.path.abspath(os.fspath(root))
        super().__init__(root, transform=transform, loader=load_rgb, is_valid_file=self._valid_file)
        if self.hidden or self.hidden_files:
            log.warning("%s: left out hidden entries (not data): %s%s", root,
                        f"folders {', '.join(self.hidden[:5])}" if self.hidden else "",
                        ("; " if self.hidden else "") + f"{self.hidden_files} hidden files in class folders"
                        if self.hidden_files else "")

    def find_classes(self, directory: str) -> Tuple[List[str], Dict[str, int]]:
        classes, self.hidden = class_folders(directory)
        if not classes:
            raise FileNotFoundError(f"{directory}: no class folders (expected {directory}/<class>/<image>)")
        return classes, {c: i for i, c in enumerate(classes)}

    def _valid_file(self, path: str) -> bool:
        rel = os.path.relpath(os.path.abspath(path), self._root).split(os.sep)
        if any(_is_hidden(part) for part in rel[1:]):  # rel[0] is the class folder, not hidden
            self.hidden_files += 1
            return False
        return path.lower().endswith(IMG_EXTENSIONS)


def build_folder_dataset(data_cfg: Dict[str, Any], split: str, train: bool) -> RobustImageFolder:
    """The dataset of ``data.root/<split>``, its layout checked against ``data.num_classes``."""
    root = os.path.join(data_cfg["root"], split)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset split not found: {root} (set data.root to a folder holding "
                                f"'{data_cfg.get('train_split', 'train')}/' and '{data_cfg.get('val_split', 'val')}/')")
    check_folder_layout(root, int(data_cfg["num_classes"]))
    return RobustImageFolder(root, transform=build_transforms(data_cfg, train))


def check_same_classes(train_set, val_set) -> None:
    """Train and val splits must name the same classes in the same order (same label indices)."""
    a, b = list(train_set.classes), list(val_set.classes)
    if a != b:
        only_train = sorted(set(a) - set(b))[:5]
        only_val = sorted(set(b) - set(a))[:5]
        raise ValueError(f"class folders differ between {train_set.root} and {val_set.root}: "
                         f"only in train {only_train}, only in val {only_val}")


def accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Tuple[int, ...] = (1, 5)):
    """Number of correct predictions at each k (k capped at the number of classes)."""
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).sum().item() for k in topk]
