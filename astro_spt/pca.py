"""Principal component analysis of preprocessed spectra, stored as plain arrays.

The SPT network does not see the 4,096 fluxes of a spectrum but their first principal
components (SPT paper §3.2: 143 components, 99.9 % of the cumulative variance). The basis
is fitted on the training set only and travels with the trained network in the estimator
bundle (`astro_spt.bundle`), as arrays: mean, components, explained variance. It is never
a pickled scikit-learn object, so loading a bundle cannot run code.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["PCABasis", "PCAProjection"]

_ARRAY_NAMES = ("mean", "components", "explained_variance", "explained_variance_ratio")
# Optional: saved by fits made with this version, absent from older bundles.
_OPTIONAL_ARRAYS = ("residual_variance",)


class PCABasis:
    """A fitted principal-component basis: mean, orthonormal components, variances.

    Build one with `PCABasis.fit` (or `PCABasis.from_arrays` to restore a saved one).
    ``transform`` centres the data on the training mean and projects it on the
    components; ``inverse_transform`` maps coefficients back to pixels.

    Parameters
    ----------
    mean : array-like, shape (n_features,)
        Mean of the training data.
    components : array-like, shape (n_components, n_features)
        Principal axes, one orthonormal row per component, by decreasing variance.
    explained_variance : array-like, shape (n_components,)
        Variance of the training data along each component.
    explained_variance_ratio : array-like, shape (n_components,)
        Fraction of the training data's total variance along each component.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.pca import PCABasis
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 50))  # rank 3
    >>> pca = PCABasis.fit(X, variance_threshold=0.999)
    >>> pca.n_components, pca.n_features
    (3, 50)
    >>> bool(np.allclose(pca.inverse_transform(pca.transform(X)), X))
    True
    >>> bool(pca.reconstruction_error(X).max() < 1e-12)
    True
    """

    def __init__(
        self,
        mean,
        components,
        explained_variance,
        explained_variance_ratio,
        residual_variance=None,
    ):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.components = np.asarray(components, dtype=np.float64)
        self.explained_variance = np.asarray(explained_variance, dtype=np.float64)
        self.explained_variance_ratio = np.asarray(explained_variance_ratio, dtype=np.float64)
        if self.mean.ndim != 1 or self.components.ndim != 2:
            raise ValueError(
                "mean must be 1-D and components 2-D, got shapes "
                f"{self.mean.shape} and {self.components.shape}"
            )
        n_components, n_features = self.components.shape
        if self.mean.shape[0] != n_features or n_components == 0:
            raise ValueError(
                f"components of shape {self.components.shape} do not match a mean of "
                f"{self.mean.shape[0]} features"
            )
        for name in ("explained_variance", "explained_variance_ratio"):
            if getattr(self, name).shape != (n_components,):
                raise ValueError(
                    f"{name} must have shape ({n_components},), got {getattr(self, name).shape}"
                )
        for name in _ARRAY_NAMES:
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name} holds non-finite values")
        self.residual_variance = None
        if residual_variance is not None:
            value = float(np.asarray(residual_variance, dtype=np.float64).reshape(-1)[0])
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"residual_variance must be finite and >= 0, got {value}")
            self.residual_variance = value

    @classmethod
    def fit(
        cls,
        X,
        n_components: int | None = None,
        variance_threshold: float | None = None,
    ) -> "PCABasis":
        """Fit a basis to the rows of ``X`` by singular value decomposition in float64.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Training data, one preprocessed spectrum per row.
        n_components : int or None, optional
            Number of components to keep.
        variance_threshold : float or None, optional
            Keep the fewest components whose cumulative explained-variance ratio reaches
            this fraction (the paper keeps 99.9 %: ``0.999``). Give at most one of
            ``n_components`` and ``variance_threshold``; with neither, all
            ``min(n_samples, n_features)`` components are kept.

        Returns
        -------
        `PCABasis`

        Raises
        ------
        ValueError
            If ``X`` is not a finite 2-D array of at least two rows, or the component
            settings are invalid.

        Notes
        -----
        The sign of each component is fixed so that its largest-magnitude coefficient is
        positive, so refitting the same data gives the same basis. The variances are
        ``s**2 / (n_samples - 1)`` for singular values ``s``, as in scikit-learn.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.pca import PCABasis
        >>> X = np.random.default_rng(1).normal(size=(30, 8))
        >>> PCABasis.fit(X, n_components=2).components.shape
        (2, 8)
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"X must have shape (n_samples >= 2, n_features), got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X holds non-finite values; repair or drop those spectra first")
        if n_components is not None and variance_threshold is not None:
            raise ValueError("give n_components or variance_threshold, not both")
        n_max = min(X.shape)
        if n_components is not None and not 1 <= n_components <= n_max:
            raise ValueError(f"n_components must be between 1 and {n_max}, got {n_components}")
        if variance_threshold is not None and not 0 < variance_threshold <= 1:
            raise ValueError(f"variance_threshold must be in (0, 1], got {variance_threshold}")

        mean = X.mean(axis=0)
        _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
        # Same sign convention as scikit-learn's svd_flip(u_based_decision=False).
        signs = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
        signs[signs == 0] = 1.0
        vt *= signs[:, np.newaxis]

        variance = s**2 / (X.shape[0] - 1)
        total = variance.sum()
        ratio = variance / total if total > 0 else np.zeros_like(variance)
        if variance_threshold is not None:
            # The small tolerance keeps a threshold of exactly 1 reachable despite rounding.
            reached = np.cumsum(ratio) >= variance_threshold - 1e-12
            n_components = int(np.argmax(reached)) + 1 if reached.any() else n_max
        elif n_components is None:
            n_components = n_max
        # Per-pixel variance the kept components leave unexplained (the noise variance of
        # probabilistic PCA, Tipping & Bishop 1999): the model error of a gappy projection.
        residual = (total - variance[:n_components].sum()) / max(X.shape[1] - n_components, 1)
        return cls(
            mean,
            vt[:n_components],
            variance[:n_components],
            ratio[:n_components],
            residual_variance=max(float(residual), 0.0),
        )

    @property
    def n_components(self) -> int:
        """Number of components (rows of ``components``), the length of a `transform` row.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.pca import PCABasis
        >>> X = np.random.default_rng(0).normal(size=(40, 6))
        >>> PCABasis.fit(X, n_components=4).n_components
        4
        """
        return self.components.shape[0]

    @property
    def n_features(self) -> int:
        """Number of input features (pixels), the length of a spectrum `transform` accepts.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.pca import PCABasis
        >>> X = np.random.default_rng(0).normal(size=(40, 6))
        >>> PCABasis.fit(X, n_components=4).n_features
        6
        """
        return self.components.shape[1]

    def _check(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected shape (n_spectra, {self.n_features}), got {X.shape}")
        return X

    def transform(self, X) -> np.ndarray:
        """Coefficients of the rows of ``X`` on the components (float64).

        Parameters
        ----------
        X : array-like, shape (n_spectra, n_features)

        Returns
        -------
        `numpy.ndarray`, shape (n_spectra, n_components)

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.pca import PCABasis
        >>> pca = PCABasis([0.0, 0.0], [[0.6, 0.8]], [1.0], [1.0])
        >>> pca.transform([[3.0, 4.0]])
        array([[5.]])
        """
        return (self._check(X) - self.mean) @ self.components.T

    def inverse_transform(self, Z) -> np.ndarray:
        """Pixels rebuilt from component coefficients.

        Parameters
        ----------
        Z : array-like, shape (n_spectra, n_components)

        Returns
        -------
        `numpy.ndarray`, shape (n_spectra, n_features)

        Examples
        --------
        >>> from astro_spt.pca import PCABasis
        >>> pca = PCABasis([1.0, 1.0], [[0.6, 0.8]], [1.0], [1.0])
        >>> pca.inverse_transform([[5.0]])
        array([[4., 5.]])
        """
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_components:
            raise ValueError(f"expected shape (n_spectra, {self.n_components}), got {Z.shape}")
        return Z @ self.components + self.mean

    def reconstruction_error(self, X) -> np.ndarray:
        """Root-mean-square residual per spectrum after projection on the basis.

        A spectrum unlike the training set leaves a large residual outside the
        components; the bundle compares it with the training set's percentiles to flag
        inputs out of the training distribution.

        Parameters
        ----------
        X : array-like, shape (n_spectra, n_features)

        Returns
        -------
        `numpy.ndarray`, shape (n_spectra,)

        Examples
        --------
        >>> from astro_spt.pca import PCABasis
        >>> pca = PCABasis([0.0, 0.0], [[1.0, 0.0]], [1.0], [1.0])
        >>> pca.reconstruction_error([[3.0, 2.0]])
        array([1.41421356])
        """
        X = self._check(X)
        centred = X - self.mean
        residual = centred - (centred @ self.components.T) @ self.components
        return np.sqrt(np.mean(residual**2, axis=1))

    def project(self, X, mask=None) -> "PCAProjection":
        r"""Coefficients of spectra with missing pixels: gappy PCA (Connolly & Szalay 1999).

        Only the observed pixels (``mask`` False) constrain the coefficients; masked
        pixels, whatever values the preprocessing interpolated into them, weigh nothing.
        The coefficients are the posterior mean under the basis' own prior, coefficient
        :math:`k` with variance :math:`\lambda_k` (``explained_variance``), and a model
        error of variance :math:`\eta` (``residual_variance``) on every observed pixel:

        .. math::

            z = A^{-1} C_O (x - \mu)_O, \qquad A = C_O C_O^T + \eta \Lambda^{-1},

        with :math:`C_O` the components restricted to the observed pixels. Their posterior
        covariance :math:`\eta A^{-1}` grows with the information the masked pixels took
        away; `PCAProjection.output_covariance` carries it, and the pixels' own noise,
        through a network. A spectrum without masked pixels gets the orthogonal
        projection shrunk by :math:`1 / (1 + \eta / \lambda_k)`.

        Parameters
        ----------
        X : array-like, shape (n_spectra, n_features)
            Spectra, finite everywhere (masked pixels may hold anything finite).
        mask : array-like of bool, shape of ``X``, optional
            True where a pixel is not a measurement; default none masked.

        Returns
        -------
        `PCAProjection`

        Raises
        ------
        ValueError
            If the basis has no ``residual_variance`` (a basis saved by astro_spt 0.1,
            whose bundles use `transform`), or the shapes do not fit.

        Examples
        --------
        A basis of two components on four pixels; the second component lives on the
        last two pixels only:

        >>> import numpy as np
        >>> from astro_spt.pca import PCABasis
        >>> pca = PCABasis(
        ...     np.zeros(4), [[1.0, 1.0, 0, 0], [0, 0, 1.0, 1.0]] / np.sqrt(2), [4.0, 1.0],
        ...     [0.8, 0.2], residual_variance=0.01,
        ... )
        >>> x = np.array([[2.0, 2.0, 1.0, 1.0]])
        >>> pca.project(x).coefficients.round(3)  # nearly the orthogonal projection
        array([[2.821, 1.4  ]])
        >>> gappy = pca.project(x, mask=[[False, False, False, True]])
        >>> gappy.coefficients.round(3)  # pixel 4 ignored: its partner pixel 3 decides
        array([[2.821, 1.386]])
        >>> variance = gappy.residual_variance * gappy.inverse_gram  # the coefficients'
        >>> np.sqrt(np.diagonal(variance, axis1=1, axis2=2)).round(3)
        array([[0.1 , 0.14]])

        With pixel 4 missing, the second coefficient is known √2 times less precisely.
        """
        X = self._check(X)
        if self.residual_variance is None:
            raise ValueError("this PCA basis has no residual_variance: use transform()")
        n, k = X.shape[0], self.n_components
        observed = np.ones(X.shape, bool) if mask is None else ~np.asarray(mask, bool)
        if observed.shape != X.shape:
            raise ValueError(f"mask of shape {observed.shape} does not match {X.shape}")
        eta = self.residual_variance
        centred = np.where(observed, X - self.mean, 0.0)
        rhs = centred @ self.components.T
        prior = eta / self.explained_variance
        # Without masked pixels A = D = 1 + eta / lambda is diagonal (the components are
        # orthonormal); with m masked, A = D - C_M C_M^T needs only those m columns.
        diagonal = 1.0 + prior
        inverse = np.zeros((n, k, k))
        inverse[:, np.arange(k), np.arange(k)] = 1.0 / diagonal
        for i in np.flatnonzero(~observed.all(axis=1)):
            masked = self.components[:, ~observed[i]]
            if masked.shape[1] >= k:  # A is symmetric positive definite
                inverse[i] = np.linalg.inv(np.diag(diagonal) - masked @ masked.T)
                continue
            # Fewer masked pixels than components (most spectra: a few dozen): by the
            # Woodbury identity A^-1 = D^-1 + U S^-1 U^T, U = D^-1 C_M, with the m x m
            # S = I - C_M^T U positive definite (as A is: C_M C_M^T <= I, eta / lambda > 0)
            scaled = masked / diagonal[:, None]
            schur = np.eye(masked.shape[1]) - masked.T @ scaled
            root = np.linalg.solve(np.linalg.cholesky(schur), scaled.T)
            inverse[i] += root.T @ root
        coefficients = np.einsum("nkl,nl->nk", inverse, rhs)
        residual = np.where(observed, centred - coefficients @ self.components, 0.0)
        n_observed = np.maximum(observed.sum(axis=1), 1)
        error = np.sqrt(np.sum(residual**2, axis=1) / n_observed)
        return PCAProjection(coefficients, error, inverse, observed, eta, self.components)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The basis as a dict of plain arrays (for safetensors or ``.npz`` files).

        Examples
        --------
        >>> from astro_spt.pca import PCABasis
        >>> sorted(PCABasis([0.0], [[1.0]], [2.0], [1.0]).to_arrays())
        ['components', 'explained_variance', 'explained_variance_ratio', 'mean']
        """
        arrays = {name: getattr(self, name) for name in _ARRAY_NAMES}
        if self.residual_variance is not None:
            arrays["residual_variance"] = np.array([self.residual_variance])
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "PCABasis":
        """Rebuild a basis from the arrays of `to_arrays` (any float dtype; held as float64).

        Raises
        ------
        ValueError
            If an array is missing or the shapes do not fit together.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.pca import PCABasis
        >>> pca = PCABasis.fit(np.random.default_rng(2).normal(size=(10, 4)), n_components=2)
        >>> bool(np.array_equal(PCABasis.from_arrays(pca.to_arrays()).components, pca.components))
        True
        """
        missing = [name for name in _ARRAY_NAMES if name not in arrays]
        if missing:
            raise ValueError(f"PCA arrays are missing {', '.join(missing)}")
        optional = {name: arrays[name] for name in _OPTIONAL_ARRAYS if name in arrays}
        return cls(**{name: np.asarray(arrays[name]) for name in _ARRAY_NAMES}, **optional)

    def __repr__(self) -> str:
        return (
            f"<PCABasis: {self.n_components} components of {self.n_features} features, "
            f"{self.explained_variance_ratio.sum():.4%} of the variance>"
        )


@dataclass
class PCAProjection:
    r"""Gappy PCA coefficients of a batch of spectra (`PCABasis.project`).

    Attributes
    ----------
    coefficients : `numpy.ndarray`, shape (n, n_components)
        Posterior-mean coefficients.
    reconstruction_error : `numpy.ndarray`, shape (n,)
        RMS residual over each spectrum's observed pixels.
    inverse_gram : `numpy.ndarray`, shape (n, n_components, n_components)
        :math:`A^{-1}`; the coefficients' covariance from the model error is
        ``residual_variance * inverse_gram``.
    observed : `numpy.ndarray` of bool, shape (n, n_features)
        The pixels that constrained the coefficients.
    residual_variance : float
        Model error :math:`\eta` per observed pixel.
    components : `numpy.ndarray`, shape (n_components, n_features)
        The basis' components.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.pca import PCABasis
    >>> rng = np.random.default_rng(0)
    >>> pca = PCABasis.fit(rng.normal(size=(50, 20)), n_components=3)
    >>> projection = pca.project(rng.normal(size=(2, 20)))
    >>> projection.coefficients.shape, projection.inverse_gram.shape
    ((2, 3), (2, 3, 3))
    """

    coefficients: np.ndarray
    reconstruction_error: np.ndarray
    inverse_gram: np.ndarray
    observed: np.ndarray
    residual_variance: float
    components: np.ndarray

    def output_covariance(self, jacobian, ivar) -> tuple[np.ndarray, np.ndarray]:
        r"""Covariance that the spectrum's noise and gaps give a function of the coefficients.

        To first order, through ``jacobian`` (d output / d coefficient): the pixels' own
        noise, :math:`J A^{-1} C_O N C_O^T A^{-1} J^T` with :math:`N` the pixel variances
        ``1 / ivar``, and the coefficients' posterior covariance from the model error
        and the masked pixels, :math:`\eta J A^{-1} J^T`.

        Parameters
        ----------
        jacobian : array-like, shape (n, D, n_components)
            Derivatives of D outputs (e.g. a network's) with respect to the coefficients.
        ivar : array-like, shape (n, n_features)
            Inverse variance of the projected spectra's pixels.

        Returns
        -------
        noise, gaps : `numpy.ndarray`, shape (n, D, D)
            The two covariances.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.pca import PCABasis
        >>> pca = PCABasis(
        ...     np.zeros(4), [[1.0, 1.0, 0, 0], [0, 0, 1.0, 1.0]] / np.sqrt(2), [4.0, 1.0],
        ...     [0.8, 0.2], residual_variance=0.01,
        ... )
        >>> jacobian = np.array([[[0.0, 1.0]]])  # the output is the second coefficient
        >>> ivar = np.full((1, 4), 100.0)  # pixel noise 0.1
        >>> for mask in (None, [[False, False, False, True]]):
        ...     noise, gaps = pca.project(np.ones((1, 4)), mask).output_covariance(jacobian, ivar)
        ...     print(np.sqrt(noise).round(3), np.sqrt(gaps).round(3))
        [[[0.099]]] [[[0.1]]]
        [[[0.139]]] [[[0.14]]]
        """
        jacobian = np.asarray(jacobian, dtype=np.float64)
        ivar = np.asarray(ivar, dtype=np.float64)
        projected = np.einsum("ndk,nkl->ndl", jacobian, self.inverse_gram)
        sensitivity = projected @ self.components  # d output / d pixel, (n, D, n_features)
        with np.errstate(divide="ignore"):
            variance = np.where(self.observed & (ivar > 0), 1.0 / ivar, 0.0)
        noise = np.einsum("ndp,nep,np->nde", sensitivity, sensitivity, variance)
        gaps = self.residual_variance * np.einsum("ndk,nek->nde", projected, jacobian)
        return noise, gaps
