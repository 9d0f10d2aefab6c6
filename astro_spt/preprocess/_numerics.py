"""Row-wise array helpers shared by the preprocessing steps (no Python loop over rows).

numpy's ``nanmedian`` loops over rows in Python for long rows and warns on all-NaN rows;
these helpers sort once instead and return NaN quietly for empty rows.
"""

import functools

import numpy as np

__all__ = []

# sigma of a Gaussian = this x its median absolute deviation (1 / Phi^-1(3/4))
MAD_TO_SIGMA = 1.482602218505602


def nanquantile_rows(values: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` of the finite values of each row (NaN for rows with none)."""
    values = np.where(np.isfinite(values), values, np.nan)
    if values.shape[-1] == 0:  # rows of no values at all (e.g. DER_SNR of 2-4 pixels)
        return np.full(values.shape[:-1], np.nan)
    ordered = np.sort(values, axis=-1)  # NaN sort last
    count = np.isfinite(ordered).sum(axis=-1)
    position = q * np.maximum(count - 1, 0)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    fraction = position - below
    low = np.take_along_axis(ordered, below[..., None], axis=-1)[..., 0]
    high = np.take_along_axis(ordered, above[..., None], axis=-1)[..., 0]
    result = low + fraction * (high - low)
    return np.where(count > 0, result, np.nan)


def median_rows(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=-1)``, bit for bit: NaN for rows with a NaN.

    One vectorised sort is two to three times faster than the partition numpy's median
    does for rows of a few thousand values.
    """
    if values.dtype not in (np.float32, np.float64) or values.shape[-1] == 0:
        return np.median(values, axis=-1)
    ordered = np.sort(values, axis=-1)  # NaN sort last
    half = values.shape[-1] // 2
    if values.shape[-1] % 2:
        median = ordered[..., half]
    else:
        median = (ordered[..., half - 1] + ordered[..., half]) / 2
    return np.where(np.isnan(ordered[..., -1]), np.nan, median)


def nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """Median of the finite values of each row (NaN for rows with none)."""
    return nanquantile_rows(values, 0.5)


def runs(flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of True values along the last axis (a run ends with its row).

    Returns ``(index, first, lengths)``: the flat indices of the True values, in order;
    for each run, the position in ``index`` of its first pixel; and its length. Work is
    proportional to the number of flagged pixels, which are few in real spectra.
    """
    m = flagged.shape[-1]
    index = np.flatnonzero(flagged)
    first = np.ones(index.size, bool)
    first[1:] = (np.diff(index) != 1) | (index[1:] % m == 0)
    first = np.flatnonzero(first)
    return index, first, np.diff(first, append=index.size)


def long_runs(flagged: np.ndarray, min_length: int) -> np.ndarray:
    """True at the pixels of the runs of True values at least ``min_length`` long."""
    index, _, lengths = runs(flagged)
    long = np.zeros(flagged.shape, bool)
    long.reshape(-1)[index[np.repeat(lengths >= min_length, lengths)]] = True
    return long


def fill_gaps(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Linearly interpolate each row over its bad pixels from the nearest good ones.

    Pixels before the first / after the last good pixel take that pixel's value; rows
    without good pixels become 0 (callers flag them unreadable).
    """
    filled = np.where(good, values, 0).astype(values.dtype, copy=False)
    index, first, lengths = runs(~good)
    if index.size == 0:
        return filled
    m = values.shape[-1]
    flat = filled.reshape(-1)
    starts = index[first]
    column = starts % m
    has_previous = column > 0
    has_following = column + lengths < m
    zero = np.zeros((), values.dtype)
    left = np.where(has_previous, flat[np.where(has_previous, starts - 1, 0)], zero)
    right = np.where(has_following, flat[np.where(has_following, starts + lengths, 0)], zero)
    left = np.where(has_previous, left, right)
    right = np.where(has_following, right, left)
    # Pixel k of a run of length L lies k / (L + 1) of the way from left to right.
    offset = np.arange(1, index.size + 1) - np.repeat(first, lengths)
    offset = np.where(np.repeat(has_previous & has_following, lengths), offset, 0)
    span = np.repeat(lengths + 1, lengths).astype(values.dtype)
    left, right = np.repeat(left, lengths), np.repeat(right, lengths)
    flat[index] = left + (offset.astype(values.dtype) / span) * (right - left)
    return filled


# Comparators (i, j) that leave the smaller value at i, the larger at j. Median of 7 in 13
# (Devillard 1998, "Fast median search: an ANSI C implementation", opt_med7, after Paeth),
# against the 21 of a sorting network.
_MEDIAN_NETWORKS = {
    7: (
        (0, 5), (0, 3), (1, 6), (2, 4), (0, 1), (3, 5), (2, 6),
        (2, 3), (3, 6), (4, 5), (1, 4), (1, 3), (3, 4),
    ),
}  # fmt: skip


@functools.lru_cache(maxsize=8)
def _median_network(window: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """The comparators that select the median of ``window`` values, as (i, j, whether
    the minimum is needed, whether the maximum is): the network above, or an odd-even
    transposition sort, without the minima and maxima the median does not depend on."""
    network = _MEDIAN_NETWORKS.get(window) or [
        (i, i + 1) for round_ in range(window) for i in range(round_ % 2, window - 1, 2)
    ]
    needed = {window // 2}
    kept = []
    for i, j in reversed(network):
        low, high = i in needed, j in needed
        if low or high:
            kept.append((i, j, low, high))
            needed |= {i, j}
    return tuple(reversed(kept))


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Running median of odd width ``window`` along the last axis (edges repeated).

    A selection network of element-wise minima and maxima over shifted copies of the rows
    (20 whole-array operations for a window of 7): three times as fast as
    `scipy.ndimage.median_filter` for the short windows used here, and it keeps the
    input's dtype. Rows must be free of NaN.
    """
    half = window // 2
    m = values.shape[-1]
    padded = np.concatenate(
        [np.repeat(values[..., :1], half, -1), values, np.repeat(values[..., -1:], half, -1)],
        axis=-1,
    )
    lanes = [padded[..., i : i + m] for i in range(window)]
    for i, j, low, high in _median_network(window):
        a, b = lanes[i], lanes[j]
        if low:
            lanes[i] = np.minimum(a, b)
        if high:
            lanes[j] = np.maximum(a, b)
    return lanes[half]


def box_smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Running mean of odd width ``width`` along the last axis (edges repeated)."""
    half = width // 2
    padded = np.concatenate(
        [
            np.repeat(values[..., :1], half + 1, -1),
            values,
            np.repeat(values[..., -1:], half, -1),
        ],
        axis=-1,
        dtype=np.float64,
    )
    # Cumulative sums in float64 keep the differences exact enough for float32 data.
    total = np.cumsum(padded, axis=-1)
    return (total[..., width:] - total[..., :-width]) / width


def _block_means(blocks: np.ndarray) -> np.ndarray:
    """``blocks.mean(axis=-1)``, bit for bit, faster for blocks of fewer than 8 values.

    numpy sums so short a last axis one value after the other, as here, but calls its
    summation loop once per block: several times slower than these whole-array sums.
    """
    factor = blocks.shape[-1]
    if factor >= 8 or blocks.dtype.kind != "f":
        return blocks.mean(axis=-1)
    total = blocks[..., 0]
    for k in range(1, factor):
        total = total + blocks[..., k]
    return total / factor


def gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Approximate Gaussian smoothing of standard deviation ``sigma`` pixels.

    Three passes of a running mean (Wells 1986, IEEE PAMI 8, 234), so the cost does not
    grow with ``sigma``; for wide kernels the rows are first averaged in blocks of up to
    ``sigma / 8`` pixels and the smoothed result is linearly interpolated back, which
    changes a smooth continuum by far less than its noise.
    """
    m = values.shape[-1]
    factor = int(max(1, min(sigma // 8, m // 64)))
    if factor > 1:
        n_blocks = -(-m // factor)
        padded = np.concatenate(
            [values, np.repeat(values[..., -1:], n_blocks * factor - m, axis=-1)], axis=-1
        )
        blocks = _block_means(padded.reshape(*values.shape[:-1], n_blocks, factor))
        smooth = gaussian_smooth(blocks, sigma / factor)
        # Linear interpolation between block centres, as broadcast arithmetic on
        # (rows, factor, blocks) rather than a gather: each pixel sits at `offset` blocks
        # from its block's centre and leans on the previous or the next block. Blocks
        # last, so that numpy's loops run along rows, not along the few pixels of a block.
        offset = ((np.arange(factor) - (factor - 1) / 2) / factor).astype(values.dtype)[:, None]
        before = np.concatenate([smooth[..., :1], smooth[..., :-1]], axis=-1)
        after = np.concatenate([smooth[..., 1:], smooth[..., -1:]], axis=-1)
        upsampled = (
            smooth[..., None, :]
            + (smooth - before)[..., None, :] * np.minimum(offset, 0)
            + (after - smooth)[..., None, :] * np.maximum(offset, 0)
        )
        upsampled = np.swapaxes(upsampled, -1, -2)
        return upsampled.reshape(*values.shape[:-1], n_blocks * factor)[..., :m]
    width = max(1, round(float(np.sqrt(4 * sigma**2 + 1))))
    width += 1 - width % 2
    width = min(width, 2 * (m // 2) - 1)
    smoothed = values
    for _ in range(3):
        smoothed = box_smooth(smoothed, width)
    return smoothed.astype(values.dtype, copy=False)
