"""Cluttered backgrounds: a colour gradient, low-frequency noise, soft blobs and thin lines/curves.

Nothing in a background resembles a class: it has no class shape and no periodic texture.
Every function works on whole ``(H, W)`` planes at once.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .color import hsv

__all__ = ["smooth_noise", "blend", "background"]


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation from ``n_in`` to ``n_out`` samples (end points kept), ``(n_out, n_in)``."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    f = pos - i0
    a = np.zeros((n_out, n_in))
    a[np.arange(n_out), i0] = 1.0 - f
    a[np.arange(n_out), i0 + 1] = f
    return a


def smooth_noise(rng: np.random.Generator, h: int, w: int, grid: int, channels: int) -> np.ndarray:
    """Low-frequency noise ``(h, w, channels)``: a random ``(grid, grid, channels)`` field bilinearly upsampled."""
    g = rng.normal(0.0, 1.0, size=(grid, grid, channels))
    return np.einsum("hi,ijc,wj->hwc", _interp_matrix(h, grid), g, _interp_matrix(w, grid))


def blend(img: np.ndarray, alpha: np.ndarray, color: Sequence[float]) -> None:
    """In place: ``img (H, W, 3) = (1 - alpha) * img + alpha * color`` with ``alpha (H, W)``."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * np.asarray(color, dtype=np.float64)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float64 ``(h, w, 3)`` background in [0, 255] (before clipping).

    A smooth two-colour gradient, low-frequency colour and brightness noise, then 3-5
    items (2 more on images of 96 px and larger): soft elliptical blobs, thin straight
    lines and thin wavy curves, each of a random colour.
    """
    ys = (np.arange(h) + 0.5)[:, None]
    xs = (np.arange(w) + 0.5)[None, :]
    c1 = np.array(hsv(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.9)))
    c2 = np.array(hsv(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.9)))
    a = rng.uniform(0.0, 2 * math.pi)
    proj = xs * math.cos(a) + ys * math.sin(a)
    t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
    img = c1 * (1.0 - t[..., None]) + c2 * t[..., None]
    img += 14.0 * smooth_noise(rng, h, w, 4, 3)
    img += 6.0 * smooth_noise(rng, h, w, 9, 1)

    s = float(min(h, w))
    n_items = int(rng.integers(3, 6)) + (int(rng.integers(0, 3)) if s >= 96 else 0)
    for _ in range(n_items):
        color = hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
        kind = rng.choice(3, p=[0.4, 0.4, 0.2])
        if kind == 0:  # soft elliptical blob
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sx, sy = rng.uniform(0.04, 0.15, size=2) * s
            al = rng.uniform(0.25, 0.6)
            alpha = al * np.exp(-0.5 * (((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2))
        elif kind == 1:  # thin straight line
            p0 = rng.uniform(-0.1, 1.1, size=2) * (w, h)
            p1 = rng.uniform(-0.1, 1.1, size=2) * (w, h)
            d = p1 - p0
            ll = max(float(d @ d), 1e-6)
            tt = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / ll, 0.0, 1.0)
            dist = np.hypot(xs - (p0[0] + tt * d[0]), ys - (p0[1] + tt * d[1]))
            width = rng.uniform(0.6, 1.6)
            alpha = rng.uniform(0.4, 0.85) * np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)
        else:  # thin wavy curve across the image
            amp = rng.uniform(0.03, 0.12) * s
            lam = rng.uniform(0.3, 0.9) * s
            off = rng.uniform(-0.4, 0.4) * s
            ph = rng.uniform(0, 2 * math.pi)
            rot = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
            ca, sa = math.cos(rot), math.sin(rot)
            xc, yc = xs - 0.5 * w, ys - 0.5 * h  # rotate about the image centre
            u = xc * ca + yc * sa
            vv = -xc * sa + yc * ca
            k = 2 * math.pi / lam
            # vertical distance to the curve, divided by the slope factor ~ true distance
            dist = np.abs(vv - off - amp * np.sin(k * u + ph))
            dist = dist / np.sqrt(1.0 + (amp * k * np.cos(k * u + ph)) ** 2)
            width = rng.uniform(0.6, 1.4)
            alpha = rng.uniform(0.35, 0.75) * np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)
        blend(img, alpha, color)
    return img
