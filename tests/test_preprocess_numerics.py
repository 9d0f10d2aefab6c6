"""Tests of `astro_spt.preprocess._numerics`: each fast helper against a plain reference."""

import itertools

import numpy as np
import pytest
from scipy.ndimage import median_filter

from astro_spt.preprocess._numerics import (
    _block_means,
    _median_network,
    fill_gaps,
    long_runs,
    median_rows,
    running_median,
    runs,
)
from astro_spt.preprocess.anomalies import _rows_with_long_gap


def random_rows(seed, dtype=np.float32):
    """Values and a good-pixel mask of a few short rows, with every kind of gap: none,
    at either end, inside, the whole row."""
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 6)), int(rng.integers(1, 30))
    good = rng.random((n, m)) > rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
    good[0] = seed % 3 != 0  # a row all good or all bad
    values = (rng.normal(0, 10, (n, m)) * 10.0 ** rng.integers(-20, 20)).astype(dtype)
    return values, good


def reference_runs(flagged):
    """(row, start, stop) of each run of True values, row by row."""
    found = []
    for row, values in enumerate(flagged):
        start = None
        for i, value in enumerate([*values, False]):
            if value and start is None:
                start = i
            elif not value and start is not None:
                found.append((row, start, i))
                start = None
    return found


def reference_fill(values, good):
    """fill_gaps one pixel at a time, in the values' precision."""
    filled = np.where(good, values, 0).astype(values.dtype)
    one = values.dtype.type
    for row, start, stop in reference_runs(~good):
        left = filled[row, start - 1] if start > 0 else None
        right = filled[row, stop] if stop < values.shape[1] else None
        for i in range(start, stop):
            if left is None and right is None:
                filled[row, i] = 0
            elif left is None or right is None:
                filled[row, i] = right if left is None else left
            else:
                fraction = one(i - start + 1) / one(stop - start + 1)
                filled[row, i] = left + fraction * (right - left)
    return filled


@pytest.mark.parametrize("seed", range(200))
def test_runs_and_fill_gaps_match_references(seed):
    values, good = random_rows(seed, (np.float32, np.float64)[seed % 2])
    index, first, lengths = runs(~good)
    expected = reference_runs(~good)
    m = good.shape[1]
    assert [(s // m, s % m, s % m + k) for s, k in zip(index[first], lengths, strict=True)] == (
        expected
    )
    np.testing.assert_array_equal(index, np.flatnonzero(~good))
    filled = fill_gaps(values, good)
    assert filled.dtype == values.dtype
    np.testing.assert_array_equal(filled, reference_fill(values, good))
    for k in (1, 2, 5):
        long = np.zeros(good.shape, bool)
        for row, start, stop in expected:
            long[row, start:stop] = stop - start >= k
        np.testing.assert_array_equal(long_runs(~good, k), long)


@pytest.mark.parametrize("seed", range(100))
def test_rows_with_long_gap_count_only_counted_pixels(seed):
    rng = np.random.default_rng(seed)
    missing = rng.random((4, 40)) < rng.choice([0.1, 0.6, 1.0])
    counted = missing & (rng.random(missing.shape) < 0.7)
    for limit in (1, 3, 8):
        expected = np.zeros(4, bool)
        for row, start, stop in reference_runs(missing):
            expected[row] |= counted[row, start:stop].sum() > limit
        np.testing.assert_array_equal(_rows_with_long_gap(missing, counted, limit), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 7, 4096, 4097])
def test_median_rows_is_numpy_median(dtype, m):
    rng = np.random.default_rng(m)
    values = rng.normal(0, 1, (5, m)).astype(dtype)
    values[1, 0] = np.nan
    values[2] = values[2, 0]  # ties
    expected = np.median(values, axis=-1)
    result = median_rows(values)
    assert result.dtype == expected.dtype
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor", range(1, 12))
def test_block_means_are_numpy_means(dtype, factor):
    rng = np.random.default_rng(factor)
    blocks = (
        rng.normal(0, 1, (3, 50, factor)) * 10.0 ** rng.uniform(-5, 5, (3, 50, factor))
    ).astype(dtype)
    expected = blocks.mean(axis=-1)
    result = _block_means(blocks)
    assert result.dtype == expected.dtype
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("window", [3, 5, 7, 9, 11])
def test_median_networks_select_the_median(window):
    # 0-1 principle: a comparator network that selects the median of every 0-1 input
    # selects the median of any input.
    network = _median_network(window)
    for bits in itertools.product([0, 1], repeat=window):
        lanes = list(bits)
        for i, j, low, high in network:
            a, b = lanes[i], lanes[j]
            if low:
                lanes[i] = min(a, b)
            if high:
                lanes[j] = max(a, b)
        assert lanes[window // 2] == sorted(bits)[window // 2]
    values = np.random.default_rng(window).normal(size=(4, 300)).astype(np.float32)
    expected = median_filter(values, size=(1, window), mode="nearest")
    np.testing.assert_array_equal(running_median(values, window), expected)


def test_median_of_seven_uses_fewer_operations():
    assert sum(low + high for _, _, low, high in _median_network(7)) == 20
