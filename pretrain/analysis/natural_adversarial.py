"""Natural adversarial examples (ImageNet-A) and other class-subset test sets (ImageNet-R, ...):
a 1k-class model is scored on a folder holding only a subset of its classes by restricting its
logits to those classes.

ImageNet-A: "Natural Adversarial Examples", Hendrycks et al., CVPR 2021, arXiv:1907.07174 (data and
code: hendrycks/natural-adv-examples), as evaluated in the robustness analysis of "TransMix: Attend
to Mix for Vision Transformers", Chen et al., CVPR 2022, arXiv:2111.09833. ImageNet-R: "The Many
Faces of Robustness: A Critical Analysis of Out-of-Distribution Generalization", Hendrycks et al.,
ICCV 2021, arXiv:2006.16241.

The folder has the ImageNet layout ``root/<wnid>/<image>`` (ImageNet-A: 200 wnid folders).
Folders are taken in sorted order (torchvision ``ImageFolder``), so subset class ``i`` is the
``i``-th folder name. How those map to the model's outputs comes from a file the user points to
(nothing is downloaded):

* a *subset map*: one entry per line, either ``<index>`` (the model output of the ``i``-th sorted
  folder; the published ``indices_in_1k`` lists have this form) or ``<folder> <index>``; a JSON list
  of ints or a JSON object ``{folder: index}`` is read the same way. Lines starting with ``#`` are
  comments;
* or a *class list*: the model's classes in output order (one name per line, or a JSON list such
  as the synthetic set's ``classes.json``; for ImageNet the 1000 wnids in sorted order), from which
  the subset map follows by folder name.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Dict, List, Optional, Sequence

import torch

from ..jobs import split_present
from .common import AnalysisError, LoadedModel, require_head

log = logging.getLogger("analysis")


def read_class_list(path: str) -> List[str]:
    """Class names in model-output order from a text file (one per line) or a JSON list."""
    if not os.path.isfile(path):
        raise AnalysisError(f"class list not found: {path}")
    text = open(path).read()
    if path.endswith(".json") or text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise AnalysisError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise AnalysisError(f"{path}: expected a JSON list of class names")
    else:
        names = [ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(set(names)) != len(names):
        raise AnalysisError(f"{path}: repeated class names")
    return names


def read_subset_map(path: str, folders: Sequence[str]) -> List[int]:
    """Model-output index of every subset class (``folders`` in sorted order).

    Raises:
        AnalysisError: the file is missing or malformed, names folders that do not exist, misses
        some, or its length does not match the number of folders.
    """
    if not os.path.isfile(path):
        raise AnalysisError(f"subset map not found: {path}")
    text = open(path).read()
    entries: List = []
    if path.endswith(".json") or text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise AnalysisError(f"{path}: not valid JSON: {e}") from e
        entries = list(data.items()) if isinstance(data, dict) else list(data)
    else:
        for n, ln in enumerate(text.splitlines(), 1):
            parts = ln.split("#", 1)[0].replace(",", " ").split()
            if not parts:
                continue
            if len(parts) > 2:
                raise AnalysisError(f"{path}:{n}: expected '<index>' or '<folder> <index>', got {ln!r}")
            entries.append(parts[0] if len(parts) == 1 else (parts[0], parts[1]))
    try:
        if all(isinstance(e, (tuple, list)) for e in entries) and entries:
            named = {str(k): int(v) for k, v in entries}
            if len(named) != len(entries):
                raise AnalysisError(f"{path}: a folder is listed twice")
            unknown = sorted(set(named) - set(folders))
            missing = [f for f in folders if f not in named]
            if unknown or missing:
                raise AnalysisError(f"{path} does not match the class folders: unknown {unknown[:10]}, "
                                    f"missing {missing[:10]}")
            indices = [named[f] for f in folders]
        else:
            indices = [int(e) for e in entries]
    except (TypeError, ValueError) as e:
        raise AnalysisError(f"{path}: entries must be integers or '<folder> <index>' pairs ({e})") from e
    if len(indices) != len(folders):
        raise AnalysisError(f"{path} lists {len(indices)} classes but the data has {len(folders)} class folders")
    return indices


def subset_map_from_class_list(folders: Sequence[str], classes: Sequence[str], source: str = "class list") -> List[int]:
    pos = {c: i for i, c in enumerate(classes)}
    missing = [f for f in folders if f not in pos]
    if missing:
        raise AnalysisError(f"class folders not in the {source}: {missing[:10]}")
    return [pos[f] for f in folders]


def check_indices(indices: Sequence[int], num_classes: int, source: str) -> torch.Tensor:
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    if idx.numel() == 0:
        raise AnalysisError(f"{source}: empty class subset")
    if int(idx.min()) < 0 or int(idx.max()) >= num_classes:
        raise AnalysisError(f"{source}: indices must be in [0, {num_classes}), got range "
                            f"[{int(idx.min())}, {int(idx.max())}]")
    if idx.unique().numel() != idx.numel():
        raise AnalysisError(f"{source}: repeated model indices")
    return idx


def subset_logits(logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B, K_model) logits -> (B, K_subset) logits of the subset classes, in subset order."""
    return logits.index_select(1, indices.to(logits.device))


def subset_study(models: Sequence[LoadedModel], loader, indices: Sequence[int], device: torch.device,
                 dataset: str = "imagenet-a", amp_dtype=None, max_batches: Optional[int] = None) -> List[Dict]:
    """Top-1/top-5 of every model on a class-subset test set.

    Args:
        loader: yields (images (B, 3, H, W), targets (B,) subset-class indices).
        indices: model-output index of each subset class.
    Returns:
        rows ``{checkpoint, dataset, subset_classes, top1, top5, images}``.
    """
    t0 = time.perf_counter()
    counts = subset_counts(models, loader, indices, device, amp_dtype, max_batches)
    log.info("%s: %d images, %d models in %.1fs", dataset, counts["seen"], len(models), time.perf_counter() - t0)
    return subset_rows(models, indices, dataset, counts)


@torch.inference_mode()
def subset_counts(models: Sequence[LoadedModel], loader, indices: Sequence[int], device: torch.device,
                  amp_dtype=None, max_batches: Optional[int] = None) -> Dict:
    """``{"top1": {name: int}, "top5": {name: int}, "seen": int}`` behind :func:`subset_study`
    (``loader`` may yield :class:`pretrain.jobs.Present` items)."""
    require_head(models)
    idx = {m.name: check_indices(indices, m.num_classes, f"{m.name} subset map").to(device) for m in models}
    k = len(indices)
    c1 = {m.name: torch.zeros((), dtype=torch.long, device=device) for m in models}
    c5 = {m.name: torch.zeros((), dtype=torch.long, device=device) for m in models}
    seen = 0
    for item in itertools.islice(loader, max_batches):
        batch, _ = split_present(item)
        if batch is None:
            continue
        images, target = batch
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        for m in models:
            sub = subset_logits(m.forward(images, amp_dtype), idx[m.name])
            top = sub.topk(min(5, k), dim=1).indices
            hit = top.eq(target[:, None])
            c1[m.name] += hit[:, 0].sum()
            c5[m.name] += hit.any(dim=1).sum()
        seen += images.shape[0]
    return {"top1": {n: int(v) for n, v in c1.items()}, "top5": {n: int(v) for n, v in c5.items()}, "seen": seen}


def merge_subset_counts(parts: Sequence[Dict]) -> Dict:
    out: Dict = {"top1": {}, "top5": {}, "seen": sum(int(p["seen"]) for p in parts)}
    for p in parts:
        for key in ("top1", "top5"):
            for n, v in p[key].items():
                out[key][n] = out[key].get(n, 0) + int(v)
    return out


def subset_rows(models: Sequence[LoadedModel], indices: Sequence[int], dataset: str, counts: Dict) -> List[Dict]:
    seen = counts["seen"]
    if seen == 0:
        raise AnalysisError(f"the {dataset} study saw no images (empty dataset?)")
    return [{"checkpoint": m.name, "dataset": dataset, "subset_classes": len(indices),
             "top1": 100.0 * counts["top1"][m.name] / seen, "top5": 100.0 * counts["top5"][m.name] / seen,
             "images": seen}
            for m in models]
