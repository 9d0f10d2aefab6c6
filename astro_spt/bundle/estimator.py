"""`EstimatorBundle`: a trained estimator, from spectra to labels with uncertainties.

It ties the other rooms of `astro_spt.bundle` together: the network and the PCA basis,
the labels (`.labels`), the reference statistics for the flags (`.reference`), and its
directory on disk (`.storage`). Its methods project spectra, predict with the full
predictive distribution and decide the flags.

Three convenience methods reach the layers above the bundle (SPEC §2): `estimate
<EstimatorBundle.estimate>` (`astro_spt.estimation.estimate`), `preprocess
<EstimatorBundle.preprocess>` (`astro_spt.estimation.model_input`) and `push_to_hub
<EstimatorBundle.push_to_hub>` (`astro_spt.hub.push_bundle`). This module does not
import those layers, which import it: the methods look their target up by name when
called (``_upper``), the way a plug-in's entry point is found, so that imports run one
way, from the command line down to the bundle, and a bundle works without them loaded.
"""

import importlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..exceptions import (
    AstroSPTError,
    BundleError,
    BundleIntegrityError,
)
from ..nn import MCPrediction, SpectralTransformer, mc_predict
from ..pca import PCABasis, PCAProjection
from .labels import UNCERTAINTY_SOURCES, LabelPrediction, LabelSpec
from .reference import (
    LARGE_UNCERTAINTY_FRACTION,
    EmbeddingDensity,
    ReferenceStats,
    latent_distance,
)
from .storage import (
    CONFIG_NAME,
    EMBEDDING_NAME,
    MODEL_CARD_NAME,
    PCA_DTYPES,
    PCA_NAMES,
    PROJECTIONS,
    SCHEMA_VERSION,
    WEIGHT_DTYPES,
    WEIGHTS_NAME,
    _card_labels,
    _check_against_card,
    _check_uncertainty,
    _config_labels,
    _file_problem,
    _load_embedding_density,
    _load_network,
    _load_pca,
    _network_skeleton,
    _package_version,
    _read_verified,
    _sha256_bytes,
    _write_atomically,
    read_bundle_config,
)

__all__ = [
    "EstimatorBundle",
]


# ---------------------------------------------------------------------------------------
# The bundle


def _upper(module: str, name: str):
    """A function of a layer above the bundle's, looked up by name when called.

    The convenience methods `EstimatorBundle.estimate`, `~EstimatorBundle.preprocess`
    and `~EstimatorBundle.push_to_hub` hand over to `astro_spt.estimation` and
    `astro_spt.hub`, which import this module: naming them here, instead of importing
    them, keeps the imports one way (see the module docstring).
    """
    return getattr(importlib.import_module(module), name)


# Spectra per network call of `EstimatorBundle.embed`.
_EMBED_BLOCK = 4096


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
    embedding_density : `EmbeddingDensity`, optional
        The training spectra's embedding by the network (`embed`), for the
        out-of-distribution flag; saved as ``reference.safetensors``.
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
        embedding_density: EmbeddingDensity | None = None,
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
        if embedding_density is not None and embedding_density.n_features != hparams["d_model"]:
            raise ValueError(
                f"the embedding density is of width {embedding_density.n_features}, the "
                f"network embeds spectra in {hparams['d_model']} dimensions"
            )
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
        self.embedding_density = embedding_density
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
        from ..preprocess import PreprocessConfig

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
        # The embedding distance's percentiles go with the density, not into "reference":
        # readers from before the density exist ignore that section (and its file), and
        # would refuse a "reference" with a key they do not know.
        reference = None if self.reference is None else self.reference.to_dict()
        embedded = {} if reference is None else reference.pop("embedding_distance", {})
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
            "reference": reference,
            "embedding_density": (
                None
                if self.embedding_density is None
                else {"file": EMBEDDING_NAME, "dtype": "float32", "distance_percentiles": embedded}
            ),
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
        >>> files  # doctest: +NORMALIZE_WHITESPACE
        ['README.md', 'config.json', 'model.safetensors', 'pca.safetensors',
         'reference.safetensors']
        >>> again.label_names, again.pca.n_components
        (('age', 'mass'), 143)
        """
        from safetensors.numpy import save as save_arrays
        from safetensors.torch import save as save_tensors

        from ..model_card import render_model_card

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
        if self.embedding_density is not None:
            payloads[EMBEDDING_NAME] = save_arrays(
                {
                    k: np.ascontiguousarray(v, dtype=np.float32)
                    for k, v in self.embedding_density.to_arrays().items()
                }
            )
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
        embedding_name = (config.get("embedding_density") or {}).get("file")
        network = _network_skeleton(config["network"], files[weights_name]["size"])
        # The files used are read whole (bounded by their recorded sizes); any other
        # listed file is only hashed, in chunks.
        data = {
            name: _read_verified(directory, name, files[name])
            for name in dict.fromkeys((weights_name, pca_name, embedding_name, MODEL_CARD_NAME))
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
        density = None
        if embedding_name is not None:
            density = _load_embedding_density(embedding_name, data[embedding_name])
        try:
            from ..preprocess import PreprocessConfig

            PreprocessConfig.from_dict(config.get("preprocess_config") or {})
            labels = [LabelSpec(**label) for label in config["labels"]]
            reference = config.get("reference")
            embedded = (config.get("embedding_density") or {}).get("distance_percentiles")
            if reference is not None and embedded:
                reference = {**reference, "embedding_distance": embedded}
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
                embedding_density=density,
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
        return _upper("astro_spt.hub", "push_bundle")(
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
        from ..nn import input_jacobian

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
            Per-spectrum identifiers that seed, with ``seed``, the Gaussian draws of the
            samples (`~astro_spt.nn.predictive_samples`); default a hash of the
            features. The dropout masks depend on ``seed`` alone (`~astro_spt.nn.mc_predict`).
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
        from ..nn import predictive_samples
        from ..nn.mc import _spectrum_keys

        if device is not None:
            self.network.to(device)
        device = next(self.network.parameters()).device
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
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
        shared = embedding = None
        head_reads_backbone = (
            self.uncertainty is not None
            and "aleatoric" in wanted
            and self.network.scatter_head is not None
        )
        if head_reads_backbone or self.embedding_density is not None:
            # the backbone output (the embedding), which the passes with dropout in the
            # head, the aleatoric head and the out-of-distribution test read: run once
            embedding = self._backbone(x)
            if self.network.hparams["dropout_position"] == "head":
                shared = (embedding,)
        passes = mc_predict(
            self.network, x, n_samples, seed=seed, return_samples=True, shared=shared
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
                    "this model's aleatoric head reads the spectrum's noise: give the "
                    "spectra's inverse variance (predict's ivar; predict_scaled's ivar and "
                    "projection), or leave 'aleatoric' out of sources"
                )
            head_noise = None if noise is None else noise.to(device=x.device, dtype=x.dtype)
            if head:
                with torch.no_grad():
                    factor = self.network.scatter_cholesky(embedding, head_noise)
                    parts["aleatoric"] = (factor @ factor.mT).double().cpu()
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
                passes.samples.cpu(),
                extra,
                epistemic_scale=scale,
                keys=_spectrum_keys(x) if keys is None else keys,
                seed=seed,
            )
        return MCPrediction(
            passes.mean.cpu(),
            epistemic + extra,
            samples,
            passes.seed,
            components=components,
            embedding=None if embedding is None else embedding.cpu(),
        )

    def _backbone(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad():
                return self.network.backbone(x)
        finally:
            self.network.train(was_training)

    def embed(self, features, *, device=None) -> np.ndarray:
        """The network's embedding of spectra: the backbone output its heads read.

        What the out-of-distribution test compares with the training spectra's
        (`embedding_density`); deterministic (no dropout). Runs in blocks of 4,096
        spectra.

        Parameters
        ----------
        features : array-like, shape (N, n_components)
            PCA coefficients (`features` or `project`).
        device : str or `torch.device` or None, optional
            Where to run the network; default where it is.

        Returns
        -------
        `numpy.ndarray`, shape (N, d_model), float64

        Examples
        --------
        >>> import astro_spt
        >>> from astro_spt.estimation import preprocess_inputs
        >>> from astro_spt.io import example_files
        >>> model = astro_spt.load_model()
        >>> spectra = preprocess_inputs(example_files()[:2], model.preprocess_settings())
        >>> model.embed(model.features(spectra.flux)).shape
        (2, 256)
        """
        if device is not None:
            self.network.to(device)
        device = next(self.network.parameters()).device
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
        # in blocks, so that a training set's embedding needs no more memory than a block's
        blocks = [self._backbone(x[i : i + _EMBED_BLOCK]) for i in range(0, len(x), _EMBED_BLOCK)]
        return torch.cat(blocks).cpu().double().numpy()

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
            embedding=(
                None
                if prediction.embedding is None
                else prediction.embedding.detach().cpu().double().numpy()
            ),
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
        embedding=None,
        percentile: float | None = None,
    ):
        """Whether spectra lie beyond the training distribution.

        A spectrum is flagged when its PCA reconstruction error, its latent Mahalanobis
        distance or, for bundles with an `embedding_density`, the Mahalanobis distance of
        its embedding by the network (see `ReferenceStats`) exceeds the reference set's
        ``percentile`` (the reference set is held-out spectra of the training
        distribution).

        Parameters
        ----------
        flux : array-like, shape (N, n_features), optional
            Preprocessed spectra.
        mask : array-like of bool, shape of ``flux``, optional
            Their masked pixels.
        projection : `~astro_spt.pca.PCAProjection`, optional
            Their projection (`project`), if already computed, instead of ``flux``.
        embedding : array-like, shape (N, d_model), optional
            Their embedding (`embed`, or ``predict(...).embedding``), if already computed.
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
        array([False, False,  True, False, False, False])
        >>> embedding = model.embed(model.project(spectra.flux, spectra.mask).coefficients)
        >>> model.embedding_density.distance(embedding).round()
        array([ 31.,   7., 107.,  22.,  24.,  49.])
        >>> round(model.reference.threshold("embedding_distance"))  # held-out 99.9th pct.
        67

        The third file, a K dwarf, is out of the distribution of this demonstration model,
        trained on mock spectra of giants: the network embeds it far from any giant it
        was trained on.
        """
        reference = self._reference()
        if projection is None:
            if flux is None:
                raise ValueError("give flux or projection")
            projection = self.project(flux, mask)
        distances = {
            "reconstruction_error": projection.reconstruction_error,
            "latent_distance": latent_distance(self.pca, projection.coefficients),
        }
        if self.embedding_density is not None and reference.embedding_distance:
            if embedding is None:
                embedding = self.embed(projection.coefficients)
            distances["embedding_distance"] = self.embedding_density.distance(embedding)
        flagged = np.zeros(np.shape(distances["latent_distance"]), dtype=bool)
        for kind, distance in distances.items():
            # a distance that cannot be measured (NaN, inf) is no evidence of belonging
            beyond = ~(distance <= reference.threshold(kind, percentile))
            flagged |= beyond
        return flagged

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
        return _upper("astro_spt.estimation", "model_input")(
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
        5.4 Gyr and 1.2 solMass
        >>> decode_flags(table["flags"][2])  # the K dwarf among the example files
        ['repaired_pixels', 'out_of_distribution', 'large_uncertainty', 'masked_standard_regions']
        """
        return _upper("astro_spt.estimation", "estimate")(spectra, model=self, **kwargs)
