"""Min/max bucket downsampling: deterministic, bounded, never hides a dip or a divergence."""

from __future__ import annotations

import numpy as np
import pytest

from backend.crud.downsample import bucket_indices


def _series(n: int, k: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(k, n)), axis=1)


def test_bucket_indices_keeps_all_when_short():
    """At or under max_points every point is kept."""
    assert bucket_indices(_series(50), 50).tolist() == list(range(50))


@pytest.mark.parametrize("n,max_points", [(1000, 100), (10_000, 500), (333, 40)])
def test_bucket_indices_respects_max_points(n, max_points):
    """Never more than max_points, sorted, unique, within range."""
    idx = bucket_indices(_series(n), max_points)
    assert len(idx) <= max_points
    assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < n


def test_bucket_indices_keeps_first_and_last():
    """The first and the last stored point are always in the answer."""
    idx = bucket_indices(_series(5000), 64)
    assert idx[0] == 0 and idx[-1] == 4999


def test_bucket_indices_keeps_single_dip():
    """A one-point dip to zero in one series survives heavy downsampling."""
    values = np.ones((4, 10_000))
    values[2, 6789] = 0.0
    assert 6789 in bucket_indices(values, 40)


def test_bucket_indices_keeps_spike_and_non_finite():
    """A one-point spike and the first NaN (divergence) of a bucket are kept."""
    values = _series(5000, k=2)
    values[0, 1234] = 1e9
    values[1, 4321] = np.nan
    idx = bucket_indices(values, 60)
    assert 1234 in idx and 4321 in idx


def test_bucket_indices_is_deterministic():
    """The same input always gives the same indices."""
    values = _series(3000)
    assert bucket_indices(values, 100).tolist() == bucket_indices(values.copy(), 100).tolist()


def test_bucket_indices_uses_most_of_budget():
    """The bisection fills the budget well (at least half of max_points on noisy data)."""
    assert len(bucket_indices(_series(20_000, k=8), 400)) >= 200
