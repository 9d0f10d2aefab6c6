"""Flux normalisation of spectra on the model grid.

SPT paper §3.2 normalises the spectra but does not say how. `normalize` offers the usual
candidates (pseudo-continuum, median, per-spectrum standardisation) on a whole batch;
`~astro_spt.preprocess.NormalizeConfig` documents the default and why.
"""

import numpy as np

from ._numerics import gaussian_smooth, median_rows
from .config import NORMALIZE_METHODS

__all__ = ["NORMALIZE_METHODS", "normalize"]

# The pseudo-continuum is kept above this fraction of its median, so that nearly empty
# stretches (the blue end of cool giants) are not divided by a number close to zero.
_CONTINUUM_FLOOR = 0.05


def _pseudo_continuum(flux: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    weighted = gaussian_smooth(flux * weights, sigma)
    total = gaussian_smooth(weights, sigma)
    typical = median_rows(total)[..., None]
    # Where (almost) every weight in the kernel is zero, fall back to the plain mean
    # (smoothed only in the rows that need it: each row is smoothed on its own).
    usable = total > 1e-3 * typical
    continuum = np.where(usable, weighted / np.where(usable, total, 1), 0)
    rows = ~usable.all(axis=-1)
    if rows.any():
        plain = gaussian_smooth(flux[rows], sigma)
        continuum[rows] = np.where(usable[rows], continuum[rows], plain)
    level = median_rows(continuum)[..., None]
    return np.maximum(continuum, _CONTINUUM_FLOOR * level)


def normalize(
    flux,
    method: str = "continuum",
    *,
    ivar=None,
    continuum_sigma: float = 38.7,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a batch of spectra.

    Parameters
    ----------
    flux : array-like, shape (n, n_pixels) or (n_pixels,)
        Finite flux on the model grid.
    method : {'continuum', 'median', 'standardize', 'none'}
        ``'continuum'``: divide by the inverse-variance weighted running mean of the flux,
        a Gaussian of standard deviation ``continuum_sigma`` pixels (approximated by three
        running means); ``'median'``: divide by the median flux; ``'standardize'``:
        subtract the mean and divide by the standard deviation; ``'none'``: unchanged.
    ivar : array-like, shape of ``flux``, optional
        Inverse variance, the weights of the pseudo-continuum (zero at repaired pixels);
        default equal weights.
    continuum_sigma : float
        Kernel width in pixels for ``'continuum'`` (38.7 pixels = 50 Å on the default grid).

    Returns
    -------
    normalized : `~numpy.ndarray`
        Normalised flux, same shape as ``flux``; rows whose scale is not positive and
        finite (e.g. a negative median) are NaN.
    scale : `~numpy.ndarray`
        What each pixel was divided by, shape (n, 1) or (n, n_pixels) (for
        ``'continuum'``); multiply an inverse variance by ``scale**2`` to normalise it.

    Raises
    ------
    ValueError
        If ``method`` is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.preprocess import normalize
    >>> flux = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    >>> normalize(flux, "median")[0]
    array([[0.33333333, 0.66666667, 1.        , 1.33333333, 1.66666667]])
    >>> normalized, scale = normalize(flux, "standardize")
    >>> np.round(normalized, 3), np.round(scale, 3)
    (array([[-1.414, -0.707,  0.   ,  0.707,  1.414]]), array([[1.414]]))
    """
    if method not in NORMALIZE_METHODS:
        raise ValueError(f"method must be one of {NORMALIZE_METHODS}, got {method!r}")
    flux = np.asarray(flux)
    if not np.issubdtype(flux.dtype, np.floating):
        flux = flux.astype(np.float64)
    data = np.atleast_2d(flux)
    offset = np.zeros((data.shape[0], 1), dtype=data.dtype)
    if method == "none":
        scale = np.ones((data.shape[0], 1), dtype=data.dtype)
    elif method == "median":
        scale = median_rows(data)[..., None]
    elif method == "standardize":
        offset = data.mean(axis=-1, keepdims=True)
        scale = data.std(axis=-1, keepdims=True)
    else:
        weights = np.ones_like(data) if ivar is None else np.atleast_2d(np.asarray(ivar))
        weights = np.where(np.isfinite(weights) & (weights > 0), weights, 0).astype(data.dtype)
        scale = _pseudo_continuum(data, weights, continuum_sigma)
    usable = np.all(np.isfinite(scale) & (scale > 0), axis=-1, keepdims=True)
    usable &= np.isfinite(offset)
    safe_scale = np.where(usable, scale, 1)
    normalized = np.where(usable, (data - offset) / safe_scale, np.nan)
    if flux.ndim == 1:
        return normalized[0], scale[0]
    return normalized, scale
