"""Sensitivity to spatial structure: patch shuffling.

Protocol of "Intriguing Properties of Vision Transformers", Naseer et al., NeurIPS 2021,
arXiv:2105.10497, as applied in the patch-shuffling experiment of the robustness analysis of
"TransMix: Attend to Mix for Vision Transformers", Chen et al., CVPR 2022, arXiv:2111.09833
("the paper" below).

The image is cut into a ``g x g`` grid of equal pieces (``G = g*g`` is the "shuffle grid size")
and the pieces are put back in a random order: ``G = 1`` is the unchanged image, ``G = 196`` on
a 224-pixel DeiT input shuffles all 16-pixel patches. ``g`` must divide the image height and
width; for a 224/16 model the valid sizes are 1, 4, 16, 49, 64, 196, ... (pieces of 224, 112, 56,
32, 28, 16 pixels), so 16 and 64 shuffle pieces that are not aligned with the patch grid, as in
the paper's figure. Shuffling is done in pixel space, after normalisation, by one batched
``gather`` with a different permutation per image (shared by all compared models).
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from typing import Dict, List, Optional, Sequence

import torch

from ..jobs import split_present
from .common import AnalysisError, LoadedModel, check_same_input, require_head, top1_correct

log = logging.getLogger("analysis")

DEFAULT_GRIDS = (1, 4, 16, 64, 196)


def grid_side(grid_size: int, img_size) -> int:
    """``g`` with ``g * g == grid_size``, checked to divide the image height and width."""
    g = int(round(math.sqrt(int(grid_size))))
    h, w = int(img_size[0]), int(img_size[1])
    if g < 1 or g * g != int(grid_size) or h % g or w % g:
        valid = [k * k for k in range(1, min(h, w) + 1) if h % k == 0 and w % k == 0]
        raise AnalysisError(f"shuffle grid size {grid_size} is not a square number whose side divides the "
                            f"{h}x{w} image; valid sizes: {valid}")
    return g


def valid_grid_sizes(img_size, patch_size: Optional[int] = None) -> List[int]:
    """All shuffle grid sizes for an image (pieces at least ``patch_size`` pixels when given)."""
    h, w = int(img_size[0]), int(img_size[1])
    lim = min(h, w) if patch_size is None else min(h, w) // int(patch_size)
    return [k * k for k in range(1, lim + 1) if h % k == 0 and w % k == 0]


def shuffle_pieces(images: torch.Tensor, grid_size: int, perm: Optional[torch.Tensor] = None,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Shuffle the ``g x g`` pieces of every image with its own permutation.

    Args:
        images: (B, C, H, W).
        grid_size: G = g*g pieces; g must divide H and W.
        perm: (B, G) long, output piece ``j`` (row-major) is input piece ``perm[b, j]``;
            drawn uniformly (``argsort`` of uniforms from ``generator``) when None.
    Returns:
        (B, C, H, W) shuffled images.
    """
    b, c, h, w = images.shape
    g = grid_side(grid_size, (h, w))
    if g == 1:
        return images
    if perm is None:
        dev = generator.device if generator is not None else images.device
        perm = torch.rand(b, g * g, generator=generator, device=dev).argsort(dim=1).to(images.device)
    if tuple(perm.shape) != (b, g * g):
        raise AnalysisError(f"permutation is {tuple(perm.shape)}, expected {(b, g * g)}")
    ph, pw = h // g, w // g
    pieces = images.reshape(b, c, g, ph, g, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, ph, pw)
    idx = perm.to(images.device).view(b, g * g, 1, 1, 1).expand(-1, -1, c, ph, pw)
    out = pieces.gather(1, idx)
    return out.view(b, g, g, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def shuffle_study(models: Sequence[LoadedModel], loader, device: torch.device,
                  grid_sizes: Sequence[int] = DEFAULT_GRIDS, amp_dtype=None, seed: int = 0,
                  max_batches: Optional[int] = None) -> List[Dict]:
    """Top-1 accuracy of every model for every shuffle grid size, plus the average over sizes.

    Returns:
        rows ``{checkpoint, grid_size, piece_px, top1, correct, images}`` and, per model, one row
        with ``grid_size = "mean"`` holding the mean top-1 over the sizes (the paper's number).
    """
    t0 = time.perf_counter()
    counts = shuffle_counts(models, loader, device, grid_sizes, amp_dtype, seed, max_batches)
    log.info("shuffle: %d images, %d models x %d grid sizes in %.1fs", counts["seen"], len(models), len(grid_sizes),
             time.perf_counter() - t0)
    return shuffle_rows(models, grid_sizes, counts)


@torch.inference_mode()
def shuffle_counts(models: Sequence[LoadedModel], loader, device: torch.device,
                   grid_sizes: Sequence[int] = DEFAULT_GRIDS, amp_dtype=None, seed: int = 0,
                   max_batches: Optional[int] = None, skip_batches: int = 0, batch_size: int = 0) -> Dict:
    """The counts behind :func:`shuffle_study`: ``{"correct": {(name, grid_size): int}, "seen": int}``;
    ``loader``, ``skip_batches`` and ``batch_size`` as for
    :func:`pretrain.analysis.occlusion.occlusion_counts` (the permutations of earlier batches are replayed)."""
    img_size, _ = check_same_input(models)
    require_head(models)
    grid_sizes = [int(gs) for gs in grid_sizes]
    sides = {gs: grid_side(gs, img_size) for gs in grid_sizes}
    gen = torch.Generator(device=device).manual_seed(int(seed))  # draws stay on the device

    def draw(b: int):
        return {gs: torch.rand(b, sides[gs] ** 2, generator=gen, device=device) for gs in grid_sizes if sides[gs] > 1}

    for _ in range(int(skip_batches)):
        draw(int(batch_size))
    correct = {(m.name, gs): torch.zeros((), dtype=torch.long, device=device) for m in models for gs in grid_sizes}
    seen = 0
    for item in itertools.islice(loader, max_batches):
        batch, present = split_present(item)
        if batch is None:  # no readable image in this batch: its draws still happen
            draw(int(present.numel()))
            continue
        images, target = batch
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        b = images.shape[0]
        keep = present.to(device) if present is not None and not bool(present.all()) else None
        for gs in grid_sizes:
            g = sides[gs]
            perm = None
            if g > 1:
                u = torch.rand(b if present is None else int(present.numel()), g * g, generator=gen, device=device)
                perm = (u if keep is None else u[keep]).argsort(dim=1)
            shuffled = shuffle_pieces(images, gs, perm=perm)
            for m in models:
                correct[(m.name, gs)] += top1_correct(m.forward(shuffled, amp_dtype), target).sum()
        seen += b
    return {"correct": {k: int(v) for k, v in correct.items()}, "seen": seen}


def shuffle_rows(models: Sequence[LoadedModel], grid_sizes: Sequence[int], counts: Dict) -> List[Dict]:
    """The result rows of :func:`shuffle_study` from its (merged) counts."""
    seen = counts["seen"]
    if seen == 0:
        raise AnalysisError("the shuffle study saw no images (empty dataset?)")
    img_size = models[0].img_size
    grid_sizes = [int(gs) for gs in grid_sizes]
    rows: List[Dict] = []
    for m in models:
        accs = []
        for gs in grid_sizes:
            c = int(counts["correct"][(m.name, gs)])
            accs.append(100.0 * c / seen)
            rows.append({"checkpoint": m.name, "grid_size": gs, "piece_px": img_size[0] // grid_side(gs, img_size),
                         "top1": accs[-1], "correct": c, "images": seen})
        rows.append({"checkpoint": m.name, "grid_size": "mean", "piece_px": "", "top1": sum(accs) / len(accs),
                     "correct": "", "images": seen})
    return rows
