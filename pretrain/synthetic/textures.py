"""The part textures: which of a part's two colours each pixel takes.

Textures are laid out in image axes around the part centre (they do not turn with
the shape), with a period in pixels and a phase in [0, 1) per axis.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["texture_weight"]


def texture_weight(texture: str, dx: np.ndarray, dy: np.ndarray, period: float,
                   phase: tuple[float, float]) -> np.ndarray:
    """Second-colour weight in {0, 1} (float64) at pixel offsets ``(dx, dy)`` from the centre.

    ``dx`` and ``dy`` broadcast against each other (e.g. ``(1, W)`` and ``(H, 1)``); the
    result has the broadcast shape, e.g. ``(H, W)``.
    """
    p, (p0, p1) = period, phase
    shape = np.broadcast(dx, dy).shape
    if texture == "solid":
        return np.zeros(shape)
    if texture == "hstripes":
        t = np.mod(dy / p + p0, 1.0) < 0.5
    elif texture == "vstripes":
        t = np.mod(dx / p + p0, 1.0) < 0.5
    elif texture == "diagonal":
        t = np.mod((dx + dy) / (p * math.sqrt(2)) + p0, 1.0) < 0.5
    elif texture == "antidiagonal":
        t = np.mod((dx - dy) / (p * math.sqrt(2)) + p0, 1.0) < 0.5
    elif texture == "checker":
        t = (np.floor(dx / p + p0) + np.floor(dy / p + p1)) % 2 == 1
    elif texture == "dots":
        s = 1.5 * p
        fx = np.mod(dx / s + p0, 1.0) - 0.5
        fy = np.mod(dy / s + p1, 1.0) - 0.5
        t = fx * fx + fy * fy < 0.3 ** 2
    elif texture == "rings":
        t = np.mod(np.sqrt(dx * dx + dy * dy) / p + p0, 1.0) < 0.5
    elif texture == "grid":
        t = (np.mod(dx / p + p0, 1.0) < 0.34) | (np.mod(dy / p + p1, 1.0) < 0.34)
    elif texture == "spokes":
        t = np.mod(np.arctan2(dy, dx) * (4.0 / math.pi) + p0, 1.0) < 0.5
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.broadcast_to(t, shape).astype(np.float64)
