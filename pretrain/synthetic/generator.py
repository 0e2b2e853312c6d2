"""``generate()``: the synthetic world written in the ImageNet / ADE20K / COCO / VOC layouts.

The output directory holds one folder per subset, ``classes.json`` (class names in index
order) and ``synthetic.json`` (the manifest, written last). A subset is reused when the
manifest records it with the same parameters; an advisory lock keeps two concurrent
calls on one directory from interleaving.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable

from .formats.ade import write_ade
from .formats.coco import write_coco
from .formats.imagenet import write_imagenet
from .formats.io import write_json
from .formats.voc import write_voc
from .scenes import parse_size
from .world import GENERATOR_VERSION, class_specs

__all__ = ["SUBSETS", "WRITERS", "default_params", "generate"]

SUBSETS = ("imagenet", "ade", "coco", "voc")

#: The writer of each subset: ``writer(folder, params, specs) -> {"images": counts}``.
WRITERS = {"imagenet": write_imagenet, "ade": write_ade, "coco": write_coco, "voc": write_voc}

# parameters that each subset's content depends on
_SUBSET_KEYS = {
    "imagenet": ("cls_size", "train_per_class", "val_per_class", "jpeg_quality"),
    "ade": ("seg_size", "seg_train", "seg_val", "jpeg_quality"),
    "coco": ("seg_size", "coco_train", "coco_val", "jpeg_quality", "min_area"),
    "voc": ("cls_size", "voc_val", "jpeg_quality", "min_area"),
}
_COMMON_KEYS = ("generator_version", "seed", "num_classes")

_LAYOUT = {
    "imagenet": "imagenet/{train,val}/<class>/<class>_<idx>.JPEG",
    "ade": "ade/{images,annotations}/{training,validation}/synth_{train,val}_<idx>.{jpg,png}",
    "coco": "coco/{train,val}/*.jpg, coco/annotations/instances_{train,val}.json",
    "voc": "voc/{JPEGImages,SegmentationClass,Annotations,ImageSets/{Main,Segmentation}}",
}


def default_params() -> dict:
    """The default generation parameters (the keyword arguments of :func:`generate`)."""
    return {
        "seed": 0, "num_classes": 10, "cls_size": 64, "seg_size": 128,
        "train_per_class": 200, "val_per_class": 40, "seg_train": 300, "seg_val": 60,
        "coco_train": 200, "coco_val": 50, "voc_val": 100,
        "jpeg_quality": 90, "min_area": 16,
    }


def normalise_only(only) -> list[str]:
    """The subsets named by ``only`` (None: all; a comma-separated string or names) in :data:`SUBSETS` order."""
    if only is None:
        return list(SUBSETS)
    if isinstance(only, str):
        only = [s for s in only.split(",")]
    names = [s.strip().lower() for s in only if s and s.strip()]
    bad = sorted(set(names) - set(SUBSETS))
    if bad or not names:
        raise ValueError(f"'only' must name some of {', '.join(SUBSETS)}; got {only!r}")
    return [s for s in SUBSETS if s in names]


def _read_manifest(path: Path) -> dict | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != "vitmix-synthetic":
        return None
    return data


class _DirLock:
    """Advisory lock on the output directory (a no-op where fcntl is missing)."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return self
        self.f = open(self.path, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            import fcntl
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()


def generate(out_dir: str | os.PathLike, *, seed: int = 0, num_classes: int = 10,
             cls_size: int = 64, seg_size: int | str | tuple[int, int] = 128,
             train_per_class: int = 200, val_per_class: int = 40,
             seg_train: int = 300, seg_val: int = 60, coco_train: int = 200,
             coco_val: int = 50, voc_val: int = 100, only: str | Iterable[str] | None = None,
             jpeg_quality: int = 90, min_area: int = 16, force: bool = False,
             verbose: bool = False) -> dict:
    """Write the synthetic sets under ``out_dir`` and return the manifest.

    A subset is reused, not rewritten, when ``out_dir/synthetic.json`` records it
    with the same parameters (unless ``force``). Subsets to (re)build are written
    to temporary directories and renamed into place; the manifest is removed
    first and written last, so an interrupted run never looks complete.
    Subsets from an earlier run with another seed, class count or generator
    version are deleted, since ``classes.json`` no longer describes them.

    The returned dict is the manifest plus two entries not stored in the file:
    ``generated`` (subsets written by this call; empty when all were reused)
    and ``elapsed_s``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    subsets = normalise_only(only)
    if int(seed) < 0:
        raise ValueError("seed must be non-negative")
    specs = class_specs(num_classes)
    params = {
        "generator_version": GENERATOR_VERSION, "seed": int(seed), "num_classes": len(specs),
        "cls_size": int(cls_size), "seg_size": list(parse_size(seg_size)),
        "train_per_class": int(train_per_class), "val_per_class": int(val_per_class),
        "seg_train": int(seg_train), "seg_val": int(seg_val),
        "coco_train": int(coco_train), "coco_val": int(coco_val), "voc_val": int(voc_val),
        "jpeg_quality": int(jpeg_quality), "min_area": int(min_area),
    }
    if params["cls_size"] < 8:
        raise ValueError("cls_size must be at least 8")
    for k in ("train_per_class", "val_per_class", "seg_train", "seg_val",
              "coco_train", "coco_val", "voc_val"):
        if params[k] < 0:
            raise ValueError(f"{k} must be non-negative")

    def subset_params(name: str) -> dict:
        return {k: params[k] for k in _COMMON_KEYS + _SUBSET_KEYS[name]}

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "synthetic.json"
    log = print if verbose else (lambda *a, **k: None)

    with _DirLock(out / ".synthetic.lock"):
        old = _read_manifest(manifest_path)
        old_sets = dict(old.get("sets", {})) if old else {}
        todo = [s for s in subsets
                if force or not (s in old_sets and old_sets[s].get("params") == subset_params(s)
                                 and (out / s).is_dir())]
        if not todo and (out / "classes.json").is_file():
            result = dict(old)
            result.update(generated=[], elapsed_s=time.perf_counter() - t0)
            return result

        # from here on the directory is not complete until the manifest is rewritten
        manifest_path.unlink(missing_ok=True)
        for p in out.glob(".tmp-*"):  # leftovers of an interrupted run
            shutil.rmtree(p, ignore_errors=True)
        keep = {}
        for name, entry in old_sets.items():
            if name in todo or name not in SUBSETS:
                continue
            ep = entry.get("params", {})
            if all(ep.get(k) == params[k] for k in _COMMON_KEYS) and (out / name).is_dir():
                keep[name] = entry
            else:
                log(f"removing stale subset {name} (other seed/classes/generator version)")
                shutil.rmtree(out / name, ignore_errors=True)

        for name in todo:
            ts = time.perf_counter()
            tmp = out / f".tmp-{name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            info = WRITERS[name](tmp, {**params, "seg_size": tuple(params["seg_size"])}, specs)
            dest = out / name
            if dest.exists():
                trash = out / f".tmp-old-{name}-{os.getpid()}"
                os.replace(dest, trash)
                os.replace(tmp, dest)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, dest)
            keep[name] = {"params": subset_params(name), **info}
            log(f"  {name:9s} {json.dumps(info['images'])}  ({time.perf_counter() - ts:.1f}s)")

        write_json(out / "classes.json", [s.name for s in specs])
        manifest = {
            "format": "vitmix-synthetic",
            "params": {**params, "only": subsets},
            "classes": [s.name for s in specs],
            "class_specs": [{"index": s.index, "name": s.name, "cells": [list(c) for c in s.cells],
                             "hues": list(s.hues)} for s in specs],
            "layout": dict(_LAYOUT),
            "sets": {k: keep[k] for k in SUBSETS if k in keep},
        }
        write_json(manifest_path, manifest)  # last: marks the directory complete
    result = dict(manifest)
    result.update(generated=list(todo), elapsed_s=time.perf_counter() - t0)
    return result
