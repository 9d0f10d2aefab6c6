"""From `specutils` spectra to a float32 matrix on the model grid, with quality flags.

`preprocess` runs the data preparation of SPT paper §3.2 on any batch of spectra: unit
conversion, air to vacuum, rest frame, linear interpolation onto the model grid (with mask
and inverse variance), anomaly repair and flagging, MODWT denoising and normalisation.
Only the extraction of arrays from the spectrum objects loops over spectra; the numerics
run on whole chunks of rows.
"""

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import astropy.units as u
import numpy as np

from astro_spt import flags as _flags
from astro_spt.exceptions import AstroSPTWarning, InvalidSpectrumError

from ._numerics import nanmedian_rows
from .anomalies import detect_anomalies
from .config import PreprocessConfig
from .denoise import denoise_modwt
from .grid import air_to_vacuum, make_wavelength_grid, resample_to_grid
from .normalize import normalize

__all__ = ["PreprocessResult", "preprocess"]

_F_LAMBDA = u.erg / u.s / u.cm**2 / u.AA
# LAMOST headers mark an unknown redshift with this value.
_UNKNOWN_REDSHIFT = -9999


@dataclass
class PreprocessResult:
    """Spectra on the model grid, ready for PCA, with their quality flags.

    Attributes
    ----------
    flux : `~numpy.ndarray` of float32, shape (n, n_pixels)
        Preprocessed flux, one row per input spectrum, in input order; NaN rows for
        spectra flagged ``unreadable``.
    flags : `~numpy.ndarray` of `~astro_spt.flags.FLAG_DTYPE`, shape (n,)
        Bit mask per spectrum (`astro_spt.flags`).
    wavelength : `~astropy.units.Quantity`, shape (n_pixels,)
        The model grid (vacuum, rest frame).
    ivar : `~numpy.ndarray` of float32, shape (n, n_pixels)
        Inverse variance of the normalised, not denoised, flux; 0 where ``mask``.
    mask : `~numpy.ndarray` of bool, shape (n, n_pixels)
        True where the flux is not a measurement (repaired, or outside the input's range).
    n_repaired : `~numpy.ndarray` of int, shape (n,)
        Repaired pixels per spectrum.
    snr : `~numpy.ndarray`, shape (n,)
        Median per-pixel signal-to-noise ratio on the grid (before denoising).
    coverage : `~numpy.ndarray`, shape (n,)
        Fraction of the grid inside the input's wavelength range.
    redshift : `~numpy.ndarray`, shape (n,)
        Redshift used for the rest frame; NaN where unknown (flag ``no_redshift``).
    config : `~astro_spt.preprocess.PreprocessConfig`
        The settings used.
    messages : dict
        Why a spectrum could not be read, by row index.

    Examples
    --------
    The six example LAMOST spectra, preprocessed with the default settings:

    >>> import numpy as np
    >>> from specutils import Spectrum
    >>> from astro_spt.io import example_files
    >>> from astro_spt.preprocess import PreprocessConfig, preprocess
    >>> result = preprocess([Spectrum.read(path) for path in example_files()])
    >>> len(result), result.flux.shape, result.flux.dtype
    (6, (6, 4096), dtype('float32'))
    >>> result.wavelength.shape, result.wavelength.unit
    ((4096,), Unit("Angstrom"))
    >>> result.flag_names[0]  # DR1 masks the telluric A band: interpolated over
    ['repaired_pixels', 'masked_standard_regions']
    >>> result.n_repaired.tolist()
    [227, 165, 350, 238, 272, 221]
    >>> np.round(result.snr).astype(int).tolist()  # median S/N per grid pixel
    [28, 52, 20, 15, 72, 117]
    >>> result.config == PreprocessConfig(), result.messages
    (True, {})
    """

    flux: np.ndarray
    flags: np.ndarray
    wavelength: u.Quantity
    ivar: np.ndarray
    mask: np.ndarray
    n_repaired: np.ndarray
    snr: np.ndarray
    coverage: np.ndarray
    redshift: np.ndarray
    config: PreprocessConfig
    messages: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.flux.shape[0]

    @property
    def flag_names(self) -> list[list[str]]:
        """The names of the flags of each spectrum (`astro_spt.flags.decode_flags`).

        Examples
        --------
        Two synthetic spectra, of S/N 50 and 5 per pixel:

        >>> import numpy as np
        >>> import astropy.units as u
        >>> from astropy.nddata import InverseVariance
        >>> from specutils import Spectrum
        >>> from astro_spt.preprocess import preprocess
        >>> wavelength = np.linspace(3700, 9200, 3000) * u.AA
        >>> rng = np.random.default_rng(0)
        >>> lines = rng.uniform(3700, 9200, 300)  # absorption lines, 30 % deep
        >>> profile = np.exp(-0.5 * ((wavelength.value[:, None] - lines) / 2.5) ** 2).sum(1)
        >>> flux = 100 * (1 - 0.3 * np.minimum(profile, 1)) + rng.normal(0, 2, (2, 3000))
        >>> ivar = np.stack([np.full(3000, 1 / 2**2), np.full(3000, 1 / 20**2)])
        >>> spectra = Spectrum(flux=flux * u.Unit("1e-17 erg / (s cm2 AA)"),
        ...                    spectral_axis=wavelength, uncertainty=InverseVariance(ivar),
        ...                    meta={"air": False})  # vacuum wavelengths
        >>> preprocess(spectra, redshift=0.0).flag_names
        [[], ['low_snr']]
        >>> preprocess(spectra).flag_names  # no redshift known: not shifted, flagged
        [['no_redshift'], ['low_snr', 'no_redshift']]
        """
        return _flags.decode_flags(self.flags)


@dataclass
class _Row:
    """One spectrum's arrays, in Å, vacuum, rest frame (or the reason it has none)."""

    wavelength: np.ndarray | None = None
    flux: np.ndarray | None = None
    ivar: np.ndarray | None = None
    mask: np.ndarray | None = None
    redshift: float = np.nan
    error: str | None = None


def _as_list(spectra) -> list:
    if isinstance(spectra, list) and all(isinstance(item, PlainSpectrum) for item in spectra):
        return spectra  # without importing specutils (seconds)
    from specutils import Spectrum, SpectrumList

    if isinstance(spectra, Spectrum):
        return [spectra]
    if isinstance(spectra, SpectrumList | Sequence) and not isinstance(spectra, str | bytes):
        items = list(spectra)
        for index, item in enumerate(items):
            if not isinstance(item, Spectrum | PlainSpectrum):
                raise InvalidSpectrumError(
                    f"item {index} is a {type(item).__name__}, not a specutils Spectrum"
                )
        return items
    raise InvalidSpectrumError(
        "expected a specutils Spectrum, a SpectrumList or a list of Spectrum, got "
        f"{type(spectra).__name__}"
    )


def _per_row(value, n: int, name: str) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return np.full(n, float(array))
    if array.shape != (n,):
        raise InvalidSpectrumError(f"{name} has shape {array.shape}; expected () or ({n},)")
    return array


def _velocity_to_redshift(velocity) -> np.ndarray:
    from astropy.constants import c

    beta = (u.Quantity(velocity, u.km / u.s) / c).to_value(u.dimensionless_unscaled)
    # Relativistic Doppler shift, as specutils converts radial_velocity to redshift.
    return np.sqrt((1 + beta) / (1 - beta)) - 1


def _redshift_of(spectrum, k: int) -> np.ndarray:
    """Redshift of each of the k rows of a spectrum from its attributes or meta; NaN if
    unknown."""
    meta = spectrum.meta or {}
    for key in ("redshift", "z"):
        if meta.get(key) is not None:
            return _per_row(u.Quantity(meta[key]).value, k, f"meta[{key!r}]")
    if meta.get("radial_velocity") is not None:
        return _per_row(_velocity_to_redshift(meta["radial_velocity"]), k, "radial_velocity")
    redshift = float(np.asarray(spectrum.redshift.value))
    if redshift != 0:
        return np.full(k, redshift)
    header = meta.get("header")
    if header is not None and "Z" in header:
        z = float(header["Z"])
        if z != _UNKNOWN_REDSHIFT and np.isfinite(z):
            return np.full(k, z)
    return np.full(k, np.nan)


def _truth(value, name: str) -> bool:
    """A yes/no setting of a spectrum's meta or header, which must be one boolean."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer | float | np.floating) and value in (0, 1):
        return bool(value)
    raise InvalidSpectrumError(f"{name} is {value!r:.80}: expected True or False")


# FITS spectral coordinate types (Greisen et al. 2006, Table 1): AWAV is a wavelength in
# air; every other type is in vacuum or does not depend on the medium.
_VACUUM_CTYPES = ("WAVE", "FREQ", "WAVN", "ENER", "VRAD", "VOPT", "ZOPT", "VELO", "BETA")


def _is_air(spectrum) -> bool | None:
    """Whether a spectrum's wavelengths are in air; None when nothing says.

    In order: ``meta['air']``, ``meta['vacuum']``, the ``VACUUM`` keyword of
    ``meta['header']``, the spectral axis' FITS type (``AWAV`` is air, ``WAVE`` vacuum)
    in the header's ``CTYPE1`` or the spectrum's WCS (specutils' ``wcs1d-fits`` reader
    keeps it there), and a frequency, wavenumber or energy axis, which is no wavelength.
    """
    meta = spectrum.meta or {}
    if meta.get("air") is not None:
        return _truth(meta["air"], "meta['air']")
    if meta.get("vacuum") is not None:
        return not _truth(meta["vacuum"], "meta['vacuum']")
    header = meta.get("header")
    if header is not None and "VACUUM" in header:
        return not _truth(header["VACUUM"], "header keyword VACUUM")
    ctype = _spectral_ctype(spectrum, header)
    if ctype is not None:
        if ctype.startswith("AWAV"):
            return True
        if ctype.startswith(_VACUUM_CTYPES):
            return False
    unit = getattr(spectrum.spectral_axis, "unit", None)
    if unit is not None and not unit.is_equivalent(u.m):
        return False
    return None


def _spectral_ctype(spectrum, header) -> str | None:
    """The FITS type of the spectral axis (``CTYPE1``, upper case), if the header or an
    astropy WCS of the spectrum has one."""
    try:
        if header is not None and isinstance(header.get("CTYPE1"), str):
            return header["CTYPE1"].strip().upper()
        wcs = getattr(spectrum.wcs, "wcs", None)  # astropy.wcs.WCS has one, gwcs none
        if wcs is not None and wcs.spec >= 0:
            return str(wcs.ctype[wcs.spec]).strip().upper()
    except Exception:  # a header or WCS of any shape: the medium stays unknown
        return None
    return None


@functools.lru_cache(maxsize=64)
def _ivar_factor(ivar_unit, flux_unit) -> float:
    """What multiplies an inverse variance in ``ivar_unit`` to express it per flux_unit²."""
    if ivar_unit is None or flux_unit is None:
        return 1.0
    try:
        return ivar_unit.to(flux_unit**-2)
    except u.UnitConversionError:
        raise InvalidSpectrumError(
            f"uncertainty unit {ivar_unit} does not match flux unit {flux_unit}"
        ) from None


def _inverse_variance(spectrum, flux_unit) -> np.ndarray | None:
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    uncertainty = spectrum.uncertainty
    if uncertainty is None:
        return None
    values = np.asarray(uncertainty.array, dtype=np.float64)
    unit = uncertainty.unit
    # The common types directly (represent_as costs half a millisecond per spectrum).
    with np.errstate(divide="ignore", invalid="ignore"):
        if isinstance(uncertainty, InverseVariance):
            pass
        elif isinstance(uncertainty, StdDevUncertainty):
            values, unit = 1 / values**2, None if unit is None else unit**-2
        elif isinstance(uncertainty, VarianceUncertainty):
            values, unit = 1 / values, None if unit is None else unit**-1
        else:
            converted = uncertainty.represent_as(InverseVariance)
            values, unit = np.asarray(converted.array, dtype=np.float64), converted.unit
    return values * _ivar_factor(unit, flux_unit)


def _der_snr_ivar(flux: np.ndarray) -> np.ndarray:
    """Constant inverse variance from the DER_SNR noise estimate (Stoehr et al. 2008)."""
    f = np.where(np.isfinite(flux), flux, np.nan)
    second = np.abs(2 * f[..., 2:-2] - f[..., :-4] - f[..., 4:])
    noise = 1.482602 / np.sqrt(6) * nanmedian_rows(second)
    ivar = np.zeros_like(noise)
    np.divide(1.0, noise**2, out=ivar, where=np.isfinite(noise) & (noise > 0))
    return np.broadcast_to(ivar[..., None], flux.shape)


@functools.lru_cache(maxsize=64)
def _is_spectral(unit) -> bool:
    return unit is not None and unit.is_equivalent(u.AA, equivalencies=u.spectral())


@functools.lru_cache(maxsize=64)
def _is_logarithmic(unit) -> bool:
    """Magnitudes, dex, decibels: a flux in them rises where the light falls."""
    return unit is not None and unit.is_equivalent(u.mag)


@functools.lru_cache(maxsize=64)
def _is_per_frequency(unit) -> bool:
    # Building the spectral_density equivalency costs about a millisecond: decide once
    # per unit, not once per spectrum.
    return not unit.is_equivalent(_F_LAMBDA) and unit.is_equivalent(
        _F_LAMBDA, equivalencies=u.spectral_density(1 * u.AA)
    )


class PlainSpectrum(NamedTuple):
    """One spectrum as bare arrays, for readers that skip `~specutils.Spectrum` (private).

    `astro_spt.estimate` reads LAMOST files into these: building the Spectrum would cost
    half of reading a file and importing specutils seconds. ``preprocess`` takes them in
    place of a Spectrum and gives the same rows, bit for bit, as for the Spectrum
    `~astro_spt.io.read_lamost_lrs` builds from the same arrays.
    """

    wavelength: np.ndarray  # Å, 1-D
    flux: np.ndarray  # F_lambda in any unit, 1-D
    ivar: np.ndarray  # inverse variance of the flux
    mask: np.ndarray  # True for bad pixels
    redshift: float  # NaN when unknown
    air: bool
    meta: dict | None = None  # as a Spectrum's (e.g. the obsid), not used here


def _extract_plain(item: PlainSpectrum, redshift, air) -> list[_Row]:
    """The row of a `PlainSpectrum`, as `_extract` makes it of the equivalent Spectrum."""
    wavelength = np.asarray(item.wavelength, dtype=np.float64)
    values = np.asarray(item.flux, dtype=np.float64)
    _check_axis(wavelength, values, wavelength.shape)
    ivar = np.asarray(item.ivar, dtype=np.float64)
    z = (lambda k: np.full(k, float(item.redshift))) if redshift is None else redshift
    is_air = bool(item.air) if air is None else air
    return _rows_of(wavelength, values, ivar, item.mask, z, is_air)


def _simple_row(wavelength, values, ivar, mask, z: float) -> _Row | None:
    """The row `_rows_of` makes of one spectrum in vacuum with a finite, strictly
    increasing rest-frame axis, or None for any other (which takes the long way, with its
    messages). Such an axis implies every check of the long way: dividing by a positive
    shift keeps the order and the finiteness of the wavelengths."""
    if not (values.shape == ivar.shape == mask.shape == wavelength.shape):
        return None
    key = z if np.isfinite(z) else np.nan
    shift = 1 + key if np.isfinite(key) else 1.0
    if not shift > 0:
        return None
    rest = wavelength / shift
    if not (np.all(np.isfinite(rest)) and np.all(rest[1:] > rest[:-1])):
        return None
    return _Row(rest, values, ivar, mask, key)


def _check_axis(wavelength, values, shape) -> None:
    if wavelength.ndim != 1 or wavelength.size != values.shape[-1]:
        raise InvalidSpectrumError(
            f"spectral axis of shape {shape} does not match flux of shape "
            f"{values.shape} (bin edges are not supported)"
        )
    if wavelength.size < 2:
        raise InvalidSpectrumError(f"need at least 2 pixels, got {wavelength.size}")
    if not np.all(np.isfinite(wavelength)):
        raise InvalidSpectrumError("the spectral axis has non-finite values")


def _extract(spectrum, redshift, air) -> list[_Row]:
    """The rows of one Spectrum (several for a 2-D flux)."""
    spectral_axis = u.Quantity(spectrum.spectral_axis)
    unit = spectral_axis.unit
    if not _is_spectral(unit):
        raise InvalidSpectrumError(
            f"the spectral axis has unit {unit!r}, which is not a wavelength, frequency, "
            "wavenumber or energy"
        )
    flux = u.Quantity(spectrum.flux)
    if flux.ndim not in (1, 2):
        raise InvalidSpectrumError(f"flux must be 1-D or 2-D, got shape {flux.shape}")
    if flux.dtype.kind not in "iuf":
        raise InvalidSpectrumError(f"flux must be real numbers, got dtype {flux.dtype}")
    if _is_logarithmic(flux.unit):
        raise InvalidSpectrumError(
            f"the flux has unit {flux.unit!r}, which is logarithmic: absorption lines "
            "would read as emission; give a linear flux (magnitudes m as 10**(-0.4 m))"
        )
    if unit == u.AA:
        wavelength = spectral_axis.value.astype(np.float64)
    else:
        wavelength = spectral_axis.to_value(u.AA, equivalencies=u.spectral())
    _check_axis(wavelength, flux, spectral_axis.shape)
    flux_unit = flux.unit
    values = flux.value.astype(np.float64)
    ivar = _inverse_variance(spectrum, flux_unit)
    factor = None
    if _is_per_frequency(flux_unit):
        # F_nu has another spectral shape than F_lambda: convert it.
        factor = (1 * flux_unit).to_value(
            _F_LAMBDA, equivalencies=u.spectral_density(wavelength * u.AA)
        )
        values = values * factor
    if ivar is None:
        ivar = _der_snr_ivar(values)
    elif factor is not None:
        ivar = ivar / factor**2
    if ivar.shape != values.shape:
        raise InvalidSpectrumError(
            f"uncertainty of shape {ivar.shape} does not match flux of shape {values.shape}"
        )
    z = (lambda k: _redshift_of(spectrum, k)) if redshift is None else redshift
    return _rows_of(wavelength, values, ivar, spectrum.mask, z, air)


def _rows_of(wavelength, values, ivar, mask, z, air) -> list[_Row]:
    """Rows in Å, vacuum, rest frame, from arrays in Å (increasing or decreasing); ``z``
    the rows' redshifts or a function of their number that gives them."""
    mask = np.zeros(values.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != values.shape:
        raise InvalidSpectrumError(
            f"mask of shape {mask.shape} does not match flux of shape {values.shape}"
        )
    if not air and values.ndim == 1:
        try:
            z = z(1) if callable(z) else z
            first = float(z[0])
        except Exception:  # raised again by the long way, after its own checks
            first = None
        row = None if first is None else _simple_row(wavelength, values, ivar, mask, first)
        if row is not None:
            return [row]

    steps = np.diff(wavelength)
    if np.all(steps < 0):
        # A frequency axis, or a wavelength axis stored backwards: same spectrum, reversed.
        wavelength, values = wavelength[::-1], values[..., ::-1]
        ivar, mask = ivar[..., ::-1], mask[..., ::-1]
    elif not np.all(steps > 0):
        kind = "duplicate" if np.any(steps == 0) else "unsorted"
        raise InvalidSpectrumError(
            f"the spectral axis has {kind} values: it must be strictly monotonic"
        )
    if wavelength[0] < 2000 and air:
        raise InvalidSpectrumError("air wavelengths below 2000 Å cannot be converted")
    if air:
        wavelength = air_to_vacuum(wavelength)

    values = np.atleast_2d(values)
    k = values.shape[0]
    ivar = np.broadcast_to(np.atleast_2d(ivar), values.shape)
    mask = np.broadcast_to(np.atleast_2d(mask), values.shape)
    z = z(k) if callable(z) else z
    rows = []
    shared = {}
    for i in range(k):
        # Rows with the same redshift share one rest-frame wavelength array, which lets
        # the resampler take its faster common-grid path.
        key = float(z[i]) if np.isfinite(z[i]) else np.nan
        if key not in shared:
            shift = 1 + key if np.isfinite(key) else 1.0
            if shift <= 0:
                raise InvalidSpectrumError(f"redshift {key} is not > -1")
            rest = wavelength / shift
            if not (np.all(np.isfinite(rest)) and np.all(np.diff(rest) > 0)):
                # an extreme redshift: the rest-frame axis underflowed or overflowed
                raise InvalidSpectrumError(
                    f"redshift {key:g} leaves no finite, strictly increasing rest-frame wavelengths"
                )
            shared[key] = rest
        rows.append(_Row(shared[key], values[i], ivar[i], mask[i], key))
    return rows


def _collect(spectra, redshift, air, strict) -> tuple[list[_Row], int]:
    """The rows of the spectra, and how many of them have wavelengths of unknown medium
    (taken as vacuum)."""
    items = _as_list(spectra)
    counts = [
        1
        if isinstance(item, PlainSpectrum) or item.flux.ndim < 2
        else int(np.prod(item.flux.shape[:-1]))
        for item in items
    ]
    total = sum(counts)
    redshift = _per_row(redshift, total, "redshift")
    if air is not None:
        air = np.asarray(air, dtype=bool)
        if air.shape not in ((), (total,)):
            raise InvalidSpectrumError(f"air has shape {air.shape}; expected () or ({total},)")
        air = np.broadcast_to(air, (total,))
    rows: list[_Row] = []
    start = 0
    unknown_medium = 0
    for index, (item, k) in enumerate(zip(items, counts, strict=True)):
        z = None if redshift is None else redshift[start : start + k]
        try:
            # Overflow to inf or NaN is caught downstream as unusable pixels; numpy's
            # warnings about it would only depend on the caller's warning filters.
            with np.errstate(all="ignore"):
                if isinstance(item, PlainSpectrum):
                    rows.extend(_extract_plain(item, z, None if air is None else bool(air[start])))
                else:
                    is_air = _is_air(item) if air is None else bool(air[start])
                    rows.extend(_extract(item, z, bool(is_air)))
                    if is_air is None:
                        unknown_medium += k
        except Exception as error:
            # Whatever is wrong with one spectrum (astropy and numpy raise anything from
            # ValueError to IndexError for inconsistent objects) must not abort the batch.
            reason = (
                str(error)
                if isinstance(error, InvalidSpectrumError)
                else f"{type(error).__name__}: {error}"
            )
            if strict:
                raise InvalidSpectrumError(f"spectrum {index}: {reason}") from error
            rows.extend(_Row(error=reason) for _ in range(k))
        start += k
    return rows, unknown_medium


#: The warning of a call whose spectra do not say whether their wavelengths are in air.
UNKNOWN_MEDIUM_MESSAGE = (
    "{n} of {total} spectra do not say whether their wavelengths are in air or in vacuum "
    "(no meta['air'], header keyword VACUUM or spectral type AWAV/WAVE); they are taken as "
    "vacuum. Pass air=True (air=False) to say which"
)


def _stack(rows: list[_Row]):
    """Arrays of a chunk of rows: shared or NaN-padded wavelengths, flux, ivar, mask."""
    first = rows[0].wavelength
    width = max(row.flux.size for row in rows)
    n = len(rows)
    shared = all(row.wavelength is first for row in rows)
    if shared:
        wavelength = first
    else:
        wavelength = np.full((n, width), np.nan)
    flux = np.full((n, width), np.nan)
    ivar = np.zeros((n, width))
    mask = np.ones((n, width), bool)
    for i, row in enumerate(rows):
        size = row.flux.size
        if not shared:
            wavelength[i, :size] = row.wavelength
        flux[i, :size] = row.flux
        ivar[i, :size] = row.ivar
        mask[i, :size] = row.mask
    return wavelength, flux, ivar, mask


def _process_chunk(rows: list[_Row], config: PreprocessConfig, grid: np.ndarray):
    wavelength, flux, ivar, mask = _stack(rows)
    # Bring each spectrum to order unity, so that float32 holds any flux unit (1e-17 cgs
    # fluxes have inverse variances beyond float32's range); every later step is
    # scale-invariant, and the scale is put back for normalisation 'none'.
    good = ~mask & np.isfinite(flux) & (ivar > 0)
    # Every 8th pixel is plenty to find the order of magnitude.
    level = nanmedian_rows(np.where(good, np.abs(flux), np.nan)[:, ::8])
    empty = ~np.isfinite(level)
    if empty.any():  # fewer than one valid pixel in eight
        level[empty] = nanmedian_rows(np.where(good, np.abs(flux), np.nan)[empty])
    level = np.where(np.isfinite(level) & (level > 0), level, 1.0)[:, None]
    resampled = resample_to_grid(
        wavelength, flux / level, ivar * level**2, mask, grid=grid, dtype=np.float32
    )
    result = detect_anomalies(
        resampled.flux, resampled.ivar, resampled.mask, resampled.covered, config
    )
    clean = result.flux
    readable = (result.flags & _flags.UNREADABLE) == 0
    if config.denoise.enabled and readable.any():
        clean = clean.copy()
        clean[readable] = denoise_modwt(
            clean[readable],
            config.denoise.level,
            wavelet=config.denoise.wavelet,
            threshold=config.denoise.threshold,
            mode=config.denoise.mode,
        )
    settings = config.normalize
    normalized, scale = normalize(
        clean,
        settings.method,
        ivar=result.ivar,
        continuum_sigma=settings.continuum_sigma_aa / config.grid.pixel_scale_aa,
    )
    if settings.method == "none":
        scale = scale / level.astype(np.float32)
        normalized = normalized * level.astype(np.float32)
    failed = ~np.all(np.isfinite(normalized), axis=1)
    flags = result.flags.copy()
    flags[failed & readable] |= _flags.UNREADABLE
    unreadable = (flags & _flags.UNREADABLE) != 0
    normalized[unreadable] = np.nan
    ivar_out = (result.ivar * scale**2).astype(np.float32)
    ivar_out[unreadable] = 0
    return normalized.astype(np.float32), ivar_out, flags, result


def preprocess(
    spectra,
    config: PreprocessConfig | None = None,
    *,
    redshift=None,
    air=None,
    strict: bool = False,
    chunk_size: int = 32,
) -> PreprocessResult:
    """Prepare spectra for the model: SPT paper §3.2, steps 1 to 4.

    1. The spectral axis (any length, frequency, wavenumber or energy unit) is converted
       to Å, air wavelengths to vacuum (`air_to_vacuum`), and the spectrum is shifted to
       the rest frame, λ_rest = λ_obs / (1 + z), when its redshift is known.
    2. It is linearly interpolated onto the model grid, carrying mask and inverse
       variance (`resample_to_grid`).
    3. Anomalies are repaired and flagged (`detect_anomalies`).
    4. It is denoised (`denoise_modwt`) and normalised (`normalize`).

    Parameters
    ----------
    spectra : `~specutils.Spectrum`, `~specutils.SpectrumList` or list of `~specutils.Spectrum`
        The input; a `~specutils.Spectrum` with 2-D flux is a batch of spectra on one
        spectral axis (one output row per flux row). Flux densities per unit frequency are
        converted to erg s⁻¹ cm⁻² Å⁻¹; other flux units are used as they are (which
        matters only with normalisation ``'none'``), except logarithmic ones (magnitudes,
        dex), which make the spectrum unreadable, as a complex flux does. The
        uncertainty may be of any astropy type; without one the noise is estimated with
        DER_SNR (Stoehr et al. 2008).
    config : `~astro_spt.preprocess.PreprocessConfig`, optional
        Settings; default ``PreprocessConfig()``.
    redshift : float or array-like, optional
        Redshift of every spectrum, or of each (one value per output row; NaN for
        unknown). By default it is taken from, in order: ``meta['redshift']`` or
        ``meta['z']``, ``meta['radial_velocity']``, the spectrum's ``redshift`` (or
        ``radial_velocity``) attribute when non-zero, the ``Z`` keyword of a FITS header in
        ``meta['header']`` (LAMOST). Spectra without one are not shifted and are flagged
        ``no_redshift``.
    air : bool or array-like of bool, optional
        Whether the wavelengths are in air (one for all, or one per output row). By
        default ``meta['air']``, else ``not meta['vacuum']``, else the ``VACUUM`` keyword
        of ``meta['header']``, else the spectral axis' FITS type (``CTYPE1`` of
        ``meta['header']`` or of the spectrum's WCS, as specutils' ``wcs1d-fits`` reader
        keeps it: ``AWAV`` is air, ``WAVE`` vacuum); a frequency, wavenumber or energy
        axis needs none. Spectra that say nothing are taken as vacuum, with a warning.
        LAMOST files say vacuum.
    strict : bool
        Raise `~astro_spt.exceptions.InvalidSpectrumError` for a spectrum that cannot be
        read or is flagged ``unreadable``, instead of flagging it and returning a NaN row.
    chunk_size : int
        Number of spectra processed together; bounds the working memory (about 0.6 MiB
        per spectrum of a chunk). The results do not depend on it. Larger chunks are not
        faster: 32, with working arrays of 0.5 MiB, measured fastest (256 about 30 %
        slower).

    Returns
    -------
    result : `PreprocessResult`

    Raises
    ------
    astro_spt.exceptions.InvalidSpectrumError
        If ``spectra`` is not a spectrum or a collection of them, or if ``redshift`` has
        the wrong length; with ``strict=True``, for any unusable spectrum.

    Warns
    -----
    astro_spt.exceptions.AstroSPTWarning
        When some spectra could not be read (malformed input: no spectral unit, unsorted
        or duplicate wavelengths, mismatched shapes); their rows are NaN and flagged
        ``unreadable``, and ``result.messages`` says why. Once, when ``air`` is not given
        and some wavelength axes do not say their medium.

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astropy.nddata import InverseVariance
    >>> from specutils import Spectrum
    >>> from astro_spt.preprocess import preprocess
    >>> wavelength = np.linspace(3700, 9200, 3000) * u.AA
    >>> rng = np.random.default_rng(0)
    >>> lines = rng.uniform(3700, 9200, 300)  # absorption lines, 30 % deep
    >>> profile = np.exp(-0.5 * ((wavelength.value[:, None] - lines) / 2.5) ** 2).sum(1)
    >>> flux = 100 * (1 - 0.3 * np.minimum(profile, 1)) + rng.normal(0, 2, (2, 3000))
    >>> flux = flux * u.Unit("1e-17 erg / (s cm2 AA)")
    >>> spectra = Spectrum(flux=flux, spectral_axis=wavelength,
    ...                    uncertainty=InverseVariance(np.full((2, 3000), 0.25)))
    >>> result = preprocess(spectra, redshift=0.0, air=False)  # vacuum wavelengths
    >>> result.flux.shape, result.flux.dtype
    ((2, 4096), dtype('float32'))
    >>> result.flag_names
    [[], []]
    """
    config = PreprocessConfig() if config is None else config
    if not isinstance(config, PreprocessConfig):
        raise TypeError(f"config must be a PreprocessConfig, got {type(config).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows, unknown_medium = _collect(spectra, redshift, air, strict)
    grid = make_wavelength_grid(config.grid)
    n, m = len(rows), grid.size

    flux = np.full((n, m), np.nan, dtype=np.float32)
    ivar = np.zeros((n, m), dtype=np.float32)
    mask = np.ones((n, m), dtype=bool)
    flags = np.full(n, _flags.UNREADABLE, dtype=_flags.FLAG_DTYPE)
    n_repaired = np.zeros(n, dtype=np.int64)
    snr = np.full(n, np.nan)
    coverage = np.zeros(n)
    redshifts = np.array([row.redshift for row in rows], dtype=np.float64)
    messages = {i: row.error for i, row in enumerate(rows) if row.error is not None}

    readable = np.flatnonzero([row.error is None for row in rows])
    for start in range(0, readable.size, chunk_size):
        index = readable[start : start + chunk_size]
        with np.errstate(all="ignore"):  # rows that overflow are flagged unreadable
            chunk_flux, chunk_ivar, chunk_flags, result = _process_chunk(
                [rows[i] for i in index], config, grid
            )
        flux[index] = chunk_flux
        ivar[index] = chunk_ivar
        mask[index] = result.mask
        flags[index] = chunk_flags
        n_repaired[index] = result.n_repaired
        snr[index] = result.snr
        coverage[index] = result.coverage
    flags[readable[~np.isfinite(redshifts[readable])]] |= _flags.NO_REDSHIFT

    unreadable = np.flatnonzero(flags & _flags.UNREADABLE)
    lowest = config.anomalies.min_valid_fraction
    for i in unreadable:
        messages.setdefault(
            int(i),
            # ASCII: the message is a column of estimate()'s table, and FITS holds ASCII
            "too little usable data on the model grid "
            f"({config.grid.wavelength_min_aa:g}-{config.grid.wavelength_max_aa:g} Angstrom): "
            f"fewer than {lowest:.0%} of its pixels valid, or a non-positive flux level",
        )
    if strict and unreadable.size:
        i = int(unreadable[0])
        raise InvalidSpectrumError(f"row {i}: {messages[i]} (flagged 'unreadable')")
    if unknown_medium:
        warnings.warn(
            UNKNOWN_MEDIUM_MESSAGE.format(n=unknown_medium, total=n), AstroSPTWarning, stacklevel=2
        )
    malformed = [f"row {i}: {rows[i].error}" for i in range(n) if rows[i].error is not None]
    if malformed:
        shown = "; ".join(malformed[:3]) + ("; ..." if len(malformed) > 3 else "")
        warnings.warn(
            f"{len(malformed)} of {n} spectra could not be read and are flagged "
            f"'unreadable': {shown}",
            AstroSPTWarning,
            stacklevel=2,
        )
    return PreprocessResult(
        flux=flux,
        flags=flags,
        wavelength=grid * u.AA,
        ivar=ivar,
        mask=mask,
        n_repaired=n_repaired,
        snr=snr,
        coverage=coverage,
        redshift=redshifts,
        config=config,
        messages=messages,
    )
