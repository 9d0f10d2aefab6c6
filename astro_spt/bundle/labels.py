"""What a bundle's labels are, and what a prediction of them is.

`LabelSpec` says how one label (``age`` in Gyr, learned as its ``log10``) is scaled for
the network and back; `LabelPrediction` holds predicted labels in physical units with
their uncertainty, its sources and the Monte Carlo samples. Nothing here reads or writes
files or runs a network.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LABEL_SCALINGS",
    "UNCERTAINTY_SOURCES",
    "LabelPrediction",
    "LabelSpec",
]


LABEL_SCALINGS = ("linear", "log10")
#: The sources of the predictive uncertainty (`EstimatorBundle.predict_scaled`).
UNCERTAINTY_SOURCES = ("noise", "aleatoric", "epistemic")


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
    embedding : `numpy.ndarray` or None, shape (N, d_model)
        The network's embedding of the spectra (`EstimatorBundle.embed`), when the
        prediction computed it; the out-of-distribution test reads it.

    Examples
    --------
    `EstimatorBundle.unscale` makes them, here for one of the example LAMOST spectra:

    >>> import astro_spt
    >>> from specutils import Spectrum
    >>> from astro_spt.io import example_files
    >>> from astro_spt.preprocess import preprocess
    >>> model = astro_spt.load_model()  # the embedded default, no network
    >>> spectra = preprocess(Spectrum.read(example_files()[0]), model.preprocess_settings())
    >>> projection = model.project(spectra.flux, spectra.mask)
    >>> scaled = model.predict_scaled(
    ...     projection.coefficients,
    ...     20,
    ...     seed=0,
    ...     return_samples=True,
    ...     projection=projection,
    ...     ivar=spectra.ivar,  # the aleatoric head reads the noise
    ... )
    >>> pred = model.unscale(scaled)
    >>> pred.names, pred.units
    (('age', 'mass'), ('Gyr', 'solMass'))
    >>> pred.mean.shape, pred.covariance.shape, pred.samples.shape
    ((1, 2), (1, 2, 2), (1, 20, 2))
    >>> pred.mean.round(1), pred.std.round(1)  # ages in Gyr, masses in solar masses
    (array([[4.4, 1.2]]), array([[2.6, 0.2]]))
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    mean: np.ndarray
    covariance: np.ndarray
    samples: np.ndarray | None
    seed: int
    components: dict | None = None
    embedding: np.ndarray | None = None

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


#: Physical type each label name must have when it has a unit, so that a unit changed to
#: one of another kind (an age in solar masses) is refused.
LABEL_PHYSICAL_TYPES = {
    "age": "time",
    "mass": "mass",
    "teff": "temperature",
    "radius": "length",
    "luminosity": "power",
}
