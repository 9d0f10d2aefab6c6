"""Train an estimator bundle from spectra and a label table (SPEC §2, layer 7).

`train` glues the layers together: read and preprocess the spectra, split them (seeded,
stratified), fit the PCA basis on the training part only, scale the labels, train the
network with the paper's recipe (`fit_network`), calibrate the Monte Carlo dropout
uncertainties on the validation part, measure the accuracy on the test part, and return
a ready-to-save `~astro_spt.bundle.EstimatorBundle`.
"""

import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..exceptions import AstroSPTError, AstroSPTWarning
from .loop import TrainingConfig, fit_network, fit_scatter_head

__all__ = ["SIZES", "EstimatorConfig", "size_for", "split_indices", "train"]

#: Named sizes of the estimator (`EstimatorConfig.for_size`, ``astro-spt train --size``):
#: PCA components and the `~astro_spt.nn.SpectralTransformer` arguments. ``"paper"`` is
#: SPT paper §2.1 (19 M parameters, a 76 MB bundle in float32); ``"medium"`` is the
#: shipped default model's network (4.8 M); ``"small"`` (0.1 M) suits a few hundred
#: spectra.
SIZES = {
    "small": {"n_components": 32, "network": {"d_model": 64, "n_heads": 4, "n_blocks": 2}},
    "medium": {"n_components": 143, "network": {"d_model": 256, "n_heads": 8, "n_blocks": 6}},
    "paper": {"n_components": 143, "network": {}},
}
#: Training sets below these numbers of spectra get ``"small"``, then ``"medium"``
#: (`size_for`): a rule of thumb, not a measurement; the default model (3,305 mock
#: stars) is ``"medium"``.
SIZE_LIMITS = {"small": 1000, "medium": 10000}


def size_for(n_spectra: int) -> str:
    """The name of the size in `SIZES` that suits a training set of ``n_spectra``.

    Parameters
    ----------
    n_spectra : int
        Number of labelled spectra.

    Returns
    -------
    str
        ``"small"`` below 1,000 spectra, ``"medium"`` below 10,000, else ``"paper"``.

    Examples
    --------
    >>> from astro_spt.training import size_for
    >>> size_for(80), size_for(3305), size_for(50000)
    ('small', 'medium', 'paper')
    """
    for name, limit in SIZE_LIMITS.items():
        if n_spectra < limit:
            return name
    return "paper"


@dataclass(frozen=True)
class EstimatorConfig:
    """What `train` builds, beyond the optimisation settings.

    Attributes
    ----------
    n_components : int or None
        PCA components (paper: 143). ``None`` with ``variance_threshold`` set keeps the
        fewest components reaching that explained-variance fraction. On the real-data
        benchmark (``docs/benchmarks.rst``) 256 did somewhat better than 143 and 64, by
        less than the seed-to-seed scatter, so the paper's value stays the default.
    variance_threshold : float or None
        Explained-variance fraction, alternative to ``n_components`` (paper: 0.999).
    network : dict
        Keyword arguments of `~astro_spt.nn.SpectralTransformer` that differ from its
        defaults (the paper's sizes, enhanced softmax, dropout 0.1 in the MLP head:
        the benchmark's dropout rates 0.05-0.3 and dropout in every block did no
        better); ``n_inputs`` and ``n_outputs`` are set by `train`.
    label_scaling : dict
        Label name to ``"linear"`` or ``"log10"`` (default linear). log10 suits labels
        spanning a wide range, such as age; on the real-data benchmark log10 Teff did
        slightly better than linear Teff.
    test_fraction : float
        Share of the usable spectra held out for the accuracy report (paper: 0.2).
    val_fraction : float
        Share of the training part used for early stopping and calibration.
    n_samples : int
        Monte Carlo dropout passes T stored in the bundle (open in the paper). With
        dropout in the head, T = 10 to 300 gave the same accuracy and coverage on the
        real-data benchmark; 100 passes cost little since only the head is repeated.
    length_scale : float or None
        Prior length-scale l of the MC-dropout precision τ = p l² / (2 N λ) (SPT paper
        §2.4). ``None`` (default) fits τ instead by maximising the Gaussian likelihood of
        the validation labels (Gal & Ghahramani 2016 choose τ on validation data too);
        the equivalent l is recorded in the provenance.
    calibrate : bool
        Fit a per-label scale of the uncertainties on the validation part so that about
        68.3 % of validation stars fall within 1σ and 95.4 % within 2σ (the best
        compromise when residuals are heavier-tailed than a Gaussian).
    uncertainty : {"predictive", "paper"}
        ``"predictive"`` (default): the full predictive distribution of
        ``docs/uncertainties.rst``: the network gets an aleatoric head, trained after it
        by a Gaussian likelihood (`fit_scatter_head`), and the weights of the three
        sources (spectrum noise, aleatoric, epistemic) are fitted per label on the
        validation part by maximum likelihood. ``"paper"``: SPT paper Eq. 6, the Monte
        Carlo dropout spread plus the τ⁻¹ floor, for the ablation table.
    scatter_folds : int
        With ``uncertainty="predictive"``, the aleatoric head learns from out-of-fold
        residuals: the training part is cut into this many folds, and a network trained
        (with the same recipe) on the others predicts each fold. A network's residuals
        on its own training spectra are smaller than on new ones, most of all where
        training spectra are few, and a head trained on them gives too narrow tails.
        0 or 1 uses the network's own training residuals (one training run instead of
        ``scatter_folds + 1``).
    scatter_beyond_noise : bool
        Train the aleatoric head on the scatter beyond what each training spectrum's
        propagated noise explains (the likelihood's covariance is the head's plus the
        noise term), instead of on the whole residual scatter. The noise term then
        carries the S/N dependence. Off by default: on the real-data benchmark's splits
        it did no better than the whole scatter (``docs/uncertainties.rst``).
    scatter_sees_noise : bool
        With ``uncertainty="predictive"``, the aleatoric head also reads each spectrum's
        propagated noise (``SpectralTransformer(scatter_noise=True)``): the PCA
        coefficients hardly tell a noisy spectrum from a clean one, so a head that reads
        only them predicts one scatter for every S/N, too wide for clean spectra and too
        narrow for noisy ones. On by default (measured, ``docs/uncertainties.rst``);
        bundles trained before it read only the backbone and still load.
    projection : {"gappy", "orthogonal"}
        How spectra are projected on the PCA basis: ``"gappy"`` (default) ignores
        masked pixels (`~astro_spt.pca.PCABasis.project`); ``"orthogonal"`` projects the
        interpolated values too, as astro_spt 0.1 did.
    training : `TrainingConfig`
        Optimisation settings.

    Examples
    --------
    >>> from astro_spt.training import EstimatorConfig, TrainingConfig
    >>> config = EstimatorConfig(
    ...     n_components=64,
    ...     network={"d_model": 256, "n_blocks": 4},
    ...     label_scaling={"age": "log10"},
    ...     training=TrainingConfig(max_epochs=300),
    ... )
    >>> config.n_samples, config.training.max_epochs
    (100, 300)
    >>> EstimatorConfig.from_dict(config.to_dict()) == config
    True

    Pass it to `train` as ``config=``.
    """

    # the open choices below (network dropout, T, label scaling, calibration) were
    # settled on validation data, docs/benchmarks.rst
    n_components: int | None = 143
    variance_threshold: float | None = None
    network: dict = field(default_factory=dict)
    label_scaling: dict = field(default_factory=dict)
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    n_samples: int = 100
    length_scale: float | None = None
    calibrate: bool = True
    uncertainty: str = "predictive"
    scatter_folds: int = 4
    scatter_beyond_noise: bool = False
    scatter_sees_noise: bool = True
    projection: str = "gappy"
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self):
        if not 0 <= self.test_fraction < 1 or not 0 < self.val_fraction < 1:
            raise ValueError("test_fraction must be in [0, 1) and val_fraction in (0, 1)")
        if self.uncertainty not in ("predictive", "paper"):
            raise ValueError(
                f"uncertainty must be 'predictive' or 'paper', got {self.uncertainty!r}"
            )
        if self.projection not in ("gappy", "orthogonal"):
            raise ValueError(f"projection must be 'gappy' or 'orthogonal', got {self.projection!r}")
        if isinstance(self.training, dict):
            object.__setattr__(self, "training", TrainingConfig.from_dict(self.training))
        for name in ("n_inputs", "n_outputs"):
            if name in self.network:
                raise ValueError(f"network[{name!r}] is set by train(), not by the config")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of the settings.

        `train` stores it in the bundle's provenance (``estimator_config``).

        Returns
        -------
        dict

        Examples
        --------
        >>> import json
        >>> from astro_spt.training import EstimatorConfig
        >>> d = EstimatorConfig(n_components=64, label_scaling={"age": "log10"}).to_dict()
        >>> d["n_components"], d["label_scaling"], d["training"]["batch_size"]
        (64, {'age': 'log10'}, 128)
        >>> text = json.dumps(d)
        """
        d = asdict(self)
        d["training"] = self.training.to_dict()
        return d

    @classmethod
    def for_size(cls, size: str, **settings) -> "EstimatorConfig":
        """A config with one of the named sizes of `SIZES`.

        Parameters
        ----------
        size : {"small", "medium", "paper"}
            The size; `size_for` picks one from the number of spectra.
        **settings
            Other fields, which win over the size's (a ``network`` replaces its
            network).

        Returns
        -------
        `EstimatorConfig`

        Examples
        --------
        >>> from astro_spt.training import EstimatorConfig, size_for
        >>> config = EstimatorConfig.for_size(size_for(80), label_scaling={"age": "log10"})
        >>> config.n_components, config.network["d_model"]
        (32, 64)
        >>> EstimatorConfig.for_size("paper") == EstimatorConfig()
        True
        """
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        return cls(**{**SIZES[size], **settings})

    @classmethod
    def from_dict(cls, d: dict) -> "EstimatorConfig":
        """Rebuild from `to_dict` output; unknown keys are an error.

        Parameters
        ----------
        d : dict
            Settings by field name, ``training`` as a dict; missing ones take their
            defaults.

        Returns
        -------
        `EstimatorConfig`

        Raises
        ------
        ValueError
            For an unknown key or an invalid value.

        Examples
        --------
        >>> from astro_spt.training import EstimatorConfig
        >>> config = EstimatorConfig.from_dict({"n_components": 64, "training": {"seed": 3}})
        >>> config.n_components, config.training.seed
        (64, 3)
        >>> EstimatorConfig.from_dict({"components": 64})
        Traceback (most recent call last):
        ...
        ValueError: unknown EstimatorConfig fields: ['components']
        """
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown EstimatorConfig fields: {sorted(unknown)}")
        return cls(**d)


def split_indices(n: int, fraction: float, seed: int, stratify=None, n_bins: int = 10):
    """Seeded split of ``range(n)`` into (kept, held-out) index arrays.

    With ``stratify`` (one value per item) the items are binned by quantiles of it and
    each bin is split in the same proportion, so both parts cover the label range alike.

    Examples
    --------
    >>> from astro_spt.training import split_indices
    >>> keep, held = split_indices(10, 0.2, seed=0)
    >>> len(keep), len(held), sorted([*keep, *held]) == list(range(10))
    (8, 2, True)
    """
    rng = np.random.default_rng(seed)
    if stratify is None:
        order = rng.permutation(n)
        n_held = round(fraction * n)
        return np.sort(order[n_held:]), np.sort(order[:n_held])
    values = np.asarray(stratify, dtype=float)
    edges = np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = np.searchsorted(edges, values, side="right")
    groups = [rng.permutation(np.flatnonzero(bins == b)) for b in np.unique(bins)]
    # largest-remainder allocation: the bins together hold out round(fraction * n) items
    quotas = np.array([fraction * len(g) for g in groups])
    counts = np.floor(quotas).astype(int)
    short = round(fraction * n) - counts.sum()
    counts[np.argsort(counts - quotas, kind="stable")[:short]] += 1
    held = np.sort(np.concatenate([g[:k] for g, k in zip(groups, counts, strict=True)]))
    keep = np.setdiff1d(np.arange(n), held)
    return keep, held


def split_training_rows(spectra, y, config: EstimatorConfig, scalings=None) -> dict:
    """The rows `train` fits on, validates on and tests on.

    Spectra that are unreadable or heavily damaged (the ``bad`` flags), and rows with a
    missing label (or a non-positive one for a log-scaled label), are left out, with a
    warning. The rest are split with `split_indices`, seeded by
    ``config.training.seed`` and stratified by the first label: ``config.test_fraction``
    held out for testing, then ``config.val_fraction`` of the remainder for validation.

    Parameters
    ----------
    spectra : `~astro_spt.preprocess.PreprocessResult`
        The preprocessed spectra (``flux`` and ``flags`` are used).
    y : array-like, shape (N, D)
        The labels, one row per spectrum.
    config : `EstimatorConfig`
    scalings : list of str, optional
        Each label's scaling (``"linear"`` or ``"log10"``); default all linear.

    Returns
    -------
    dict
        Index arrays ``"train"``, ``"validation"`` and ``"test"`` (``history.split``).

    Raises
    ------
    AstroSPTError
        With fewer than 10 usable spectra.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.preprocess import preprocess
    >>> from astro_spt.training import EstimatorConfig, split_training_rows
    >>> from specutils import Spectrum
    >>> from astro_spt.io import example_files
    >>> spectra = preprocess([Spectrum.read(path) for path in example_files() * 4])
    >>> y = np.random.default_rng(0).uniform(1, 10, (24, 1))
    >>> split = split_training_rows(spectra, y, EstimatorConfig())
    >>> {part: len(rows) for part, rows in split.items()}
    {'train': 17, 'validation': 2, 'test': 5}
    """
    from ..flags import FLAGS

    y = np.asarray(y, dtype=float)
    usable = np.all(np.isfinite(spectra.flux), axis=1) & np.all(np.isfinite(y), axis=1)
    usable &= (spectra.flags & FLAGS.mask_of("bad")) == 0
    for i, scaling in enumerate(scalings or []):
        if scaling == "log10":
            usable &= y[:, i] > 0
    if (~usable).any():
        warnings.warn(
            f"{int((~usable).sum())} of {len(y)} spectra are left out of training: "
            "flagged bad (unreadable, heavily damaged, featureless), or with missing (or "
            "non-positive log-scaled) labels",
            AstroSPTWarning,
            stacklevel=3,
        )
    index = np.flatnonzero(usable)
    if len(index) < 10:
        raise AstroSPTError(f"only {len(index)} usable spectra; training needs at least 10")
    seed = config.training.seed
    keep, test = split_indices(len(index), config.test_fraction, seed, stratify=y[index, 0])
    fit, val = split_indices(len(keep), config.val_fraction, seed + 1, stratify=y[index[keep], 0])
    return {"train": index[keep[fit]], "validation": index[keep[val]], "test": index[test]}


def fit_precision(y, mean, covariance, grid=None) -> float:
    """The MC-dropout precision τ that maximises the Gaussian likelihood of ``y``.

    Parameters
    ----------
    y, mean : array-like, shape (N, D)
        Labels and MC-dropout predictive means (network space).
    covariance : array-like, shape (N, D, D)
        Sample covariances of the MC passes, without a τ⁻¹ term.
    grid : array-like, optional
        Candidate values of τ⁻¹; default 10⁻⁴ to 10 in 101 logarithmic steps.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.training.train import fit_precision
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(scale=0.3, size=(5000, 1))
    >>> round(1 / fit_precision(y, np.zeros((5000, 1)), np.zeros((5000, 1, 1))), 2)
    0.09
    """
    y = np.asarray(y, float)
    residual = y - np.asarray(mean, float)
    covariance = np.asarray(covariance, float)
    grid = np.logspace(-4, 1, 101) if grid is None else np.asarray(grid, float)
    eye = np.eye(y.shape[1])
    best, best_ll = grid[0], -np.inf
    for floor in grid:
        total = covariance + floor * eye
        _, logdet = np.linalg.slogdet(total)
        mahalanobis = np.einsum("ni,nij,nj->n", residual, np.linalg.inv(total), residual)
        ll = -0.5 * np.sum(logdet + mahalanobis)
        if ll > best_ll:
            best, best_ll = floor, ll
    return float(1 / best)


def _label_arrays(labels, label_names):
    from astropy.table import Table

    table = Table(labels) if not hasattr(labels, "colnames") else labels
    if label_names is None:
        label_names = [
            name for name in table.colnames if np.issubdtype(np.asarray(table[name]).dtype, float)
        ]
    if not label_names:
        raise AstroSPTError("the label table has no floating-point columns to train on")
    missing = [name for name in label_names if name not in table.colnames]
    if missing:
        raise AstroSPTError(f"label columns {missing} are not in the table {table.colnames}")
    units = []
    columns = []
    for name in label_names:
        column = table[name]
        unit = getattr(column, "unit", None)
        units.append("" if unit is None else unit.to_string())
        values = column.value if hasattr(column, "value") else np.asarray(column)
        columns.append(np.ma.filled(np.ma.asarray(values, dtype=float), np.nan))
    return list(label_names), units, np.stack(columns, axis=1)


def _coverage_scale(error, sigma_of) -> list[float]:
    """Per label, the factor on σ that best gives 68.27 % inside 1σ and 95.45 % inside 2σ.

    ``error`` holds ``|estimate - truth|`` of validation stars, shape (N, D), in the
    units the coverage is read in; ``sigma_of(k, d)`` gives their σ of label ``d`` in
    those units when the network-space σ is multiplied by each factor of ``k`` (shape
    (K,)), shape (K, N). Residuals heavier-tailed than a Gaussian cannot meet both
    coverages: the factor minimises the sum of the squared misses, each in units of its
    tolerance (±4 % at 1σ, ±3 % at 2σ).
    """
    error = np.asarray(error, dtype=float)
    candidates = np.exp(np.linspace(np.log(0.05), np.log(20.0), 2001))
    scales = []
    for d in range(error.shape[1]):
        within = np.zeros((2, len(candidates)))
        for start in range(0, len(candidates), 128):
            k = candidates[start : start + 128]
            sigma = np.asarray(sigma_of(k, d), dtype=float)
            ok = np.isfinite(error[:, d]) & np.all(np.isfinite(sigma), axis=0)
            n = max(int(ok.sum()), 1)
            for i, factor in enumerate((1, 2)):
                inside = error[ok, d] <= factor * sigma[:, ok]
                within[i, start : start + 128] = inside.sum(axis=1) / n
        miss = ((within[0] - 0.6827) / 0.04) ** 2 + ((within[1] - 0.9545) / 0.03) ** 2
        # the middle of the best stretch, not its first point
        best = np.flatnonzero(miss == miss.min())
        scales.append(float(candidates[best[len(best) // 2]]))
    return scales


def _label_sigma(spec, mean, sigma):
    """σ in a label's units of a Gaussian of mean ``mean`` and σ ``sigma`` in the network's.

    A ``log10`` label's distribution is then log-normal, and its σ the log-normal's
    (what the samples' standard deviation of `astro_spt.estimate` measures), which
    grows faster than σ: calibrating in the network's space would leave a log label's
    1σ interval about the point estimate covering 71-73 % at a 30-40 % σ.
    """
    if spec.scaling != "log10":
        return spec.scale * sigma
    s2 = (np.log(10.0) * spec.scale * sigma) ** 2
    return spec.from_network(mean) * np.exp(s2 / 2) * np.sqrt(np.expm1(s2))


def _out_of_fold_residuals(hparams, features, y_net, i_train, i_val, config, *, device):
    """Residuals of each training spectrum from a network trained without its fold."""
    import torch

    from ..nn import SpectralTransformer

    seed = config.training.seed
    order = np.random.default_rng(seed + 2).permutation(len(i_train))
    residual = np.zeros((len(i_train), y_net.shape[1]), dtype=np.float32)
    for k, held in enumerate(np.array_split(order, config.scatter_folds)):
        kept = i_train[np.setdiff1d(np.arange(len(i_train)), held)]
        torch.manual_seed(seed + 100 + k)
        network = SpectralTransformer(**{**hparams, "aleatoric": False})
        fit_network(
            network,
            features[kept],
            y_net[kept],
            features[i_val],
            y_net[i_val],
            config.training,
            device=device,
        )
        device_of = next(network.parameters()).device
        with torch.no_grad():
            x = torch.as_tensor(features[i_train[held]], device=device_of)
            residual[held] = y_net[i_train[held]] - network.eval()(x).cpu().numpy()
    return residual


def _noise_covariance(bundle, flux, ivar, mask) -> np.ndarray:
    """`EstimatorBundle.noise_covariance` of many spectra, 256 at a time, (N, D, D)."""
    blocks = [
        bundle.noise_covariance(
            bundle.project(flux[start : start + 256], mask[start : start + 256]),
            ivar[start : start + 256],
        ).numpy()
        for start in range(0, len(flux), 256)
    ]
    return np.concatenate(blocks)


def _equivalent_length_scale(tau, dropout, weight_decay, n_train) -> float | None:
    """The prior length-scale l that gives τ = p l² / (2 N λ) (SPT paper §2.4)."""
    if tau is None or not (dropout > 0 and weight_decay > 0):
        return None
    return float(np.sqrt(2 * n_train * weight_decay * tau / dropout))


def _fit_uncertainty_weights(bundle, flux, ivar, mask, y_net, *, seed, calibrate) -> dict:
    """Weights of the sources of the predictive variance, per label, from validation data.

    Per label d, the variance is :math:`\\sigma_d^2 = \\sum_s w_{s,d} v_{s,d}` over the
    sources s (noise, aleatoric, epistemic; `EstimatorBundle.predict_scaled`), and the
    weights maximise the Gaussian likelihood of the validation residuals. With
    ``calibrate`` every weight of a label is then scaled so that the validation stars'
    coverage at 1σ and 2σ, read as `astro_spt.estimate` reports them (in the label's
    units, about the point estimate), is as close as it can be to 68.27 % and 95.45 %
    (`_coverage_scale`, `_label_sigma`).
    """
    import torch

    from ..bundle import UNCERTAINTY_SOURCES

    n_labels = y_net.shape[1]
    bundle.uncertainty = {"weights": {s: [1.0] * n_labels for s in UNCERTAINTY_SOURCES}}
    projection = bundle.project(flux, mask)
    prediction = bundle.predict_scaled(
        projection.coefficients, seed=seed, projection=projection, ivar=ivar
    )
    residual = torch.as_tensor(y_net, dtype=torch.float64) - prediction.mean.double()
    names = [s for s in UNCERTAINTY_SOURCES if s in prediction.components]
    variances = torch.stack([prediction.components[s] for s in names], dim=-1)  # (N, D, S)
    log_weights = torch.zeros(n_labels, len(names), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([log_weights], lr=0.05)
    for _ in range(1000):
        optimiser.zero_grad()
        total = (variances * torch.exp(log_weights)).sum(-1) + 1e-12
        loss = 0.5 * (torch.log(total) + residual**2 / total).mean()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            log_weights.clamp_(-20.0, 10.0)
    weights = torch.exp(log_weights.detach())
    if calibrate:
        # in the labels' own units, where estimate's point estimate and σ are read
        std = torch.sqrt((variances * weights).sum(-1)).numpy()
        truth = np.asarray(y_net, dtype=float)
        mean = truth - residual.numpy()
        specs = bundle.labels
        error = np.stack(
            [
                np.abs(spec.from_network(mean[:, d]) - spec.from_network(truth[:, d]))
                for d, spec in enumerate(specs)
            ],
            axis=1,
        )

        def sigma_of(k, d):
            return _label_sigma(specs[d], mean[:, d], k[:, None] * std[None, :, d])

        scale = torch.tensor(_coverage_scale(error, sigma_of), dtype=torch.float64)
        weights = weights * scale[:, None] ** 2
    found = {s: weights[:, k].tolist() for k, s in enumerate(names)}
    return {"weights": {s: found.get(s, [0.0] * n_labels) for s in UNCERTAINTY_SOURCES}}


def train(
    spectra,
    labels,
    *,
    label_names=None,
    config: EstimatorConfig | None = None,
    preprocess_config=None,
    device=None,
    progress: bool = False,
    batch_size: int = 256,
    data_description: str = "",
    description: str = "",
):
    """Train an SPT estimator from spectra and their labels.

    Parameters
    ----------
    spectra
        Anything `astro_spt.estimate` accepts (spectra, lists, files, folders, glob
        patterns), or an already computed `~astro_spt.preprocess.PreprocessResult`,
        one spectrum per label row.
    labels : `~astropy.table.Table` or `~astropy.table.QTable`
        One row per spectrum, in the same order. Columns with units give the labels'
        units (e.g. ``age`` in Gyr, ``mass`` in solMass); any set of labels works.
    label_names : list of str, optional
        The columns to learn; default every floating-point column.
    config : `EstimatorConfig`, optional
        What to build and how to train it; defaults follow the paper.
    preprocess_config : `~astro_spt.preprocess.PreprocessConfig`, optional
        Preprocessing settings, stored in the bundle (ignored for a PreprocessResult,
        whose own settings are used).
    device : str, optional
        Where to train (``"cpu"``, ``"cuda"``).
    progress : bool, optional
        Show a progress bar over epochs.
    batch_size : int, optional
        Spectra read and preprocessed at a time.
    data_description, description : str, optional
        What the training data are, and what the estimator is: both go to the model card.

    Returns
    -------
    bundle : `~astro_spt.bundle.EstimatorBundle`
        The trained estimator, with its test-set accuracy in ``bundle.provenance``.
    history : `~astro_spt.training.TrainingHistory`
        Per-epoch losses, plus ``split`` (the indices of the train, validation and test
        spectra) and ``test_metrics`` (an `~astropy.table.Table`).

    Examples
    --------
    A toy run on the six example LAMOST spectra, learning their LASP effective
    temperature and surface gravity with a tiny network (a real estimator needs thousands
    of labelled spectra and the default config). Training needs at least 10 usable
    spectra, so each is used twice here:

    >>> import tempfile
    >>> import astropy.units as u
    >>> from astropy.table import QTable, vstack
    >>> import astro_spt
    >>> from astro_spt.io import example_files
    >>> from astro_spt.training import EstimatorConfig, TrainingConfig
    >>> labels = QTable({"teff": [4916, 5014, 4658, 4748, 4813, 4876] * u.K,
    ...                  "logg": [2.91, 3.18, 4.52, 2.03, 2.67, 3.62]})
    >>> config = EstimatorConfig(
    ...     n_components=4,
    ...     network={"d_model": 16, "n_heads": 2, "n_blocks": 1},
    ...     n_samples=10,
    ...     training=TrainingConfig(batch_size=4, max_epochs=5),
    ... )
    >>> bundle, history = astro_spt.train(
    ...     example_files() * 2, vstack([labels, labels]), config=config,
    ...     description="toy example, not a science model",
    ... )
    >>> bundle.label_names, bundle.label_units
    (('teff', 'logg'), ('K', ''))
    >>> history.n_epochs, {part: len(rows) for part, rows in history.split.items()}
    (5, {'train': 9, 'validation': 1, 'test': 2})
    >>> history.test_metrics.colnames[2:6]  # accuracy on the held-out test spectra
    ['n', 'delta', 'delta_p', 'bias']
    >>> history.test_metrics["label", "n"].pprint()
    label  n
    ----- ---
     teff   2
     logg   2

    Save it, and load it again like any other model:

    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = bundle.save_pretrained(tmp + "/my-model")
    ...     model = astro_spt.load_model(path)
    >>> model.label_names
    ('teff', 'logg')
    """
    import torch

    from .. import __version__
    from ..bundle import EmbeddingDensity, EstimatorBundle, LabelSpec, ReferenceStats
    from ..estimation import preprocess_inputs
    from ..metrics import metrics_table
    from ..nn import SpectralTransformer, mc_predict, model_precision
    from ..pca import PCABasis
    from ..preprocess import PreprocessConfig, PreprocessResult

    config = config or EstimatorConfig()
    names, units, y = _label_arrays(labels, label_names)
    if isinstance(spectra, PreprocessResult):
        preprocess_config = spectra.config
    else:
        preprocess_config = preprocess_config or PreprocessConfig()
        spectra = preprocess_inputs(spectra, preprocess_config, batch_size=batch_size)
    flux = spectra.flux
    if len(flux) != len(y):
        raise AstroSPTError(f"{len(flux)} spectra but {len(y)} label rows")

    scalings = [config.label_scaling.get(name, "linear") for name in names]
    unknown = set(config.label_scaling) - set(names)
    if unknown:
        raise AstroSPTError(f"label_scaling names labels that are not trained: {sorted(unknown)}")
    split = split_training_rows(spectra, y, config, scalings)
    i_train, i_val, i_test = split["train"], split["validation"], split["test"]
    usable = np.zeros(len(y), dtype=bool)
    usable[np.concatenate([i_train, i_val, i_test])] = True
    seed = config.training.seed

    # The basis is fitted on the training part only: the validation part then measures
    # the out-of-distribution statistics on spectra the basis has not seen.
    n_components = config.n_components if config.variance_threshold is None else None
    if n_components is not None and n_components > min(len(i_train), flux.shape[1]):
        warnings.warn(
            f"{n_components} PCA components asked for, but the training part holds only "
            f"{len(i_train)} spectra: keeping {min(len(i_train), flux.shape[1])}. With few "
            "spectra, choose fewer components and a smaller network: "
            f"EstimatorConfig.for_size({size_for(len(y))!r}) (astro-spt train --size, "
            "--n-components)",
            AstroSPTWarning,
            stacklevel=2,
        )
        n_components = min(len(i_train), flux.shape[1])
    pca = PCABasis.fit(
        flux[i_train], n_components=n_components, variance_threshold=config.variance_threshold
    )
    gappy = config.projection == "gappy"
    features = np.zeros((len(flux), pca.n_components), dtype=np.float32)
    for start in range(0, len(flux), 256):
        rows = np.flatnonzero(usable[start : start + 256]) + start
        if len(rows):
            features[rows] = (
                pca.project(flux[rows], spectra.mask[rows]).coefficients
                if gappy
                else pca.transform(flux[rows])
            )

    specs = []
    for i, (name, unit, scaling) in enumerate(zip(names, units, scalings, strict=True)):
        raw = np.log10(y[i_train, i]) if scaling == "log10" else y[i_train, i]
        specs.append(LabelSpec(name, unit, scaling, raw.mean(), raw.std() or 1.0))
    y_net = np.zeros_like(y)
    y_net[usable] = np.stack(
        [spec.to_network(y[usable, i]) for i, spec in enumerate(specs)], axis=1
    )

    predictive = config.uncertainty == "predictive"
    hparams = {"aleatoric": predictive, **config.network}
    if predictive and config.scatter_sees_noise:
        hparams["scatter_noise"] = True
    hparams.update(n_inputs=pca.n_components, n_outputs=len(names))
    torch.manual_seed(seed)
    network = SpectralTransformer(**hparams)
    history = fit_network(
        network,
        features[i_train],
        y_net[i_train],
        features[i_val],
        y_net[i_val],
        config.training,
        device=device,
        progress=progress,
    )
    network.cpu()
    bundle = EstimatorBundle(
        network,
        pca,
        specs,
        preprocess_config=preprocess_config,
        label_covariance=np.atleast_2d(np.cov(y_net[i_train], rowvar=False)),
        n_samples=config.n_samples,
        projection=config.projection,
        description=description,
    )
    # The out-of-distribution test's density of the network's embedding: fitted on the
    # training spectra, its percentiles measured on the validation spectra, as the PCA
    # distances' are (ReferenceStats).
    density = EmbeddingDensity.fit(bundle.embed(features[i_train]))
    bundle.embedding_density = density
    bundle.reference = ReferenceStats.from_training(
        pca,
        flux[i_val],
        y[i_train],
        names,
        mask=spectra.mask[i_val],
        gappy=gappy,
        embedding=bundle.embed(features[i_val]),
        embedding_density=density,
    )
    scatter_history = None
    if network.scatter_head is not None:
        residual = None
        if config.scatter_folds > 1:
            residual = _out_of_fold_residuals(
                hparams, features, y_net, i_train, i_val, config, device=device
            )
        noise = {"train": None, "val": None}
        if config.scatter_beyond_noise or config.scatter_sees_noise:
            noise = {
                part: _noise_covariance(bundle, flux[rows], spectra.ivar[rows], spectra.mask[rows])
                for part, rows in (("train", i_train), ("val", i_val))
            }
        scatter_history = fit_scatter_head(
            network,
            features[i_train],
            y_net[i_train],
            features[i_val],
            y_net[i_val],
            seed=seed,
            device=device,
            residual_train=residual,
            noise_train=noise["train"],
            noise_val=noise["val"],
            beyond_noise=config.scatter_beyond_noise,
        )
        network.cpu()
    if predictive:
        tau = tau_from = None
        bundle.uncertainty = _fit_uncertainty_weights(
            bundle,
            flux[i_val],
            spectra.ivar[i_val],
            spectra.mask[i_val],
            y_net[i_val],
            seed=seed,
            calibrate=config.calibrate,
        )
    else:
        dropout = network.hparams["dropout"]
        weight_decay = config.training.weight_decay
        val_pred = mc_predict(
            network, torch.from_numpy(features[i_val]), config.n_samples, seed=seed
        )
        if config.length_scale is not None and dropout > 0 and weight_decay > 0:
            tau = model_precision(dropout, config.length_scale, len(i_train), weight_decay)
            tau_from = "length_scale"
        else:
            tau = fit_precision(y_net[i_val], val_pred.mean.numpy(), val_pred.covariance.numpy())
            tau_from = "validation"
        bundle.tau = tau
        if config.calibrate:
            std = np.sqrt(np.diagonal(val_pred.covariance.numpy(), axis1=1, axis2=2) + 1 / tau)
            error = np.abs(y_net[i_val] - val_pred.mean.numpy())
            bundle.uncertainty_scale = tuple(
                _coverage_scale(error, lambda k, d: k[:, None] * std[None, :, d])
            )
    metrics = None
    if len(i_test):
        pred = bundle.predict(flux[i_test], spectra.ivar[i_test], spectra.mask[i_test], seed=seed)
        metrics = metrics_table(y[i_test], pred.mean, pred.std, names=names, model="SPT")
    history.split = split
    history.test_metrics = metrics
    bundle.provenance = {
        "data": data_description,
        "n_train": len(i_train),
        "n_validation": len(i_val),
        "n_test": len(i_test),
        "split": (
            f"seeded stratified split (seed {seed}): {1 - config.test_fraction:.0%} training "
            f"({config.val_fraction:.0%} of it for validation), {config.test_fraction:.0%} test"
        ),
        "seed": seed,
        "astro_spt_version": __version__,
        "estimator_config": config.to_dict(),
        "mc_dropout": {
            "tau": tau,
            "tau_from": tau_from,
            "equivalent_length_scale": _equivalent_length_scale(
                tau, network.hparams["dropout"], config.training.weight_decay, len(i_train)
            ),
            "uncertainty_scale": (
                None if bundle.uncertainty_scale is None else list(bundle.uncertainty_scale)
            ),
        },
        "uncertainty": {
            "method": config.uncertainty,
            "weights": None if bundle.uncertainty is None else bundle.uncertainty["weights"],
            "scatter_head_epochs": (
                None if scatter_history is None else len(scatter_history["val_nll"])
            ),
            "reference_set": "validation",
        },
        "epochs": history.n_epochs,
        "history": history.to_dict(),
        "stopped_early": history.stopped_early,
        "metrics": (
            {}
            if metrics is None
            else {
                row["label"]: {
                    key: float(row[key])
                    for key in metrics.colnames
                    if key not in ("label", "model")
                }
                for row in metrics
            }
        ),
    }
    return bundle, history
