"""Mask geometry: the boundary polygons and the tight box of a binary ``(H, W)`` mask."""

from __future__ import annotations

import numpy as np

__all__ = ["mask_to_polygons", "tight_box"]


def mask_to_polygons(mask: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Trace the boundaries of a binary ``(H, W)`` mask along pixel edges.

    Returns ``(points, is_hole)`` pairs; ``points`` is an ``(N, 2)`` array of
    ``(x, y)`` pixel-corner coordinates (pixel ``(r, c)`` spans ``[c, c+1] x
    [r, r+1]``) without collinear vertices. Outer boundaries run clockwise on
    screen, holes anticlockwise. Pixels touching only at a corner belong to
    separate boundaries (4-connectivity), so every outer loop is a simple
    polygon and the union of the outer loops minus the holes is exactly the mask.

    The boundary edges are found for the whole mask at once; only the walk that
    links them into loops visits the edges one by one.
    """
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return []
    y0, x0 = int(ys.min()), int(xs.min())
    y1, x1 = int(ys.max()) + 1, int(xs.max()) + 1
    m = np.zeros((y1 - y0 + 2, x1 - x0 + 2), bool)
    m[1:-1, 1:-1] = mask[y0:y1, x0:x1]
    stride = m.shape[1] + 1  # vertices live on a (H+1) x (W+1) lattice

    inner = m[1:-1, 1:-1]
    sx, sy, ex, ey, dd = [], [], [], [], []
    # direction codes clockwise on screen: 0 east, 1 south, 2 west, 3 north
    for d, (nb, ox0, oy0, ox1, oy1) in enumerate((
        (m[:-2, 1:-1], 0, 0, 1, 0),   # top edge, heading east
        (m[1:-1, 2:], 1, 0, 1, 1),    # right edge, heading south
        (m[2:, 1:-1], 1, 1, 0, 1),    # bottom edge, heading west
        (m[1:-1, :-2], 0, 1, 0, 0),   # left edge, heading north
    )):
        r, c = np.nonzero(inner & ~nb)
        r, c = r + 1, c + 1
        sx.append(c + ox0)
        sy.append(r + oy0)
        ex.append(c + ox1)
        ey.append(r + oy1)
        dd.append(np.full(len(r), d))
    sx, sy, ex, ey, dd = (np.concatenate(a) for a in (sx, sy, ex, ey, dd))
    skey = sy * stride + sx
    ekey = ey * stride + ex
    order = np.argsort(skey, kind="stable")
    sorted_keys = skey[order]
    lo = np.searchsorted(sorted_keys, ekey, "left")
    hi = np.searchsorted(sorted_keys, ekey, "right")
    nxt = order[lo]
    pinch = (hi - lo) == 2  # two outgoing edges: take the right turn
    if pinch.any():
        alt = order[np.minimum(lo + 1, len(order) - 1)]
        right = (dd + 1) % 4
        use_alt = pinch & (dd[nxt] != right)
        nxt = np.where(use_alt, alt, nxt)

    nxt_l = nxt.tolist()
    seen = np.zeros(len(nxt_l), bool)
    loops = []
    for start in range(len(nxt_l)):
        if seen[start]:
            continue
        idx = []
        e = start
        while not seen[e]:
            seen[e] = True
            idx.append(e)
            e = nxt_l[e]
        idx = np.asarray(idx)
        din = dd[np.roll(idx, 1)]
        keep = idx[dd[idx] != din]  # vertex = start of an edge that turns
        pts = np.stack([sx[keep] + (x0 - 1), sy[keep] + (y0 - 1)], axis=1).astype(np.float64)
        xx, yy = pts[:, 0], pts[:, 1]
        area2 = float(np.sum(xx * np.roll(yy, -1) - np.roll(xx, -1) * yy))
        loops.append((pts, area2 < 0))
    return loops


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive 0-based ``(x0, y0, x1, y1)`` of the set pixels of an ``(H, W)`` mask (None when empty)."""
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
