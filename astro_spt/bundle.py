"""Estimator bundles: everything a trained estimator needs, saved as one directory.

A bundle (SPEC §2, layer 4) holds the network weights, the PCA basis, the label names,
units and scaling, the label covariance of the training loss, the Monte Carlo dropout
settings, the training set's reference statistics (for out-of-distribution flags), the
preprocessing settings, the provenance of the training run and the model card. On disk::

    config.json          schema version, settings, provenance, sha256 of every other file
    model.safetensors    network weights (float32, or float16 to halve the size)
    pca.safetensors      PCA basis as plain arrays (or pca.npz)
    README.md            Hugging Face model card (YAML front matter + accuracy tables)

Loading never unpickles: weights and arrays go through ``safetensors`` (or
``numpy.load(allow_pickle=False)``), settings through JSON, and every file is checked
against its sha256 in ``config.json`` before it is used.
"""

import contextlib
import hashlib
import inspect
import io
import json
import math
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .exceptions import (
    AstroSPTError,
    BundleError,
    BundleIntegrityError,
    UnsupportedSchemaError,
)
from .nn import MCPrediction, SpectralTransformer, mc_predict
from .pca import PCABasis, PCAProjection

__all__ = [
    "CONFIG_NAME",
    "MODEL_CARD_NAME",
    "SCHEMA_VERSION",
    "EstimatorBundle",
    "LabelPrediction",
    "LabelSpec",
    "ReferenceStats",
    "find_corrupt_files",
    "latent_distance",
    "read_bundle_config",
]

SCHEMA_VERSION = 2
"""Version of the bundle layout written by this `astro_spt`; it reads this one and older.

Version 2 added the gappy PCA projection, the aleatoric head and the predictive
uncertainty weights (``pca.projection``, ``network.hparams.aleatoric``, ``uncertainty``).
"""

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
PCA_NAMES = {"safetensors": "pca.safetensors", "npz": "pca.npz"}
LABEL_SCALINGS = ("linear", "log10")
REFERENCE_PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}
PROJECTIONS = ("orthogonal", "gappy")
#: Default threshold of the ``large_uncertainty`` flag, as a fraction of the label's
#: spread in the training set (`EstimatorBundle.large_uncertainty`): σ as large as that
#: spread means the spectrum narrows the label down no more than the training set does.
#: On validation data it flags 3 % (real DR10 benchmark) and 7 % (default model's mock
#: set) of the stars; 0.75 flagged 6 % and 15 % (benchmarks/calibration.py).
LARGE_UNCERTAINTY_FRACTION = 1.0
#: The sources of the predictive uncertainty (`EstimatorBundle.predict_scaled`).
UNCERTAINTY_SOURCES = ("noise", "aleatoric", "epistemic")
PCA_DTYPES = ("float64", "float32")


def _package_version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------
# Labels, reference statistics and predictions


@dataclass(frozen=True)
class LabelSpec:
    """Name, unit and scaling of one predicted label.

    The network predicts ``(g(y) - mean) / scale`` where ``y`` is the label in ``unit``
    and ``g`` is the identity (``scaling="linear"``) or ``log10`` (``"log10"``, e.g. for
    ages, whose errors are closer to relative than absolute).

    Parameters
    ----------
    name : str
        Column name of the label (``"age"``, ``"mass"``).
    unit : str
        Unit, as a string astropy can parse (``"Gyr"``, ``"solMass"``); ``""`` for none.
    scaling : {"linear", "log10"}
        Transform applied before standardisation.
    mean, scale : float
        Mean and standard deviation of the transformed training labels.

    Examples
    --------
    >>> from astro_spt.bundle import LabelSpec
    >>> age = LabelSpec("age", "Gyr", "log10", mean=0.5, scale=0.25)
    >>> float(age.to_network(10**0.75))
    1.0
    >>> float(age.from_network(1.0))
    5.623413251903491
    """

    name: str
    unit: str
    scaling: str = "linear"
    mean: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"label name must be a non-empty string, got {self.name!r}")
        if self.scaling not in LABEL_SCALINGS:
            raise ValueError(f"scaling must be one of {LABEL_SCALINGS}, got {self.scaling!r}")
        if not (math.isfinite(self.mean) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"label {self.name!r}: mean must be finite and scale positive")
        _check_label_unit(self.name, self.unit)
        # Plain floats keep config.json free of numpy scalars.
        object.__setattr__(self, "mean", float(self.mean))
        object.__setattr__(self, "scale", float(self.scale))

    def to_network(self, values):
        """Physical values (in ``unit``) to the network's standardised space.

        Examples
        --------
        >>> from astro_spt.bundle import LabelSpec
        >>> age = LabelSpec("age", "Gyr", "log10", mean=0.5, scale=0.25)
        >>> age.to_network([1.0, 10.0])  # (log10(age) - 0.5) / 0.25
        array([-2.,  2.])
        """
        values = np.asarray(values, dtype=np.float64)
        if self.scaling == "log10":
            values = np.log10(values)
        return (values - self.mean) / self.scale

    def from_network(self, values):
        """Network outputs back to physical values in ``unit``.

        Examples
        --------
        >>> from astro_spt.bundle import LabelSpec
        >>> age = LabelSpec("age", "Gyr", "log10", mean=0.5, scale=0.25)
        >>> age.from_network([-2.0, 0.0, 2.0]).round(3)  # Gyr
        array([ 1.   ,  3.162, 10.   ])
        >>> mass = LabelSpec("mass", "solMass", mean=1.4, scale=0.3)
        >>> round(float(mass.from_network(1.0)), 3)  # solMass
        1.7
        """
        values = np.asarray(values, dtype=np.float64) * self.scale + self.mean
        return 10.0**values if self.scaling == "log10" else values

    def derivative(self, values):
        """d(physical)/d(network output) at the given network outputs.

        This is the Jacobian that carries an uncertainty from the network's space to
        physical units to first order (``method="delta"`` of `EstimatorBundle.unscale`).

        Examples
        --------
        >>> from astro_spt.bundle import LabelSpec
        >>> age = LabelSpec("age", "Gyr", "log10", mean=0.5, scale=0.25)
        >>> age.derivative([0.0, 2.0]).round(3)  # ln(10) * scale * age: grows with age
        array([1.82 , 5.756])
        >>> LabelSpec("mass", "solMass", mean=1.4, scale=0.3).derivative([0.0, 1.0])
        array([0.3, 0.3])
        """
        if self.scaling == "log10":
            return np.log(10.0) * self.scale * self.from_network(values)
        return np.full(np.shape(values), self.scale)


def _check_label_unit(name: str, unit) -> None:
    """Refuse a unit astropy cannot parse, or one of another kind than the label's."""
    from astropy import units as u

    if not isinstance(unit, str) or len(unit) > 64:
        raise ValueError(f"label {name!r}: the unit must be a string, got {unit!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a unit astropy only guesses at is refused too
            parsed = u.Unit(unit)
    except (ValueError, TypeError, Warning) as err:
        raise ValueError(f"label {name!r}: cannot parse unit {unit!r}") from err
    expected = LABEL_PHYSICAL_TYPES.get(name.lower())
    if expected is not None and parsed.physical_type != expected:
        raise ValueError(
            f"label {name!r}: its unit {unit!r} is not a {expected} (it is {parsed.physical_type})"
        )


def _percentile_key(q: float) -> str:
    return f"{float(q):g}"


@dataclass
class ReferenceStats:
    """Statistics of the training set that tell how far a new spectrum is from it.

    Two distances are kept, each as percentiles over the training spectra:

    - ``reconstruction_error``: RMS residual of a spectrum outside the PCA basis
      (`PCABasis.reconstruction_error`). Large when the spectrum has features the
      training spectra did not.
    - ``latent_distance``: Mahalanobis distance of the PCA coefficients from the
      training mean, :math:`\\sqrt{\\sum_k z_k^2 / \\lambda_k}` with :math:`\\lambda_k`
      the explained variances. The coefficients of the set the basis was fitted on are
      uncorrelated with those variances, so this is the exact Mahalanobis distance for
      that set. Large when the spectrum is an unusual mix of familiar features.

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

    def __post_init__(self):
        for kind in ("reconstruction_error", "latent_distance"):
            values = {_percentile_key(float(q)): float(v) for q, v in getattr(self, kind).items()}
            setattr(self, kind, values)
        self.label_ranges = {k: [float(lo), float(hi)] for k, (lo, hi) in self.label_ranges.items()}
        self.label_spread = {k: float(v) for k, v in self.label_spread.items()}
        self.n_train = int(self.n_train)
        self.ood_percentile = float(self.ood_percentile)
        for kind in ("reconstruction_error", "latent_distance"):
            if _percentile_key(self.ood_percentile) not in getattr(self, kind):
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
            reconstruction_error=dict(
                zip(percentiles, np.percentile(recon, percentiles), strict=True)
            ),
            latent_distance=dict(zip(percentiles, np.percentile(latent, percentiles), strict=True)),
            label_ranges=ranges,
            ood_percentile=ood_percentile,
            label_spread=spreads,
        )

    def threshold(self, kind: str, percentile: float | None = None) -> float:
        """Stored percentile of ``kind`` (``"reconstruction_error"`` or ``"latent_distance"``).

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
        if kind not in ("reconstruction_error", "latent_distance"):
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
         "ood_percentile": 99.9, "label_spread": {}}
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


@dataclass
class LabelPrediction:
    """Predicted labels in physical units, with their covariance.

    Attributes
    ----------
    names : tuple of str
        Label names.
    units : tuple of str
        Label units (astropy unit strings).
    mean : `numpy.ndarray`, shape (N, D)
        Point estimates (see `EstimatorBundle.unscale` for what they are with log scaling).
    covariance : `numpy.ndarray`, shape (N, D, D)
        Covariance of the estimates.
    samples : `numpy.ndarray` or None, shape (N, T, D)
        Samples of the predictive distribution in physical units, when they were kept.
    seed : int
        Seed of the Monte Carlo dropout masks.
    components : dict of str to `numpy.ndarray` or None
        Standard deviation that each source of uncertainty (``"noise"``,
        ``"aleatoric"``, ``"epistemic"``) contributes, shape (N, D), to first order.

    Examples
    --------
    `EstimatorBundle.unscale` makes them, here for one of the example LAMOST spectra:

    >>> import astro_spt
    >>> from specutils import Spectrum
    >>> from astro_spt.io import example_files
    >>> from astro_spt.preprocess import preprocess
    >>> model = astro_spt.load_model()  # the embedded default, no network
    >>> flux = preprocess(Spectrum.read(example_files()[0]), model.preprocess_settings()).flux
    >>> scaled = model.predict_scaled(model.features(flux), 20, seed=0, return_samples=True)
    >>> pred = model.unscale(scaled)
    >>> pred.names, pred.units
    (('age', 'mass'), ('Gyr', 'solMass'))
    >>> pred.mean.shape, pred.covariance.shape, pred.samples.shape
    ((1, 2), (1, 2, 2), (1, 20, 2))
    >>> pred.mean.round(1), pred.std.round(1)  # ages in Gyr, masses in solar masses
    (array([[4.7, 1.2]]), array([[1.7, 0.1]]))
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    mean: np.ndarray
    covariance: np.ndarray
    samples: np.ndarray | None
    seed: int
    components: dict | None = None

    @property
    def std(self) -> np.ndarray:
        """Square roots of the diagonal of the covariance, shape (N, D).

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.bundle import LabelPrediction
        >>> pred = LabelPrediction(
        ...     ("age", "mass"),
        ...     ("Gyr", "solMass"),
        ...     mean=np.array([[4.8, 1.22]]),
        ...     covariance=np.array([[[2.25, -0.1], [-0.1, 0.0196]]]),
        ...     samples=None,
        ...     seed=0,
        ... )
        >>> pred.std  # 1.5 Gyr and 0.14 solar masses
        array([[1.5 , 0.14]])
        """
        return np.sqrt(np.diagonal(self.covariance, axis1=-2, axis2=-1))


# ---------------------------------------------------------------------------------------
# Files and config
#
# A bundle may come from anywhere (a colleague's folder, a hub repository), so reading one
# must not be able to run code, read outside the folder or exhaust the machine. Files are
# opened only as regular files inside the folder, never beyond the size recorded for them
# in config.json, and hashed before they are parsed; config.json itself is read with a
# fixed bound and checked against a schema (types, ranges, units) before anything is
# built from it. docs/security.rst lists the limits and the tests of each.

#: Largest ``config.json`` read, in bytes (the default model's is 15 kB; a long training
#: history adds a few kB per hundred epochs).
MAX_CONFIG_BYTES = 16 * 2**20
#: Largest bundle file, in bytes, whatever ``config.json`` records (the default model's
#: weights are 9.7 MB; the paper's float32 network is about 80 MB).
MAX_FILE_BYTES = 4 * 2**30
#: Most files a bundle may list, and most labels it may predict.
MAX_FILES = 64
MAX_LABELS = 64
#: Bounds of the network's hyper-parameters, checked before the network is built: they
#: keep building its skeleton fast; its memory is bounded by the weights file's size.
HPARAM_LIMITS = {
    "n_inputs": (1, 2**16),
    "n_outputs": (1, MAX_LABELS),
    "d_model": (1, 2**14),
    "n_heads": (1, 2**10),
    "n_blocks": (1, 256),
    "d_ff": (1, 2**18),
    "head_hidden": (1, 2**16),
}
#: Physical type each label name must have when it has a unit, so that a unit changed to
#: one of another kind (an age in solar masses) is refused.
LABEL_PHYSICAL_TYPES = {
    "age": "time",
    "mass": "mass",
    "teff": "temperature",
    "radius": "length",
    "luminosity": "power",
}
_SHA256_DIGITS = frozenset("0123456789abcdef")


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_file_name(name: str) -> None:
    # config.json may come from the network: its file names must not escape the bundle.
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or name != Path(name).name
        or name.startswith(".")
        or "\\" in name
        or "\0" in name
    ):
        raise BundleError(f"invalid file name {name!r} in {CONFIG_NAME}")


def _link_root(directory: Path) -> Path | None:
    """Where the files of a Hugging Face cache snapshot may point to, else None.

    A snapshot (``models--org--name/snapshots/<commit>``) holds symbolic links into the
    repository's ``blobs`` folder; they are the one kind of link a bundle may contain.
    """
    if directory.parent.name == "snapshots" and directory.parent.parent.name.startswith("models--"):
        return Path(os.path.realpath(directory.parent.parent / "blobs"))
    return None


@contextlib.contextmanager
def _open_bundle_file(directory: Path, name: str, max_size: int):
    """Open a bundle file for reading, if it is a regular file inside ``directory``.

    Symbolic links are refused (but those of a hub cache snapshot into its blobs), and so
    are FIFOs, devices and sockets, before they are opened, and again on the open file
    (``fstat``), so that a file swapped in between is caught. A file larger than
    ``max_size`` is refused before any of it is read.
    """
    path = directory / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise BundleIntegrityError(
            f"bundle file {name} is missing from {directory}", filename=name, path=path
        ) from None
    except OSError as err:
        raise BundleError(f"cannot read bundle file {name} in {directory}: {err}") from err
    target = path
    if stat.S_ISLNK(info.st_mode):
        real = Path(os.path.realpath(path))
        root = _link_root(directory)
        if root is None or not real.is_relative_to(root):
            raise BundleError(
                f"bundle file {name} in {directory} is a symbolic link to {real}: refused, "
                "a bundle's files must be regular files inside its folder"
            )
        target = real
        info = os.stat(real)
    elif Path(os.path.realpath(path)).parent != Path(os.path.realpath(directory)):
        raise BundleError(f"bundle file {name} is not inside {directory}")
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(
            f"bundle file {name} in {directory} is not a regular file (a FIFO, device, "
            "socket or folder): refused"
        )
    if info.st_size > max_size:
        raise BundleIntegrityError(
            f"bundle file {name} in {directory} holds {info.st_size} bytes, more than the "
            f"{max_size} recorded in {CONFIG_NAME}: refused without reading it",
            filename=name,
            path=path,
        )
    # O_NOFOLLOW: a link swapped in after the checks fails to open; O_NONBLOCK: so does
    # a FIFO, instead of waiting for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(target, flags | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise BundleError(f"cannot open bundle file {name} in {directory}: {err}") from err
    with open(fd, "rb", closefd=True) as f:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_size > max_size:
            raise BundleError(f"bundle file {name} in {directory} changed while it was opened")
        yield f


def _recorded_size(entry: Mapping[str, Any]) -> int:
    # validated by read_bundle_config; find_corrupt_files may be given a config by hand
    size = entry.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else MAX_FILE_BYTES


def _read_verified(directory: Path, name: str, entry: Mapping[str, Any]) -> bytes:
    # Read once, hash and parse the same bytes, so nothing can change in between.
    size = _recorded_size(entry)
    with _open_bundle_file(directory, name, size) as f:
        data = f.read(size + 1)
    # The recorded size is a bound on what is read; the sha256 alone decides the match.
    if _sha256_bytes(data) != entry.get("sha256"):
        raise BundleIntegrityError(
            f"bundle file {name} in {directory} does not match the sha256 recorded in "
            f"{CONFIG_NAME}: it is corrupt or was modified. Re-download or re-save the bundle.",
            filename=name,
            path=directory / name,
        )
    return data


def _file_problem(directory: Path, name: str, entry: Mapping[str, Any]) -> str | None:
    """What is wrong with one bundle file (`find_corrupt_files`), or None."""
    if not os.path.lexists(directory / name):
        return "missing"
    size = _recorded_size(entry)
    try:
        with _open_bundle_file(directory, name, size) as f:
            digest, n_bytes = hashlib.sha256(), 0
            while chunk := f.read(min(2**20, size + 1 - n_bytes)):
                digest.update(chunk)
                n_bytes += len(chunk)
                if n_bytes > size:
                    break
    except BundleIntegrityError:
        return "larger than recorded"
    except BundleError:
        return "not a regular file inside the bundle"
    if digest.hexdigest() != entry.get("sha256"):
        return "sha256 mismatch"
    return None


def _parse_config(path: Path, directory: Path) -> Any:
    with _open_bundle_file(directory, CONFIG_NAME, MAX_CONFIG_BYTES) as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise BundleError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes: refused")

    def no_constants(name):
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        # ValueError: invalid JSON, NaN/Infinity, an integer of thousands of digits.
        raise BundleError(f"cannot read {path}: {err}") from err


class _Schema:
    """Checks of config.json values; each failure is a BundleError naming the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field_name: str, problem: str):
        raise BundleError(f"invalid {field_name} in {self.path}: {problem}")

    def object(self, value, field_name: str, *, optional: bool = False) -> dict:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            self.fail(field_name, f"expected a JSON object, got {_json_type(value)}")
        return value

    def integer(self, value, field_name: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field_name, f"expected an integer, got {_json_type(value)}")
        if not low <= value <= high:
            self.fail(field_name, f"{value} is outside [{low}, {high}]")
        return value

    def number(
        self,
        value,
        field_name: str,
        *,
        low=-math.inf,
        high=math.inf,
        open_low=False,
        optional=False,
    ) -> float | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field_name, f"expected a number, got {_json_type(value)}")
        try:
            value = float(value)
        except OverflowError:
            self.fail(field_name, "number too large")
        if (
            not math.isfinite(value)
            or not (low < value if open_low else low <= value)
            or (value > high)
        ):
            bound = "(" if open_low else "["
            self.fail(field_name, f"{value!r} is outside {bound}{low}, {high}]")
        return value

    def choice(self, value, field_name: str, choices) -> str:
        if not isinstance(value, str) or value not in choices:
            self.fail(field_name, f"expected one of {sorted(choices)}, got {value!r}")
        return value

    def text(self, value, field_name: str, max_length: int = 2**16) -> str:
        if not isinstance(value, str) or len(value) > max_length:
            self.fail(field_name, f"expected a string of at most {max_length} characters")
        return value

    def numbers(self, value, field_name: str, length: int, **bounds) -> list:
        if not isinstance(value, list) or len(value) != length:
            self.fail(field_name, f"expected a list of {length} numbers")
        return [self.number(v, f"{field_name}[{i}]", **bounds) for i, v in enumerate(value)]


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _validate_config(config: dict, path: Path) -> None:
    """Check config.json against the bundle schema, before anything is built from it.

    Bounds the network's hyper-parameters (so that building it allocates nothing beyond
    the weights file), the file sizes, the label units (parsable, of the label's physical
    type) and every number that sizes an array.
    """
    from .nn.attention import ATTENTION_ACTIVATIONS
    from .nn.model import DROPOUT_POSITIONS

    schema = _Schema(path)
    schema.text(config.get("description", ""), "description")
    schema.text(config.get("astro_spt_version", ""), "astro_spt_version", 256)

    labels = config["labels"]
    if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS:
        schema.fail("labels", f"expected a list of 1 to {MAX_LABELS} labels")
    for i, label in enumerate(labels):
        where = f"labels[{i}]"
        label = schema.object(label, where)
        unknown = set(label) - {"name", "unit", "scaling", "mean", "scale"}
        if unknown or "name" not in label or "unit" not in label:
            schema.fail(
                where, f"expected the keys name, unit, scaling, mean, scale, got {sorted(label)}"
            )
        name = schema.text(label["name"], f"{where}.name", 64)
        try:
            _check_label_unit(name, label["unit"])
        except ValueError as err:
            schema.fail(f"{where}.unit", str(err))
        schema.choice(label.get("scaling", "linear"), f"{where}.scaling", LABEL_SCALINGS)
        schema.number(label.get("mean", 0.0), f"{where}.mean")
        schema.number(label.get("scale", 1.0), f"{where}.scale", low=0.0, open_low=True)
    n_labels = len(labels)
    covariance = config.get("label_covariance")
    if covariance is not None:
        if not isinstance(covariance, list) or len(covariance) != n_labels:
            schema.fail("label_covariance", f"expected {n_labels} rows of {n_labels} numbers")
        for i, row in enumerate(covariance):
            schema.numbers(row, f"label_covariance[{i}]", n_labels)

    files = schema.object(config["files"], "files")
    if len(files) > MAX_FILES:
        schema.fail("files", f"more than {MAX_FILES} files")
    for name, entry in files.items():
        _check_file_name(name)
        entry = schema.object(entry, f"files[{name!r}]")
        digest = entry.get("sha256")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _SHA256_DIGITS):
            schema.fail(f"files[{name!r}].sha256", "expected 64 lower-case hex digits")
        schema.integer(entry.get("size"), f"files[{name!r}].size", 0, MAX_FILE_BYTES)

    network = schema.object(config["network"], "network")
    pca = schema.object(config["pca"], "pca")
    for section, value in (("network", network), ("pca", pca)):
        name = value.get("file")
        if not isinstance(name, str) or name not in files:
            raise BundleError(f"{path}: {section} file {name!r} is not listed with a sha256")
    schema.choice(network.get("class"), "network.class", {"SpectralTransformer"})
    schema.choice(network.get("dtype", "float32"), "network.dtype", WEIGHT_DTYPES)
    hparams = schema.object(network.get("hparams"), "network.hparams")
    allowed = set(inspect.signature(SpectralTransformer).parameters)
    if set(hparams) - allowed:
        schema.fail("network.hparams", f"unknown keys {sorted(set(hparams) - allowed)}")
    for key, (low, high) in HPARAM_LIMITS.items():
        if key in hparams and not (hparams[key] is None and key in ("d_ff", "head_hidden")):
            schema.integer(hparams[key], f"network.hparams.{key}", low, high)
    d_model = hparams.get("d_model", 512)
    if d_model % hparams.get("n_heads", 8):
        schema.fail("network.hparams.n_heads", f"d_model={d_model} is not divisible by it")
    schema.number(hparams.get("dropout", 0.1), "network.hparams.dropout", low=0.0, high=0.999)
    schema.choice(
        hparams.get("dropout_position", "head"),
        "network.hparams.dropout_position",
        DROPOUT_POSITIONS,
    )
    schema.number(
        hparams.get("attention_scale"),
        "network.hparams.attention_scale",
        low=0.0,
        open_low=True,
        optional=True,
    )
    schema.number(hparams.get("init_std", 0.02), "network.hparams.init_std", low=0.0)
    schema.number(
        hparams.get("bn_momentum", 0.1),
        "network.hparams.bn_momentum",
        low=0.0,
        high=1.0,
        optional=True,
    )
    schema.choice(
        hparams.get("attention_activation", "enhanced_softmax"),
        "network.hparams.attention_activation",
        ATTENTION_ACTIVATIONS,
    )
    for flag in ("aleatoric", "scatter_noise"):
        if not isinstance(hparams.get(flag, False), bool):
            schema.fail(f"network.hparams.{flag}", "expected true or false")
    if hparams.get("n_outputs", 2) != n_labels:
        schema.fail("network.hparams.n_outputs", f"the bundle has {n_labels} labels")

    n_features = schema.integer(pca.get("n_features"), "pca.n_features", 1, 2**20)
    n_components = schema.integer(pca.get("n_components"), "pca.n_components", 1, n_features)
    if hparams.get("n_inputs", 143) != n_components:
        schema.fail("network.hparams.n_inputs", f"the PCA basis has {n_components} components")
    schema.choice(pca.get("dtype", "float64"), "pca.dtype", PCA_DTYPES)
    schema.choice(pca.get("projection", "orthogonal"), "pca.projection", PROJECTIONS)
    schema.number(
        pca.get("explained_variance_ratio_total"),
        "pca.explained_variance_ratio_total",
        optional=True,
    )

    grid = schema.object(config.get("preprocess_config"), "preprocess_config", optional=True)
    grid = schema.object(grid.get("grid"), "preprocess_config.grid", optional=True)
    if "n_pixels" in grid and grid["n_pixels"] != n_features:
        schema.fail("preprocess_config.grid.n_pixels", f"the PCA basis has {n_features} pixels")

    mc = schema.object(config.get("mc_dropout"), "mc_dropout", optional=True)
    schema.integer(mc.get("n_samples", 100), "mc_dropout.n_samples", 1, 10**5)
    schema.number(mc.get("tau"), "mc_dropout.tau", low=0.0, open_low=True, optional=True)
    if mc.get("uncertainty_scale") is not None:
        schema.numbers(
            mc["uncertainty_scale"],
            "mc_dropout.uncertainty_scale",
            n_labels,
            low=0.0,
            open_low=True,
        )
    schema.object(config.get("uncertainty"), "uncertainty", optional=True)
    schema.object(config.get("reference"), "reference", optional=True)
    schema.object(config.get("provenance"), "provenance", optional=True)


def read_bundle_config(directory) -> dict[str, Any]:
    """Read and check the ``config.json`` of a bundle directory, without loading anything else.

    Parameters
    ----------
    directory : path-like
        The bundle directory.

    Returns
    -------
    dict

    Raises
    ------
    BundleError
        If there is no readable ``config.json`` or it is not a bundle's.
    UnsupportedSchemaError
        If a newer `astro_spt` wrote the bundle; the message says which version to install.

    Examples
    --------
    >>> from astro_spt.bundle import read_bundle_config
    >>> from astro_spt.hub import resolve_model
    >>> config = read_bundle_config(resolve_model())  # the embedded default's folder
    >>> config["schema_version"], [label["name"] for label in config["labels"]]
    (2, ['age', 'mass'])
    >>> sorted(config["files"])  # each with its sha256 and size
    ['README.md', 'model.safetensors', 'pca.safetensors']
    """
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not os.path.lexists(path):
        raise BundleError(f"{directory} is not an estimator bundle: no {CONFIG_NAME}")
    config = _parse_config(path, directory)
    if not isinstance(config, dict) or type(config.get("schema_version")) is not int:
        raise BundleError(f"{path} is not an astro_spt bundle config: no integer schema_version")
    version = config["schema_version"]
    if version > SCHEMA_VERSION:
        writer = str(config.get("astro_spt_version", "unknown"))[:64]
        # Local version labels ("+g1234") are not allowed in pip requirement specifiers.
        needed = writer.split("+")[0]
        raise UnsupportedSchemaError(
            f"{directory} holds an estimator bundle of schema version {version}, "
            f"written by astro_spt {writer}; this astro_spt ({_package_version()}) reads "
            f"schema versions up to {SCHEMA_VERSION}. Upgrade astro_spt to load it: "
            f"pip install --upgrade 'astro-spt>={needed}'"
        )
    if version < 1:
        raise BundleError(f"{path}: invalid schema_version {version}")
    missing = [k for k in ("labels", "network", "pca", "files") if k not in config]
    if missing:
        raise BundleError(f"{path} lacks the entries {', '.join(missing)}")
    _validate_config(config, path)
    return config


def find_corrupt_files(directory, config: Mapping[str, Any]) -> dict[str, str]:
    """Files of a bundle that are missing or differ from their sha256 in ``config.json``.

    Parameters
    ----------
    directory : path-like
        The bundle directory.
    config : dict
        Its config (`read_bundle_config`).

    Returns
    -------
    dict of str to str
        File name to what is wrong with it; empty when every file checks out.

    Examples
    --------
    >>> import shutil
    >>> import tempfile
    >>> from pathlib import Path
    >>> from astro_spt.bundle import find_corrupt_files, read_bundle_config
    >>> from astro_spt.hub import resolve_model
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(shutil.copytree(resolve_model(), f"{tmp}/bundle"))
    ...     config = read_bundle_config(path)
    ...     intact = find_corrupt_files(path, config)
    ...     _ = (path / "README.md").write_text("edited by hand")
    ...     (path / "pca.safetensors").unlink()
    ...     damaged = find_corrupt_files(path, config)
    >>> intact
    {}
    >>> damaged
    {'pca.safetensors': 'missing', 'README.md': 'sha256 mismatch'}
    """
    problems = {}
    for name, entry in config["files"].items():
        problem = _file_problem(Path(directory), name, entry)
        if problem is not None:
            problems[name] = problem
    return problems


def _network_skeleton(section: Mapping[str, Any], recorded_size: int) -> SpectralTransformer:
    """The network of validated hyper-parameters, on the meta device (no memory)."""
    # Built on the meta device: no wasted random initialisation, and the global torch
    # generator is left untouched by loading.
    try:
        with torch.device("meta"):
            network = SpectralTransformer(**section["hparams"])
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"invalid network hyperparameters: {err}") from err
    itemsize = WEIGHT_DTYPES[section.get("dtype", "float32")].itemsize
    needed = sum(t.numel() for t in network.state_dict().values()) * itemsize
    if needed > recorded_size:
        raise BundleError(
            f"the weights in {section['file']} do not fit the network of network.hparams: "
            f"it needs {needed} bytes of {section.get('dtype', 'float32')} weights, the file "
            f"holds {recorded_size}"
        )
    return network


def _load_network(network: SpectralTransformer, data: bytes, name: str) -> SpectralTransformer:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    try:
        state = load_tensors(data)
    except SafetensorError as err:
        raise BundleError(f"cannot read the weights in {name}: {err}") from err
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise BundleError(f"the weights in {name} hold NaN or infinite values ({key})")
        if not (value.is_floating_point() or value.dtype == torch.int64):
            raise BundleError(f"the weights in {name} hold a tensor of type {value.dtype} ({key})")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise BundleError(f"the weights in {name} do not fit the network: {err}") from err
    if any(t.is_meta for t in (*network.parameters(), *network.buffers())):
        raise BundleError(f"the weights in {name} leave parts of the network unset")
    return network.eval()


def _card_labels(card: str) -> list[tuple[str, str, str]] | None:
    """The rows of the "Labels" table of a rendered model card, or None if it has none."""
    lines = card.splitlines()
    if "## Labels" not in lines:
        return None
    rows = []
    for line in lines[lines.index("## Labels") + 1 :]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in ("label", "---"):
            rows.append(tuple(cells))
    return rows or None


def _config_labels(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [(lab["name"], lab["unit"], lab.get("scaling", "linear")) for lab in config["labels"]]


def _check_against_card(config: Mapping[str, Any], card: str, path: Path) -> None:
    # config.json cannot hold its own hash, but the model card is covered by one and
    # states each label's unit and scaling: an edit of config.json that changes what the
    # numbers mean (Gyr to Myr) contradicts it.
    stated = _card_labels(card)
    labels = _config_labels(config)
    if stated is not None and stated != labels:
        show = "; ".join(f"{n} [{u}] {s}" for n, u, s in labels)
        raise BundleIntegrityError(
            f"the labels in {path} ({show}) differ from those of its model card "
            f"{MODEL_CARD_NAME}, which matches its sha256: {CONFIG_NAME} was edited after the "
            "bundle was saved. Re-download or re-save the bundle.",
            filename=CONFIG_NAME,
            path=path,
        )


def _load_pca(name: str, data: bytes) -> PCABasis:
    if name.endswith(".npz"):
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (ValueError, OSError) as err:
            raise BundleError(f"cannot read the PCA basis in {name}: {err}") from err
    else:
        from safetensors import SafetensorError
        from safetensors.numpy import load as load_arrays

        try:
            arrays = load_arrays(data)
        except SafetensorError as err:
            raise BundleError(f"cannot read the PCA basis in {name}: {err}") from err
    try:
        return PCABasis.from_arrays(arrays)
    except ValueError as err:
        raise BundleError(f"invalid PCA basis in {name}: {err}") from err


def _check_uncertainty(uncertainty: Mapping[str, Any], n_labels: int) -> dict[str, Any]:
    weights = uncertainty.get("weights") if isinstance(uncertainty, Mapping) else None
    if not isinstance(weights, Mapping) or set(weights) != set(UNCERTAINTY_SOURCES):
        raise ValueError(
            f"uncertainty must be {{'weights': {{source: [...]}}}} for the sources "
            f"{UNCERTAINTY_SOURCES}, got {uncertainty!r}"
        )
    checked = {}
    for name, values in weights.items():
        values = [float(v) for v in values]
        if len(values) != n_labels or not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(
                f"uncertainty weights of {name!r} must be {n_labels} numbers >= 0, got {values}"
            )
        checked[name] = values
    return {**uncertainty, "weights": checked}


def _write_atomically(path: Path, write) -> None:
    """Have ``write(tmp_dir)`` fill a temporary directory beside ``path``, then swap it in."""
    if path.exists():
        if not path.is_dir():
            raise BundleError(f"cannot save a bundle to {path}: it is a file")
        if any(path.iterdir()) and not (path / CONFIG_NAME).is_file():
            raise BundleError(
                f"cannot save a bundle to {path}: the directory holds files and no bundle "
                "(refusing to replace it)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)
        if path.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside,
            # put the new one in place, and only then delete the old one.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "bundle")
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / "bundle", path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# The bundle


class EstimatorBundle:
    """A trained estimator: network, PCA basis, labels, reference statistics, provenance.

    Get one from `astro_spt.load_model` (embedded default, local directory or hub repo),
    `EstimatorBundle.from_pretrained` (a local directory), or from training. The
    estimation layer works through `features`, `predict_scaled` and `unscale`; the OOD
    flags through `out_of_distribution` and `outside_label_range`.

    Parameters
    ----------
    network : `~astro_spt.nn.SpectralTransformer`
        The trained network; its ``n_inputs`` is the number of PCA components and its
        ``n_outputs`` the number of labels.
    pca : `~astro_spt.pca.PCABasis`
        The PCA basis fitted on the training spectra.
    labels : sequence of `LabelSpec`
        One per network output, in order.
    preprocess_config : dict or `~astro_spt.preprocess.PreprocessConfig`, optional
        Preprocessing settings the training spectra went through (kept as a JSON dict).
    label_covariance : array-like, shape (D, D), optional
        Covariance of the training labels in the network's output space (the
        Mahalanobis loss's :math:`\\Sigma`).
    n_samples : int, optional
        Default number of Monte Carlo dropout passes.
    tau : float or None, optional
        Model precision τ of MC dropout (`~astro_spt.nn.model_precision`); its inverse is
        the variance floor, in the network's output space.
    uncertainty_scale : sequence of float or None, optional
        Per-label factor applied to the predictive standard deviations (in the network's
        output space), fitted on held-out data so that the uncertainties are calibrated;
        ``None`` applies none.
    reference : `ReferenceStats`, optional
        Training-set statistics for the out-of-distribution flags.
    projection : {"orthogonal", "gappy"}, optional
        How spectra are projected on the PCA basis (`project`): ``"gappy"`` ignores
        masked pixels (needs a basis with ``residual_variance``); ``"orthogonal"``, the
        projection of bundles saved by astro_spt 0.1, takes every pixel as it is.
    uncertainty : dict or None, optional
        Settings of the predictive uncertainty: ``{"weights": {source: [one factor per
        label]}}`` for the sources ``"noise"``, ``"aleatoric"`` and ``"epistemic"``
        (`predict_scaled`), fitted on validation data by `astro_spt.train`. ``None``
        follows SPT paper Eq. 6 (``tau`` and ``uncertainty_scale``).
    provenance : dict, optional
        JSON-serialisable facts about training. Keys the model card and ``astro-spt
        info`` show: ``data`` (description of the training data), ``n_train``,
        ``n_test``, ``split``, ``seed``, ``astro_spt_version`` (the version that
        trained it), ``license``, ``metrics`` (label name to ``{metric: value}``, e.g.
        ``delta``, ``delta_p``, ``bias``, ``loa_low``, ``loa_high``, or a list of such
        rows with a ``label`` key); any other key is listed as is.
    description : str, optional
        One line saying what this estimator is (and, for a demonstration model, what it
        is not).
    model_card : str or None, optional
        README.md text; ``None`` renders one from the config when saving. A loaded
        bundle keeps the README it was loaded with: set ``model_card = None`` to render
        a fresh one after changing, say, ``provenance``.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from astro_spt.bundle import EstimatorBundle, LabelSpec
    >>> from astro_spt.nn import SpectralTransformer
    >>> from astro_spt.pca import PCABasis
    >>> rng = np.random.default_rng(0)
    >>> flux = rng.normal(size=(40, 32))
    >>> bundle = EstimatorBundle(
    ...     SpectralTransformer(n_inputs=6, d_model=16, n_heads=2, n_blocks=1),
    ...     PCABasis.fit(flux, n_components=6),
    ...     [LabelSpec("age", "Gyr", "log10", 0.5, 0.3), LabelSpec("mass", "solMass")],
    ...     tau=50.0,
    ...     description="untrained example, not a science model",
    ... )
    >>> pred = bundle.unscale(bundle.predict_scaled(bundle.features(flux[:3]), 10, seed=1))
    >>> pred.mean.shape, pred.names
    ((3, 2), ('age', 'mass'))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = bundle.save_pretrained(tmp + "/example")
    ...     again = EstimatorBundle.from_pretrained(tmp + "/example")
    >>> again2 = again.unscale(again.predict_scaled(again.features(flux[:3]), 10, seed=1))
    >>> bool(np.array_equal(again2.mean, pred.mean))
    True
    """

    def __init__(
        self,
        network: SpectralTransformer,
        pca: PCABasis,
        labels: Sequence[LabelSpec],
        *,
        preprocess_config=None,
        label_covariance=None,
        n_samples: int = 100,
        tau: float | None = None,
        uncertainty_scale=None,
        reference: ReferenceStats | None = None,
        projection: str = "orthogonal",
        uncertainty: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        description: str = "",
        model_card: str | None = None,
    ):
        labels = tuple(labels)
        hparams = network.hparams
        if hparams["n_inputs"] != pca.n_components:
            raise ValueError(
                f"the network takes {hparams['n_inputs']} inputs but the PCA basis has "
                f"{pca.n_components} components"
            )
        if hparams["n_outputs"] != len(labels):
            raise ValueError(
                f"the network has {hparams['n_outputs']} outputs for {len(labels)} labels"
            )
        names = [label.name for label in labels]
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {names}")
        if label_covariance is not None:
            label_covariance = np.asarray(label_covariance, dtype=np.float64)
            if label_covariance.shape != (len(labels), len(labels)):
                raise ValueError(
                    f"label_covariance must have shape ({len(labels)}, {len(labels)}), "
                    f"got {label_covariance.shape}"
                )
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        if tau is not None and not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if uncertainty_scale is not None:
            uncertainty_scale = tuple(float(v) for v in uncertainty_scale)
            if len(uncertainty_scale) != len(labels) or not all(
                math.isfinite(v) and v > 0 for v in uncertainty_scale
            ):
                raise ValueError(
                    f"uncertainty_scale must hold {len(labels)} positive numbers, "
                    f"got {uncertainty_scale}"
                )
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        if projection == "gappy" and pca.residual_variance is None:
            raise ValueError("projection='gappy' needs a PCA basis with residual_variance")
        if uncertainty is not None:
            uncertainty = _check_uncertainty(uncertainty, len(labels))
        if hasattr(preprocess_config, "to_dict"):
            preprocess_config = preprocess_config.to_dict()
        self.network = network.eval()
        self.pca = pca
        self.labels = labels
        self.preprocess_config = dict(preprocess_config or {})
        self.label_covariance = label_covariance
        self.n_samples = int(n_samples)
        self.tau = None if tau is None else float(tau)
        self.uncertainty_scale = uncertainty_scale
        self.reference = reference
        self.projection = projection
        self.uncertainty = uncertainty
        self.provenance = dict(provenance or {})
        self.description = description
        self.model_card = model_card
        # Set by from_pretrained: where the bundle was read from, for messages.
        self.source: str | None = None
        # Set by load_model: the name it was loaded by and the hub commit, if any.
        self.name: str | None = None
        self.revision: str | None = None

    # -- description -------------------------------------------------------------------

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the labels, in the order of the network outputs.

        Examples
        --------
        >>> import astro_spt
        >>> astro_spt.load_model().label_names
        ('age', 'mass')
        """
        return tuple(label.name for label in self.labels)

    @property
    def label_units(self) -> tuple[str, ...]:
        """Units of the labels (astropy unit strings).

        Examples
        --------
        >>> import astropy.units as u
        >>> import astro_spt
        >>> model = astro_spt.load_model()
        >>> model.label_units
        ('Gyr', 'solMass')
        >>> [u.Unit(unit) for unit in model.label_units]
        [Unit("Gyr"), Unit("solMass")]
        """
        return tuple(label.unit for label in self.labels)

    @property
    def dropout(self) -> float:
        """Dropout rate of the network, also that of Monte Carlo prediction.

        Examples
        --------
        >>> import astro_spt
        >>> astro_spt.load_model().dropout
        0.1
        """
        return self.network.hparams["dropout"]

    def preprocess_settings(self):
        """The preprocessing settings as a `~astro_spt.preprocess.PreprocessConfig`.

        Spectra must go through the settings the training spectra went through, which
        may differ from the package's current defaults: `estimate` uses these.

        Examples
        --------
        >>> import astro_spt
        >>> config = astro_spt.load_model().preprocess_settings()
        >>> config.grid.n_pixels, config.normalize.method, config.denoise.level
        (4096, 'continuum', 4)
        """
        from .preprocess import PreprocessConfig

        return PreprocessConfig.from_dict(self.preprocess_config)

    def to_config(self) -> dict[str, Any]:
        """Everything but the arrays, as the JSON dict saved in ``config.json``.

        The ``files`` entry (names and sha256 of the other files) is added when saving.

        Examples
        --------
        >>> import astro_spt
        >>> config = astro_spt.load_model().to_config()
        >>> config["schema_version"], [label["name"] for label in config["labels"]]
        (2, ['age', 'mass'])
        >>> config["network"]["hparams"]["n_blocks"], config["pca"]["n_components"]
        (6, 143)
        >>> "files" in config  # added by save_pretrained
        False
        """
        pca = self.pca
        config = {
            "schema_version": SCHEMA_VERSION,
            "astro_spt_version": _package_version(),
            "description": self.description,
            "labels": [asdict(label) for label in self.labels],
            "label_covariance": (
                None if self.label_covariance is None else self.label_covariance.tolist()
            ),
            "preprocess_config": self.preprocess_config,
            "network": {
                "class": type(self.network).__name__,
                "hparams": dict(self.network.hparams),
                "file": WEIGHTS_NAME,
                "dtype": "float32",
            },
            "pca": {
                "file": PCA_NAMES["safetensors"],
                "dtype": "float64",
                "n_components": pca.n_components,
                "n_features": pca.n_features,
                "explained_variance_ratio_total": float(pca.explained_variance_ratio.sum()),
                "projection": self.projection,
            },
            "mc_dropout": {
                "n_samples": self.n_samples,
                "tau": self.tau,
                "uncertainty_scale": (
                    None if self.uncertainty_scale is None else list(self.uncertainty_scale)
                ),
            },
            "uncertainty": self.uncertainty,
            "reference": None if self.reference is None else self.reference.to_dict(),
            "provenance": self.provenance,
        }
        return config

    def __repr__(self) -> str:
        labels = ", ".join(f"{label.name} [{label.unit}]" for label in self.labels)
        where = f" from {self.source}" if self.source else ""
        return (
            f"<EstimatorBundle{where}: {labels}; {self.pca.n_components} PCA components of "
            f"{self.pca.n_features} pixels; {self.network.count_parameters():,} parameters>"
        )

    # -- saving and loading ------------------------------------------------------------

    def save_pretrained(
        self,
        path,
        *,
        dtype: str = "float32",
        pca_dtype: str = "float64",
        pca_format: str = "safetensors",
        model_card: str | None = None,
        repo_id: str | None = None,
    ) -> Path:
        """Save the bundle as a directory (written atomically).

        Files are written into a temporary directory beside ``path`` which then replaces
        ``path``, so a failed save leaves no half-written bundle. An existing bundle at
        ``path`` is replaced; a non-empty directory that is not a bundle is refused.

        Parameters
        ----------
        path : path-like
            Directory to create or replace.
        dtype : {"float32", "float16"}, optional
            Storage type of the network weights. ``"float16"`` halves the file; the
            weights are loaded back as float32, rounded to half precision (integer
            buffers are kept exact).
        pca_dtype : {"float64", "float32"}, optional
            Storage type of the PCA arrays.
        pca_format : {"safetensors", "npz"}, optional
            File format of the PCA basis.
        model_card : str or None, optional
            README.md text; default the bundle's ``model_card``, or one rendered from
            the config when that is ``None``.
        repo_id : str or None, optional
            Hub repository named in the usage example of a rendered model card.

        Returns
        -------
        `pathlib.Path`
            The bundle directory.

        Raises
        ------
        BundleError
            If ``path`` is a file or a non-empty directory that is not a bundle.

        Examples
        --------
        >>> import tempfile
        >>> import astro_spt
        >>> model = astro_spt.load_model()
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = model.save_pretrained(f"{tmp}/age-mass", dtype="float16")
        ...     files = sorted(p.name for p in path.iterdir())
        ...     again = astro_spt.load_model(path)
        >>> files
        ['README.md', 'config.json', 'model.safetensors', 'pca.safetensors']
        >>> again.label_names, again.pca.n_components
        (('age', 'mass'), 143)
        """
        from safetensors.numpy import save as save_arrays
        from safetensors.torch import save as save_tensors

        from .model_card import render_model_card

        if dtype not in WEIGHT_DTYPES:
            raise ValueError(f"dtype must be one of {tuple(WEIGHT_DTYPES)}, got {dtype!r}")
        if pca_dtype not in PCA_DTYPES:
            raise ValueError(f"pca_dtype must be one of {PCA_DTYPES}, got {pca_dtype!r}")
        if pca_format not in PCA_NAMES:
            raise ValueError(f"pca_format must be one of {tuple(PCA_NAMES)}, got {pca_format!r}")

        config = self.to_config()
        config["network"]["dtype"] = dtype
        config["pca"].update(file=PCA_NAMES[pca_format], dtype=pca_dtype)

        state = {
            key: (value.to(WEIGHT_DTYPES[dtype]) if value.is_floating_point() else value)
            .detach()
            .cpu()
            .contiguous()
            for key, value in self.network.state_dict().items()
        }
        weights = save_tensors(state, metadata={"format": "pt"})
        arrays = {
            k: np.ascontiguousarray(v, dtype=pca_dtype) for k, v in self.pca.to_arrays().items()
        }
        if pca_format == "npz":
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            pca_bytes = buffer.getvalue()
        else:
            pca_bytes = save_arrays(arrays)
        payloads = {WEIGHTS_NAME: weights, PCA_NAMES[pca_format]: pca_bytes}
        card = model_card if model_card is not None else self.model_card
        if card is None:
            card = render_model_card(config, repo_id=repo_id)
        stated = _card_labels(card)
        if stated is not None and stated != _config_labels(config):
            # from_pretrained would refuse the bundle (_check_against_card)
            raise ValueError(
                f"model_card: its Labels table {stated} contradicts the bundle's labels "
                f"{_config_labels(config)}"
            )
        payloads[MODEL_CARD_NAME] = card.encode("utf-8")
        config["files"] = {
            name: {"sha256": _sha256_bytes(data), "size": len(data)}
            for name, data in payloads.items()
        }
        text = json.dumps(config, indent=2, allow_nan=False) + "\n"

        def write(directory: Path) -> None:
            for name, data in payloads.items():
                (directory / name).write_bytes(data)
            # Written last: a directory with a config.json is a complete bundle.
            (directory / CONFIG_NAME).write_text(text, encoding="utf-8")

        path = Path(path)
        _write_atomically(path, write)
        return path

    @classmethod
    def from_pretrained(cls, path) -> "EstimatorBundle":
        """Load a bundle directory written by `save_pretrained`.

        Every file listed in ``config.json`` is checked against its sha256 before use;
        nothing is unpickled.

        Parameters
        ----------
        path : path-like
            The bundle directory.

        Returns
        -------
        `EstimatorBundle`

        Raises
        ------
        BundleError
            If the directory is not a valid bundle.
        BundleIntegrityError
            If a file is missing or differs from its recorded sha256 (the message names it).
        UnsupportedSchemaError
            If a newer `astro_spt` wrote it (the message names the version to install).

        Examples
        --------
        >>> from astro_spt.bundle import EstimatorBundle
        >>> from astro_spt.hub import resolve_model
        >>> path = resolve_model()  # the folder of the embedded default bundle
        >>> bundle = EstimatorBundle.from_pretrained(path)
        >>> bundle.label_names, bundle.source == str(path)
        (('age', 'mass'), True)

        `astro_spt.load_model` does the same for a directory, and also takes hub names.
        """
        directory = Path(path)
        config = read_bundle_config(directory)
        files = config["files"]
        weights_name, pca_name = config["network"]["file"], config["pca"]["file"]
        network = _network_skeleton(config["network"], files[weights_name]["size"])
        # The files used are read whole (bounded by their recorded sizes); any other
        # listed file is only hashed, in chunks.
        data = {
            name: _read_verified(directory, name, files[name])
            for name in dict.fromkeys((weights_name, pca_name, MODEL_CARD_NAME))
            if name in files
        }
        problems = {
            name: problem
            for name in files
            if name not in data and (problem := _file_problem(directory, name, files[name]))
        }
        if problems:
            name, problem = next(iter(problems.items()))
            raise BundleIntegrityError(
                f"bundle file {name} in {directory} is {problem} (its sha256 is recorded in "
                f"{CONFIG_NAME})",
                filename=name,
                path=directory / name,
            )
        card = None
        if MODEL_CARD_NAME in data:
            try:
                card = data[MODEL_CARD_NAME].decode("utf-8")
            except UnicodeDecodeError as err:
                raise BundleError(f"{MODEL_CARD_NAME} in {directory} is not UTF-8 text") from err
            _check_against_card(config, card, directory / CONFIG_NAME)
        network = _load_network(network, data[weights_name], weights_name)
        pca = _load_pca(pca_name, data[pca_name])
        try:
            from .preprocess import PreprocessConfig

            PreprocessConfig.from_dict(config.get("preprocess_config") or {})
            labels = [LabelSpec(**label) for label in config["labels"]]
            reference = config.get("reference")
            mc = config.get("mc_dropout") or {}
            bundle = cls(
                network,
                pca,
                labels,
                preprocess_config=config.get("preprocess_config"),
                label_covariance=config.get("label_covariance"),
                n_samples=mc.get("n_samples", 100),
                tau=mc.get("tau"),
                uncertainty_scale=mc.get("uncertainty_scale"),
                reference=None if reference is None else ReferenceStats.from_dict(reference),
                projection=config["pca"].get("projection", "orthogonal"),
                uncertainty=config.get("uncertainty"),
                provenance=config.get("provenance"),
                description=config.get("description", ""),
                model_card=card,
            )
        except (AstroSPTError, TypeError, ValueError, KeyError, AttributeError) as err:
            # The schema has checked what sizes an array; what is left here are the
            # settings' own checks (reference statistics, uncertainty weights, ...).
            raise BundleError(f"invalid settings in {directory / CONFIG_NAME}: {err}") from err
        bundle.source = str(directory)
        return bundle

    def push_to_hub(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload astro_spt estimator bundle",
        endpoint: str | None = None,
        dtype: str = "float32",
    ) -> str:
        """Publish the bundle to a Hugging Face Hub repository.

        Creates the repository (and the ``revision`` branch) when missing, saves the
        bundle into a temporary directory and commits its files in one commit. See
        `astro_spt.hub.push_bundle`, which does the work.

        Parameters
        ----------
        repo_id : str
            ``"namespace/name"``.
        revision : str or None, optional
            Branch to commit to (default the repository's main branch).
        private : bool or None, optional
            Visibility of a newly created repository.
        token : str or None, optional
            Hub token with write access (default the locally saved one).
        commit_message : str, optional
            Summary of the commit.
        endpoint : str or None, optional
            Hub URL (default ``astro_spt.conf.hub_endpoint``, then ``HF_ENDPOINT``).
        dtype : {"float32", "float16"}, optional
            Storage type of the weights.

        Returns
        -------
        str
            The commit hash: pass it as ``revision`` to load exactly this bundle.

        Raises
        ------
        HubError
            If the hub refuses or cannot be reached.

        Examples
        --------
        Describe the bundle, check that it saves and loads, then publish it (this last
        step needs a network connection and a Hugging Face token with write access):

        >>> import tempfile
        >>> import astro_spt
        >>> model = astro_spt.load_model()
        >>> model.description = "age/mass estimator retrained on my sample"
        >>> model.model_card = None  # render a fresh README.md from the new settings
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     print(astro_spt.load_model(model.save_pretrained(f"{tmp}/b")).description)
        age/mass estimator retrained on my sample
        >>> repo = "your-name/lamost-age-mass"
        >>> commit = model.push_to_hub(repo)  # doctest: +SKIP
        >>> again = astro_spt.load_model(repo, revision=commit)  # doctest: +SKIP
        """
        # The hub layer sits below this one; the import is deferred to keep the layering
        # one-directional at import time.
        from .hub import push_bundle

        return push_bundle(
            self,
            repo_id,
            revision=revision,
            private=private,
            token=token,
            commit_message=commit_message,
            endpoint=endpoint,
            dtype=dtype,
        )

    # -- prediction --------------------------------------------------------------------

    def to(self, device) -> "EstimatorBundle":
        """Move the network to ``device`` (``"cpu"``, ``"cuda"``, ...); returns ``self``.

        Examples
        --------
        >>> import astro_spt
        >>> model = astro_spt.load_model().to("cpu")  # or "cuda", "cuda:1", ...
        >>> next(model.network.parameters()).device.type
        'cpu'
        """
        self.network.to(device)
        return self

    def project(self, flux, mask=None) -> PCAProjection:
        """PCA coefficients of preprocessed spectra, with what noise propagation needs.

        With ``projection="gappy"`` (bundles trained by this version) masked pixels
        weigh nothing (`~astro_spt.pca.PCABasis.project`); with ``"orthogonal"`` (older
        bundles) every pixel is projected as it is, interpolated or not.

        Parameters
        ----------
        flux : array-like, shape (N, n_features)
            Preprocessed spectra on the model grid.
        mask : array-like of bool, shape of ``flux``, optional
            True where a pixel is not a measurement (``PreprocessResult.mask``).

        Returns
        -------
        `~astro_spt.pca.PCAProjection`

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.estimation import preprocess_inputs
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()  # the embedded default, no network
        >>> spectra = preprocess_inputs(example_files(), model.preprocess_settings())
        >>> projection = model.project(spectra.flux, spectra.mask)
        >>> projection.coefficients.shape, projection.reconstruction_error.shape
        ((6, 143), (6,))
        """
        flux = np.asarray(flux, dtype=np.float64)
        if self.projection == "gappy":
            return self.pca.project(flux, mask)
        n, k = len(flux), self.pca.n_components
        return PCAProjection(
            coefficients=self.pca.transform(flux),
            reconstruction_error=self.pca.reconstruction_error(flux),
            inverse_gram=np.broadcast_to(np.eye(k), (n, k, k)),
            observed=np.ones(flux.shape, bool),
            residual_variance=0.0,
            components=self.pca.components,
        )

    def features(self, flux, mask=None) -> np.ndarray:
        """Network inputs of preprocessed spectra: their PCA coefficients, as float32.

        Parameters
        ----------
        flux : array-like, shape (N, n_features)
            Preprocessed spectra on the model grid.
        mask : array-like of bool, shape of ``flux``, optional
            Masked pixels (see `project`).

        Returns
        -------
        `numpy.ndarray`, shape (N, n_components), float32

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.estimation import preprocess_inputs
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()  # the embedded default, no network
        >>> spectra = preprocess_inputs(example_files(), model.preprocess_settings())
        >>> spectra.flux.shape  # on the model's 4096-pixel grid
        (6, 4096)
        >>> x = model.features(spectra.flux, spectra.mask)
        >>> x.shape, x.dtype
        ((6, 143), dtype('float32'))
        """
        return self.project(flux, mask).coefficients.astype(np.float32)

    def noise_covariance(self, projection: PCAProjection, ivar) -> torch.Tensor:
        """Covariance, in the network's label space, from the spectra's noise and gaps.

        The ``"noise"`` source of `predict_scaled`, before its weight: the projection's
        `~astro_spt.pca.PCAProjection.output_covariance` through the network's Jacobian
        at the projected coefficients (`~astro_spt.nn.input_jacobian`).

        Parameters
        ----------
        projection : `~astro_spt.pca.PCAProjection`
            The spectra's projection (`project`).
        ivar : array-like, shape (N, n_features)
            Their inverse variance.

        Returns
        -------
        `torch.Tensor`, shape (N, D, D), float64, on the CPU

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.estimation import preprocess_inputs
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()  # the embedded default, no network
        >>> spectra = preprocess_inputs(example_files()[:2], model.preprocess_settings())
        >>> projection = model.project(spectra.flux, spectra.mask)
        >>> noisy = model.noise_covariance(projection, spectra.ivar / 4)  # twice the noise
        >>> clean = model.noise_covariance(projection, spectra.ivar)
        >>> bool((noisy.diagonal(dim1=1, dim2=2) > clean.diagonal(dim1=1, dim2=2)).all())
        True
        """
        from .nn import input_jacobian

        device = next(self.network.parameters()).device
        x = torch.as_tensor(projection.coefficients, dtype=torch.float32, device=device)
        jacobian = input_jacobian(self.network, x).double().cpu().numpy()
        noise, gaps = projection.output_covariance(jacobian, ivar)
        return torch.from_numpy(noise + gaps)

    def predict_scaled(
        self,
        features,
        n_samples: int | None = None,
        *,
        seed: int | None = None,
        keys=None,
        return_samples: bool = False,
        device=None,
        projection: PCAProjection | None = None,
        ivar=None,
        sources=None,
    ) -> MCPrediction:
        """The predictive distribution in the network's (standardised) label space.

        Its covariance adds up to three sources (``docs/uncertainties.rst``), each
        weighted per label by factors fitted on validation data when the bundle was
        trained (``uncertainty["weights"]``):

        - ``"noise"``: the spectrum's own noise and missing pixels, carried through the
          PCA projection (`~astro_spt.pca.PCAProjection.output_covariance`) and the
          network (its Jacobian, `~astro_spt.nn.input_jacobian`); needs ``projection``
          and ``ivar``;
        - ``"aleatoric"``: the scatter of the labels about the prediction, from the
          network's aleatoric head (`~astro_spt.nn.SpectralTransformer.scatter_covariance`);
        - ``"epistemic"``: the spread of the Monte Carlo dropout passes.

        A bundle without predictive weights (trained with ``uncertainty="paper"``, or by
        astro_spt 0.1) follows SPT paper Eq. 6: the passes' spread plus the τ⁻¹ floor,
        times its calibration ``uncertainty_scale``.

        Parameters
        ----------
        features : array-like or `torch.Tensor`, shape (N, n_components)
            Output of `features` (or ``projection.coefficients``).
        n_samples : int or None, optional
            Number of passes T; default the bundle's ``n_samples``.
        seed : int or None, optional
            Seed of the dropout masks and of the Gaussian draws of the samples; the same
            seed gives bit-identical results.
        keys : sequence of bytes or None, optional
            Per-spectrum identifiers that seed the randomness with ``seed`` (see
            `~astro_spt.nn.mc_predict`); default a hash of the features.
        return_samples : bool, optional
            Keep T samples of the predictive distribution (`~astro_spt.nn.predictive_samples`):
            their covariance is the returned covariance, exactly.
        device : str or `torch.device` or None, optional
            Where to run (the network is moved there and stays); default where the
            network is.
        projection : `~astro_spt.pca.PCAProjection`, optional
            The projection that gave ``features`` (`project`), for the ``"noise"`` source.
        ivar : array-like, shape (N, n_features), optional
            Inverse variance of the preprocessed spectra, for the ``"noise"`` source.
        sources : sequence of str or None, optional
            The sources to include; default all that the bundle has (and that the
            arguments allow). A bundle following SPT paper Eq. 6 always gives its
            spread and floor.

        Returns
        -------
        `~astro_spt.nn.MCPrediction`
            On the CPU; ``components`` holds the weighted variance of each source.

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.estimation import preprocess_inputs
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()  # the embedded default, no network
        >>> spectra = preprocess_inputs(example_files()[:2], model.preprocess_settings())
        >>> projection = model.project(spectra.flux, spectra.mask)
        >>> scaled = model.predict_scaled(
        ...     projection.coefficients, 20, seed=0, return_samples=True,
        ...     projection=projection, ivar=spectra.ivar,
        ... )
        >>> tuple(scaled.mean.shape), tuple(scaled.covariance.shape), tuple(scaled.samples.shape)
        ((2, 2), (2, 2, 2), (2, 20, 2))
        >>> sorted(scaled.components)
        ['aleatoric', 'epistemic', 'noise']

        The values are standardised labels; `unscale` turns them into Gyr and solMass.
        """
        from .nn import predictive_samples
        from .nn.mc import _spectrum_keys

        if device is not None:
            self.network.to(device)
        device = next(self.network.parameters()).device
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
        if keys is None:
            keys = _spectrum_keys(x)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
        n_samples = self.n_samples if n_samples is None else n_samples
        n_labels = len(self.labels)
        wanted = set(UNCERTAINTY_SOURCES if sources is None else sources)
        unknown = wanted - set(UNCERTAINTY_SOURCES)
        if unknown:
            raise ValueError(
                f"unknown uncertainty sources {sorted(unknown)}; choose from {UNCERTAINTY_SOURCES}"
            )
        shared = None
        if (
            self.uncertainty is not None
            and "aleatoric" in wanted
            and self.network.scatter_head is not None
            and self.network.hparams["dropout_position"] == "head"
        ):
            # the backbone output, which the passes and the aleatoric head both read: run once
            was_training = self.network.training
            self.network.eval()
            try:
                with torch.no_grad():
                    shared = self.network.forward_shared(x)
            finally:
                self.network.train(was_training)
        passes = mc_predict(
            self.network, x, n_samples, seed=seed, keys=keys, return_samples=True, shared=shared
        )
        epistemic = passes.covariance.cpu()
        extra = torch.zeros(len(x), n_labels, n_labels, dtype=torch.float64)
        components = {}
        if self.uncertainty is None:
            # SPT paper Eq. 6: passes plus the tau^-1 floor, stretched by the calibration
            scale = torch.ones(n_labels, dtype=torch.float64)
            if self.uncertainty_scale is not None:
                scale = torch.tensor(self.uncertainty_scale, dtype=torch.float64)
            if self.tau is not None:
                extra = extra + torch.diag(scale**2 / self.tau)
                components["floor"] = (scale**2 / self.tau).expand(len(x), n_labels)
        else:
            weights = {
                name: torch.tensor(value, dtype=torch.float64)
                for name, value in self.uncertainty["weights"].items()
            }
            scale = torch.sqrt(weights["epistemic"])
            if "epistemic" not in wanted:
                scale = torch.zeros(n_labels, dtype=torch.float64)
            parts = {}
            noise = None
            head = "aleatoric" in wanted and self.network.scatter_head is not None
            reads_noise = head and self.network.hparams.get("scatter_noise", False)
            if ("noise" in wanted or reads_noise) and projection is not None and ivar is not None:
                noise = self.noise_covariance(projection, ivar)
            if reads_noise and noise is None:
                raise ValueError(
                    "this model's aleatoric head reads the spectrum's noise: pass "
                    "projection= and ivar=, or leave 'aleatoric' out of sources"
                )
            head_noise = None if noise is None else noise.to(device=x.device, dtype=x.dtype)
            if shared is not None:
                with torch.no_grad():
                    factor = self.network.scatter_cholesky(shared[0], head_noise)
                    parts["aleatoric"] = (factor @ factor.mT).double().cpu()
            elif head:
                with torch.no_grad():
                    parts["aleatoric"] = (
                        self.network.scatter_covariance(x, head_noise).double().cpu()
                    )
            if "noise" in wanted and noise is not None:
                parts["noise"] = noise
            for name, covariance in parts.items():
                root = torch.sqrt(weights[name])
                weighted = covariance * root[:, None] * root[None, :]
                extra = extra + weighted
                components[name] = torch.diagonal(weighted, dim1=1, dim2=2)
        epistemic = epistemic * scale[:, None] * scale[None, :]
        if self.uncertainty is None or "epistemic" in wanted:
            components["epistemic"] = torch.diagonal(epistemic, dim1=1, dim2=2)
        samples = None
        if return_samples:
            samples = predictive_samples(
                passes.samples.cpu(), extra, epistemic_scale=scale, keys=keys, seed=seed
            )
        return MCPrediction(
            passes.mean.cpu(), epistemic + extra, samples, passes.seed, components=components
        )

    def unscale(self, prediction: MCPrediction, *, method: str | None = None) -> LabelPrediction:
        """Map a prediction from the network's label space to physical units.

        The point estimate is the network-space mean mapped to physical units: for a
        ``log10`` label that is the median of the predictive distribution, not its mean.

        Parameters
        ----------
        prediction : `~astro_spt.nn.MCPrediction`
            Output of `predict_scaled`.
        method : {"samples", "delta"} or None, optional
            How the covariance is carried to physical units: ``"samples"`` maps every
            sample and takes their covariance (so the samples' standard deviation is
            ``std``, exactly); ``"delta"`` propagates it to first order
            (:math:`J \\Sigma J^T`, :math:`J` the Jacobian at the mean). Linear labels
            give the same result either way. Default: ``"samples"`` when the prediction
            holds samples, else ``"delta"``.

        Returns
        -------
        `LabelPrediction`
            With ``components``, the standard deviation of each source, to first order.

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.estimation import preprocess_inputs
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()  # the embedded default, no network
        >>> spectra = preprocess_inputs(example_files()[:2], model.preprocess_settings())
        >>> labels = model.predict(
        ...     spectra.flux, spectra.ivar, spectra.mask, n_samples=20, seed=0, return_samples=True
        ... )
        >>> labels.names, labels.units
        (('age', 'mass'), ('Gyr', 'solMass'))
        >>> bool((abs(labels.samples.std(axis=1) - labels.std) < 1e-9).all())
        True
        """
        if method is None:
            method = "samples" if prediction.samples is not None else "delta"
        if method not in ("samples", "delta"):
            raise ValueError(f"method must be 'samples' or 'delta', got {method!r}")
        mean_net = prediction.mean.double().numpy()
        cov_net = prediction.covariance.double().numpy()
        jacobian = np.stack(
            [label.derivative(mean_net[:, i]) for i, label in enumerate(self.labels)], axis=-1
        )
        mean = np.stack(
            [label.from_network(mean_net[:, i]) for i, label in enumerate(self.labels)], axis=-1
        )
        samples = None
        if prediction.samples is not None:
            s = prediction.samples.double().numpy()
            samples = np.stack(
                [label.from_network(s[..., i]) for i, label in enumerate(self.labels)], axis=-1
            )
        if method == "samples":
            if samples is None:
                raise ValueError("method='samples' needs predict_scaled(..., return_samples=True)")
            centred = samples - samples.mean(axis=1, keepdims=True)
            covariance = np.einsum("ntd,nte->nde", centred, centred) / samples.shape[1]
        else:
            covariance = jacobian[:, :, np.newaxis] * cov_net * jacobian[:, np.newaxis, :]
        components = None
        if prediction.components is not None:
            components = {
                name: np.abs(jacobian) * np.sqrt(variance.double().numpy())
                for name, variance in prediction.components.items()
            }
        return LabelPrediction(
            self.label_names,
            self.label_units,
            mean,
            covariance,
            samples,
            prediction.seed,
            components=components,
        )

    def predict(
        self,
        flux,
        ivar=None,
        mask=None,
        *,
        n_samples: int | None = None,
        seed: int | None = None,
        return_samples: bool = False,
        device=None,
        sources=None,
        projection: PCAProjection | None = None,
    ) -> LabelPrediction:
        """Labels, in physical units, of preprocessed spectra: `project`, `predict_scaled`,
        `unscale`.

        Parameters
        ----------
        flux : array-like, shape (N, n_features)
            Preprocessed spectra (``PreprocessResult.flux``).
        ivar, mask : array-like, shape of ``flux``, optional
            Their inverse variance and mask (``PreprocessResult.ivar``, ``.mask``);
            without ``ivar`` the ``"noise"`` source is left out.
        n_samples, seed, device, sources
            As for `predict_scaled`.
        return_samples : bool, optional
            Keep the samples in the result (the standard deviations are computed from
            them either way).
        projection : `~astro_spt.pca.PCAProjection`, optional
            ``project(flux, mask)``, when the caller has it already (e.g. for
            `out_of_distribution`).

        Returns
        -------
        `LabelPrediction`

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.estimation import preprocess_inputs
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()  # the embedded default, no network
        >>> spectra = preprocess_inputs(example_files()[:2], model.preprocess_settings())
        >>> labels = model.predict(spectra.flux, spectra.ivar, spectra.mask, seed=0)
        >>> labels.mean.shape, labels.std.shape, labels.samples
        ((2, 2), (2, 2), None)
        """
        if projection is None:
            projection = self.project(flux, mask)
        scaled = self.predict_scaled(
            projection.coefficients,
            n_samples,
            seed=seed,
            return_samples=True,
            device=device,
            projection=projection,
            ivar=ivar,
            sources=sources,
        )
        labels = self.unscale(scaled)
        if not return_samples:
            labels.samples = None
        return labels

    def labels_to_network(self, values) -> np.ndarray:
        """Physical labels, shape (N, D), to the network's standardised space.

        The inverse of what `unscale` does to a point estimate; training uses it to make
        the network's targets.

        Examples
        --------
        >>> import astro_spt
        >>> model = astro_spt.load_model()
        >>> model.labels_to_network([[4.0, 1.2], [10.0, 2.0]]).round(2)  # (Gyr, solMass)
        array([[ 0.04, -0.52],
               [ 1.38,  1.91]])
        """
        values = np.asarray(values, dtype=np.float64)
        return np.stack(
            [label.to_network(values[..., i]) for i, label in enumerate(self.labels)], axis=-1
        )

    # -- out-of-distribution flags -----------------------------------------------------

    def _reference(self) -> ReferenceStats:
        if self.reference is None:
            raise BundleError("this bundle has no reference statistics of its training set")
        return self.reference

    def out_of_distribution(
        self,
        flux=None,
        mask=None,
        *,
        projection: PCAProjection | None = None,
        percentile: float | None = None,
    ):
        """Whether spectra lie beyond the training distribution in the PCA space or outside it.

        A spectrum is flagged when its PCA reconstruction error or its latent Mahalanobis
        distance (see `ReferenceStats`) exceeds the reference set's ``percentile`` (the
        reference set is held-out spectra of the training distribution).

        Parameters
        ----------
        flux : array-like, shape (N, n_features), optional
            Preprocessed spectra.
        mask : array-like of bool, shape of ``flux``, optional
            Their masked pixels.
        projection : `~astro_spt.pca.PCAProjection`, optional
            Their projection (`project`), if already computed, instead of ``flux``.
        percentile : float or None, optional
            Default the reference statistics' ``ood_percentile``.

        Returns
        -------
        `numpy.ndarray` of bool, shape (N,)

        Raises
        ------
        BundleError
            If the bundle has no reference statistics.

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.estimation import preprocess_inputs
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()  # the embedded default, no network
        >>> spectra = preprocess_inputs(example_files(), model.preprocess_settings())
        >>> model.out_of_distribution(spectra.flux, spectra.mask)
        array([False, False, False, False, False, False])
        >>> model.out_of_distribution(spectra.flux, spectra.mask, percentile=99)
        array([False, False,  True, False, False, False])

        None of the six is beyond the default 99.9th percentile of the held-out spectra;
        the third file, a K dwarf, is beyond their 99th percentile (this demonstration
        model was trained on mock spectra of giants).
        """
        reference = self._reference()
        if projection is None:
            if flux is None:
                raise ValueError("give flux or projection")
            projection = self.project(flux, mask)
        latent = latent_distance(self.pca, projection.coefficients)
        recon = projection.reconstruction_error
        return (recon > reference.threshold("reconstruction_error", percentile)) | (
            latent > reference.threshold("latent_distance", percentile)
        )

    def large_uncertainty(
        self, values, std, fraction: float = LARGE_UNCERTAINTY_FRACTION
    ) -> np.ndarray:
        """Whether an uncertainty is large next to the spread of its label in the training set.

        The spread is measured where the network learns the label (after its ``log10``
        scaling, if any): a star whose σ of some label exceeds ``fraction`` times the
        standard deviation of the training labels there says little about it beyond what
        the training set says. For a log-scaled label (age) that is a relative
        uncertainty, for a linear one an absolute one; either way, unlike σ / ``|value|``,
        it means the same for labels near zero ([Fe/H]) as for any other.

        Parameters
        ----------
        values, std : array-like, shape (N, D)
            Estimates and their standard deviations, in physical units.
        fraction : float, optional
            Threshold, as a fraction of the label's training spread.

        Returns
        -------
        `numpy.ndarray` of bool, shape (N,)

        Examples
        --------
        >>> import astro_spt
        >>> model = astro_spt.load_model()
        >>> age, mass = model.labels  # age is learned as log10(age)
        >>> round(age.scale, 3), round(mass.scale, 3)  # their spreads: dex, solMass
        (0.298, 0.329)
        >>> model.large_uncertainty([[5.0, 1.2], [5.0, 1.2]], [[1.5, 0.1], [4.0, 0.1]])
        array([False,  True])

        1.5 Gyr at 5 Gyr is 0.13 dex, less than half the spread of the training ages;
        4 Gyr is 0.35 dex, more than all of it.
        """
        values = np.asarray(values, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        large = np.zeros(std.shape[:-1], dtype=bool)
        for i, label in enumerate(self.labels):
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = label.derivative(label.to_network(values[..., i]))
                large |= np.abs(std[..., i] / slope) > fraction
        return large

    def outside_label_range(self, values) -> np.ndarray:
        """Whether predicted labels, shape (N, D) in physical units, leave the training range.

        Returns
        -------
        `numpy.ndarray` of bool, shape (N,)
            True where any label with a stored range is below its training minimum or
            above its maximum.

        Raises
        ------
        BundleError
            If the bundle has no reference statistics.

        Examples
        --------
        >>> import astro_spt
        >>> model = astro_spt.load_model()
        >>> [round(v, 2) for v in model.reference.label_ranges["mass"]]  # solMass
        [0.89, 3.02]
        >>> model.outside_label_range([[5.0, 1.2], [20.0, 1.2], [5.0, 0.5]])  # (Gyr, solMass)
        array([False,  True,  True])
        """
        ranges = self._reference().label_ranges
        values = np.asarray(values, dtype=np.float64)
        outside = np.zeros(values.shape[:-1], dtype=bool)
        for i, name in enumerate(self.label_names):
            if name in ranges:
                low, high = ranges[name]
                outside |= (values[..., i] < low) | (values[..., i] > high)
        return outside

    # -- estimation (SPEC §2, layer 6) -------------------------------------------------

    def preprocess(
        self,
        spectra,
        *,
        batch_size: int | None = None,
        strict: bool = False,
        redshift=None,
        air=None,
    ):
        """Exactly what the network sees of some spectra, as `estimate` prepares them.

        The inputs are read and preprocessed with this model's settings
        (`preprocess_settings`: e.g. the default model's continuum normalisation, which
        ``astro_spt.preprocess.preprocess()`` with its own defaults does not do), then
        projected onto its PCA basis the way `estimate` projects them.

        Parameters
        ----------
        spectra
            Anything `astro_spt.estimate` takes: spectra, lists of them, file paths,
            folders, glob patterns.
        batch_size, strict, redshift, air
            As for `astro_spt.estimate`.

        Returns
        -------
        `~astro_spt.estimation.ModelInput`
            ``spectra`` (the preprocessed spectra, a
            `~astro_spt.preprocess.PreprocessResult`), ``features`` (the network's input,
            float32 PCA coefficients, shape (n, n_components)), ``used`` (which inputs
            reach the network) and ``projection``.

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()
        >>> seen = model.preprocess(example_files()[:2])
        >>> seen.spectra.flux.shape, seen.spectra.config.normalize.method
        ((2, 4096), 'continuum')
        >>> seen.features.shape, seen.features.dtype, seen.used.tolist()
        ((2, 143), dtype('float32'), [True, True])
        """
        # The estimation layer sits below this one and imports it; resolved at call time.
        from .estimation import model_input

        return model_input(
            self, spectra, batch_size=batch_size, strict=strict, redshift=redshift, air=air
        )

    def estimate(self, spectra, **kwargs):
        """Ages and masses (or this bundle's labels) of spectra: `astro_spt.estimate`.

        Same as ``astro_spt.estimate(spectra, model=self, **kwargs)``.

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.flags import decode_flags
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()
        >>> table = model.estimate(example_files(), n_samples=20)
        >>> table.colnames
        ['source', 'age', 'age_err', 'mass', 'mass_err', 'flags', 'flag_names', 'message', 'path']
        >>> len(table), table["age"].unit, table["mass"].unit
        (6, Unit("Gyr"), Unit("solMass"))
        >>> age, mass = table["age"][1], table["mass"][1]
        >>> print(f"{age:.1f} and {mass:.1f}")
        6.3 Gyr and 1.1 solMass
        >>> decode_flags(table["flags"][2])  # the K dwarf among the example files
        ['repaired_pixels', 'outside_label_range', 'masked_standard_regions']
        """
        # The estimation layer sits below this one and imports it; resolved at call time.
        from .estimation import estimate

        return estimate(spectra, model=self, **kwargs)
