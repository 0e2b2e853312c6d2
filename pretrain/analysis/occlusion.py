"""Occlusion robustness by patch dropping.

Protocol of "Intriguing Properties of Vision Transformers", Naseer et al., NeurIPS 2021,
arXiv:2105.10497, as applied in the occlusion experiment of the robustness analysis of
"TransMix: Attend to Mix for Vision Transformers", Chen et al., CVPR 2022, arXiv:2111.09833.

The image is cut into the model's ``h x w`` patch grid and a fraction ``ratio`` of the ``P = h*w``
patches is *dropped*: set to zero after normalisation (the dataset mean colour), then the
model classifies what is left. Three ways to choose the dropped patches:

* ``random``: a uniformly random subset (one draw per image, shared by all compared models);
* ``salient``: the ``round(ratio * P)`` patches with the *highest* saliency (foreground);
* ``nonsalient``: the ``round(ratio * P)`` patches with the *lowest* saliency (background).

Saliency is the head-averaged CLS attention of the last block, either of the evaluated model
itself on the clean image (one extra clean forward, which also gives the ratio-0 accuracy) or of
an external frozen model (e.g. a DINO ViT-S/16), resampled to the evaluated model's patch grid.

Every mask is built with tensor ops for the whole batch; each batch is read once and evaluated
for all models, modes and ratios.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..jobs import split_present
from .common import AnalysisError, LoadedModel, check_same_input, require_head, top1_correct

log = logging.getLogger("analysis")

MODES = ("random", "salient", "nonsalient")
DEFAULT_RATIOS = tuple(round(0.1 * i, 1) for i in range(10))  # 0.0 ... 0.9


def num_dropped(ratio: float, num_patches: int) -> int:
    """Patches dropped at ``ratio`` (rounded to the nearest integer, half up)."""
    if not 0.0 <= float(ratio) <= 1.0:
        raise AnalysisError(f"drop ratio must be in [0, 1], got {ratio}")
    return int(float(ratio) * num_patches + 0.5)


def drop_mask_from_scores(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mark the ``k`` highest-scoring patches of every row.

    Args:
        scores: (B, P) float scores (saliency, or random numbers for random dropping).
        k: patches to drop per row, ``0 <= k <= P``.
    Returns:
        (B, P) bool, True = dropped; exactly ``k`` True per row (ties broken by ``topk``).
    """
    if scores.dim() != 2:
        raise AnalysisError(f"scores must be (B, P), got {tuple(scores.shape)}")
    b, p = scores.shape
    if not 0 <= k <= p:
        raise AnalysisError(f"cannot drop {k} of {p} patches")
    mask = torch.zeros(b, p, dtype=torch.bool, device=scores.device)
    if k:
        mask.scatter_(1, scores.topk(k, dim=1).indices, True)
    return mask


def patch_drop_mask(mode: str, ratio: float, saliency: Optional[torch.Tensor] = None,
                    noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, P) bool mask of dropped patches for one mode and ratio.

    Args:
        mode: ``random``, ``salient`` or ``nonsalient``.
        ratio: fraction of the P patches to drop.
        saliency: (B, P) saliency scores (needed for salient/nonsalient).
        noise: (B, P) random scores (needed for random); the highest ``k`` are dropped, so a fixed
            noise tensor gives nested masks across ratios.
    """
    if mode not in MODES:
        raise AnalysisError(f"unknown occlusion mode {mode!r}; choose from {', '.join(MODES)}")
    scores = noise if mode == "random" else saliency
    if scores is None:
        raise AnalysisError(f"mode {mode!r} needs {'noise' if mode == 'random' else 'saliency'} scores")
    k = num_dropped(ratio, scores.shape[1])
    return drop_mask_from_scores(-scores if mode == "nonsalient" else scores, k)


def apply_patch_drop(images: torch.Tensor, dropped: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Zero the dropped patches of normalised images.

    Args:
        images: (B, C, H, W) normalised images, H and W multiples of ``patch_size``.
        dropped: (B, P) bool with P = (H / patch_size) * (W / patch_size), row-major grid order
            (the order of the ViT's patch tokens).
    Returns:
        (B, C, H, W) images with the dropped patches set to 0.
    """
    b, _, h, w = images.shape
    gh, gw = h // patch_size, w // patch_size
    if gh * patch_size != h or gw * patch_size != w:
        raise AnalysisError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}")
    if tuple(dropped.shape) != (b, gh * gw):
        raise AnalysisError(f"drop mask is {tuple(dropped.shape)}, expected {(b, gh * gw)}")
    keep = (~dropped).to(images.dtype).view(b, 1, gh, 1, gw, 1)
    return (images.view(b, -1, gh, patch_size, gw, patch_size) * keep).view_as(images)


def resample_saliency(att: torch.Tensor, grid) -> torch.Tensor:
    """(B, h', w') saliency map -> (B, h*w) on another patch grid (area/bilinear resampling)."""
    if tuple(att.shape[-2:]) != tuple(grid):
        mode = "area" if att.shape[-2] >= grid[0] and att.shape[-1] >= grid[1] else "bilinear"
        kw = {} if mode == "area" else {"align_corners": False}
        att = F.interpolate(att[:, None].float(), size=tuple(grid), mode=mode, **kw)[:, 0]
    return att.flatten(1)


def occlusion_study(models: Sequence[LoadedModel], loader, device: torch.device,
                    ratios: Sequence[float] = DEFAULT_RATIOS, modes: Sequence[str] = MODES,
                    saliency_model: Optional[LoadedModel] = None, amp_dtype=None, seed: int = 0,
                    max_batches: Optional[int] = None) -> List[Dict]:
    """Top-1 accuracy of every model under every (mode, ratio) of patch dropping.

    Args:
        models: evaluated classifiers sharing input and patch size.
        loader: yields ``(images (B, 3, H, W) normalised, targets (B,))``.
        saliency_model: external frozen model for the salient/nonsalient modes; ``None`` uses
            each evaluated model's own clean CLS attention.
        seed: seed of the random-mode draws (identical for all models).
    Returns:
        rows ``{checkpoint, mode, ratio, dropped_patches, num_patches, top1, correct, images,
        saliency}``; ratio 0 is the clean accuracy (one row per mode, same value).
    """
    t0 = time.perf_counter()
    counts = occlusion_counts(models, loader, device, ratios, modes, saliency_model, amp_dtype, seed, max_batches)
    log.info("occlusion: %d images, %d models x %d modes x %d ratios in %.1fs", counts["seen"], len(models),
             len(modes), len(ratios), time.perf_counter() - t0)
    return occlusion_rows(models, ratios, modes, saliency_model, counts)


@torch.inference_mode()
def occlusion_counts(models: Sequence[LoadedModel], loader, device: torch.device,
                     ratios: Sequence[float] = DEFAULT_RATIOS, modes: Sequence[str] = MODES,
                     saliency_model: Optional[LoadedModel] = None, amp_dtype=None, seed: int = 0,
                     max_batches: Optional[int] = None, skip_batches: int = 0, batch_size: int = 0) -> Dict:
    """The counts behind :func:`occlusion_study`: ``{"correct": {(name, mode, ratio): int}, "seen": int}``.

    ``loader`` may also yield :class:`pretrain.jobs.Present` items (a shard of the data, unreadable
    images left out). ``skip_batches`` batches of ``batch_size`` images came before it: their random
    draws are replayed first, so that a shard gets the draws one pass over the whole data gives it.
    """
    modes = list(modes)
    for m in modes:
        if m not in MODES:
            raise AnalysisError(f"unknown occlusion mode {m!r}; choose from {', '.join(MODES)}")
    ratios = [float(r) for r in ratios]
    for r in ratios:
        num_dropped(r, 1)
    (img_size, patch) = check_same_input(models)
    require_head(models)
    num_patches = models[0].num_patches
    # drawn on the device (a host-to-device copy from pageable memory would stall the loop)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    for _ in range(int(skip_batches)):
        torch.rand(int(batch_size), num_patches, generator=gen, device=device)
    # counts stay on the device: no host sync inside the loop
    correct = {(m.name, mode, r): torch.zeros((), dtype=torch.long, device=device)
               for m in models for mode in modes for r in ratios}
    seen = 0
    for item in itertools.islice(loader, max_batches):
        batch, present = split_present(item)
        if batch is None:  # no readable image in this batch: its draws still happen
            torch.rand(int(present.numel()), num_patches, generator=gen, device=device)
            continue
        images, target = batch
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if tuple(images.shape[-2:]) != tuple(img_size):
            raise AnalysisError(f"loader gives {tuple(images.shape[-2:])} images, models run at {img_size}")
        b = images.shape[0]
        noise = torch.rand(b if present is None else int(present.numel()), num_patches, generator=gen, device=device)
        if present is not None and not bool(present.all()):
            noise = noise[present.to(device)]
        ext = None
        if saliency_model is not None and any(m != "random" for m in modes):
            ext = resample_saliency(saliency_model.attention(images, amp_dtype), models[0].grid)
        for m in models:
            clean_logits, att = m.forward(images, amp_dtype, attention=True)
            clean = top1_correct(clean_logits, target).sum()
            sal = ext if ext is not None else att.flatten(1)
            for mode in modes:
                for r in ratios:
                    k = num_dropped(r, num_patches)
                    if k == 0:
                        correct[(m.name, mode, r)] += clean
                        continue
                    dropped = patch_drop_mask(mode, r, saliency=sal, noise=noise)
                    logits = m.forward(apply_patch_drop(images, dropped, patch), amp_dtype)
                    correct[(m.name, mode, r)] += top1_correct(logits, target).sum()
        seen += b
    return {"correct": {k: int(v) for k, v in correct.items()}, "seen": seen}


def merge_counts(parts: Sequence[Dict]) -> Dict:
    """Sum of :func:`occlusion_counts` (or :func:`pretrain.analysis.shuffle.shuffle_counts`) results."""
    correct: Dict = {}
    for p in parts:
        for k, v in p["correct"].items():
            correct[k] = correct.get(k, 0) + int(v)
    return {"correct": correct, "seen": sum(int(p["seen"]) for p in parts)}


def occlusion_rows(models: Sequence[LoadedModel], ratios: Sequence[float], modes: Sequence[str],
                   saliency_model: Optional[LoadedModel], counts: Dict) -> List[Dict]:
    """The result rows of :func:`occlusion_study` from its counts."""
    seen, correct = counts["seen"], counts["correct"]
    if seen == 0:
        raise AnalysisError("the occlusion study saw no images (empty dataset?)")
    num_patches = models[0].num_patches
    ratios = [float(r) for r in ratios]
    src = saliency_model.name if saliency_model is not None else "self"
    return [{"checkpoint": m.name, "mode": mode, "ratio": r, "dropped_patches": num_dropped(r, num_patches),
             "num_patches": num_patches, "top1": 100.0 * correct[(m.name, mode, r)] / seen,
             "correct": correct[(m.name, mode, r)], "images": seen,
             "saliency": "random" if mode == "random" else src}
            for m in models for mode in modes for r in ratios]
