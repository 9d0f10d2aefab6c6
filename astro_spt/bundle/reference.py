"""When a star is out of the training set's distribution, and when its σ is large.

`ReferenceStats` holds the statistics of spectra the PCA basis and the network were not
fitted on (PCA reconstruction error, latent distance to the training set, distance of the
network's embedding from the training set's, the labels' range) from which the
``out_of_distribution``, ``outside_label_range`` and ``large_uncertainty`` flags are
decided (`latent_distance`, `EmbeddingDensity`, `LARGE_UNCERTAINTY_FRACTION`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..pca import PCABasis

__all__ = [
    "EMBEDDING_SHRINKAGE",
    "LARGE_UNCERTAINTY_FRACTION",
    "REFERENCE_PERCENTILES",
    "EmbeddingDensity",
    "ReferenceStats",
    "latent_distance",
]


REFERENCE_PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
#: Default threshold of the ``large_uncertainty`` flag, as a fraction of the label's
#: spread in the training set (`EstimatorBundle.large_uncertainty`): σ as large as that
#: spread means the spectrum narrows the label down no more than the training set does.
#: On validation data it flags 3 % (real DR10 benchmark) and 7 % (default model's mock
#: set) of the stars; 0.75 flagged 6 % and 15 % (benchmarks/calibration.py).
LARGE_UNCERTAINTY_FRACTION = 1.0
#: Default shrinkage of `EmbeddingDensity.fit`: the covariance of the training embedding is
#: blended with this fraction of its mean variance on the diagonal, so that it stays
#: invertible when the training set has fewer spectra than the embedding has dimensions.
#: 0.001, 0.01 and 0.1 flagged 67-76 % of real LAMOST dwarfs for the mock-trained giant
#: model and 0.6-0.9 % of its mock test giants (issue 14's measurement, docs/flags.rst).
EMBEDDING_SHRINKAGE = 0.01


_DISTANCES = ("reconstruction_error", "latent_distance", "embedding_distance")


def _percentile_key(q: float) -> str:
    return f"{float(q):g}"


@dataclass
class ReferenceStats:
    """Statistics of the training set that tell how far a new spectrum is from it.

    Three distances are kept, each as percentiles over held-out spectra:

    - ``reconstruction_error``: RMS residual of a spectrum outside the PCA basis
      (`PCABasis.reconstruction_error`). Large when the spectrum has features the
      training spectra did not.
    - ``latent_distance``: Mahalanobis distance of the PCA coefficients from the
      training mean, :math:`\\sqrt{\\sum_k z_k^2 / \\lambda_k}` with :math:`\\lambda_k`
      the explained variances. The coefficients of the set the basis was fitted on are
      uncorrelated with those variances, so this is the exact Mahalanobis distance for
      that set. Large when the spectrum is an unusual mix of familiar features.
    - ``embedding_distance`` (bundles that have an `EmbeddingDensity`): Mahalanobis
      distance of the network's embedding of the spectrum (the backbone output its heads
      read) from the training spectra's embeddings. Large when the network sees the
      spectrum unlike any it was trained on, also when its PCA coefficients look
      ordinary: it tells dwarfs from the giants a model was trained on far better than
      the two distances above.

    Plus the range and the standard deviation of each label in the training set (physical
    units); predictions outside the range are flagged.

    The distances must be measured on spectra the PCA basis was not fitted on (`train`
    uses the validation part): on its own fitting set a basis leaves smaller residuals
    than on any new spectrum, and new spectra from the very same distribution would
    exceed its percentiles far more often than the percentile says.

    Parameters
    ----------
    n_train : int
        Number of spectra the distances were measured on.
    reconstruction_error, latent_distance : dict of str to float
        Percentile (as a string, ``"99.9"``) to value.
    label_ranges : dict of str to [float, float]
        Label name to training minimum and maximum.
    ood_percentile : float
        Percentile beyond which a spectrum is flagged out of distribution.
    label_spread : dict of str to float
        Label name to the standard deviation of the training labels (physical units).
    embedding_distance : dict of str to float
        Percentile to value, as above; empty for bundles without an `EmbeddingDensity`
        (bundles written before this statistic existed).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.bundle import ReferenceStats
    >>> from astro_spt.pca import PCABasis
    >>> rng = np.random.default_rng(0)
    >>> flux = rng.normal(size=(100, 20))
    >>> pca = PCABasis.fit(flux, n_components=5)
    >>> ref = ReferenceStats.from_training(pca, flux, rng.uniform(1, 9, (100, 1)), ["age"])
    >>> ref.n_train, sorted(ref.reconstruction_error)
    (100, ['100', '50', '90', '99', '99.9'])
    >>> ref.threshold("latent_distance", 100) == max(ref.latent_distance.values())
    True
    """

    n_train: int
    reconstruction_error: dict[str, float]
    latent_distance: dict[str, float]
    label_ranges: dict[str, list[float]] = field(default_factory=dict)
    ood_percentile: float = 99.9
    label_spread: dict[str, float] = field(default_factory=dict)
    embedding_distance: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for kind in _DISTANCES:
            values = {_percentile_key(float(q)): float(v) for q, v in getattr(self, kind).items()}
            setattr(self, kind, values)
        self.label_ranges = {k: [float(lo), float(hi)] for k, (lo, hi) in self.label_ranges.items()}
        self.label_spread = {k: float(v) for k, v in self.label_spread.items()}
        self.n_train = int(self.n_train)
        self.ood_percentile = float(self.ood_percentile)
        for kind in _DISTANCES:
            values = getattr(self, kind)
            if (values or kind != "embedding_distance") and _percentile_key(
                self.ood_percentile
            ) not in values:
                raise ValueError(
                    f"ood_percentile {self.ood_percentile:g} is not among the stored "
                    f"{kind} percentiles {sorted(getattr(self, kind), key=float)}"
                )

    @classmethod
    def from_training(
        cls,
        pca: PCABasis,
        flux,
        labels=None,
        label_names: Sequence[str] = (),
        *,
        mask=None,
        gappy: bool = False,
        percentiles: Sequence[float] = REFERENCE_PERCENTILES,
        ood_percentile: float = 99.9,
        embedding=None,
        embedding_density: "EmbeddingDensity | None" = None,
    ) -> "ReferenceStats":
        """Measure the statistics on held-out spectra (and the training labels).

        Parameters
        ----------
        pca : `~astro_spt.pca.PCABasis`
            The basis fitted on the training set.
        flux : array-like, shape (N, n_features)
            Preprocessed spectra of the training distribution that the basis was not
            fitted on (see above).
        labels : array-like, shape (M, D), optional
            Training labels in physical units, for the label ranges and spreads.
        label_names : sequence of str
            Names of the label columns.
        mask : array-like of bool, shape of ``flux``, optional
            Masked pixels, for ``gappy``.
        gappy : bool, optional
            Measure the distances with the gappy projection (`PCABasis.project`), as
            bundles with ``projection="gappy"`` do, instead of the orthogonal one.
        percentiles : sequence of float
            Percentiles to store.
        ood_percentile : float
            Default threshold of the out-of-distribution flag; must be in ``percentiles``.
        embedding : array-like, shape (N, d_model), optional
            The network's embedding of the same held-out spectra
            (`~astro_spt.bundle.EstimatorBundle.embed`), with
        embedding_density : `EmbeddingDensity`, optional
            the density fitted on the training spectra's embedding: stores the
            percentiles of ``embedding_distance``.

        Returns
        -------
        `ReferenceStats`

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.bundle import ReferenceStats
        >>> from astro_spt.pca import PCABasis
        >>> rng = np.random.default_rng(0)
        >>> flux = rng.normal(size=(200, 30))  # stands in for preprocessed spectra
        >>> ages = rng.uniform(1.0, 12.0, size=(200, 1))
        >>> pca = PCABasis.fit(flux, n_components=5)
        >>> ref = ReferenceStats.from_training(pca, flux, ages, ["age"])
        >>> ref.n_train, ref.ood_percentile
        (200, 99.9)
        >>> [round(v, 1) for v in ref.label_ranges["age"]]  # Gyr
        [1.2, 12.0]
        """
        flux = np.asarray(flux, dtype=np.float64)
        if gappy:
            projection = pca.project(flux, mask)
            recon, features = projection.reconstruction_error, projection.coefficients
        else:
            recon, features = pca.reconstruction_error(flux), pca.transform(flux)
        latent = latent_distance(pca, features)

        def at_percentiles(values):
            return dict(zip(percentiles, np.percentile(values, percentiles), strict=True))

        embedded = {}
        if (embedding is None) != (embedding_density is None):
            raise ValueError("give both embedding and embedding_density, or neither")
        if embedding is not None:
            distance = embedding_density.distance(embedding)
            if len(distance) != len(flux):
                raise ValueError(f"{len(distance)} embeddings for {len(flux)} spectra")
            embedded = at_percentiles(distance)
        ranges, spreads = {}, {}
        if labels is not None:
            y = np.asarray(labels, dtype=np.float64)
            y = y.reshape(len(y), -1)
            if y.shape[1] != len(label_names):
                raise ValueError(f"{y.shape[1]} label columns but {len(label_names)} names")
            for name, col in zip(label_names, y.T, strict=True):
                ranges[name] = [float(np.nanmin(col)), float(np.nanmax(col))]
                spreads[name] = float(np.nanstd(col))
        return cls(
            n_train=len(flux),
            reconstruction_error=at_percentiles(recon),
            latent_distance=at_percentiles(latent),
            label_ranges=ranges,
            ood_percentile=ood_percentile,
            label_spread=spreads,
            embedding_distance=embedded,
        )

    def threshold(self, kind: str, percentile: float | None = None) -> float:
        """Stored percentile of ``kind`` (``"reconstruction_error"``, ``"latent_distance"``
        or ``"embedding_distance"``).

        ``percentile=None`` means ``ood_percentile``.

        Raises
        ------
        KeyError
            If that percentile is not stored (the message lists those that are).

        Examples
        --------
        >>> from astro_spt.bundle import ReferenceStats
        >>> ref = ReferenceStats(
        ...     n_train=2000,
        ...     reconstruction_error={50: 0.007, 99.9: 0.026},
        ...     latent_distance={50: 7.2, 99.9: 47.4},
        ... )
        >>> ref.threshold("latent_distance")  # at ood_percentile, 99.9
        47.4
        >>> ref.threshold("reconstruction_error", 50)
        0.007
        """
        if kind not in _DISTANCES:
            raise ValueError(f"unknown reference statistic {kind!r}")
        key = _percentile_key(self.ood_percentile if percentile is None else percentile)
        values = getattr(self, kind)
        if key not in values:
            raise KeyError(
                f"percentile {key} of {kind} is not stored; stored: "
                f"{', '.join(sorted(values, key=float))}"
            )
        return values[key]

    def to_dict(self) -> dict[str, Any]:
        """The statistics as JSON types.

        Examples
        --------
        >>> import json
        >>> from astro_spt.bundle import ReferenceStats
        >>> ref = ReferenceStats(2000, {99.9: 0.026}, {99.9: 47.4}, {"age": [0.4, 13.8]})
        >>> print(json.dumps(ref.to_dict()))  # doctest: +NORMALIZE_WHITESPACE
        {"n_train": 2000, "reconstruction_error": {"99.9": 0.026},
         "latent_distance": {"99.9": 47.4}, "label_ranges": {"age": [0.4, 13.8]},
         "ood_percentile": 99.9, "label_spread": {}, "embedding_distance": {}}
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReferenceStats":
        """Inverse of `to_dict`.

        Examples
        --------
        >>> from astro_spt.bundle import ReferenceStats
        >>> ref = ReferenceStats(2000, {99.9: 0.026}, {99.9: 47.4}, {"age": [0.4, 13.8]})
        >>> ReferenceStats.from_dict(ref.to_dict()) == ref
        True
        """
        return cls(**data)


def latent_distance(pca: PCABasis, features) -> np.ndarray:
    """Mahalanobis distance of PCA coefficients from the training mean (see `ReferenceStats`).

    Parameters
    ----------
    pca : `~astro_spt.pca.PCABasis`
        The basis the coefficients were computed with.
    features : array-like, shape (..., n_components)
        PCA coefficients (`~astro_spt.pca.PCABasis.transform`).

    Returns
    -------
    `numpy.ndarray`, shape (...)

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.bundle import latent_distance
    >>> from astro_spt.pca import PCABasis
    >>> rng = np.random.default_rng(0)
    >>> flux = rng.normal(size=(100, 20))
    >>> pca = PCABasis.fit(flux, n_components=5)
    >>> d = latent_distance(pca, pca.transform(flux))
    >>> d.shape
    (100,)
    >>> round(float(np.mean(d**2)), 2)  # n_components (N - 1) / N on the training set
    4.95
    >>> round(float(np.median(latent_distance(pca, pca.transform(3 * flux)) / d)), 1)
    3.0
    """
    z = np.asarray(features, dtype=np.float64)
    return np.sqrt(np.sum(z**2 / pca.explained_variance, axis=-1))


@dataclass(eq=False)
class EmbeddingDensity:
    """A Gaussian model of how the network embeds its training spectra.

    The embedding is the backbone output that the network's heads read
    (`~astro_spt.bundle.EstimatorBundle.embed`). `distance` is the Mahalanobis distance of
    an embedding from the training spectra's mean under their covariance (shrunk towards
    its mean variance, `EMBEDDING_SHRINKAGE`): the feature-space detector of Lee et al.
    (2018, NeurIPS, "A simple unified framework for detecting out-of-distribution samples
    and adversarial attacks"). The ``out_of_distribution`` flag compares it with its
    percentiles on held-out spectra (`ReferenceStats.embedding_distance`).

    Parameters
    ----------
    mean : array-like, shape (d,)
        Mean embedding of the training spectra.
    whitening : array-like, shape (d, d)
        Matrix :math:`W` with :math:`W W^T = \\Sigma^{-1}`, so that the distance of
        :math:`h` is :math:`\\lVert (h - \\mu) W \\rVert`.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.bundle import EmbeddingDensity
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(2000, 3)) * [1.0, 2.0, 4.0]
    >>> density = EmbeddingDensity.fit(train, shrinkage=0.0)
    >>> [round(float(d), 1) for d in density.distance([[0, 0, 0], [0, 0, 8], [2, 0, 0]])]
    [0.0, 2.0, 2.0]
    """

    mean: np.ndarray
    whitening: np.ndarray

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.whitening = np.asarray(self.whitening, dtype=np.float64)
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if d < 1 or self.whitening.shape != (d, d):
            raise ValueError(
                f"an embedding density needs a mean of shape (d,) and a whitening matrix of "
                f"shape (d, d), got {self.mean.shape} and {self.whitening.shape}"
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.whitening).all()):
            raise ValueError("the embedding density holds NaN or infinite values")

    @property
    def n_features(self) -> int:
        """Width d of the embedding.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.bundle import EmbeddingDensity
        >>> EmbeddingDensity(np.zeros(4), np.eye(4)).n_features
        4
        """
        return self.mean.shape[0]

    @classmethod
    def fit(cls, embedding, shrinkage: float = EMBEDDING_SHRINKAGE) -> "EmbeddingDensity":
        """Fit the mean and the shrunk covariance of the training spectra's embedding.

        Parameters
        ----------
        embedding : array-like, shape (N, d)
            Embedding of the training spectra (N >= 2).
        shrinkage : float, optional
            Weight in [0, 1) of the diagonal target :math:`\\bar\\sigma^2 I`:
            :math:`\\Sigma = (1 - s) S + s \\bar\\sigma^2 I`, :math:`S` the sample
            covariance and :math:`\\bar\\sigma^2` its mean variance.

        Returns
        -------
        `EmbeddingDensity`

        Raises
        ------
        ValueError
            If there are fewer than two finite embeddings, or they do not vary.

        Examples
        --------
        Fewer spectra than dimensions: the shrinkage keeps the covariance invertible.

        >>> import numpy as np
        >>> from astro_spt.bundle import EmbeddingDensity
        >>> train = np.random.default_rng(1).normal(size=(20, 64))
        >>> density = EmbeddingDensity.fit(train)
        >>> density.n_features, bool(np.isfinite(density.whitening).all())
        (64, True)
        """
        h = np.asarray(embedding, dtype=np.float64)
        if h.ndim != 2 or len(h) < 2:
            raise ValueError(f"need an (N, d) embedding with N >= 2, got shape {h.shape}")
        if not np.isfinite(h).all():
            raise ValueError("the embedding holds NaN or infinite values")
        if not 0.0 <= shrinkage < 1.0:
            raise ValueError(f"shrinkage must be in [0, 1), got {shrinkage}")
        mean = h.mean(axis=0)
        covariance = np.atleast_2d(np.cov(h, rowvar=False))
        target = np.trace(covariance) / len(covariance)
        if not target > 0:
            raise ValueError("the embedding does not vary over the training spectra")
        covariance = (1.0 - shrinkage) * covariance + shrinkage * target * np.eye(len(mean))
        try:
            factor = np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError as err:
            raise ValueError(
                "the embedding's covariance is singular: give a shrinkage above 0"
            ) from err
        # Sigma = L L^T, so (h - mu) L^-T has the identity as covariance
        whitening = np.linalg.inv(factor).T
        return cls(mean, whitening)

    def distance(self, embedding) -> np.ndarray:
        """Mahalanobis distance of embeddings from the training mean.

        Parameters
        ----------
        embedding : array-like, shape (..., d)

        Returns
        -------
        `numpy.ndarray`, shape (...)

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.bundle import EmbeddingDensity
        >>> density = EmbeddingDensity(np.zeros(2), np.diag([1.0, 0.5]))  # sigma 1 and 2
        >>> density.distance([[3.0, 0.0], [0.0, 4.0]])
        array([3., 2.])
        """
        h = np.asarray(embedding, dtype=np.float64)
        if h.shape[-1:] != (self.n_features,):
            raise ValueError(
                f"embeddings of width {h.shape[-1] if h.ndim else 0}, the density's is "
                f"{self.n_features}"
            )
        return np.sqrt(np.sum(((h - self.mean) @ self.whitening) ** 2, axis=-1))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store (``mean``, ``whitening``), as `from_arrays` takes them.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.bundle import EmbeddingDensity
        >>> density = EmbeddingDensity.fit(np.random.default_rng(0).normal(size=(50, 4)))
        >>> again = EmbeddingDensity.from_arrays(density.to_arrays())
        >>> bool(np.array_equal(again.whitening, density.whitening))
        True
        """
        return {"mean": self.mean, "whitening": self.whitening}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "EmbeddingDensity":
        """Inverse of `to_arrays`.

        Raises
        ------
        ValueError
            If the arrays are missing, of the wrong shapes or not finite.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.bundle import EmbeddingDensity
        >>> EmbeddingDensity.from_arrays({"mean": np.zeros(2), "whitening": np.eye(2)}).n_features
        2
        """
        if set(arrays) != {"mean", "whitening"}:
            raise ValueError(f"expected the arrays mean and whitening, got {sorted(arrays)}")
        return cls(arrays["mean"], arrays["whitening"])
