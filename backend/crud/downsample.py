"""Deterministic min/max bucket downsampling of aligned series (docs/design.md `?max_points=`).

The interior points are cut into equal buckets by index; from every bucket we keep, for each
series, the index of its minimum, its maximum and its first non-finite value. So a dip to zero
or a divergence is never hidden, the first and last points are always kept, and the same stored
points always give the same answer (no randomness), whether the run is still running or not.
The bucket count is the largest one (found by bisection) whose kept points fit in `max_points`.
"""

from __future__ import annotations

import numpy as np

MIN_POINTS = 32  # below this the per-bucket picks of 8 series alone would not fit


def _picks(values: np.ndarray, buckets: int) -> np.ndarray:
    """Indices (into the interior) kept when the interior is cut into `buckets` buckets."""
    k, n = values.shape
    size = -(-n // buckets)  # ceil: the last bucket may be short, padded below
    padded = np.full((k, buckets * size), np.nan)
    padded[:, :n] = values
    grid = padded.reshape(k, buckets, size)
    finite = np.isfinite(grid)
    base = (np.arange(buckets) * size)[None, :]
    lows = np.where(finite, grid, np.inf).argmin(axis=2) + base
    highs = np.where(finite, grid, -np.inf).argmax(axis=2) + base
    real = (np.arange(buckets * size) < n).reshape(buckets, size)  # False on the padding
    bad = ~finite & real[None]
    has_bad = bad.any(axis=2)
    firsts = (bad.argmax(axis=2) + base)[has_bad]
    keep = np.zeros(buckets * size, dtype=bool)
    keep[lows.ravel()] = keep[highs.ravel()] = True
    keep[firsts] = True
    return np.flatnonzero(keep[:n])


def bucket_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    """Sorted indices of the points to keep from `values` (shape (series, points))."""
    n = values.shape[1]
    if n <= max_points:
        return np.arange(n)
    interior, k = values[:, 1:-1], max(1, values.shape[0])
    budget = max_points - 2
    lo, hi = max(1, budget // (3 * k)), min(budget, n - 2)
    best = _picks(interior, lo)
    while lo < hi:  # largest bucket count whose picks fit the budget
        mid = (lo + hi + 1) // 2
        kept = _picks(interior, mid)
        if len(kept) <= budget:
            lo, best = mid, kept
        else:
            hi = mid - 1
    return np.concatenate([[0], best + 1, [n - 1]])
