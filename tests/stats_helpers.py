"""Small statistics for the distribution tests (no scipy in the base install)."""
import math

import numpy as np


def ks_stat(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))


def ks_limit(n: int, m: int, c: float = 1.95) -> float:
    """Critical value of the two-sample KS statistic (c = 1.95: alpha = 0.001)."""
    return c * math.sqrt((n + m) / (n * m))
