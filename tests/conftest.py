"""Shared fixtures (paths to the real LAMOST data beside the checkout) and the Hypothesis
profiles."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis: the default profile keeps CI reproducible (a fixed seed) and quick; tests
# marked ``fuzz`` run only when asked for, e.g. with the long profile:
#   pytest tests/test_fuzz.py -m fuzz --hypothesis-profile=long
settings.register_profile("ci", derandomize=True, deadline=None, database=None)
# (ASTRO_SPT_FUZZ_EXAMPLES splits a long run over processes with different seeds)
settings.register_profile(
    "long", max_examples=int(os.environ.get("ASTRO_SPT_FUZZ_EXAMPLES", 10_000)), deadline=None
)
settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a long fuzz run: select it with -m fuzz")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """The ``../shared/data`` folder of real LAMOST spectra; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the checkout")
    return SHARED_DATA


FIXTURES = Path(__file__).resolve().parent / "data" / "lamost"


@pytest.fixture(scope="session")
def lamost_files():
    """The small real LAMOST files committed under tests/data/lamost, sorted."""
    return sorted(str(p) for p in FIXTURES.glob("spec-*.fits*"))


@pytest.fixture(scope="session")
def untrained_bundle(lamost_files):
    """An age/mass bundle on the real model grid with an untrained network.

    Its PCA basis is fitted on the preprocessed fixture spectra (and noisy copies), so the
    whole estimate() path runs on real files; its numbers mean nothing.
    """
    import numpy as np
    import torch
    from specutils import Spectrum

    import astro_spt  # noqa: F401  (registers the LAMOST readers)
    from astro_spt.bundle import EstimatorBundle, LabelSpec, ReferenceStats
    from astro_spt.nn import SpectralTransformer
    from astro_spt.pca import PCABasis
    from astro_spt.preprocess import PreprocessConfig, preprocess

    config = PreprocessConfig()
    flux = preprocess([Spectrum.read(p) for p in lamost_files], config).flux
    rng = np.random.default_rng(0)
    train = np.concatenate([flux + rng.normal(scale=0.02, size=flux.shape) for _ in range(8)])
    pca = PCABasis.fit(train, n_components=8)
    torch.manual_seed(0)
    network = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1, dropout=0.2)
    labels = [
        LabelSpec("age", "Gyr", "log10", 0.6, 0.2),
        LabelSpec("mass", "solMass", "linear", 1.2, 0.3),
    ]
    ages = rng.uniform(1, 12, len(train))
    masses = rng.uniform(0.8, 2.5, len(train))
    return EstimatorBundle(
        network,
        pca,
        labels,
        preprocess_config=config,
        n_samples=16,
        tau=100.0,
        reference=ReferenceStats.from_training(
            pca, train, np.stack([ages, masses], 1), ["age", "mass"]
        ),
        description="untrained test bundle, not a science model",
    )
