"""The preprocessing settings, in one frozen, JSON-serialisable dataclass.

A trained model must see its spectra prepared exactly as its training spectra were, so
every setting of the preprocessing layer lives in `PreprocessConfig` and is saved with
the model (``config.json`` of the estimator bundle). The settings the SPT paper (§3.2)
leaves open carry defaults chosen here and documented field by field; the benchmark
settles them.
"""

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from astro_spt.exceptions import InvalidConfigError

__all__ = [
    "AnomalyConfig",
    "DenoiseConfig",
    "GridConfig",
    "NormalizeConfig",
    "PreprocessConfig",
]

_SPACINGS = ("linear", "log")
_THRESHOLD_RULES = ("universal", "level")
_THRESHOLD_MODES = ("soft", "hard")
NORMALIZE_METHODS = ("continuum", "median", "standardize", "none")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidConfigError(message)


def _windows(value) -> tuple[tuple[float, float], ...]:
    """Validate wavelength windows: a sequence of (low, high) pairs, 0 < low < high, in Å."""
    name = "anomalies: standard_mask_windows_aa"
    _require(
        isinstance(value, list | tuple),
        f"{name} must be a sequence of (low, high) pairs in Å, got {value!r}",
    )
    windows = []
    for window in value:
        _require(
            isinstance(window, list | tuple) and len(window) == 2,
            f"{name} must be a sequence of (low, high) pairs in Å, got {window!r} in it",
        )
        low, high = window
        _require(
            all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in window)
            and math.isfinite(high)
            and 0 < low < high,
            f"{name}: need finite 0 < low < high in each window, got {window!r}",
        )
        windows.append((float(low), float(high)))
    return tuple(windows)


@dataclass(frozen=True)
class GridConfig:
    """The model wavelength grid (vacuum, rest frame).

    Parameters
    ----------
    wavelength_min_aa, wavelength_max_aa : float
        First and last grid wavelength in Å (SPT paper §3.2: 3,800-9,100 Å).
    n_pixels : int
        Number of grid pixels (SPT paper §3.2: 4,096, which is 2**12 and so allows any
        MODWT level up to 12).
    spacing : {'linear', 'log'}
        ``'linear'`` (default): equal steps in wavelength, as the paper's "linear
        interpolation onto a common grid" implies (1.29 Å per pixel). ``'log'``: equal
        steps in log wavelength, the native LAMOST sampling.

    Raises
    ------
    astro_spt.exceptions.InvalidConfigError
        If a value is out of range.

    Examples
    --------
    The default is the SPT paper's grid; a custom one goes into `PreprocessConfig`:

    >>> from astro_spt.preprocess import GridConfig, PreprocessConfig, make_wavelength_grid
    >>> GridConfig()
    GridConfig(wavelength_min_aa=3800.0, wavelength_max_aa=9100.0, n_pixels=4096, spacing='linear')
    >>> blue = GridConfig(wavelength_min_aa=3900.0, wavelength_max_aa=5500.0, n_pixels=1024)
    >>> grid = make_wavelength_grid(blue)
    >>> grid.shape, float(grid[0]), float(grid[-1])
    ((1024,), 3900.0, 5500.0)
    >>> round(PreprocessConfig(grid=blue).pixel_scale_aa, 3)  # Å per pixel
    1.564
    >>> GridConfig(n_pixels=8)
    Traceback (most recent call last):
    ...
    astro_spt.exceptions.InvalidConfigError: grid: n_pixels must be an integer >= 16, got 8
    """

    wavelength_min_aa: float = 3800.0
    wavelength_max_aa: float = 9100.0
    n_pixels: int = 4096
    spacing: str = "linear"

    def __post_init__(self):
        _require(
            0 < self.wavelength_min_aa < self.wavelength_max_aa,
            "grid: need 0 < wavelength_min_aa < wavelength_max_aa, got "
            f"{self.wavelength_min_aa} and {self.wavelength_max_aa}",
        )
        _require(
            isinstance(self.n_pixels, int) and self.n_pixels >= 16,
            f"grid: n_pixels must be an integer >= 16, got {self.n_pixels!r}",
        )
        _require(
            self.spacing in _SPACINGS,
            f"grid: spacing must be one of {_SPACINGS}, got {self.spacing!r}",
        )

    @property
    def pixel_scale_aa(self) -> float:
        """Mean grid step in Å.

        Examples
        --------
        >>> from astro_spt.preprocess import GridConfig
        >>> round(GridConfig().pixel_scale_aa, 4)  # 5,300 Å in 4,095 steps
        1.2943
        """
        return (self.wavelength_max_aa - self.wavelength_min_aa) / (self.n_pixels - 1)


@dataclass(frozen=True)
class AnomalyConfig:
    """Thresholds of anomaly detection and repair (SPT paper §3.2, Fig. 4).

    The defaults were tuned on the 1,979 real LAMOST DR10 spectra of the development set
    so that untouched spectra rarely trip a bit (see ``docs/preprocess.rst`` for the
    measured fractions).

    Parameters
    ----------
    max_gap_aa : float
        Runs of missing pixels (NaN, infinite, zero inverse variance, masked) up to this
        length are interpolated over and only set ``repaired_pixels``; longer runs are
        interpolated too but also set ``missing_values``.
    max_missing_fraction : float
        ``missing_values`` is also set when the missing pixels outside
        ``standard_mask_windows_aa`` are more than this fraction of the covered grid.
    standard_mask_windows_aa : tuple of (float, float)
        Wavelength windows (Å, vacuum, on the rest-frame model grid) that surveys
        routinely mask. Missing pixels inside them are repaired and counted
        (``n_repaired``, ``repaired_pixels``, ``heavy_damage``) like any others, but do
        not set ``missing_values``: a gap counts towards ``max_gap_aa`` with its pixels
        outside the windows only (so a gap that runs out of a window by more than
        ``max_gap_aa`` still sets it), and only the missing pixels outside the windows
        count towards ``max_missing_fraction``. ``masked_standard_regions``
        (informational) is set instead; ``()`` makes every gap count.
        The defaults are the windows the LAMOST files of the development set mask
        routinely, measured on the model grid: the blue end below 4,000 Å (low
        throughput: 49 % of it missing on average in the 10 DR1 files, more than 20 % in 7
        of them); the telluric O₂ A band, 7,550-7,700 Å (every DR1 file has zero inverse
        variance over about 7,580-7,680 Å, 68 % of the window); and the red end above
        9,000 Å (low throughput and sky lines: 54 % of it missing on average in the DR1
        files, more than 20 % in 9 of them, and more than 20 % in 22 % of the 1,979 DR10
        files, against 0.4-4 % for windows of that width elsewhere). DR10 masks neither
        the blue end nor the A band routinely (3 % and 0.5 % of its files over 20 %).
        With these windows, ``missing_values`` falls from 10 of 10 DR1 files to none,
        and from 7.8 % to 5.0 % of the DR10 files (of the 56 cleared, the blue end alone
        clears 19, the A band 1, the red end 34). The windows reach 20-30 Å beyond the
        masks, room for the rest-frame shift of these observed-frame masks at radial
        velocities up to about 700 km/s; their outer bounds lie beyond LAMOST's
        3,690-9,100 Å, so that they reach the ends of the spectrum on any grid.
        Left out, because no release masks them routinely: the telluric B band near
        6,870 Å (no DR1 file, 0.3 % of DR10 files over 20 %) and the dichroic join of the
        blue and red arms at 5,700-5,900 Å (no DR1 file, 5 % of DR10 files over 20 %;
        it is the commonest place of DR10's long gaps, which are real defects).
    standard_mask_min_fraction : float
        ``masked_standard_regions`` is set when more than this fraction of the covered
        grid pixels of one of the windows is missing. At 20 % scattered bad pixels rarely
        set it: windows of the same width elsewhere reach it in 0.4-4 % of the DR10 files
        (10 % would be reached in 1.4-9 %).
    max_uncovered_fraction : float
        ``poor_coverage`` is set when more than this fraction of the grid lies outside the
        input's wavelength range.
    min_valid_fraction : float
        With fewer valid pixels than this fraction of the grid the spectrum is
        ``unreadable`` and its row is NaN.
    min_repaired_fraction : float
        ``repaired_pixels`` is set when more than this fraction of the grid was repaired
        (most LAMOST spectra have a few zero-inverse-variance pixels, so flagging every
        repair would flag nearly all of them; the exact count is in the result).
    heavy_damage_fraction : float
        ``heavy_damage`` is set when more than this fraction of the grid was repaired or
        not measured.
    spike_window : int
        Width in pixels of the running median that spikes are measured against (odd).
    spike_threshold : float
        A pixel is a spike (or trough) when it lies more than this many standard
        deviations above (or below) the running median...
    spike_min_relative : float
        ... and departs from it by more than this fraction of the running median: real
        absorption-line cores are significant troughs at high S/N, but shallower.
    negative_min_run_aa : float
        ``negative_flux`` is set by a run of negative flux at least this long.
    min_snr : float
        ``low_snr`` is set when the median per-pixel signal-to-noise ratio is lower.
    oscillation_min_period_aa, oscillation_max_period_aa : float
        Period band in which ripples are searched for (5 Å is four pixels of the
        default grid; a band from 10 Å missed every ripple of 10 Å and shorter).
    oscillation_threshold : float
        A ripple is a periodogram peak that many times higher than the median power of
        its block of 32 neighbouring frequencies (the highest ratio among the DR10
        development spectra is 30, the median 10) ...
    oscillation_min_amplitude : float
        ... and whose amplitude is at least this fraction of the continuum.

    Raises
    ------
    astro_spt.exceptions.InvalidConfigError
        If a value is out of range.

    Examples
    --------
    A spectrum with a per-pixel S/N of 5 is flagged ``low_snr`` by the default threshold
    (10), not by a laxer one:

    >>> import numpy as np
    >>> from astro_spt.flags import decode_flags
    >>> from astro_spt.preprocess import AnomalyConfig, PreprocessConfig, detect_anomalies
    >>> rng = np.random.default_rng(0)
    >>> lines = rng.uniform(0, 4096, 300)  # absorption lines, 30 % deep, at pixels
    >>> profile = np.exp(-0.5 * ((np.arange(4096)[:, None] - lines) / 2) ** 2).sum(1)
    >>> flux = 100 * (1 - 0.3 * np.minimum(profile, 1)) + rng.normal(0, 1, (1, 4096))
    >>> ivar = np.full_like(flux, 1 / 20**2)  # an error of 20 per pixel: S/N = 5
    >>> decode_flags(detect_anomalies(flux, ivar).flags)
    [['low_snr']]
    >>> lax = PreprocessConfig(anomalies=AnomalyConfig(min_snr=3.0))
    >>> decode_flags(detect_anomalies(flux, ivar, config=lax).flags)
    [[]]
    >>> AnomalyConfig(spike_window=6)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    astro_spt.exceptions.InvalidConfigError: anomalies: spike_window must be an odd integer ...
    """

    max_gap_aa: float = 50.0
    max_missing_fraction: float = 0.1
    standard_mask_windows_aa: tuple[tuple[float, float], ...] = (
        (3600.0, 4000.0),
        (7550.0, 7700.0),
        (9000.0, 9300.0),
    )
    standard_mask_min_fraction: float = 0.2
    max_uncovered_fraction: float = 0.05
    min_valid_fraction: float = 0.5
    min_repaired_fraction: float = 0.01
    heavy_damage_fraction: float = 0.2
    spike_window: int = 7
    spike_threshold: float = 8.0
    spike_min_relative: float = 0.5
    negative_min_run_aa: float = 13.0
    min_snr: float = 10.0
    oscillation_min_period_aa: float = 5.0
    oscillation_max_period_aa: float = 300.0
    oscillation_threshold: float = 40.0
    oscillation_min_amplitude: float = 0.01

    def __post_init__(self):
        # JSON brings the windows back as lists: store them as a tuple of float pairs, so
        # that the dataclass stays hashable and equal to the one it was saved from.
        object.__setattr__(
            self, "standard_mask_windows_aa", _windows(self.standard_mask_windows_aa)
        )
        for name in (
            "max_missing_fraction",
            "standard_mask_min_fraction",
            "max_uncovered_fraction",
            "min_valid_fraction",
            "min_repaired_fraction",
            "heavy_damage_fraction",
        ):
            value = getattr(self, name)
            _require(0 <= value <= 1, f"anomalies: {name} must lie in [0, 1], got {value}")
        _require(
            isinstance(self.spike_window, int) and self.spike_window >= 3 and self.spike_window % 2,
            f"anomalies: spike_window must be an odd integer >= 3, got {self.spike_window}",
        )
        for name in (
            "max_gap_aa",
            "spike_threshold",
            "spike_min_relative",
            "negative_min_run_aa",
            "oscillation_threshold",
        ):
            value = getattr(self, name)
            _require(value > 0, f"anomalies: {name} must be positive, got {value}")
        _require(self.min_snr >= 0, f"anomalies: min_snr must be >= 0, got {self.min_snr}")
        _require(
            0 < self.oscillation_min_period_aa < self.oscillation_max_period_aa,
            "anomalies: need 0 < oscillation_min_period_aa < oscillation_max_period_aa",
        )
        _require(
            self.oscillation_min_amplitude >= 0,
            "anomalies: oscillation_min_amplitude must be >= 0",
        )


@dataclass(frozen=True)
class DenoiseConfig:
    """MODWT denoising (SPT paper §3.2: maximal-overlap DWT, Haar wavelet).

    Parameters
    ----------
    enabled : bool
        Whether to denoise at all.
    wavelet : str
        PyWavelets wavelet name; the paper uses ``'haar'``.
    level : int
        Number of MODWT levels J (open in the paper). The default 2 thresholds details on
        scales up to 2**2 = 4 pixels (about 5 Å), below a LAMOST resolution element
        (R ~ 1,800); coarser scales carry the spectral lines and are left alone. On the
        real-data benchmark (``docs/benchmarks.rst``) J = 2 gave the lowest validation
        error of J = 2, 4, 6 and no denoising; deeper denoising erased information.
    threshold : {'universal', 'level'}
        ``'universal'``: the universal threshold σ_j·sqrt(2 ln n) with the noise σ estimated
        from the median absolute deviation of the finest details and scaled to each level
        as white noise would be (Percival & Walden 2000, §10.5). ``'level'``: σ_j estimated
        from each level's own details.
    mode : {'soft', 'hard'}
        Thresholding function; soft shrinks the kept coefficients and avoids ringing.

    Raises
    ------
    astro_spt.exceptions.InvalidConfigError
        If a value is out of range.

    Examples
    --------
    Denoising smooths the preprocessed flux; without it the pixel-to-pixel noise stays:

    >>> import numpy as np
    >>> from specutils import Spectrum
    >>> from astro_spt.io import example_files
    >>> from astro_spt.preprocess import DenoiseConfig, PreprocessConfig, preprocess
    >>> spectrum = Spectrum.read(example_files()[0])
    >>> raw = PreprocessConfig(denoise=DenoiseConfig(enabled=False))
    >>> def roughness(flux):  # mean absolute difference between neighbouring pixels
    ...     return float(np.mean(np.abs(np.diff(flux[0]))))
    >>> bool(roughness(preprocess(spectrum).flux) < roughness(preprocess(spectrum, raw).flux))
    True
    >>> DenoiseConfig(level=13)
    Traceback (most recent call last):
    ...
    astro_spt.exceptions.InvalidConfigError: denoise: level must be an integer in [1, 12], got 13
    """

    enabled: bool = True
    wavelet: str = "haar"
    # level, threshold and mode: settled on validation data, docs/benchmarks.rst (the
    # per-level rule and hard thresholding were ties with the defaults)
    level: int = 2
    threshold: str = "universal"
    mode: str = "soft"

    def __post_init__(self):
        _require(
            isinstance(self.level, int) and 1 <= self.level <= 12,
            f"denoise: level must be an integer in [1, 12], got {self.level!r}",
        )
        _require(
            self.threshold in _THRESHOLD_RULES,
            f"denoise: threshold must be one of {_THRESHOLD_RULES}, got {self.threshold!r}",
        )
        _require(
            self.mode in _THRESHOLD_MODES,
            f"denoise: mode must be one of {_THRESHOLD_MODES}, got {self.mode!r}",
        )


@dataclass(frozen=True)
class NormalizeConfig:
    """Flux normalisation (open in the SPT paper, §3.2: "normalization").

    Parameters
    ----------
    method : {'standardize', 'continuum', 'median', 'none'}
        ``'standardize'`` (default): subtract the mean and divide by the standard
        deviation of each spectrum; it keeps the spectral shape. On the real-data
        benchmark (``docs/benchmarks.rst``) it gave the lowest validation error of the
        three methods, mostly through Teff, which the continuum slope carries; note
        that the slope also carries interstellar reddening and flux-calibration errors.
        ``'continuum'``: divide by a pseudo-continuum, the inverse-variance weighted
        Gaussian running mean of the flux, as Ho et al. (2017, ApJ 836, 5) did to learn
        red-giant masses and ages from LAMOST spectra; it removes the flux-calibration
        and extinction slopes and keeps the lines. ``'median'``: divide by the median
        flux (keeps the spectral shape). ``'none'``: leave the flux as it is.
    continuum_sigma_aa : float
        Standard deviation of the Gaussian kernel of the pseudo-continuum (Ho et al. 2017
        used 50 Å).

    Raises
    ------
    astro_spt.exceptions.InvalidConfigError
        If ``method`` is unknown or ``continuum_sigma_aa`` is not positive.

    Examples
    --------
    Divide each spectrum by its median flux instead of standardising it:

    >>> import numpy as np
    >>> from specutils import Spectrum
    >>> from astro_spt.io import example_files
    >>> from astro_spt.preprocess import NormalizeConfig, PreprocessConfig, preprocess
    >>> spectrum = Spectrum.read(example_files()[0])
    >>> config = PreprocessConfig(normalize=NormalizeConfig(method="median"))
    >>> round(float(np.median(preprocess(spectrum, config).flux)), 3)
    1.0
    >>> NormalizeConfig(method="mean")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    astro_spt.exceptions.InvalidConfigError: normalize: method must be one of (...), got 'mean'
    """

    # settled on validation data, docs/benchmarks.rst
    method: str = "standardize"
    continuum_sigma_aa: float = 50.0

    def __post_init__(self):
        _require(
            self.method in NORMALIZE_METHODS,
            f"normalize: method must be one of {NORMALIZE_METHODS}, got {self.method!r}",
        )
        _require(
            self.continuum_sigma_aa > 0,
            f"normalize: continuum_sigma_aa must be positive, got {self.continuum_sigma_aa}",
        )


_SECTIONS = {
    "grid": GridConfig,
    "anomalies": AnomalyConfig,
    "denoise": DenoiseConfig,
    "normalize": NormalizeConfig,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """Every setting of the preprocessing layer.

    Parameters
    ----------
    grid : `GridConfig`
    anomalies : `AnomalyConfig`
    denoise : `DenoiseConfig`
    normalize : `NormalizeConfig`

    Examples
    --------
    >>> import json
    >>> from astro_spt.preprocess import PreprocessConfig, DenoiseConfig
    >>> config = PreprocessConfig(denoise=DenoiseConfig(level=3))
    >>> config.grid.n_pixels
    4096
    >>> text = json.dumps(config.to_dict())
    >>> PreprocessConfig.from_dict(json.loads(text)) == config
    True
    >>> PreprocessConfig.from_dict({"denoise": {"levels": 3}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    astro_spt.exceptions.InvalidConfigError: unknown key(s) in section 'denoise': ['levels']; ...
    """

    grid: GridConfig = field(default_factory=GridConfig)
    anomalies: AnomalyConfig = field(default_factory=AnomalyConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)

    def __post_init__(self):
        for name, cls in _SECTIONS.items():
            _require(
                isinstance(getattr(self, name), cls),
                f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}",
            )
        levels = self.denoise.level
        _require(
            not self.denoise.enabled or 2**levels <= self.grid.n_pixels,
            f"denoise: level {levels} needs at least {2**levels} grid pixels",
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the settings as a nested dict of JSON types.

        Examples
        --------
        >>> from astro_spt.preprocess import PreprocessConfig
        >>> settings = PreprocessConfig().to_dict()
        >>> list(settings)
        ['grid', 'anomalies', 'denoise', 'normalize']
        >>> settings["denoise"]
        {'enabled': True, 'wavelet': 'haar', 'level': 2, 'threshold': 'universal', 'mode': 'soft'}
        >>> settings["anomalies"]["standard_mask_windows_aa"]
        [[3600.0, 4000.0], [7550.0, 7700.0], [9000.0, 9300.0]]
        """
        settings = dataclasses.asdict(self)
        anomalies = settings["anomalies"]
        anomalies["standard_mask_windows_aa"] = [
            list(window) for window in anomalies["standard_mask_windows_aa"]
        ]
        return settings

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        """Build a configuration from `to_dict` output; missing keys take their defaults.

        Raises
        ------
        astro_spt.exceptions.InvalidConfigError
            On an unknown section or key, or an invalid value.

        Examples
        --------
        >>> from astro_spt.preprocess import PreprocessConfig
        >>> config = PreprocessConfig.from_dict({"normalize": {"method": "continuum"}})
        >>> config.normalize.method, config.denoise.level  # the rest keeps its defaults
        ('continuum', 2)
        >>> PreprocessConfig.from_dict(config.to_dict()) == config
        True
        """
        if not isinstance(data, dict):
            raise InvalidConfigError(f"expected a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise InvalidConfigError(
                f"unknown section(s) {unknown}; known sections: {list(_SECTIONS)}"
            )
        sections = {}
        for name, section_cls in _SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                raise InvalidConfigError(
                    f"section {name!r} must be a dict, got {type(values).__name__}"
                )
            known = [f.name for f in dataclasses.fields(section_cls)]
            unknown = [key for key in values if key not in known]
            if unknown:
                raise InvalidConfigError(
                    f"unknown key(s) in section {name!r}: {unknown}; known keys: {known}"
                )
            sections[name] = section_cls(**values)
        return cls(**sections)

    @property
    def pixel_scale_aa(self) -> float:
        """Mean grid step in Å (that of ``grid``).

        Examples
        --------
        >>> from astro_spt.preprocess import GridConfig, PreprocessConfig
        >>> config = PreprocessConfig(grid=GridConfig(3800.0, 9100.0, n_pixels=2049))
        >>> config.pixel_scale_aa
        2.587890625
        """
        return self.grid.pixel_scale_aa


def _pixels(length_aa: float, pixel_scale_aa: float) -> int:
    """A length in Å as a whole number of grid pixels (at least 1)."""
    return max(1, round(length_aa / pixel_scale_aa))
