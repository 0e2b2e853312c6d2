"""Colours of the synthetic world: HSV in [0, 1] to RGB in [0, 255]."""

from __future__ import annotations

import colorsys

__all__ = ["hsv"]


def hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    """RGB ``(r, g, b)`` in [0, 255] of hue ``h`` (taken mod 1), saturation and value (clipped to [0, 1])."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (255.0 * r, 255.0 * g, 255.0 * b)
