"""Estimator bundles: everything a trained estimator needs, saved as one directory.

A bundle (SPEC §2, layer 4) holds the network weights, the PCA basis, the label names,
units and scaling, the label covariance of the training loss, the Monte Carlo dropout
settings, the training set's reference statistics (for out-of-distribution flags), the
preprocessing settings, the provenance of the training run and the model card. On disk::

    config.json          schema version, settings, provenance, sha256 of every other file
    model.safetensors    network weights (float32, or float16 to halve the size)
    pca.safetensors      PCA basis as plain arrays (or pca.npz)
    reference.safetensors  density of the training spectra's embedding (optional)
    README.md            Hugging Face model card (YAML front matter + accuracy tables)

Loading never unpickles: weights and arrays go through ``safetensors`` (or
``numpy.load(allow_pickle=False)``), settings through JSON, and every file is checked
against its sha256 in ``config.json`` before it is used.

One module per concept:

- `astro_spt.bundle.labels`: the labels (`LabelSpec`: name, unit, scaling for the
  network) and predictions of them in physical units (`LabelPrediction`);
- `astro_spt.bundle.reference`: the training set's reference statistics and the tests
  behind the ``out_of_distribution``, ``outside_label_range`` and ``large_uncertainty``
  flags (`ReferenceStats`, `EmbeddingDensity`, `latent_distance`);
- `astro_spt.bundle.storage`: the on-disk format, its schema and limits, file hashes,
  verified reads and atomic writes (`read_bundle_config`, `find_corrupt_files`);
- `astro_spt.bundle.estimator`: `EstimatorBundle`, which ties them together.

Every public name is importable from ``astro_spt.bundle`` itself. The bundle imports no
layer above it (estimation, the hub, training, the command line); the convenience
methods that reach them are explained in `astro_spt.bundle.estimator`.
"""

# The constants are importable from the package, as they were from the module it was.
from .estimator import EstimatorBundle
from .labels import (  # noqa: F401
    LABEL_PHYSICAL_TYPES,
    LABEL_SCALINGS,
    UNCERTAINTY_SOURCES,
    LabelPrediction,
    LabelSpec,
)
from .reference import (  # noqa: F401
    EMBEDDING_SHRINKAGE,
    LARGE_UNCERTAINTY_FRACTION,
    REFERENCE_PERCENTILES,
    EmbeddingDensity,
    ReferenceStats,
    latent_distance,
)
from .storage import (  # noqa: F401
    CONFIG_NAME,
    EMBEDDING_NAME,
    HPARAM_LIMITS,
    MAX_CONFIG_BYTES,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_LABELS,
    MODEL_CARD_NAME,
    PCA_DTYPES,
    PCA_NAMES,
    PROJECTIONS,
    SCHEMA_VERSION,
    WEIGHT_DTYPES,
    WEIGHTS_NAME,
    find_corrupt_files,
    read_bundle_config,
)

__all__ = [
    "CONFIG_NAME",
    "MODEL_CARD_NAME",
    "SCHEMA_VERSION",
    "EmbeddingDensity",
    "EstimatorBundle",
    "LabelPrediction",
    "LabelSpec",
    "ReferenceStats",
    "find_corrupt_files",
    "latent_distance",
    "read_bundle_config",
]
