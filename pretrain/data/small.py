"""CIFAR-10, CIFAR-100 and Tiny ImageNet read from their published on-disk layouts.

The layout names are in :mod:`pretrain.data.small_layout`; synthetic stand-ins in these layouts are written
by :func:`pretrain.synthetic.write_synthetic_small` (``vitmix-make-synthetic --format cifar100``).

Nothing is downloaded: a missing dataset is a ``FileNotFoundError`` that names the path that was
looked for, the layout expected there and where to get the data (see ``docs/data_small.md``).

Layouts (``root`` may be the folder that holds the extracted archive, as torchvision expects, or the
extracted folder itself):

* ``cifar10``: ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, the python
  pickles of ``cifar-10-python.tar.gz``: ``b'data'`` uint8 ``(N, 3072)`` (each row the R, G and B
  32x32 planes, row-major), ``b'labels'``; ``batches.meta`` ``b'label_names'``.
* ``cifar100``: ``root/cifar-100-python/{train, test, meta}``: ``b'data'``, ``b'fine_labels'`` (used as
  the label), ``b'coarse_labels'`` (kept as ``coarse_targets``); ``meta`` ``b'fine_label_names'``.
* ``tiny_imagenet``: ``root/tiny-imagenet-200/`` with ``wnids.txt``, ``words.txt`` (optional, class
  descriptions), ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` +
  ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1``). Label ``i`` is the
  ``i``-th wnid in sorted order, the order ``torchvision.datasets.ImageFolder`` gives ``train/``.
  A val image without an annotation line, or an annotation line without its image, is a counted,
  logged skip (``strict=True`` makes both errors); the counts are in ``dataset.skipped``.

Split ``"train"`` is the training set; ``"val"`` is CIFAR's ``test_batch``/``test`` and Tiny
ImageNet's ``val/`` (its ``test/`` has no labels). CIFAR arrays are decoded once into a uint8
``(N, 32, 32, 3)`` array; Tiny ImageNet images are read with PIL per item (grayscale and other modes
converted to RGB by :func:`pretrain.data.folders.load_rgb`, undecodable files raise
:class:`pretrain.data.folders.UnreadableImageError`, which :class:`pretrain.data.robust.KeyedDataset`
counts and skips).

Augmentation (torchvision transforms v2 on uint8 tensors), ``train=True``:

* CIFAR (32 px): 4-pixel zero padding + random 32x32 crop + horizontal flip;
* Tiny ImageNet (64 px): 8-pixel zero padding + random 64x64 crop + horizontal flip (the
  CIFAR recipe scaled with the image side);

then, when ``img_size`` is given, a bicubic antialiased resize to ``img_size x img_size`` (e.g. a
DeiT at 224 px); evaluation applies only that resize. Images are finally scaled to [0, 1] and
normalised with the dataset's channel statistics (:data:`NORMALIZATION`).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checkpoint.pickles import RefusedGlobal, load_weights_pickle
from .folders import load_rgb
from .small_layout import (ARCHIVE_FOLDERS, CIFAR_FILES, CIFAR_LABEL_KEYS, CIFAR_NAMES_KEYS, NATIVE_SIZE,
                           NUM_CLASSES, TINY_IMAGENET_WNIDS, check_format)
from .small_layout import SMALL_FORMATS  # noqa: F401  (the formats this module reads, re-exported)

log = logging.getLogger(__name__)

_CROP_PAD = {"cifar10": 4, "cifar100": 4, "tiny_imagenet": 8}
_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny_imagenet": "Tiny ImageNet"}
_SOURCE = {
    "cifar10": "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
    "cifar100": "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
    "tiny_imagenet": "tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip",
}

#: Per-channel (RGB) mean and standard deviation of the training images, pixel values in [0, 1].
#: CIFAR: computed over the 50,000 training images of each set (population std over all pixels);
#: Tiny ImageNet: over its 100,000 training images.
NORMALIZATION: Dict[str, Tuple[Tuple[float, float, float], Tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}

_SPLITS = ("train", "val")


# ---------------------------------------------------------------------------
# names, checks, transforms
# ---------------------------------------------------------------------------

def small_num_classes(fmt: str) -> int:
    """Number of classes of the real dataset: 10 (cifar10), 100 (cifar100), 200 (tiny_imagenet)."""
    return NUM_CLASSES[check_format(fmt)]


def small_native_size(fmt: str) -> int:
    """Image side of the dataset: 32 (CIFAR) or 64 (Tiny ImageNet)."""
    return NATIVE_SIZE[check_format(fmt)]


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'val' (CIFAR test set / Tiny ImageNet val/)")
    return split


def _layout_text(fmt: str) -> str:
    if fmt == "cifar10":
        return "cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta}"
    if fmt == "cifar100":
        return "cifar-100-python/{train, test, meta}"
    return ("tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
            "val/val_annotations.txt}")


def _missing(fmt: str, root: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{_PRETTY[fmt]} not found: {what} does not exist. Expected {root}/{_layout_text(fmt)} (or those files "
        f"directly in {root}). Nothing is downloaded: extract {_SOURCE[fmt]} into {root}, or write a synthetic "
        f"stand-in with: python tools/make_synthetic_small.py --format {fmt} --out {root}")


def resolve_small_root(fmt: str, root: str) -> str:
    """The folder that holds the dataset's files: ``root/<archive folder>`` when that exists, else ``root``.

    ``FileNotFoundError`` (naming the path and the expected layout) when neither holds the marker file
    (``batches.meta`` / ``meta`` / ``wnids.txt``)."""
    fmt = check_format(fmt)
    root = os.fspath(root)
    marker = CIFAR_FILES[fmt]["meta"] if fmt in CIFAR_FILES else TINY_IMAGENET_WNIDS
    if not os.path.isdir(root):
        raise _missing(fmt, root, f"the folder {root}")
    for cand in (os.path.join(root, ARCHIVE_FOLDERS[fmt]), root):
        if os.path.isfile(os.path.join(cand, marker)):
            return cand
    sub = os.path.join(root, ARCHIVE_FOLDERS[fmt])
    raise _missing(fmt, root, os.path.join(sub if os.path.isdir(sub) else root, marker))


def build_small_transform(fmt: str, train: bool, img_size: Optional[int] = None):
    """The transform of one uint8 ``(3, H, W)`` tensor to a normalised float ``(3, S, S)`` tensor.

    ``S`` is ``img_size`` or the native side (32 CIFAR, 64 Tiny ImageNet). Training: zero padding
    (4 px CIFAR, 8 px Tiny ImageNet) + random crop at the native side + horizontal flip, then the
    resize; evaluation: the resize only (none when ``S`` is the native side and the image has it)."""
    from torchvision.transforms import v2

    fmt = check_format(fmt)
    native = NATIVE_SIZE[fmt]
    size = native if img_size is None else int(img_size)
    if size < 1:
        raise ValueError(f"img_size must be positive, got {img_size}")
    ops: List[Any] = [_ResizeIfNeeded(native)]  # Tiny ImageNet folders may hold an odd-sized file
    if train:
        ops += [v2.RandomCrop(native, padding=_CROP_PAD[fmt], fill=0), v2.RandomHorizontalFlip(0.5)]
    if size != native:
        ops.append(v2.Resize((size, size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True))
    mean, std = NORMALIZATION[fmt]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


class _ResizeIfNeeded(torch.nn.Module):
    """Bilinear antialiased resize of a ``(C, H, W)`` tensor to ``size x size`` unless it is already."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2:] == (self.size, self.size):
            return img
        from torchvision.transforms.v2 import functional as F
        return F.resize(img, [self.size, self.size], antialias=True)


def denormalize(img: torch.Tensor, fmt: str) -> torch.Tensor:
    """Inverse of the normalisation: ``(..., 3, H, W)`` float tensor back to pixel values in [0, 1]."""
    mean, std = NORMALIZATION[check_format(fmt)]
    m = torch.tensor(mean, dtype=img.dtype, device=img.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=img.dtype, device=img.device).view(3, 1, 1)
    return img * s + m


# ---------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------

def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def load_cifar_pickle(path: str) -> Dict[str, Any]:
    """One CIFAR python pickle as a dict with ``str`` keys (the files use Python 2 byte-string keys).

    Read by the allow-list unpickler of :mod:`pretrain.checkpoint.pickles` (numpy arrays, lists, bytes;
    no other global), so a crafted file cannot run code. ``FileNotFoundError`` when it is missing,
    ``ValueError`` naming the file when it cannot be unpickled, names another Python global, or is not a dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR file missing: {path}")
    try:
        obj = load_weights_pickle(path, encoding="bytes")
    except RefusedGlobal as exc:
        raise ValueError(f"{path}: not a CIFAR python pickle: it names the Python global {exc.qualname} (a CIFAR "
                         "batch holds only arrays, lists and strings); refused without unpickling it") from None
    except Exception as exc:  # truncated, not a pickle, wrong protocol, ...
        raise ValueError(f"{path}: not a readable CIFAR python pickle ({type(exc).__name__}: {exc}); the file is "
                         "corrupt or incomplete, extract the archive again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a CIFAR pickle holds a dict, this one holds a {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def _cifar_names(fmt: str, folder: str) -> List[str]:
    path = os.path.join(folder, CIFAR_FILES[fmt]["meta"])
    meta = load_cifar_pickle(path)
    key = CIFAR_NAMES_KEYS[fmt]
    if key not in meta:
        raise ValueError(f"{path}: no {key!r} entry (keys: {sorted(meta)}); is this a {_PRETTY[fmt]} folder?")
    names = [_text(n) for n in meta[key]]
    if not names:
        raise ValueError(f"{path}: {key!r} is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: {key!r} has duplicate class names")
    return names


def _cifar_batch(fmt: str, path: str, num_classes: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """``(images uint8 (N, 32, 32, 3), labels int64 (N,), coarse labels or None)`` of one batch file."""
    d = load_cifar_pickle(path)
    key = CIFAR_LABEL_KEYS[fmt]
    for k in ("data", key):
        if k not in d:
            raise ValueError(f"{path}: no {k!r} entry (keys: {sorted(d)}); is this a {_PRETTY[fmt]} batch?")
    data = np.asarray(d["data"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    labels = np.asarray(d[key], dtype=np.int64).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: {int(bad.sum())} labels outside [0, {num_classes}) (the meta file names "
                         f"{num_classes} classes), e.g. {int(labels[i])} at row {i}")
    coarse = None
    if "coarse_labels" in d:
        coarse = np.asarray(d["coarse_labels"], dtype=np.int64).reshape(-1)
        if coarse.shape[0] != data.shape[0]:
            raise ValueError(f"{path}: {coarse.shape[0]} coarse labels for {data.shape[0]} images")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels, coarse


class CifarDataset(Dataset):
    """A CIFAR split held in memory.

    Attributes: ``data`` uint8 ``(N, 32, 32, 3)``, ``targets`` int64 ``(N,)``, ``coarse_targets``
    (CIFAR-100) or None, ``classes`` (names from the meta file), ``num_classes``, ``root`` (the folder
    read), ``files`` (the batch files read), ``fmt``, ``split``. Items: ``(image, label)`` with image the
    float ``(3, S, S)`` output of ``transform`` (a uint8 ``(3, 32, 32)`` tensor without one)."""

    def __init__(self, fmt: str, root: str, split: str, transform=None, num_classes: Optional[int] = None):
        fmt = check_format(fmt)
        if fmt not in CIFAR_FILES:
            raise ValueError(f"CifarDataset reads cifar10/cifar100, not {fmt!r}")
        split = _check_split(split)
        folder = resolve_small_root(fmt, root)
        files = [os.path.join(folder, n) for n in CIFAR_FILES[fmt][split]]
        for p in files:
            if not os.path.isfile(p):
                raise _missing(fmt, os.fspath(root), p)
        self.classes = _cifar_names(fmt, folder)
        if num_classes is not None and len(self.classes) != int(num_classes):
            raise ValueError(f"{os.path.join(folder, CIFAR_FILES[fmt]['meta'])} names {len(self.classes)} classes "
                             f"but {num_classes} are expected")
        parts = [_cifar_batch(fmt, p, len(self.classes)) for p in files]
        self.data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        self.targets = np.concatenate([p[1] for p in parts])
        coarse = [p[2] for p in parts]
        self.coarse_targets = np.concatenate(coarse) if all(c is not None for c in coarse) else None
        if len(self.targets) == 0:
            raise ValueError(f"{', '.join(files)}: no images")
        self.fmt, self.split, self.root, self.files = fmt, split, folder, files
        self.num_classes = len(self.classes)
        self.transform = transform
        self.skipped: Dict[str, int] = {}

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int):
        img = torch.from_numpy(self.data[index]).permute(2, 0, 1)  # (3, 32, 32) uint8 view
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])


# ---------------------------------------------------------------------------
# Tiny ImageNet
# ---------------------------------------------------------------------------

def _read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [ln.rstrip("\r\n") for ln in f]


def _is_jpeg_like(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith((".jpeg", ".jpg", ".png"))


def _report_skips(kind: str, names: Sequence[str], where: str, strict: bool) -> int:
    if not names:
        return 0
    shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    msg = f"{where}: {len(names)} {kind}: {shown}"
    if strict:
        raise ValueError(msg + " (strict=True)")
    log.warning("%s; skipped", msg)
    return len(names)


def read_tiny_imagenet_wnids(folder: str) -> List[str]:
    """Sorted wnids of ``folder/wnids.txt`` (``ValueError`` on duplicates or an empty file)."""
    path = os.path.join(folder, TINY_IMAGENET_WNIDS)
    wnids = [w.strip() for w in _read_lines(path) if w.strip()]
    if not wnids:
        raise ValueError(f"{path}: no wnids")
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path}: duplicate wnids")
    return sorted(wnids)


class TinyImageNetDataset(Dataset):
    """Tiny ImageNet ``train`` or ``val`` split read from its folders.

    Attributes: ``samples`` (path, label) list, ``targets`` int64 ``(N,)``, ``classes`` (sorted wnids),
    ``class_names`` (``words.txt`` descriptions, the wnid when absent), ``num_classes``, ``root``,
    ``skipped`` (``{"val image without annotation": n, "annotation without image": m}``).
    Items: ``(image, label)`` with image the float ``(3, S, S)`` output of ``transform`` (uint8
    ``(3, H, W)`` without one)."""

    def __init__(self, root: str, split: str, transform=None, num_classes: Optional[int] = None,
                 strict: bool = False):
        split = _check_split(split)
        folder = resolve_small_root("tiny_imagenet", root)
        self.classes = read_tiny_imagenet_wnids(folder)
        if num_classes is not None and len(self.classes) != int(num_classes):
            raise ValueError(f"{os.path.join(folder, 'wnids.txt')} lists {len(self.classes)} wnids but "
                             f"{num_classes} classes are expected")
        index = {w: i for i, w in enumerate(self.classes)}
        self.class_names = self._words(folder)
        self.skipped: Dict[str, int] = {}
        self.fmt, self.split, self.root = "tiny_imagenet", split, folder
        self.samples = self._train(folder, index, os.fspath(root)) if split == "train" else \
            self._val(folder, index, os.fspath(root), strict)
        if not self.samples:
            raise ValueError(f"{folder}/{split}: no images")
        self.targets = np.asarray([lbl for _, lbl in self.samples], dtype=np.int64)
        self.num_classes = len(self.classes)
        self.transform = transform

    def _words(self, folder: str) -> List[str]:
        path = os.path.join(folder, "words.txt")
        words: Dict[str, str] = {}
        if os.path.isfile(path):
            for ln in _read_lines(path):
                parts = ln.split("\t", 1)
                if len(parts) == 2:
                    words[parts[0].strip()] = parts[1].strip()
        return [words.get(w, w) for w in self.classes]

    def _train(self, folder: str, index: Dict[str, int], user_root: str) -> List[Tuple[str, int]]:
        tdir = os.path.join(folder, "train")
        if not os.path.isdir(tdir):
            raise _missing("tiny_imagenet", user_root, tdir)
        present = sorted(e.name for e in os.scandir(tdir) if e.is_dir() and not e.name.startswith("."))
        missing = [w for w in self.classes if w not in set(present)]
        extra = [w for w in present if w not in index]
        if missing or extra:
            raise ValueError(f"{tdir} has {len(present)} class folders but {folder}/wnids.txt lists "
                             f"{len(self.classes)} wnids: missing folders {missing[:5]}, folders not in wnids.txt "
                             f"{extra[:5]}")
        samples: List[Tuple[str, int]] = []
        empty = []
        for w in self.classes:
            idir = os.path.join(tdir, w, "images")
            names = sorted(e.name for e in os.scandir(idir) if _is_jpeg_like(e.name)) if os.path.isdir(idir) else []
            if not names:
                empty.append(idir)
            samples += [(os.path.join(idir, n), index[w]) for n in names]
        if empty:
            raise ValueError(f"{len(empty)} Tiny ImageNet class folders without images, e.g. {empty[0]} "
                             "(expected train/<wnid>/images/<wnid>_<i>.JPEG)")
        return samples

    def _val(self, folder: str, index: Dict[str, int], user_root: str, strict: bool) -> List[Tuple[str, int]]:
        vdir = os.path.join(folder, "val")
        ann_path = os.path.join(vdir, "val_annotations.txt")
        idir = os.path.join(vdir, "images")
        for p in (ann_path, idir):
            if not os.path.exists(p):
                raise _missing("tiny_imagenet", user_root, p)
        labels: Dict[str, int] = {}
        unknown: Dict[str, int] = {}
        for lineno, ln in enumerate(_read_lines(ann_path), 1):
            if not ln.strip():
                continue
            parts = ln.split("\t")
            if len(parts) < 2:
                raise ValueError(f"{ann_path}:{lineno}: expected 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1', got {ln!r}")
            name, wnid = parts[0].strip(), parts[1].strip()
            if wnid not in index:
                unknown[wnid] = unknown.get(wnid, 0) + 1
                continue
            if name in labels and labels[name] != index[wnid]:
                raise ValueError(f"{ann_path}:{lineno}: {name} is annotated twice with different wnids")
            labels[name] = index[wnid]
        if unknown:
            raise ValueError(f"{ann_path}: {sum(unknown.values())} annotations name wnids that are not in "
                             f"{folder}/wnids.txt (label outside the {len(index)} classes): "
                             f"{sorted(unknown)[:5]}; train and val class lists differ")
        files = {e.name for e in os.scandir(idir) if _is_jpeg_like(e.name)}
        self.skipped["val image without annotation"] = _report_skips(
            "val images without a line in val_annotations.txt", sorted(files - set(labels)), idir, strict)
        self.skipped["annotation without image"] = _report_skips(
            "val_annotations.txt lines whose image is missing", sorted(set(labels) - files), ann_path, strict)
        return [(os.path.join(idir, n), labels[n]) for n in sorted(files & set(labels))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        arr = np.asarray(load_rgb(path), dtype=np.uint8)  # (H, W, 3); grayscale/CMYK/... -> RGB
        img = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(label)


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------

def build_small_dataset(fmt: str, root: str, split: str, train: bool, img_size: Optional[int] = None,
                        num_classes: Optional[int] = None, strict: bool = False) -> Dataset:
    """The ``split`` (``"train"`` | ``"val"``) of dataset ``fmt`` under ``root``.

    Args:
        fmt: one of :data:`SMALL_FORMATS`.
        root: folder holding the extracted archive folder (``cifar-10-batches-py``, ``cifar-100-python``,
            ``tiny-imagenet-200``) or that folder itself.
        split: ``"train"`` or ``"val"`` (CIFAR test set, Tiny ImageNet ``val/``).
        train: apply the training augmentation (random crop with padding + horizontal flip).
        img_size: output side (bicubic resize after the augmentation); None keeps the native side.
        num_classes: when given, the class count the files must name (``ValueError`` otherwise).
        strict: Tiny ImageNet: val images without annotation / annotations without image are errors
            instead of counted, logged skips.

    Items are ``(image float (3, S, S) normalised, int label)``; ``.classes`` lists the class names
    (CIFAR) or wnids (Tiny ImageNet)."""
    fmt = check_format(fmt)
    _check_split(split)
    transform = build_small_transform(fmt, bool(train), img_size)
    if fmt == "tiny_imagenet":
        return TinyImageNetDataset(root, split, transform=transform, num_classes=num_classes, strict=strict)
    return CifarDataset(fmt, root, split, transform=transform, num_classes=num_classes)


def check_small_splits(train_set, val_set) -> None:
    """Train and val must have the same classes in the same order and every val label inside them."""
    a, b = list(train_set.classes), list(val_set.classes)
    if a != b:
        raise ValueError(f"train ({train_set.root}) has {len(a)} classes and val ({val_set.root}) {len(b)}, or "
                         f"the lists differ: only in train {sorted(set(a) - set(b))[:5]}, only in val "
                         f"{sorted(set(b) - set(a))[:5]}")
    t = np.asarray(val_set.targets)
    if t.size and (t.min() < 0 or t.max() >= len(a)):
        raise ValueError(f"val ({val_set.root}) has labels outside [0, {len(a)})")
