"""Ages and masses (or any trained labels) of spectra: `estimate` (SPEC §2, layer 6).

Inputs stream through in batches: read (for files), preprocess, PCA, Monte Carlo dropout,
back to physical units, flag. Memory does not grow with the number of inputs, one bad
spectrum never aborts the run (it gets a NaN row and a flag, unless ``strict=True``), and
a spectrum's result does not depend on the batch it was in (see ``_NETWORK_CHUNK``).

One module per concept, from the inputs to the table:

- ``inputs``: expanding spectra, files, folders and patterns into items, and reading them;
- ``batches``: reading and preprocessing in batches with a model's settings
  (`iter_preprocessed`, `preprocess_inputs`, `model_input`);
- ``rows``: the projection and the network on fixed blocks, and the flags of each row;
- ``workers``: the worker processes that run all of it on many files;
- ``table``: the columns of the table, the flag names and the samples as distributions;
- ``core``: `estimate` itself.

Every public name is importable from ``astro_spt.estimation``.
"""

from .batches import (
    ModelInput,
    iter_preprocessed,
    model_input,  # noqa: F401 (EstimatorBundle.preprocess)
    preprocess_inputs,
)
from .core import estimate
from .inputs import expand_inputs
from .table import flag_names, samples_distribution

__all__ = [
    "ModelInput",
    "estimate",
    "expand_inputs",
    "flag_names",
    "iter_preprocessed",
    "preprocess_inputs",
    "samples_distribution",
]
