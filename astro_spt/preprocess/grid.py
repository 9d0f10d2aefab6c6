"""The model wavelength grid, air-to-vacuum conversion, and resampling onto the grid.

SPT paper §3.2 puts every spectrum on one grid by linear interpolation: 3,800-9,100 Å,
4,096 pixels. LAMOST wavelengths are in vacuum, so the grid is defined in vacuum and
air-wavelength input is converted. `resample_to_grid` interpolates a whole batch at once
and, unlike specutils' resamplers, carries the mask and the inverse variance along.
"""

from typing import NamedTuple

import numpy as np

from astro_spt.exceptions import InvalidSpectrumError

from .config import GridConfig

__all__ = ["ResampledSpectra", "air_to_vacuum", "make_wavelength_grid", "resample_to_grid"]


def make_wavelength_grid(config: GridConfig | None = None) -> np.ndarray:
    """Return the model wavelength grid in Å (vacuum, rest frame).

    Parameters
    ----------
    config : `~astro_spt.preprocess.GridConfig`, optional
        Grid settings; the default is the SPT paper's 3,800-9,100 Å in 4,096 pixels.

    Returns
    -------
    wavelength : `~numpy.ndarray`, shape (n_pixels,)

    Examples
    --------
    >>> from astro_spt.preprocess import make_wavelength_grid
    >>> grid = make_wavelength_grid()
    >>> grid.size, float(grid[0]), float(grid[-1])
    (4096, 3800.0, 9100.0)
    """
    config = GridConfig() if config is None else config
    if config.spacing == "log":
        return np.geomspace(config.wavelength_min_aa, config.wavelength_max_aa, config.n_pixels)
    return np.linspace(config.wavelength_min_aa, config.wavelength_max_aa, config.n_pixels)


def _morton_refractive_index(vacuum_aa: np.ndarray) -> np.ndarray:
    # Morton (2000, ApJS 130, 403), Eq. 8: refractive index of standard air as a function
    # of the vacuum wavenumber, the IAU standard (Edlén 1966 with updated constants) and
    # specutils' default in `specutils.utils.wcs_utils.vac_to_air`.
    sigma2 = (1e4 / vacuum_aa) ** 2
    return 1 + 8.34254e-5 + 2.406147e-2 / (130 - sigma2) + 1.5998e-4 / (38.9 - sigma2)


def air_to_vacuum(wavelength_aa) -> np.ndarray:
    """Convert air wavelengths to vacuum wavelengths.

    Inverts λ_air = λ_vac / n(λ_vac), with n the refractive index of standard air of
    Morton (2000, ApJS 130, 403, Eq. 8), by fixed-point iteration, so it is the exact
    inverse of specutils' `~specutils.utils.wcs_utils.vac_to_air` (which works on
    `~astropy.units.Quantity` and so is not used on the batch path).

    Parameters
    ----------
    wavelength_aa : array-like
        Air wavelengths in Å, above 2,000 Å (the formula diverges in the far ultraviolet).

    Returns
    -------
    vacuum_aa : `~numpy.ndarray`
        Vacuum wavelengths in Å.

    Raises
    ------
    ValueError
        If a wavelength is below 2,000 Å.

    Examples
    --------
    >>> from astro_spt.preprocess import air_to_vacuum
    >>> print(f"{air_to_vacuum(6562.80)[()]:.2f}")  # H-alpha
    6564.61
    """
    air = np.asarray(wavelength_aa, dtype=np.float64)
    if np.any(air[np.isfinite(air)] < 2000):
        raise ValueError("air_to_vacuum: the Morton (2000) formula needs wavelengths > 2000 Å")
    vacuum = air.copy()
    # n - 1 ~ 3e-4 varies slowly with wavelength: each iteration gains about four digits.
    for _ in range(4):
        vacuum = air * _morton_refractive_index(vacuum)
    return vacuum


class ResampledSpectra(NamedTuple):
    """Spectra on the model grid, as returned by `resample_to_grid`.

    Attributes
    ----------
    flux : `~numpy.ndarray`, shape (n, n_pixels)
        Linearly interpolated flux; NaN where ``mask`` is True.
    ivar : `~numpy.ndarray`, shape (n, n_pixels)
        Inverse of the linearly interpolated variance (the input's noise level at that
        wavelength); 0 where ``mask`` is True.
    mask : `~numpy.ndarray` of bool, shape (n, n_pixels)
        True where no valid input pixel contributes: outside the input range, or next to
        an input pixel that is masked, not finite or has zero inverse variance.
    covered : `~numpy.ndarray` of bool, shape (n, n_pixels)
        True inside the input's wavelength range.

    Examples
    --------
    Three spectra covering 4,000-8,000 Å, the second with one bad input pixel, on the
    default 3,800-9,100 Å grid:

    >>> import numpy as np
    >>> from astro_spt.preprocess import resample_to_grid
    >>> wave = np.linspace(4000.0, 8000.0, 2000)
    >>> flux = np.ones((3, 2000))
    >>> flux[1, 1000] = np.nan
    >>> out = resample_to_grid(wave, flux, ivar=np.full_like(flux, 4.0))
    >>> type(out).__name__, out.flux.shape, out.flux.dtype
    ('ResampledSpectra', (3, 4096), dtype('float32'))
    >>> flux_grid, ivar_grid, mask, covered = out  # a named tuple unpacks
    >>> covered.sum(axis=1).tolist()  # grid pixels inside 4,000-8,000 Å
    [3091, 3091, 3091]
    >>> (mask & covered).sum(axis=1).tolist()  # the bad pixel spoils 3 grid pixels
    [0, 3, 0]
    >>> float(out.ivar[0, 1000]), bool(np.isnan(out.flux[0, 0]))
    (4.0, True)
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    covered: np.ndarray


def _check_increasing(wavelength: np.ndarray, lengths: np.ndarray) -> None:
    steps = np.diff(wavelength, axis=-1)
    inside = np.arange(steps.shape[-1]) < (lengths[:, None] - 1)
    bad = inside & ~(steps > 0)
    if np.any(bad):
        row, pixel = np.argwhere(bad)[0]
        a, b = wavelength[row, pixel], wavelength[row, pixel + 1]
        kind = "duplicate" if a == b else "decreasing or non-finite"
        raise InvalidSpectrumError(
            f"spectrum {row}: wavelengths must be strictly increasing, found {kind} values "
            f"{a!r} and {b!r} at pixels {pixel} and {pixel + 1}"
        )


def resample_to_grid(
    wavelength,
    flux,
    ivar=None,
    mask=None,
    grid=None,
    dtype=np.float32,
) -> ResampledSpectra:
    """Linearly interpolate a batch of spectra onto a wavelength grid.

    The whole batch is interpolated with array operations, without a loop over spectra.
    A grid pixel gets the linear interpolation of the two input pixels around it; it is
    masked when either of them (with a non-zero weight) is invalid, or when it lies
    outside the input's range (no extrapolation).

    Parameters
    ----------
    wavelength : array-like, shape (m,) or (n, m)
        Input wavelengths, strictly increasing, in the grid's unit (Å for the model grid).
        One row shared by all spectra, or one row per spectrum; rows shorter than ``m``
        are padded at the end with NaN (and their ``flux`` with anything).
    flux : array-like, shape (m,) or (n, m)
        Flux; a 1-D array is one spectrum.
    ivar : array-like, shape of ``flux``, optional
        Inverse variance of the flux; default 1 everywhere (unknown noise).
    mask : array-like of bool, shape of ``flux``, optional
        True for bad input pixels. Pixels with non-finite flux or ``ivar <= 0`` are bad
        anyway.
    grid : array-like, shape (n_pixels,), optional
        Output wavelengths, increasing; default `make_wavelength_grid`.
    dtype : numpy dtype, optional
        Floating type of the arithmetic and of the output (default float32, which halves
        memory traffic; wavelengths and weights are always float64).

    Returns
    -------
    resampled : `ResampledSpectra`
        ``flux``, ``ivar``, ``mask`` and ``covered``, each of shape (n, n_pixels) (n = 1
        for 1-D input).

    Raises
    ------
    astro_spt.exceptions.InvalidSpectrumError
        If shapes disagree, or wavelengths are not strictly increasing.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.preprocess import resample_to_grid
    >>> wave = np.array([1.0, 2.0, 3.0, 4.0])
    >>> out = resample_to_grid(wave, [10.0, 20.0, 30.0, 40.0], mask=[0, 0, 1, 0],
    ...                        grid=[0.5, 1.5, 2.25, 3.5])
    >>> print(out.flux)
    [[nan 15. nan nan]]
    >>> out.mask
    array([[ True, False,  True,  True]])
    >>> out.covered
    array([[False,  True,  True,  True]])
    """
    grid = make_wavelength_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    wavelength = np.asarray(wavelength, dtype=np.float64)
    flux = np.asarray(flux, dtype=dtype)
    if flux.ndim == 1:
        flux = flux[None, :]
    if flux.ndim != 2:
        raise InvalidSpectrumError(f"flux must be 1-D or 2-D, got shape {flux.shape}")
    n, m = flux.shape
    if m < 2:
        raise InvalidSpectrumError(f"need at least 2 pixels per spectrum, got {m}")
    ivar = np.ones_like(flux) if ivar is None else np.asarray(ivar, dtype=dtype)
    mask = np.zeros(flux.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    for name, array in (("ivar", ivar), ("mask", mask)):
        if array.shape != flux.shape and array.shape != (m,):
            raise InvalidSpectrumError(
                f"{name} has shape {array.shape}, but flux has shape {flux.shape}"
            )
    if wavelength.shape not in ((m,), (n, m)):
        raise InvalidSpectrumError(
            f"wavelength has shape {wavelength.shape}; expected ({m},) or ({n}, {m}) to "
            f"match flux of shape {flux.shape}"
        )

    bad = mask | ~np.isfinite(flux) | ~(ivar > 0) | ~np.isfinite(ivar)
    # Flux and variance side by side, so that one gather fetches both: as one void scalar
    # each, since numpy gathers (n, 2)-shaped items more than ten times slower.
    pairs = np.zeros((n, m, 2), dtype=dtype)
    pairs[..., 0] = np.where(bad, 0, flux)
    np.divide(1, ivar, out=pairs[..., 1], where=~bad)
    packed = pairs.view(np.dtype((np.void, 2 * pairs.itemsize)))[..., 0]

    if wavelength.ndim == 1:
        _check_increasing(wavelength[None, :], np.array([m]))
        hi = np.clip(np.searchsorted(wavelength, grid, side="right"), 1, m - 1)
        lo = hi - 1
        t = (grid - wavelength[lo]) / (wavelength[hi] - wavelength[lo])
        covered = (grid >= wavelength[0]) & (grid <= wavelength[-1])
        covered = np.broadcast_to(covered, (n, grid.size))
        pair_lo, pair_hi = packed.take(lo, axis=1), packed.take(hi, axis=1)
        bad_lo, bad_hi = bad[:, lo], bad[:, hi]
    else:
        finite = np.isfinite(wavelength)
        lengths = finite.sum(axis=1)
        if np.any(finite & (np.arange(m) >= lengths[:, None])):
            raise InvalidSpectrumError(
                "wavelength rows may only be padded with NaN at the end (and must not "
                "contain NaN inside)"
            )
        if np.any(lengths < 2):
            row = int(np.argmax(lengths < 2))
            raise InvalidSpectrumError(f"spectrum {row}: fewer than 2 finite wavelengths")
        _check_increasing(wavelength, lengths)
        rows = np.arange(n)
        last = wavelength[rows, lengths - 1]
        # One searchsorted per row, exactly as for a single spectrum: shifting the rows
        # by offsets to search them all at once rounds the wavelengths by an amount that
        # grows with the widest row, so a neighbour spanning 1e-3-1e13 Å moved the
        # interpolation of every other row of the batch.
        position = np.stack(
            [np.searchsorted(wavelength[i, : lengths[i]], grid, "right") for i in range(n)]
        )
        start = (rows * m)[:, None]
        hi = start + np.clip(position, 1, (lengths - 1)[:, None])
        lo = hi - 1
        flat_wavelength = wavelength.ravel()
        w_lo = flat_wavelength[lo]
        t = (grid[None, :] - w_lo) / (flat_wavelength[hi] - w_lo)
        covered = (grid[None, :] >= wavelength[:, :1]) & (grid[None, :] <= last[:, None])
        flat_pairs = packed.reshape(n * m)
        pair_lo, pair_hi = flat_pairs[lo], flat_pairs[hi]
        flat_bad = bad.ravel()
        bad_lo, bad_hi = flat_bad[lo], flat_bad[hi]

    pair_lo = pair_lo.view(dtype).reshape(n, grid.size, 2)
    pair_hi = pair_hi.view(dtype).reshape(n, grid.size, 2)
    t = np.clip(t, 0.0, 1.0)
    weight_hi = t.astype(dtype)
    weight_lo = 1 - weight_hi
    # The variance is interpolated like the flux: the grid pixel gets the noise level of
    # the input pixels around it, so S/N and spike thresholds mean the same on the grid.
    out_flux = weight_lo * pair_lo[..., 0] + weight_hi * pair_hi[..., 0]
    out_var = weight_lo * pair_lo[..., 1] + weight_hi * pair_hi[..., 1]
    out_mask = ~covered | (bad_lo & (t < 1)) | (bad_hi & (t > 0))
    out_flux[out_mask] = np.nan
    out_ivar = np.zeros_like(out_var)
    np.divide(1, out_var, out=out_ivar, where=~out_mask & (out_var > 0))
    return ResampledSpectra(out_flux, out_ivar, out_mask, np.array(covered))
