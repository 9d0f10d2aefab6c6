"""Detection, repair and flagging of anomalous pixels in spectra on the model grid.

SPT paper §3.2 (Fig. 4) drops spectra with four kinds of anomaly: missing values,
negative flux, outliers (spikes and troughs) and oscillations. A library must not silently
drop a user's star, so `detect_anomalies` finds each kind in a whole batch at once,
repairs what can be repaired (interpolates over gaps and negative stretches, replaces
spikes by a running median) and sets one bit of `astro_spt.flags` per kind, plus the bits
for poor wavelength coverage, low signal-to-noise ratio, repaired pixels, heavy damage,
unreadable spectra and gaps in the wavelength windows surveys routinely mask (which are not
counted as missing values).
"""

from dataclasses import dataclass

import numpy as np

from astro_spt import flags as _flags
from astro_spt.exceptions import InvalidSpectrumError

from ._numerics import (
    MAD_TO_SIGMA,
    fill_gaps,
    gaussian_smooth,
    long_runs,
    median_rows,
    nanmedian_rows,
    running_median,
    runs,
)
from .config import PreprocessConfig, _pixels
from .grid import make_wavelength_grid

__all__ = ["AnomalyResult", "detect_anomalies"]

# Robust standard deviation from the median absolute deviation of a Gaussian.
# Pixels per block of the robust local noise scale used by the spike test.
_SCALE_BLOCK = 128
# Width, in frequency bins, of the blocks whose median power is the periodogram's baseline.
_BASELINE_BINS = 32
#: Below this RMS departure of the flux from a smooth continuum at the scale of lines,
#: beyond what the noise explains, a spectrum shows no absorption lines (``featureless``).
#: Measured: 0.020 for the least-lined of the 1,979 real LAMOST DR10 development spectra
#: (an F0 dwarf; median 0.037), 0.015 for the least-lined of them when the pixels that the
#: LAMOST DR1 files mask at 3,800-4,000 and 7,550-7,700 Å are masked too, 0.028 for DR1's
#: and 0.027 for the default model's 3,305 mock spectra (median 0.055); a flat continuum
#: gives 0 at S/N 7 and up, a random walk of 0.5 % a pixel or a step mostly under 0.007
#: from S/N 50 (``docs/preprocess.rst``).
FEATURELESS_MAX_CONTRAST = 0.01
#: Standard deviation (Å) of the Gaussian-smoothed continuum that contrast is measured from.
FEATURELESS_CONTINUUM_AA = 50.0
#: Standard deviation (Å) of the Gaussian smoothing taken off that departure in turn, so
#: that the contrast counts structure of a line's width (LAMOST's resolution gives
#: σ ≈ 1.5-2 Å), not a continuum's slow wander or a single step, which a 50 Å continuum
#: leaves over tens of ångströms.
FEATURELESS_LINE_SCALE_AA = 8.0
#: Width (Å) of the window that the contrast leaves out, where the departure at the scale
#: of lines is largest, so that one feature (a step between the arms, a single line, a
#: patch of sky residual) does not make a continuum look lined.
FEATURELESS_IGNORED_AA = 40.0
#: Above this skewness of the flux's relative departure from that continuum, the spectrum
#: rises above its continuum more than it dips below it (``emission_features``).
#: Absorption lines make it negative: on the 1,979 real LAMOST DR10 development spectra
#: its median is -3.1, its 90th percentile -1.4, and the 2.4 % above 1 (0.5 % of the giant
#: candidates) mostly carry strong sky-line residuals (5,577 Å, 8,830 Å, beyond 9,000 Å),
#: a few Hα in emission (docs/preprocess.rst).
EMISSION_MIN_SKEWNESS = 1.0
# The skewness divides by at least this RMS departure's cube: where a spectrum has hardly
# any lines, a few pixels above the continuum must not make a large skewness.
_EMISSION_MIN_LINES = 0.02
#: A pixel that departs from both its neighbours, in the same direction, by more than
#: this fraction of the local flux (and ``spike_threshold`` standard deviations, and by
#: nearly as much as from the pixels two away) is narrower than any line at LAMOST's
#: resolution, which spreads a line over two to three pixels of the grid ...
UNRESOLVED_MIN_RELATIVE = 0.2
#: ... and this many such pixels set ``unresolved_features``. Measured after the spike
#: repair: 0.9 % of the 1,979 real LAMOST DR10 development spectra have one or more, two
#: of them three, none more; none of the 10 DR1 spectra, and at most one in each of the
#: 3,305 mock spectra; one-pixel dips of 30 % every 20 pixels of a file give 23-62.
UNRESOLVED_MIN_COUNT = 5
#: Runs of at least this many pixels of the same flux are not measurements (a fill value, a
#: stretch clipped or saturated at one level): they are missing values. Measured on the
#: model grid: no real LAMOST DR10 or DR1 development spectrum (1,989) and no mock one
#: (3,305) repeats a value more than once in a row (519 DR10 spectra have one such pair).
CONSTANT_MIN_RUN = 5
# Pixels closer than this fraction of the row's median flux count as equal: linear
# interpolation onto the grid reproduces a repeated value to a float32 rounding (6e-8).
_CONSTANT_TOLERANCE = 1e-6
# Lag, in pixels, of the flux differences that measure the noise. Linear interpolation
# onto the grid makes neighbouring pixels share an input pixel, so their differences see
# 55 % of the noise's variance; three apart they see 99 % (measured on LAMOST-sampled
# noise: its pixels are 0.7-1.6 grid pixels wide).
_NOISE_LAG = 3
# The grid's inverse variance is interpolated like the flux (``resample_to_grid``), but
# the flux interpolated at an offset t between two input pixels has t² + (1 - t)² of
# their variance: 2/3 on average over t.
_INTERPOLATED_VARIANCE = 2 / 3
# The inverse variance's noise stands unless the flux differences show clearly less (under
# this fraction of it): LAMOST's inverse variance overstates the noise of some files,
# while the differences' median understates it a little wherever the S/N varies along
# the spectrum (and by chance: about 5 % on 4,000 pixels).
_NOISE_AGREEMENT = 0.8
# On grids coarser than a line (pixels over 4 Å), the scale of lines is the grid's own: a
# smoothing of at least two pixels, without which nothing would be left to measure.
_MIN_LINE_SCALE_PIXELS = 2.0


@dataclass
class AnomalyResult:
    """The repaired spectra and what was found in them, from `detect_anomalies`.

    Attributes
    ----------
    flux : `~numpy.ndarray`, shape (n, n_pixels)
        Repaired flux: finite everywhere (0 in unreadable rows).
    ivar : `~numpy.ndarray`, shape (n, n_pixels)
        Inverse variance; 0 at repaired and unmeasured pixels.
    mask : `~numpy.ndarray` of bool, shape (n, n_pixels)
        True at pixels whose flux is not a measurement: repaired, or outside the input's
        wavelength range (filled with the nearest measured value).
    flags : `~numpy.ndarray` of `~astro_spt.flags.FLAG_DTYPE`, shape (n,)
        Bit mask per spectrum (see `astro_spt.flags`).
    n_repaired : `~numpy.ndarray` of int, shape (n,)
        Number of repaired pixels inside the input's wavelength range.
    n_spikes : `~numpy.ndarray` of int, shape (n,)
        Number of spikes and troughs found.
    snr : `~numpy.ndarray`, shape (n,)
        Median per-pixel signal-to-noise ratio of the valid pixels (NaN if none).
    coverage : `~numpy.ndarray`, shape (n,)
        Fraction of the grid inside the input's wavelength range.
    oscillation_power : `~numpy.ndarray`, shape (n,)
        Highest ratio of the periodogram to its local median power in the ripple band.
    oscillation_amplitude : `~numpy.ndarray`, shape (n,)
        Relative amplitude of the ripple at that peak.

    Examples
    --------
    A 100-pixel (129 Å) gap is interpolated over, masked and flagged:

    >>> import numpy as np
    >>> from astro_spt.flags import decode_flags
    >>> from astro_spt.preprocess import detect_anomalies
    >>> flux = 100 + np.random.default_rng(0).normal(0, 1, (2, 4096))
    >>> flux[1, 1000:1100] = np.nan
    >>> result = detect_anomalies(flux, np.ones_like(flux))
    >>> result.flux.shape, bool(np.isfinite(result.flux).all())
    ((2, 4096), True)
    >>> decode_flags(result.flags)  # flat continua, without lines: featureless too
    [['featureless'], ['missing_values', 'repaired_pixels', 'featureless']]
    >>> result.n_repaired.tolist(), result.mask.sum(axis=1).tolist()
    ([0, 100], [0, 100])
    >>> float(result.ivar[1, 1050])  # repaired pixels carry no weight
    0.0
    >>> np.round(result.snr).tolist(), result.coverage.tolist()
    ([100.0, 100.0], [1.0, 1.0])
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    flags: np.ndarray
    n_repaired: np.ndarray
    n_spikes: np.ndarray
    snr: np.ndarray
    coverage: np.ndarray
    oscillation_power: np.ndarray
    oscillation_amplitude: np.ndarray


def _block_scale(residual: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Robust standard deviation of the residual in blocks of pixels, per pixel."""
    n, m = residual.shape
    n_blocks = -(-m // _SCALE_BLOCK)
    padded = np.full((n, n_blocks * _SCALE_BLOCK), np.nan, dtype=residual.dtype)
    padded[:, :m] = np.where(good, np.abs(residual), np.nan)
    scale = MAD_TO_SIGMA * nanmedian_rows(padded.reshape(n, n_blocks, _SCALE_BLOCK))
    return np.repeat(scale, _SCALE_BLOCK, axis=1)[:, :m]


def _window_slices(windows, grid: np.ndarray) -> list[slice]:
    """The grid pixels of each wavelength window, as slices (the grid is increasing)."""
    slices = []
    for low, high in windows:
        start = np.searchsorted(grid, low, side="left")
        stop = np.searchsorted(grid, high, side="right")
        if stop > start:
            slices.append(slice(int(start), int(stop)))
    return slices


def _rows_with_long_gap(missing: np.ndarray, counted: np.ndarray, limit: int) -> np.ndarray:
    """Whether each row has a run of ``missing`` pixels with more than ``limit`` of them
    ``counted``."""
    index, first, _ = runs(missing)
    long_gap = np.zeros(missing.shape[0], bool)
    if index.size:
        inside = np.add.reduceat(counted.reshape(-1)[index].astype(np.intp), first)
        long_gap[index[first][inside > limit] // missing.shape[-1]] = True
    return long_gap


def _dilate(flagged: np.ndarray) -> np.ndarray:
    grown = flagged.copy()
    grown[:, 1:] |= flagged[:, :-1]
    grown[:, :-1] |= flagged[:, 1:]
    return grown


def _count_runs(flagged: np.ndarray) -> np.ndarray:
    starts = flagged.copy()
    starts[:, 1:] &= ~flagged[:, :-1]
    return starts.sum(axis=1)


def _find_spikes(flux, ivar, good, settings):
    """Spikes and troughs against a running median (cosmic rays, sky-line residuals)."""
    smooth = running_median(flux, settings.spike_window)
    residual = flux - smooth
    # The noise is the larger of the pipeline's error and a robust local scatter of the
    # residual, so that neither underestimated errors nor the residuals of dense line
    # forests make spikes.
    sigma = np.full_like(flux, np.nan)
    np.divide(1.0, np.sqrt(ivar), out=sigma, where=good & (ivar > 0))
    scale = np.fmax(sigma, _block_scale(residual, good))
    significant = np.abs(residual) > settings.spike_threshold * scale
    # Measured on the 1,979 DR10 development spectra: the cores of real absorption lines
    # (Balmer, Ca II, Na D) lie up to ~35 % below a 7-pixel running median and are highly
    # significant at high S/N, while the artefacts (dead pixels at zero flux, sky-line
    # residuals, cosmic rays) depart from it by more than half the local flux.
    pronounced = np.abs(residual) > settings.spike_min_relative * np.abs(smooth)
    return good & significant & pronounced, smooth


def _unresolved(flux, ivar, valid, level, settings):
    """Number of pixels above or below both neighbours by more than
    ``UNRESOLVED_MIN_RELATIVE`` of ``level`` and ``spike_threshold`` standard deviations,
    and by nearly as much (70 %) as below or above the pixels two away: the core of a
    resolved line (a Gaussian of σ ≥ 1 pixel) departs from its neighbours by at most 45 %
    of that."""
    middle = flux[:, 2:-2]

    def departure(left, right):
        return np.maximum(middle - np.maximum(left, right), np.minimum(left, right) - middle)

    near = departure(flux[:, 1:-3], flux[:, 3:-1])
    far = departure(flux[:, :-4], flux[:, 4:])
    sigma = np.full_like(middle, np.inf)
    good = valid[:, 1:-3] & valid[:, 2:-2] & valid[:, 3:-1]  # valid: ivar > 0
    np.divide(1.0, np.sqrt(ivar[:, 2:-2]), out=sigma, where=good)
    narrow = (
        (near > UNRESOLVED_MIN_RELATIVE * np.abs(level[:, 2:-2]))
        & (near > settings.spike_threshold * sigma)
        & (near > 0.7 * far)
    )
    return (narrow & good).sum(axis=1)


def _constant_runs(flux, valid):
    """The pixels of runs of at least ``CONSTANT_MIN_RUN`` valid pixels of equal flux (to
    ``_CONSTANT_TOLERANCE`` of the row's median level): no measurement repeats itself, so
    they are a fill value, a clipped or saturated stretch, not data."""
    with np.errstate(invalid="ignore"):
        level = nanmedian_rows(np.where(valid, np.abs(flux), np.nan))
    # equal[:, i]: pixel i + 1 repeats pixel i
    equal = valid[:, 1:] & valid[:, :-1]
    equal &= np.abs(np.diff(flux, axis=1)) <= _CONSTANT_TOLERANCE * level[:, None]
    repeats = long_runs(equal, CONSTANT_MIN_RUN - 1)
    constant = np.zeros(flux.shape, bool)
    constant[:, 1:] |= repeats
    constant[:, :-1] |= repeats
    return constant


def _oscillation(flux, covered, settings, pixel_scale_aa):
    """Highest periodogram peak over its local median power, and its amplitude."""
    n, m = flux.shape
    max_period = settings.oscillation_max_period_aa / pixel_scale_aa
    min_period = settings.oscillation_min_period_aa / pixel_scale_aa
    # Smoothing as wide as the longest period removes the continuum but not the ripples.
    smooth = gaussian_smooth(flux, max_period)
    level = np.abs(median_rows(smooth[:, ::8]))
    denominator = np.maximum(smooth, 0.1 * level[:, None])
    relative = np.zeros_like(flux)
    np.divide(flux - smooth, denominator, out=relative, where=covered & (denominator > 0))
    window = np.hanning(m).astype(flux.dtype)
    spectrum = np.abs(np.fft.rfft(relative * window, axis=1))
    k_min = max(1, int(np.floor(m / max_period)))
    k_max = min(spectrum.shape[1] - 1, int(np.ceil(m / min_period)))
    band = spectrum[:, k_min : k_max + 1] ** 2
    if band.shape[1] == 0:  # a grid too coarse for any period of the band: no ripple seen
        return np.zeros(n, flux.dtype), np.zeros(n, flux.dtype)
    # Baseline: median power in blocks of frequencies; a ripple is one narrow peak above
    # it, while lines and noise spread their power over many frequencies.
    n_bins = band.shape[1]
    n_blocks = -(-n_bins // _BASELINE_BINS)
    blocks = np.full((n, n_blocks * _BASELINE_BINS), np.nan, dtype=band.dtype)
    blocks[:, :n_bins] = band
    baseline = nanmedian_rows(blocks.reshape(n, n_blocks, _BASELINE_BINS))
    baseline = np.repeat(baseline, _BASELINE_BINS, axis=1)[:, :n_bins]
    ratio = np.zeros_like(band)
    np.divide(band, baseline, out=ratio, where=baseline > 0)
    peak = np.argmax(ratio, axis=1)
    rows = np.arange(n)
    # Amplitude of a sinusoid from its Fourier coefficient under a Hann window.
    amplitude = 2 * spectrum[rows, k_min + peak] / window.sum()
    return ratio[rows, peak], amplitude


def _line_contrast(flux, ivar, valid, pixel_scale_aa):
    """RMS relative departure of the flux from a smooth continuum at the scale of lines,
    beyond the noise's, and the skewness of the whole departure.

    The departure from a ``FEATURELESS_CONTINUUM_AA`` continuum has its own
    ``FEATURELESS_LINE_SCALE_AA`` smoothing taken off, so that a continuum's wander, which
    departs from the continuum over tens of ångströms, is not taken for lines; the
    ``FEATURELESS_IGNORED_AA`` window where it departs most is left out, so that one
    feature (a step) is not either. The noise is what the inverse variance says (scaled
    to the grid's interpolation) unless the differences of pixels ``_NOISE_LAG`` apart
    say clearly less (robustly): a noise estimate that is too large (LAMOST's inverse
    variance, for some files) would hide the lines of a real star and call it
    featureless, and the differences alone (their median) understate the noise of a
    continuum whose S/N varies. Absorption lines make the skewness negative; emission
    makes it positive.
    """
    smooth = gaussian_smooth(flux, FEATURELESS_CONTINUUM_AA / pixel_scale_aa)
    use = valid & (smooth > 0)
    safe = np.where(use, smooth, 1)
    relative = np.where(use, flux / safe - 1, 0)
    with np.errstate(divide="ignore"):
        variance = np.where(use, 1 / (np.where(use, ivar, 1) * safe**2), 0)
    lag = _NOISE_LAG
    both = use[:, lag:] & use[:, :-lag]
    steps = np.where(both, np.abs(relative[:, lag:] - relative[:, :-lag]), np.nan)
    from_steps = (MAD_TO_SIGMA * nanmedian_rows(steps)) ** 2 / 2

    def mean_noise(pixels):
        n = np.maximum(pixels.sum(axis=1), 1)
        from_ivar = np.where(pixels, variance, 0).sum(axis=1) * _INTERPOLATED_VARIANCE / n
        return np.where(from_steps < _NOISE_AGREEMENT * from_ivar, from_steps, from_ivar), n

    # The departure at the scale of lines: less its smoothing, which takes 2 g(0) - sum(g²)
    # of white noise's variance away (g: the smoothing's weights, its response to a pixel),
    # and without the window where it is largest.
    width = max(FEATURELESS_LINE_SCALE_AA / pixel_scale_aa, _MIN_LINE_SCALE_PIXELS)
    power = np.where(use, relative - gaussian_smooth(relative, width), 0) ** 2
    impulse = np.zeros(relative.shape[-1], relative.dtype)
    impulse[impulse.size // 2] = 1
    weights = gaussian_smooth(impulse, width)
    kept = 1 - 2 * weights[impulse.size // 2] + (weights**2).sum()
    ignored = max(1, min(round(FEATURELESS_IGNORED_AA / pixel_scale_aa), power.shape[1]))
    running = np.cumsum(np.pad(power, ((0, 0), (1, 0))), axis=1)
    start = np.argmax(running[:, ignored:] - running[:, :-ignored], axis=1)
    counted = use.copy()
    np.put_along_axis(counted, start[:, None] + np.arange(ignored), False, axis=1)
    noise, n_counted = mean_noise(counted)
    line_power = np.where(counted, power, 0).sum(axis=1) / n_counted
    contrast = np.sqrt(np.clip(line_power - kept * noise, 0, None))

    # Gaussian noise adds nothing to the third moment, only to the variance: the skewness
    # of the lines alone divides by the variance beyond the noise (at least
    # _EMISSION_MIN_LINES², where there are no lines to speak of). A third moment within
    # five of its standard deviations from noise alone, sqrt(15 / n) noise^1.5, counts
    # as none, so that faint spectra with weak lines do not get a skewness from noise.
    noise, n_used = mean_noise(use)
    lines = np.clip((relative**2).sum(axis=1) / n_used - noise, 0, None)
    mean = relative.sum(axis=1) / n_used
    third = (np.where(use, relative - mean[:, None], 0) ** 3).sum(axis=1) / n_used
    significant = np.abs(third) > 5 * np.sqrt(15 / n_used) * noise**1.5
    skewness = np.where(significant, third, 0) / np.maximum(lines, _EMISSION_MIN_LINES**2) ** 1.5
    return contrast, skewness


def detect_anomalies(
    flux,
    ivar=None,
    mask=None,
    covered=None,
    config: PreprocessConfig | None = None,
) -> AnomalyResult:
    """Find, repair and flag anomalies in a batch of spectra on the model grid.

    Steps, each vectorised over the batch (SPT paper §3.2, Fig. 4):

    1. *Coverage*: ``poor_coverage`` when too much of the grid lies outside the input's
       range; ``unreadable`` (and a row of zeros, made NaN by `preprocess`) when too few
       valid pixels remain.
    2. *Missing values*: masked, non-finite or zero-inverse-variance pixels, and runs of
       ``CONSTANT_MIN_RUN`` (5) or more pixels of one value (a fill value, a clipped or
       saturated stretch: no measurement repeats itself), are linearly
       interpolated over (the ends are extended with the nearest value); gaps longer than
       ``max_gap_aa``, or too many missing pixels, set ``missing_values``. Pixels in the
       windows surveys routinely mask (``standard_mask_windows_aa``: the blue and red
       ends, the telluric A band) are repaired and counted alike, but do not count
       towards ``missing_values``; more than ``standard_mask_min_fraction`` of a window
       missing sets the informational ``masked_standard_regions`` instead.
    3. *Signal-to-noise*: ``low_snr`` when the median of flux·sqrt(ivar) is low.
    4. *Outliers*: pixels further than ``spike_threshold`` standard deviations and
       ``spike_min_relative`` of the local flux from a running median set ``outliers`` and
       are replaced, with their neighbours, by the running median. At least
       ``UNRESOLVED_MIN_COUNT`` (5) pixels above or below both their neighbours by more
       than ``UNRESOLVED_MIN_RELATIVE`` (20 %) of the local flux and ``spike_threshold``
       standard deviations, features narrower than a LAMOST line, set
       ``unresolved_features``; they are not repaired.
    5. *Negative flux*: runs of negative flux at least ``negative_min_run_aa`` long set
       ``negative_flux`` and are interpolated over.
    6. *Oscillation*: the periodogram of the flux relative to a smooth continuum is
       compared with its local median power in the period band; a high, wide-enough peak sets
       ``oscillation``. Ripples are not repaired. *No lines*: an RMS departure from a
       50 Å-smooth continuum at the scale of lines (less its own 8 Å smoothing, and
       leaving out the 40 Å where it is largest), beyond the noise, under
       ``FEATURELESS_MAX_CONTRAST`` (1 %) sets ``featureless``: a
       continuum without absorption lines (flat, stepped or wandering), or a spectrum
       far smoother than LAMOST's resolution, no star's spectrum as the model knows it.
       *Emission*: a skewness of that departure above ``EMISSION_MIN_SKEWNESS`` (1) sets
       ``emission_features``: the flux rises above its continuum more than it dips.
    7. More than ``min_repaired_fraction`` of the grid repaired sets ``repaired_pixels``;
       more than ``heavy_damage_fraction`` repaired or not measured sets ``heavy_damage``.

    Parameters
    ----------
    flux : array-like, shape (n, n_pixels) or (n_pixels,)
        Flux on the model grid; NaN where there is no data.
    ivar : array-like, shape of ``flux``, optional
        Inverse variance; default 1 (unknown noise: the S/N is then not meaningful).
    mask : array-like of bool, shape of ``flux``, optional
        True where there is no valid data.
    covered : array-like of bool, shape of ``flux``, optional
        True inside the input's wavelength range; default: everywhere.
    config : `~astro_spt.preprocess.PreprocessConfig`, optional
        Thresholds (``config.anomalies``) and the grid's pixel scale (``config.grid``).

    Returns
    -------
    result : `AnomalyResult`

    Raises
    ------
    astro_spt.exceptions.InvalidSpectrumError
        If ``ivar``, ``mask`` or ``covered`` does not have the shape of ``flux``, or
        ``flux`` does not have the grid's number of pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt import flags
    >>> from astro_spt.preprocess import detect_anomalies
    >>> rng = np.random.default_rng(0)
    >>> flux = 100 + rng.normal(0, 1, (2, 4096))
    >>> flux[1, 2000] = 200.0  # a cosmic ray
    >>> result = detect_anomalies(flux, np.ones_like(flux))
    >>> [flags.decode_flags(f) for f in result.flags]  # flat continua: no lines either
    [['featureless'], ['outliers', 'featureless']]
    >>> result.n_repaired.tolist()
    [0, 3]
    >>> bool(abs(result.flux[1, 2000] - 100) < 5)
    True

    A 100 Å gap in the telluric A band, which LAMOST DR1 masks in every spectrum, is
    repaired like any other but is not a ``missing_values`` defect; at 6,000 Å it is:

    >>> from astro_spt.preprocess import make_wavelength_grid
    >>> grid = make_wavelength_grid()
    >>> flux[1, 2000] = 100.0
    >>> flux[0, (grid > 7580) & (grid < 7680)] = np.nan
    >>> flux[1, (grid > 5950) & (grid < 6050)] = np.nan
    >>> result = detect_anomalies(flux, np.ones_like(flux))
    >>> [flags.decode_flags(f) for f in result.flags]  # doctest: +NORMALIZE_WHITESPACE
    [['repaired_pixels', 'masked_standard_regions', 'featureless'],
     ['missing_values', 'repaired_pixels', 'featureless']]
    >>> result.n_repaired.tolist()
    [77, 77]
    """
    config = PreprocessConfig() if config is None else config
    settings = config.anomalies
    scale_aa = config.grid.pixel_scale_aa
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float32))
    n, m = flux.shape
    ivar = np.ones_like(flux) if ivar is None else np.atleast_2d(np.asarray(ivar, np.float32))
    mask = np.zeros(flux.shape, bool) if mask is None else np.atleast_2d(np.asarray(mask, bool))
    covered = (
        np.ones(flux.shape, bool) if covered is None else np.atleast_2d(np.asarray(covered, bool))
    )
    for name, array in (("ivar", ivar), ("mask", mask), ("covered", covered)):
        if array.shape != flux.shape:
            raise InvalidSpectrumError(
                f"{name} has shape {array.shape}, but flux has shape {flux.shape}"
            )
    grid = make_wavelength_grid(config.grid)
    if m != grid.size:
        raise InvalidSpectrumError(
            f"flux has {m} pixels, but the model grid (config.grid) has {grid.size}"
        )
    valid = covered & ~mask & np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    valid &= ~_constant_runs(flux, valid)
    flag = np.zeros(n, dtype=_flags.FLAG_DTYPE)

    n_valid = valid.sum(axis=1)
    coverage = covered.mean(axis=1)
    unreadable = n_valid < max(2, settings.min_valid_fraction * m)
    flag[1 - coverage > settings.max_uncovered_fraction] |= _flags.POOR_COVERAGE

    missing = covered & ~valid
    # Pixels in the windows surveys routinely mask (the blue and red ends, the telluric A
    # band) do not count towards missing_values: a gap counts by its pixels outside them.
    standard = np.zeros(m, bool)
    in_window = _window_slices(settings.standard_mask_windows_aa, grid)
    for window in in_window:
        standard[window] = True
    counted = missing & ~standard
    long_gap = _rows_with_long_gap(missing, counted, _pixels(settings.max_gap_aa, scale_aa))
    n_covered = np.maximum(covered.sum(axis=1), 1)
    too_many = counted.sum(axis=1) > settings.max_missing_fraction * n_covered
    flag[long_gap | too_many] |= _flags.MISSING_VALUES
    for window in in_window:
        n_missing = missing[:, window].sum(axis=1)
        limit = settings.standard_mask_min_fraction * covered[:, window].sum(axis=1)
        flag[(n_missing > 0) & (n_missing > limit)] |= _flags.MASKED_STANDARD_REGIONS
    repaired = missing.copy()
    filled = fill_gaps(np.where(valid, flux, 0.0), valid)

    signal_to_noise = np.where(valid, filled * np.sqrt(np.where(valid, ivar, 0.0)), np.nan)
    snr = nanmedian_rows(signal_to_noise)
    flag[snr < settings.min_snr] |= _flags.LOW_SNR

    spikes, smooth = _find_spikes(filled, ivar, valid, settings)
    spikes = _dilate(spikes) & covered
    n_spikes = _count_runs(spikes)
    flag[n_spikes > 0] |= _flags.OUTLIERS
    filled = np.where(spikes, smooth, filled)
    repaired |= spikes
    n_unresolved = _unresolved(filled, ivar, valid & ~spikes, smooth, settings)
    flag[n_unresolved >= UNRESOLVED_MIN_COUNT] |= _flags.UNRESOLVED_FEATURES

    negative = covered & (filled < 0)
    negative_run = long_runs(negative, _pixels(settings.negative_min_run_aa, scale_aa))
    flag[negative_run.any(axis=1)] |= _flags.NEGATIVE_FLUX
    filled = fill_gaps(filled, ~negative_run)
    repaired |= negative_run

    power, amplitude = _oscillation(filled, covered, settings, scale_aa)
    oscillating = (power > settings.oscillation_threshold) & (
        amplitude > settings.oscillation_min_amplitude
    )
    flag[oscillating] |= _flags.OSCILLATION

    contrast, skewness = _line_contrast(filled, ivar, valid, scale_aa)
    flag[~(contrast >= FEATURELESS_MAX_CONTRAST)] |= _flags.FEATURELESS
    flag[skewness > EMISSION_MIN_SKEWNESS] |= _flags.EMISSION_FEATURES

    n_repaired = repaired.sum(axis=1)
    flag[n_repaired > settings.min_repaired_fraction * m] |= _flags.REPAIRED_PIXELS
    damaged = (n_repaired + (m - covered.sum(axis=1))) / m
    flag[damaged > settings.heavy_damage_fraction] |= _flags.HEAVY_DAMAGE

    flag[unreadable] = _flags.UNREADABLE | (flag[unreadable] & _flags.POOR_COVERAGE)
    filled[unreadable] = 0.0
    not_measured = repaired | ~covered
    return AnomalyResult(
        flux=filled,
        ivar=np.where(not_measured | ~valid, 0.0, ivar),
        mask=not_measured,
        flags=flag,
        n_repaired=n_repaired,
        n_spikes=n_spikes,
        snr=snr,
        coverage=coverage,
        oscillation_power=power,
        oscillation_amplitude=amplitude,
    )
