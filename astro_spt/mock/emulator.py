"""A data-driven emulator of LAMOST low-resolution spectra as a function of stellar labels.

No public set of LAMOST spectra with asteroseismic masses and ages is available (SPEC §3),
so the embedded default model is trained on mock spectra. `LAMOSTEmulator` makes them: a
model of the continuum-normalised LAMOST flux at each pixel of a fixed log-wavelength
grid as a polynomial in the standardised labels (Teff, logg, [Fe/H]) with a per-pixel
intrinsic scatter, fitted by weighted least squares to real LAMOST spectra with LASP
labels. This is *The Cannon* of Ness et al. (2015, ApJ 808, 16), which Ho et al. (2017,
ApJ 836, 5) applied to LAMOST; it is fitted to the whole batch at once, with no loop over
pixels.

The spectra are normalised by `pseudo_continuum` (an inverse-variance weighted Gaussian
running mean, Ho et al. 2017) after `normalize_spectra` has shifted them to the rest
frame and interpolated them onto the grid of `lamost_log_grid`, the native LAMOST
sampling. Only numpy and scipy are used.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

__all__ = [
    "LAMOSTEmulator",
    "lamost_log_grid",
    "normalize_spectra",
    "pseudo_continuum",
]

# LAMOST low-resolution pixels are equally spaced in log10(λ / Å): COEFF0 = 3.5682 and
# COEFF1 = 1e-4 in every DR10 file (69 km/s per pixel), 3,909 pixels to 9,099 Å.
_LAMOST_LOG10_START = 3.5682
_LAMOST_LOG10_STEP = 1e-4
_LAMOST_N_PIXELS = 3909

# Beyond four standard deviations the Gaussian kernel weighs less than 3e-4 of its peak.
_KERNEL_HALF_WIDTH_SIGMA = 4.0

_ARRAY_NAMES = (
    "order",
    "label_names",
    "wavelength",
    "coefficients",
    "scatter",
    "label_offset",
    "label_scale",
    "label_min",
    "label_max",
)


def lamost_log_grid(n_pixels: int = _LAMOST_N_PIXELS) -> np.ndarray:
    """Return the native LAMOST low-resolution wavelength grid in Å (vacuum).

    Parameters
    ----------
    n_pixels : int, optional
        Number of pixels from 3,699.99 Å in steps of 1e-4 in log10(λ); the default 3,909
        ends at 9,099.1 Å, as the DR10 files do.

    Returns
    -------
    wavelength : `~numpy.ndarray`, shape (n_pixels,)

    Examples
    --------
    >>> from astro_spt.mock.emulator import lamost_log_grid
    >>> grid = lamost_log_grid()
    >>> grid.size, round(float(grid[0]), 2), round(float(grid[-1]), 1)
    (3909, 3699.99, 9099.1)
    """
    return 10 ** (_LAMOST_LOG10_START + _LAMOST_LOG10_STEP * np.arange(n_pixels))


def _gaussian_kernel(wavelength: np.ndarray, sigma_aa: float) -> sparse.csr_array:
    """Sparse matrix of Gaussian weights exp(-Δλ²/2σ²) between pixels within 4σ."""
    half_width = _KERNEL_HALF_WIDTH_SIGMA * sigma_aa
    lo = np.searchsorted(wavelength, wavelength - half_width, side="left")
    hi = np.searchsorted(wavelength, wavelength + half_width, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(wavelength.size), counts)
    # Column indices lo[i], lo[i] + 1, ..., hi[i] - 1 of every row, without a loop.
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    cols = starts + np.arange(rows.size)
    weights = np.exp(-0.5 * ((wavelength[rows] - wavelength[cols]) / sigma_aa) ** 2)
    shape = (wavelength.size, wavelength.size)
    return sparse.csr_array((weights, (rows, cols)), shape=shape)


def pseudo_continuum(wavelength, flux, ivar, sigma_aa: float = 50.0) -> np.ndarray:
    """Inverse-variance weighted Gaussian running mean of a batch of spectra.

    The pseudo-continuum of Ho et al. (2017, ApJ 836, 5, §2.2), which they used to
    normalise LAMOST spectra for The Cannon:
    ``C(λ) = Σ_j w_j ivar_j f_j / Σ_j w_j ivar_j`` with ``w_j = exp(-(λ - λ_j)² / 2σ²)``.
    Pixels with zero inverse variance do not contribute.

    Parameters
    ----------
    wavelength : array-like, shape (m,)
        Wavelengths shared by all spectra, increasing, in Å.
    flux, ivar : array-like, shape (m,) or (n, m)
        Flux and its inverse variance; non-finite values count as ivar = 0.
    sigma_aa : float, optional
        Standard deviation of the Gaussian kernel in Å (Ho et al. 2017: 50 Å).

    Returns
    -------
    continuum : `~numpy.ndarray`, shape of ``flux``
        NaN where no pixel within 4σ has a positive inverse variance.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.mock.emulator import pseudo_continuum
    >>> wavelength = np.linspace(4000.0, 5000.0, 1001)
    >>> continuum = pseudo_continuum(wavelength, np.full(1001, 3.0), np.ones(1001))
    >>> bool(np.allclose(continuum, 3.0))
    True
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    flux, ivar = _finite_pair(flux, ivar)
    kernel = _gaussian_kernel(wavelength, sigma_aa)
    batch = flux.ndim == 2
    weighted = np.atleast_2d(ivar * flux).T
    numerator = (kernel @ weighted).T
    denominator = (kernel @ np.atleast_2d(ivar).T).T
    continuum = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=continuum, where=denominator > 0)
    return continuum if batch else continuum[0]


def _finite_pair(flux, ivar) -> tuple[np.ndarray, np.ndarray]:
    """Flux and ivar as float64 with ivar = 0 (and flux = 0) where either is not finite."""
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    if flux.shape != ivar.shape:
        raise ValueError(f"flux and ivar differ in shape: {flux.shape} and {ivar.shape}")
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    return np.where(good, flux, 0.0), np.where(good, ivar, 0.0)


def normalize_spectra(
    wavelengths: Sequence,
    fluxes: Sequence,
    ivars: Sequence,
    redshifts=None,
    grid=None,
    sigma_aa: float = 50.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Shift spectra to the rest frame, put them on one grid and divide by the continuum.

    Each spectrum is linearly interpolated onto ``grid`` at ``λ_grid · (1 + z)``, with
    the variance propagated, ``(1 - t)² σ²_left + t² σ²_right``; a grid pixel whose two
    neighbouring input pixels are not both valid (positive, finite inverse variance)
    gets ``ivar = 0``, as does one outside the input's range. The
    interpolated spectra are divided by their `pseudo_continuum` and the inverse
    variances multiplied by its square.

    Parameters
    ----------
    wavelengths, fluxes, ivars : sequence of array-like
        One 1-D array per spectrum (lengths may differ between spectra): vacuum
        wavelengths in Å (increasing), flux, inverse variance (0 for bad pixels).
    redshifts : array-like, optional
        Redshift z of each spectrum (LAMOST's ``Z``); 0 when not given.
    grid : array-like, optional
        Output wavelengths in Å; default `lamost_log_grid`.
    sigma_aa : float, optional
        Width of the continuum kernel, passed to `pseudo_continuum`.

    Returns
    -------
    flux : `~numpy.ndarray`, shape (n, n_grid)
        Continuum-normalised flux; 0 where ``ivar`` is 0.
    ivar : `~numpy.ndarray`, shape (n, n_grid)
        Its inverse variance.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.mock.emulator import lamost_log_grid, normalize_spectra
    >>> wavelength = lamost_log_grid()
    >>> flux = 100 * (wavelength / 5000.0) ** -2  # a line-free spectrum
    >>> norm, ivar = normalize_spectra([wavelength], [flux], [np.ones_like(flux)])
    >>> bool(np.allclose(norm[0, 500:-500], 1.0, atol=1e-3))
    True
    """
    grid = lamost_log_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    n = len(fluxes)
    if not (len(wavelengths) == len(ivars) == n):
        raise ValueError("wavelengths, fluxes and ivars must hold one array per spectrum")
    redshifts = np.zeros(n) if redshifts is None else np.asarray(redshifts, dtype=np.float64)
    if redshifts.shape != (n,):
        raise ValueError(f"redshifts must have one value per spectrum, got {redshifts.shape}")
    flux_grid = np.zeros((n, grid.size))
    ivar_grid = np.zeros((n, grid.size))
    for i in range(n):
        wavelength = np.asarray(wavelengths[i], dtype=np.float64)
        flux, ivar = _finite_pair(fluxes[i], ivars[i])
        observed = grid * (1 + redshifts[i])
        right = np.clip(np.searchsorted(wavelength, observed, side="right"), 1, wavelength.size - 1)
        left = right - 1
        inside = (observed >= wavelength[0]) & (observed <= wavelength[-1])
        frac = (observed - wavelength[left]) / (wavelength[right] - wavelength[left])
        good = inside & (ivar[left] > 0) & (ivar[right] > 0)
        flux_grid[i] = np.where(good, (1 - frac) * flux[left] + frac * flux[right], 0.0)
        # The variance of the interpolated value. For LAMOST input both grids step by
        # 1e-4 in log10(λ), so frac is the same at every pixel of a spectrum: the
        # interpolation correlates neighbours but keeps the per-pixel χ² expectation.
        sigma2 = 1.0 / np.where(ivar > 0, ivar, 1.0)
        variance = (1 - frac) ** 2 * sigma2[left] + frac**2 * sigma2[right]
        ivar_grid[i] = np.divide(1.0, variance, out=np.zeros(grid.size), where=good)
    continuum = pseudo_continuum(grid, flux_grid, ivar_grid, sigma_aa)
    usable = np.isfinite(continuum) & (continuum > 0) & (ivar_grid > 0)
    safe = np.where(usable, continuum, 1.0)
    return np.where(usable, flux_grid / safe, 0.0), np.where(usable, ivar_grid * safe**2, 0.0)


def _n_terms(n_labels: int, order: int) -> int:
    return len(_exponents(n_labels, order))


def _exponents(n_labels: int, order: int) -> np.ndarray:
    """Exponents of every monomial of the labels up to ``order``, by increasing degree."""
    grids = np.meshgrid(*[np.arange(order + 1)] * n_labels, indexing="ij")
    powers = np.stack([g.ravel() for g in grids], axis=1)
    powers = powers[powers.sum(axis=1) <= order]
    # Degree first, then lexicographic with the first label's power decreasing:
    # 1, x1, x2, x3, x1², x1x2, ... (The Cannon's order for the quadratic model).
    keys = [-powers[:, j] for j in reversed(range(n_labels))] + [powers.sum(axis=1)]
    return powers[np.lexsort(keys)]


class LAMOSTEmulator:
    """Continuum-normalised LAMOST flux as a polynomial in (Teff, logg, [Fe/H]).

    At each pixel λ of a fixed wavelength grid the normalised flux of a star with labels
    ℓ is modelled as ``f_λ = θ_λ · v(x) + noise``, ``v(x)`` every monomial of the
    standardised labels ``x = (ℓ - offset) / scale`` up to degree ``order`` (10 terms for
    the quadratic model, 20 for the cubic), and the noise Gaussian with variance
    ``σ²_nλ + s²_λ``: the measurement noise plus an intrinsic scatter ``s_λ`` that
    absorbs what the labels do not explain. `fit` maximises the likelihood by alternating
    a weighted least-squares solve of θ for all pixels at once with a per-pixel
    bisection for s (The Cannon; Ness et al. 2015, ApJ 808, 16, §2).

    Parameters
    ----------
    order : int, optional
        Degree of the polynomial (2: quadratic, as in The Cannon).
    label_names : sequence of str, optional
        Names of the labels in the order of the columns of ``labels``; by default
        ``("teff", "logg", "feh")``: Teff in K, logg in dex (cgs), [Fe/H] in dex.

    Attributes
    ----------
    wavelength : `~numpy.ndarray`, shape (n_pixels,)
        Rest-frame vacuum wavelengths in Å (set by `fit`).
    coefficients : `~numpy.ndarray`, shape (n_pixels, n_terms)
        θ at every pixel.
    scatter : `~numpy.ndarray`, shape (n_pixels,)
        Intrinsic scatter s at every pixel, in units of the normalised flux.
    label_offset, label_scale : `~numpy.ndarray`, shape (n_labels,)
        Standardisation of the labels (mean and standard deviation of the training set).
    label_min, label_max : `~numpy.ndarray`, shape (n_labels,)
        Range of the training labels.

    Examples
    --------
    A synthetic two-pixel model, recovered from noiseless data:

    >>> import numpy as np
    >>> from astro_spt.mock.emulator import LAMOSTEmulator
    >>> rng = np.random.default_rng(1)
    >>> labels = np.column_stack(
    ...     [rng.uniform(4200, 5400, 50), rng.uniform(1.5, 3.5, 50), rng.uniform(-1, 0.3, 50)]
    ... )
    >>> x = (labels[:, 0] - 4800) / 400
    >>> flux = np.column_stack([1 - 0.1 * x, 0.8 + 0.05 * x**2])
    >>> emulator = LAMOSTEmulator().fit([5000.0, 5001.0], flux, np.full((50, 2), 1e6), labels)
    >>> np.round(emulator.predict([4800.0, 2.5, -0.3]), 4)
    array([1. , 0.8])
    """

    def __init__(self, order: int = 2, label_names: Sequence[str] = ("teff", "logg", "feh")):
        if not (isinstance(order, (int, np.integer)) and order >= 1):
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        self.order = int(order)
        self.label_names = tuple(str(name) for name in label_names)
        self.wavelength = None
        self.coefficients = None
        self.scatter = None
        self.label_offset = None
        self.label_scale = None
        self.label_min = None
        self.label_max = None

    def __repr__(self) -> str:
        state = "unfitted" if self.coefficients is None else f"{self.wavelength.size} pixels"
        return f"<LAMOSTEmulator order={self.order} labels={list(self.label_names)} ({state})>"

    @property
    def n_labels(self) -> int:
        """Number of labels.

        Examples
        --------
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> LAMOSTEmulator().n_labels  # teff, logg, feh
        3
        >>> LAMOSTEmulator(label_names=["teff", "logg", "feh", "alpha_fe"]).n_labels
        4
        """
        return len(self.label_names)

    @property
    def n_terms(self) -> int:
        """Number of polynomial terms per pixel.

        Examples
        --------
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> LAMOSTEmulator(order=2).n_terms, LAMOSTEmulator(order=3).n_terms
        (10, 20)
        """
        return _n_terms(self.n_labels, self.order)

    def _check_fitted(self):
        if self.coefficients is None:
            raise RuntimeError("the emulator is not fitted: call fit() or from_arrays() first")

    def _label_matrix(self, labels) -> np.ndarray:
        if isinstance(labels, Mapping) or hasattr(labels, "colnames"):
            # np.asarray of a Quantity column is its value in its own unit: Teff in K.
            columns = [np.asarray(labels[name], dtype=np.float64) for name in self.label_names]
            matrix = np.column_stack(columns)
        else:
            matrix = np.atleast_2d(np.asarray(labels, dtype=np.float64))
        if matrix.ndim != 2 or matrix.shape[1] != self.n_labels:
            raise ValueError(
                f"labels must have {self.n_labels} columns ({', '.join(self.label_names)}), "
                f"got shape {np.shape(labels)}"
            )
        if not np.all(np.isfinite(matrix)):
            raise ValueError("labels must be finite")
        return matrix

    def design_matrix(self, labels) -> np.ndarray:
        """Return the polynomial terms ``v(x)`` of the standardised labels.

        Parameters
        ----------
        labels : array-like, shape (n, n_labels) or (n_labels,), or a table
            Labels in the order of ``label_names`` (a table or mapping is read by name).

        Returns
        -------
        `~numpy.ndarray`, shape (n, n_terms)
            The first column is 1, then the labels, then their products.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([4800.0, 2.5, -0.3], [300.0, 0.5, 0.3], size=(50, 3))
        >>> flux = np.tile(0.8 + 0.1 * (labels[:, :1] - 4800.0) / 300.0, (1, 4))
        >>> emulator = LAMOSTEmulator().fit(
        ...     [5170.0, 5171.0, 5172.0, 5173.0], flux, np.full((50, 4), 1e4), labels
        ... )
        >>> emulator.design_matrix([[4800.0, 2.5, -0.3], [5100.0, 3.0, 0.0]]).shape
        (2, 10)
        >>> emulator.design_matrix(emulator.label_offset)  # the training mean: x = 0
        array([[1., 0., 0., 0., 0., 0., 0., 0., 0., 0.]])
        """
        if self.label_offset is None:
            raise RuntimeError("the emulator is not fitted: call fit() or from_arrays() first")
        x = (self._label_matrix(labels) - self.label_offset) / self.label_scale
        powers = _exponents(self.n_labels, self.order)
        return np.prod(x[:, None, :] ** powers[None, :, :], axis=2)

    def fit(
        self,
        wavelength,
        flux,
        ivar,
        labels,
        *,
        n_iterations: int = 6,
        ridge: float = 1e-6,
    ) -> "LAMOSTEmulator":
        """Fit the model to continuum-normalised spectra with known labels.

        Parameters
        ----------
        wavelength : array-like, shape (n_pixels,)
            The common rest-frame wavelength grid of ``flux`` (Å).
        flux, ivar : array-like, shape (n_spectra, n_pixels)
            Continuum-normalised flux and its inverse variance (0 for bad pixels), as
            `normalize_spectra` returns them.
        labels : array-like, shape (n_spectra, n_labels), or a table
            Labels in the order of ``label_names`` (a table is read by column name).
        n_iterations : int, optional
            Alternations of the least-squares solve and the scatter update.
        ridge : float, optional
            Tikhonov damping towards a flat spectrum (θ = (1, 0, ...)), relative to
            the mean diagonal of each pixel's normal matrix; it only matters at
            pixels with (almost) no valid data, which are predicted as 1.

        Returns
        -------
        self : `LAMOSTEmulator`

        Raises
        ------
        ValueError
            If the shapes disagree, or there are fewer spectra than polynomial terms.

        Examples
        --------
        A line that weakens with Teff, measured with noise 0.01 in four pixels, and 0.02
        of star-to-star scatter that the labels do not explain:

        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([4800.0, 2.5, -0.3], [300.0, 0.5, 0.3], size=(200, 3))
        >>> line = 0.8 + 0.1 * (labels[:, :1] - 4800.0) / 300.0
        >>> flux = line + rng.normal(0.0, 0.02, (200, 4)) + rng.normal(0.0, 0.01, (200, 4))
        >>> ivar = np.full((200, 4), 1e4)  # 1 / 0.01**2
        >>> emulator = LAMOSTEmulator().fit([5170.0, 5171.0, 5172.0, 5173.0], flux, ivar, labels)
        >>> emulator
        <LAMOSTEmulator order=2 labels=['teff', 'logg', 'feh'] (4 pixels)>
        >>> emulator.coefficients.shape  # (pixels, terms)
        (4, 10)
        >>> emulator.scatter.round(2)  # the intrinsic scatter, recovered
        array([0.02, 0.02, 0.02, 0.02])
        """
        wavelength = np.asarray(wavelength, dtype=np.float64)
        flux, ivar = _finite_pair(flux, ivar)
        flux, ivar = np.atleast_2d(flux), np.atleast_2d(ivar)
        if flux.shape[1] != wavelength.size:
            raise ValueError(
                f"flux has {flux.shape[1]} pixels but the wavelength grid {wavelength.size}"
            )
        matrix = self._label_matrix(labels)
        if matrix.shape[0] != flux.shape[0]:
            raise ValueError(f"{matrix.shape[0]} label rows for {flux.shape[0]} spectra")
        if flux.shape[0] < self.n_terms:
            raise ValueError(
                f"{flux.shape[0]} spectra cannot constrain {self.n_terms} terms per pixel"
            )
        self.label_offset = matrix.mean(axis=0)
        scale = matrix.std(axis=0)
        self.label_scale = np.where(scale > 0, scale, 1.0)
        self.label_min, self.label_max = matrix.min(axis=0), matrix.max(axis=0)
        self.wavelength = wavelength

        design = self.design_matrix(matrix)
        p = design.shape[1]
        # v vᵀ for every star, flattened, so that each pixel's normal matrix Σ w v vᵀ is
        # one row of a single matrix product over all pixels.
        outer = (design[:, :, None] * design[:, None, :]).reshape(-1, p * p)
        prior = np.zeros(p)
        prior[0] = 1.0
        scatter2 = np.zeros(wavelength.size)
        for _ in range(n_iterations):
            weight = ivar / (1.0 + ivar * scatter2)
            normal = (weight.T @ outer).reshape(-1, p, p)
            rhs = (weight * flux).T @ design
            damping = ridge * np.trace(normal, axis1=1, axis2=2) / p + 1e-12
            normal += damping[:, None, None] * np.eye(p)
            rhs += damping[:, None] * prior
            coefficients = np.linalg.solve(normal, rhs[..., None])[..., 0]
            residual = flux - design @ coefficients.T
            scatter2 = _fit_scatter(residual, ivar)
        self.coefficients = coefficients
        self.scatter = np.sqrt(scatter2)
        return self

    def predict(self, labels) -> np.ndarray:
        """Return the continuum-normalised flux of stars with the given labels.

        Parameters
        ----------
        labels : array-like, shape (n, n_labels) or (n_labels,), or a table
            Labels in the order of ``label_names``.

        Returns
        -------
        flux : `~numpy.ndarray`, shape (n, n_pixels), or (n_pixels,) for one star
            On the grid ``wavelength``.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([4800.0, 2.5, -0.3], [300.0, 0.5, 0.3], size=(50, 3))
        >>> flux = np.tile(0.8 + 0.1 * (labels[:, :1] - 4800.0) / 300.0, (1, 4))
        >>> emulator = LAMOSTEmulator().fit(
        ...     [5170.0, 5171.0, 5172.0, 5173.0], flux, np.full((50, 4), 1e4), labels
        ... )
        >>> emulator.predict([5100.0, 2.5, -0.3]).round(3)  # one star
        array([0.9, 0.9, 0.9, 0.9])
        >>> emulator.predict([[4500.0, 2.5, -0.3], [5100.0, 3.0, 0.0]]).shape
        (2, 4)
        """
        self._check_fitted()
        flux = self.design_matrix(labels) @ self.coefficients.T
        return flux[0] if np.ndim(labels) == 1 and not hasattr(labels, "colnames") else flux

    def residual_statistics(self, flux, ivar, labels) -> dict[str, np.ndarray]:
        """Compare spectra with the emulator's prediction for their labels.

        Parameters
        ----------
        flux, ivar : array-like, shape (n, n_pixels)
            Continuum-normalised flux and inverse variance on the emulator's grid.
        labels : array-like, shape (n, n_labels), or a table

        Returns
        -------
        dict of `~numpy.ndarray`, each of shape (n,)
            ``"chi2_per_pixel"``: mean of ``(f - model)² · ivar`` over the valid pixels
            (measurement noise only); ``"chi2_per_pixel_scatter"``: the same with the
            variance ``σ² + s²`` (noise and intrinsic scatter); ``"median_abs_z"``:
            median of ``|f - model| · sqrt(ivar)`` (0.674 for pure Gaussian noise);
            ``"rms_residual"``: root-mean-square of ``f - model``; ``"n_pixels"``.

        Examples
        --------
        Noise of 0.01 and intrinsic scatter of 0.02, as in the example of `fit`:

        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([4800.0, 2.5, -0.3], [300.0, 0.5, 0.3], size=(200, 3))
        >>> line = 0.8 + 0.1 * (labels[:, :1] - 4800.0) / 300.0
        >>> flux = line + rng.normal(0.0, 0.02, (200, 20)) + rng.normal(0.0, 0.01, (200, 20))
        >>> ivar = np.full((200, 20), 1e4)
        >>> emulator = LAMOSTEmulator().fit(np.arange(5170.0, 5190.0), flux, ivar, labels)
        >>> stats = emulator.residual_statistics(flux, ivar, labels)
        >>> stats["chi2_per_pixel"].shape
        (200,)
        >>> round(float(stats["chi2_per_pixel"].mean()), 1)  # noise alone: far above 1
        4.8
        >>> round(float(stats["chi2_per_pixel_scatter"].mean()), 1)  # noise and scatter
        1.0
        """
        self._check_fitted()
        flux, ivar = _finite_pair(flux, ivar)
        flux, ivar = np.atleast_2d(flux), np.atleast_2d(ivar)
        residual = flux - self.predict(np.atleast_2d(self._label_matrix(labels)))
        valid = ivar > 0
        n_pixels = valid.sum(axis=1)
        count = np.maximum(n_pixels, 1)
        chi2 = np.where(valid, residual**2 * ivar, 0.0).sum(axis=1) / count
        weight = ivar / (1.0 + ivar * self.scatter**2)
        chi2_scatter = np.where(valid, residual**2 * weight, 0.0).sum(axis=1) / count
        z = np.where(valid, np.abs(residual) * np.sqrt(ivar), np.nan)
        rms = np.sqrt(np.where(valid, residual**2, 0.0).sum(axis=1) / count)
        empty = n_pixels == 0
        median_z = np.full(flux.shape[0], np.nan)
        if np.any(~empty):
            median_z[~empty] = np.nanmedian(z[~empty], axis=1)
        return {
            "chi2_per_pixel": np.where(empty, np.nan, chi2),
            "chi2_per_pixel_scatter": np.where(empty, np.nan, chi2_scatter),
            "median_abs_z": median_z,
            "rms_residual": np.where(empty, np.nan, rms),
            "n_pixels": n_pixels,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Return the fitted model as a dict of plain arrays (for `numpy.savez`).

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> labels = np.random.default_rng(0).normal(size=(30, 3))
        >>> emulator = LAMOSTEmulator(order=1).fit([1.0, 2.0], np.ones((30, 2)),
        ...                                         np.ones((30, 2)), labels)
        >>> sorted(emulator.to_arrays())  # doctest: +NORMALIZE_WHITESPACE
        ['coefficients', 'label_max', 'label_min', 'label_names', 'label_offset',
         'label_scale', 'order', 'scatter', 'wavelength']
        >>> restored = LAMOSTEmulator.from_arrays(emulator.to_arrays())
        >>> bool(np.array_equal(restored.predict(labels), emulator.predict(labels)))
        True
        """
        self._check_fitted()
        return {
            "order": np.array(self.order),
            "label_names": np.array(self.label_names, dtype=str),
            "wavelength": self.wavelength,
            "coefficients": self.coefficients,
            "scatter": self.scatter,
            "label_offset": self.label_offset,
            "label_scale": self.label_scale,
            "label_min": self.label_min,
            "label_max": self.label_max,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "LAMOSTEmulator":
        """Rebuild an emulator from the arrays of `to_arrays` (or an opened ``.npz``).

        Raises
        ------
        ValueError
            If an array is missing or the shapes are inconsistent.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([4800.0, 2.5, -0.3], [300.0, 0.5, 0.3], size=(50, 3))
        >>> flux = np.tile(0.8 + 0.1 * (labels[:, :1] - 4800.0) / 300.0, (1, 4))
        >>> emulator = LAMOSTEmulator().fit(
        ...     [5170.0, 5171.0, 5172.0, 5173.0], flux, np.full((50, 4), 1e4), labels
        ... )
        >>> copy = LAMOSTEmulator.from_arrays(emulator.to_arrays())
        >>> copy
        <LAMOSTEmulator order=2 labels=['teff', 'logg', 'feh'] (4 pixels)>
        >>> bool(np.array_equal(copy.predict(labels), emulator.predict(labels)))
        True
        """
        missing = [key for key in _ARRAY_NAMES if key not in arrays]
        if missing:
            raise ValueError(f"emulator arrays lack {', '.join(missing)}")
        emulator = cls(order=int(arrays["order"]), label_names=list(arrays["label_names"]))
        emulator.wavelength = np.asarray(arrays["wavelength"], dtype=np.float64)
        emulator.coefficients = np.asarray(arrays["coefficients"], dtype=np.float64)
        emulator.scatter = np.asarray(arrays["scatter"], dtype=np.float64)
        for key in ("label_offset", "label_scale", "label_min", "label_max"):
            value = np.asarray(arrays[key], dtype=np.float64)
            if value.shape != (emulator.n_labels,):
                raise ValueError(f"{key} has shape {value.shape}, expected ({emulator.n_labels},)")
            setattr(emulator, key, value)
        expected = (emulator.wavelength.size, emulator.n_terms)
        if emulator.coefficients.shape != expected or emulator.scatter.shape != expected[:1]:
            raise ValueError(
                f"coefficients {emulator.coefficients.shape} and scatter "
                f"{emulator.scatter.shape} do not match {expected} (pixels, terms)"
            )
        return emulator

    def save(self, path) -> Path:
        """Write the model to an ``.npz`` file of plain arrays; return its path.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([4800.0, 2.5, -0.3], [300.0, 0.5, 0.3], size=(50, 3))
        >>> flux = np.tile(0.8 + 0.1 * (labels[:, :1] - 4800.0) / 300.0, (1, 4))
        >>> emulator = LAMOSTEmulator().fit(
        ...     [5170.0, 5171.0, 5172.0, 5173.0], flux, np.full((50, 4), 1e4), labels
        ... )
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = emulator.save(f"{tmp}/emulator")  # ".npz" is appended
        ...     restored = LAMOSTEmulator.load(path)
        >>> path.name, restored.wavelength.size
        ('emulator.npz', 4)
        """
        path = Path(path)
        np.savez(path, **self.to_arrays())
        # np.savez appends ".npz" to names that lack it.
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path) -> "LAMOSTEmulator":
        """Read a model written by `save` (never unpickles).

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([4800.0, 2.5, -0.3], [300.0, 0.5, 0.3], size=(50, 3))
        >>> flux = np.tile(0.8 + 0.1 * (labels[:, :1] - 4800.0) / 300.0, (1, 4))
        >>> emulator = LAMOSTEmulator().fit(
        ...     [5170.0, 5171.0, 5172.0, 5173.0], flux, np.full((50, 4), 1e4), labels
        ... )
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     restored = LAMOSTEmulator.load(emulator.save(f"{tmp}/emulator.npz"))
        >>> bool(np.array_equal(restored.predict(labels), emulator.predict(labels)))
        True
        """
        with np.load(path, allow_pickle=False) as arrays:
            return cls.from_arrays(arrays)

    def in_training_range(self, labels) -> np.ndarray:
        """Tell which label sets lie inside the box spanned by the training labels.

        Returns
        -------
        `~numpy.ndarray` of bool, shape (n,)

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.mock.emulator import LAMOSTEmulator
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([4800.0, 2.5, -0.3], [300.0, 0.5, 0.3], size=(50, 3))
        >>> flux = np.tile(0.8 + 0.1 * (labels[:, :1] - 4800.0) / 300.0, (1, 4))
        >>> emulator = LAMOSTEmulator().fit(
        ...     [5170.0, 5171.0, 5172.0, 5173.0], flux, np.full((50, 4), 1e4), labels
        ... )
        >>> emulator.in_training_range([[4800.0, 2.5, -0.3], [3500.0, 0.5, -2.5]])
        array([ True, False])
        """
        self._check_fitted()
        matrix = self._label_matrix(labels)
        return np.all((matrix >= self.label_min) & (matrix <= self.label_max), axis=1)


def _fit_scatter(residual: np.ndarray, ivar: np.ndarray, n_steps: int = 24) -> np.ndarray:
    """Per-pixel intrinsic variance s² that maximises the Gaussian likelihood.

    The derivative of the log-likelihood in s² is ``Σ (r² w² - w) / 2`` with
    ``w = 1 / (σ² + s²)``; bisection on ln s² finds its zero for all pixels at once. A
    pixel whose residuals are no larger than its noise (derivative ≤ 0 at s² → 0) gets 0.
    """
    valid = ivar > 0
    r2 = np.where(valid, residual**2, 0.0)

    def slope(s2):
        weight = ivar / (1.0 + ivar * s2)
        return np.where(valid, r2 * weight**2 - weight, 0.0).sum(axis=0)

    # s² between 1e-12 and 10 (normalised flux²; beyond 3 is nonsense); 24 halvings of
    # that bracket fix ln s² to 2e-6, far below its statistical error.
    lo = np.full(residual.shape[1], np.log(1e-12))
    hi = np.full(residual.shape[1], np.log(10.0))
    for _ in range(n_steps):
        mid = 0.5 * (lo + hi)
        rising = slope(np.exp(mid)) > 0
        lo = np.where(rising, mid, lo)
        hi = np.where(rising, hi, mid)
    return np.where(slope(1e-12) > 0, np.exp(0.5 * (lo + hi)), 0.0)
