"""The part shapes (and a few others) as inside tests in a part's own normalised frame.

A shape of "radius 1" fits the unit disc; :func:`shape_mask` takes the coordinates
``(u, v)`` of pixel centres already rotated and divided by the part's radius.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["shape_mask", "shape_area"]


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether each point ``(u, v)`` lies inside ``shape``.

    ``u`` and ``v`` broadcast against each other (e.g. ``(H, W)`` arrays, or ``(1, W)``
    and ``(H, 1)``); the result is a bool array of the broadcast shape.
    """
    r2 = u * u + v * v
    if shape == "disc":
        return r2 <= 0.96
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.68
    if shape == "triangle":  # equilateral, circumradius 1, inradius 0.5
        inside = np.ones(np.broadcast(u, v).shape, bool)
        for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
            inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
        return inside
    if shape == "ring":
        return (r2 <= 0.96) & (r2 >= 0.52 ** 2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.92)) | ((av <= 0.3) & (au <= 0.92))
    if shape == "star":  # five points, outer radius 1, inner radius 0.45
        theta = np.arctan2(v, u) + math.pi / 2
        sector = 2 * math.pi / 5
        phi = np.mod(theta, sector)
        phi = np.minimum(phi, sector - phi)
        rho = np.sqrt(r2)
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        ix, iy = 0.45 * math.cos(sector / 2), 0.45 * math.sin(sector / 2)
        return (ix - 1.0) * py - iy * (px - 1.0) >= 0.0
    if shape == "diamond":
        return np.abs(u) / 0.6 + np.abs(v) <= 0.98
    if shape == "hexagon":
        d = np.abs(u)
        for a in (math.pi / 3, 2 * math.pi / 3):
            d = np.maximum(d, np.abs(u * math.cos(a) + v * math.sin(a)))
        return d <= 0.84
    if shape == "crescent":
        return (r2 <= 0.96) & ((u - 0.42) ** 2 + v * v > 0.78 ** 2)
    if shape == "ellipse":
        return u * u + (v / 0.4) ** 2 <= 0.96
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=None)
def shape_area(shape: str) -> float:
    """Area of ``shape`` at radius 1, measured on a 400 x 400 grid over ``[-1, 1]^2``."""
    g = (np.arange(400) + 0.5) / 200.0 - 1.0
    return float(shape_mask(shape, g[None, :], g[:, None]).mean() * 4.0)
