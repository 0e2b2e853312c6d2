"""Matplotlib figures of the studies: several checkpoints per plot, written as PNG.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch), so they render on headless machines and never open windows.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .common import IMAGENET_MEAN, IMAGENET_STD

MODE_TITLES = {"random": "Random patch drop", "salient": "Salient (foreground) patch drop",
               "nonsalient": "Non-salient (background) patch drop"}


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _names(rows: Sequence[Dict]) -> List[str]:
    out: List[str] = []
    for r in rows:
        if r["checkpoint"] not in out:
            out.append(r["checkpoint"])
    return out


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_occlusion(rows: Sequence[Dict], path: str) -> str:
    """Top-1 vs drop ratio, one panel per mode, one line per checkpoint.

    The layout of the occlusion figure of the TransMix paper (arXiv:2111.09833).
    """
    modes = [m for m in MODE_TITLES if any(r["mode"] == m for r in rows)]
    names = _names(rows)
    fig = _figure(4.2 * len(modes), 3.6)
    for j, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), j + 1)
        for name, color in zip(names, _colors(len(names))):
            pts = sorted((r["ratio"], r["top1"]) for r in rows if r["checkpoint"] == name and r["mode"] == mode)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=name, ms=4)
        ax.set_title(MODE_TITLES[mode], fontsize=10)
        ax.set_xlabel("information loss (drop ratio)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_shuffle(rows: Sequence[Dict], path: str) -> str:
    """Top-1 vs shuffle grid size, one line per checkpoint, the mean in the legend.

    The layout of the patch-shuffling figure of the TransMix paper (arXiv:2111.09833).
    """
    names = _names(rows)
    sizes = sorted({r["grid_size"] for r in rows if r["grid_size"] != "mean"})
    fig = _figure(5.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(sizes))
    for name, color in zip(names, _colors(len(names))):
        acc = {r["grid_size"]: r["top1"] for r in rows if r["checkpoint"] == name}
        ax.plot(x, [acc[s] for s in sizes], "o-", color=color, ms=4,
                label=f"{name} (mean {acc['mean']:.1f})" if "mean" in acc else name)
    ax.set_xticks(x, [str(s) for s in sizes])
    ax.set_xlabel("shuffle grid size")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _bars(ax, names: Sequence[str], groups: Dict[str, Sequence[Optional[float]]], ylabel: str) -> None:
    width = 0.8 / max(1, len(names))
    x = np.arange(len(groups))
    for i, (name, color) in enumerate(zip(names, _colors(len(names)))):
        vals = [g[i] for g in groups.values()]
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(pos, [v if v is not None else 0.0 for v in vals], width, color=color, label=name)
        for b, v in zip(bars, vals):
            if v is not None:
                ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks(x, list(groups))
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 118)
    ax.legend(fontsize=8, loc="upper left", ncol=min(4, len(names)))
    ax.grid(axis="y", alpha=0.3)


def plot_subset(rows: Sequence[Dict], path: str) -> str:
    """Top-1/top-5 bars per checkpoint on a class-subset test set (ImageNet-A, -R, ...)."""
    names = _names(rows)
    dataset = rows[0]["dataset"] if rows else ""
    groups = {"top-1": [next(r["top1"] for r in rows if r["checkpoint"] == n) for n in names],
              "top-5": [next(r["top5"] for r in rows if r["checkpoint"] == n) for n in names]}
    fig = _figure(max(4.5, 1.5 + 1.0 * len(names)), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    _bars(ax, names, groups, "accuracy (%)")
    ax.set_title(f"{dataset} ({rows[0]['subset_classes']} classes)" if rows else "", fontsize=10)
    return _save(fig, path)


def plot_attention_quality(rows: Sequence[Dict], path: str) -> str:
    """Jaccard and localisation accuracy per checkpoint; lines over keep_mass when several."""
    names = _names(rows)
    masses = sorted({r["keep_mass"] for r in rows})
    metrics = [(k, t) for k, t in (("jaccard", "Jaccard, VOC foreground (%)"), ("gt_known_loc", "WSOL GT-known loc. (%)"),
                                   ("top1_loc", "WSOL top-1 loc. (%)"))
               if any(r.get(k) is not None for r in rows)]
    if len(masses) == 1:
        fig = _figure(max(4.5, 1.5 + 1.2 * len(metrics) * max(1, len(names)) / 2), 3.6)
        short = {"jaccard": "Jaccard (VOC fg)", "gt_known_loc": "GT-known loc.", "top1_loc": "top-1 loc."}
        groups = {short[k]: [next((r.get(k) for r in rows if r["checkpoint"] == n), None) for n in names]
                  for k, _ in metrics}
        _bars(fig.add_subplot(1, 1, 1), names, groups, f"% (keep mass {masses[0]:g})")
        return _save(fig, path)
    fig = _figure(4.2 * len(metrics), 3.6)
    for j, (k, title) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), j + 1)
        for name, color in zip(names, _colors(len(names))):
            pts = sorted((r["keep_mass"], r.get(k)) for r in rows if r["checkpoint"] == name and r.get(k) is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=name, ms=4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("kept attention mass")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def denormalise(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """(N, 3, H, W) normalised -> (N, H, W, 3) float in [0, 1]."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (images.float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def plot_attention_overlays(examples: Dict, path: str, keep_mass: float = 0.6, mean=IMAGENET_MEAN,
                            std=IMAGENET_STD) -> Optional[str]:
    """A grid: one row per image; the image (with ground truth), then per checkpoint its CLS
    attention as a heat map with the thresholded mask's outline (and its WSOL box when known)."""
    from matplotlib.patches import Rectangle

    from .attention_quality import threshold_attention, upsample_mask

    if "images" not in examples:
        return None
    imgs = denormalise(examples["images"], mean, std)
    n, hh, ww = imgs.shape[:3]
    names = list(examples["attention"])
    fig = _figure(2.2 * (1 + len(names)), 2.2 * n)
    labels = examples.get("labels")
    gt_boxes = examples.get("boxes")
    for i in range(n):
        ax = fig.add_subplot(n, 1 + len(names), i * (1 + len(names)) + 1)
        ax.imshow(imgs[i])
        if labels is not None:
            fg = ((labels[i] != 0) & (labels[i] != 255)).numpy()
            ax.contour(fg, levels=[0.5], colors="lime", linewidths=1)
        if gt_boxes is not None:
            for b, v in zip(*[t[i] for t in gt_boxes]):
                if v:
                    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1))
        if i == 0:
            ax.set_title("image / ground truth", fontsize=8)
        ax.axis("off")
        for j, name in enumerate(names):
            att = examples["attention"][name][i : i + 1].float()
            ax = fig.add_subplot(n, 1 + len(names), i * (1 + len(names)) + 2 + j)
            ax.imshow(imgs[i])
            heat = torch.nn.functional.interpolate(att[:, None], size=(hh, ww), mode="bilinear", align_corners=False)
            ax.imshow(heat[0, 0].numpy(), cmap="inferno", alpha=0.55)
            mask = upsample_mask(threshold_attention(att, keep_mass), (hh, ww))[0].numpy()
            if mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=1)
            pb = examples.get("pred_boxes", {}).get(name, {}).get(keep_mass)
            if pb is not None:
                b = pb[i]
                ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="cyan", lw=1, ls="--"))
            if i == 0:
                ax.set_title(f"{name}\nmask: top {keep_mass:g} of attention", fontsize=8)
            ax.axis("off")
    return _save(fig, path)
