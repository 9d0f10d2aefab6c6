"""Row-wise array helpers shared by the preprocessing steps (no Python loop over rows).

numpy's ``nanmedian`` loops over rows in Python for long rows and warns on all-NaN rows;
these helpers sort once instead and return NaN quietly for empty rows.
"""

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


def nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """Median of the finite values of each row (NaN for rows with none)."""
    return nanquantile_rows(values, 0.5)


def neighbours(good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest good pixel at or before / at or after each pixel.

    Returns ``(previous, following)``; ``previous`` is -1 and ``following`` is the row
    length where there is none.
    """
    m = good.shape[-1]
    index = np.arange(m, dtype=np.int32)
    previous = np.maximum.accumulate(np.where(good, index, np.int32(-1)), axis=-1)
    following = np.where(good, index, np.int32(m))[..., ::-1]
    following = np.minimum.accumulate(following, axis=-1)[..., ::-1]
    return previous, following


def run_lengths(flagged: np.ndarray) -> np.ndarray:
    """Length of the run of True values each pixel belongs to (0 for False pixels)."""
    lengths = np.zeros(flagged.shape, dtype=np.int32)
    rows = np.flatnonzero(flagged.any(axis=-1))
    if rows.size:
        previous, following = neighbours(~flagged[rows])
        lengths[rows] = np.where(flagged[rows], following - previous - 1, 0)
    return lengths


def fill_gaps(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Linearly interpolate each row over its bad pixels from the nearest good ones.

    Pixels before the first / after the last good pixel take that pixel's value; rows
    without good pixels become 0 (callers flag them unreadable).
    """
    filled = np.where(good, values, 0).astype(values.dtype, copy=False)
    rows = np.flatnonzero(~good.all(axis=-1))
    if rows.size == 0:
        return filled
    m = values.shape[-1]
    part, part_good = filled[rows], good[rows]
    previous, following = neighbours(part_good)
    has_previous = previous >= 0
    has_following = following < m
    left = np.take_along_axis(part, np.clip(previous, 0, m - 1), axis=-1)
    right = np.take_along_axis(part, np.clip(following, 0, m - 1), axis=-1)
    left = np.where(has_previous, left, right)
    right = np.where(has_following, right, left)
    span = np.maximum(following - previous, 1).astype(values.dtype)
    offset = np.where(has_previous & has_following, np.arange(m, dtype=np.int32) - previous, 0)
    interpolated = left + (offset.astype(values.dtype) / span) * (right - left)
    filled[rows] = np.where(part_good, part, interpolated)
    return filled


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Running median of odd width ``window`` along the last axis (edges repeated).

    An odd-even transposition sorting network of element-wise minima and maxima: about
    twice as fast as `scipy.ndimage.median_filter` for the short windows used here, and
    it keeps the input's dtype.
    """
    half = window // 2
    m = values.shape[-1]
    padded = np.concatenate(
        [np.repeat(values[..., :1], half, -1), values, np.repeat(values[..., -1:], half, -1)],
        axis=-1,
    )
    lanes = [padded[..., i : i + m] for i in range(window)]
    for round_ in range(window):
        for i in range(round_ % 2, window - 1, 2):
            low = np.minimum(lanes[i], lanes[i + 1])
            lanes[i + 1] = np.maximum(lanes[i], lanes[i + 1])
            lanes[i] = low
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
        blocks = padded.reshape(*values.shape[:-1], n_blocks, factor).mean(axis=-1)
        smooth = gaussian_smooth(blocks, sigma / factor)
        # Linear interpolation between block centres, as broadcast arithmetic on
        # (rows, blocks, factor) rather than a gather: each pixel sits at `offset` blocks
        # from its block's centre and leans on the previous or the next block.
        offset = ((np.arange(factor) - (factor - 1) / 2) / factor).astype(values.dtype)
        before = np.concatenate([smooth[..., :1], smooth[..., :-1]], axis=-1)
        after = np.concatenate([smooth[..., 1:], smooth[..., -1:]], axis=-1)
        upsampled = (
            smooth[..., None]
            + (smooth - before)[..., None] * np.minimum(offset, 0)
            + (after - smooth)[..., None] * np.maximum(offset, 0)
        )
        return upsampled.reshape(*values.shape[:-1], n_blocks * factor)[..., :m]
    width = max(1, round(float(np.sqrt(4 * sigma**2 + 1))))
    width += 1 - width % 2
    width = min(width, 2 * (m // 2) - 1)
    smoothed = values
    for _ in range(3):
        smoothed = box_smooth(smoothed, width)
    return smoothed.astype(values.dtype, copy=False)
