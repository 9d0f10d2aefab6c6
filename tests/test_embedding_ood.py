"""The out-of-distribution test on the network's embedding (issue 14): `EmbeddingDensity`,
its place in bundles, and the flag it adds."""

import hashlib
import json
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable, Table
from hf_server import make_bundle
from hypothesis import given, settings
from hypothesis import strategies as st

import astro_spt
from astro_spt.bundle import (
    EMBEDDING_NAME,
    EmbeddingDensity,
    EstimatorBundle,
    ReferenceStats,
    find_corrupt_files,
)
from astro_spt.exceptions import BundleError


def _mahalanobis(h, mean, covariance):
    d = np.atleast_2d(h) - mean
    return np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(covariance), d))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 60),
    d=st.integers(1, 12),
    shrinkage=st.sampled_from([1e-3, 0.01, 0.3, 0.9]),
)
def test_distance_is_the_mahalanobis_distance_of_the_shrunk_covariance(seed, n, d, shrinkage):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    if np.trace(np.atleast_2d(np.cov(train, rowvar=False))) <= 1e-12:
        return  # no spread: fit refuses (tested below)
    density = EmbeddingDensity.fit(train, shrinkage=shrinkage)
    covariance = np.atleast_2d(np.cov(train, rowvar=False))
    shrunk = (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / d * np.eye(d)
    new = rng.normal(size=(5, d)) * 3
    expected = _mahalanobis(new, train.mean(axis=0), shrunk)
    np.testing.assert_allclose(density.distance(new), expected, rtol=1e-6, atol=1e-9)
    assert density.distance(train.mean(axis=0)) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 6))
def test_unshrunk_distance_does_not_depend_on_the_embedding_coordinates(seed, d):
    # a Mahalanobis distance is invariant under invertible linear maps of the space
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(200, d))
    new = rng.normal(size=(4, d)) * 2
    mix = rng.normal(size=(d, d)) + 3 * np.eye(d)
    plain = EmbeddingDensity.fit(train, shrinkage=0.0).distance(new)
    mixed = EmbeddingDensity.fit(train @ mix, shrinkage=0.0).distance(new @ mix)
    np.testing.assert_allclose(mixed, plain, rtol=1e-6)


def test_fewer_spectra_than_dimensions_and_bad_input():
    rng = np.random.default_rng(0)
    few = rng.normal(size=(5, 16))  # rank 4 covariance: shrinkage keeps it invertible
    density = EmbeddingDensity.fit(few)
    assert np.isfinite(density.distance(rng.normal(size=(3, 16)))).all()
    with pytest.raises(ValueError, match="singular"):
        EmbeddingDensity.fit(few, shrinkage=0.0)
    with pytest.raises(ValueError, match="does not vary"):
        EmbeddingDensity.fit(np.ones((10, 3)))
    with pytest.raises(ValueError, match="N >= 2"):
        EmbeddingDensity.fit(np.ones((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        EmbeddingDensity.fit(np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="shrinkage"):
        EmbeddingDensity.fit(few, shrinkage=1.0)
    with pytest.raises(ValueError, match="width 3"):
        density.distance(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        EmbeddingDensity(np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        EmbeddingDensity(np.zeros(2), np.full((2, 2), np.inf))
    with pytest.raises(ValueError, match="mean and whitening"):
        EmbeddingDensity.from_arrays({"mean": np.zeros(2)})


@pytest.fixture(scope="module")
def dense():
    """A tiny bundle with the density of its embedding of its own training spectra."""
    bundle, flux = make_bundle(seed=5)
    x = bundle.features(flux)
    density = EmbeddingDensity.fit(bundle.embed(x))
    bundle.embedding_density = density
    bundle.reference = ReferenceStats.from_training(
        bundle.pca,
        flux,
        embedding=bundle.embed(x),
        embedding_density=density,
    )
    return bundle, flux


def test_bundle_round_trip_keeps_the_density(dense, tmp_path):
    bundle, flux = dense
    path = bundle.save_pretrained(tmp_path / "b")
    config = json.loads((path / "config.json").read_text())
    density = config["embedding_density"]
    assert (density["file"], density["dtype"]) == (EMBEDDING_NAME, "float32")
    assert density["distance_percentiles"] == bundle.reference.embedding_distance
    assert EMBEDDING_NAME in config["files"] and find_corrupt_files(path, config) == {}
    # "reference" keeps the keys readers from before the density know, so that they
    # load the bundle (without the embedding test) instead of refusing it
    assert set(config["reference"]) == {
        "n_train",
        "reconstruction_error",
        "latent_distance",
        "label_ranges",
        "ood_percentile",
        "label_spread",
    }
    again = EstimatorBundle.from_pretrained(path)
    np.testing.assert_array_equal(
        again.embedding_density.whitening,
        bundle.embedding_density.whitening.astype(np.float32),
    )
    assert again.reference.embedding_distance == bundle.reference.embedding_distance
    np.testing.assert_array_equal(again.out_of_distribution(flux), bundle.out_of_distribution(flux))


def test_a_broken_density_file_is_refused(dense, tmp_path):
    from safetensors.numpy import save

    bundle, _ = dense
    path = bundle.save_pretrained(tmp_path / "b")
    arrays = {k: v.astype(np.float32) for k, v in bundle.embedding_density.to_arrays().items()}
    arrays["whitening"][0, 0] = np.nan
    data = save(arrays)
    (path / EMBEDDING_NAME).write_bytes(data)
    config = json.loads((path / "config.json").read_text())
    digest = hashlib.sha256(data).hexdigest()
    config["files"][EMBEDDING_NAME] = {"sha256": digest, "size": len(data)}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"invalid embedding density.*NaN"):
        EstimatorBundle.from_pretrained(path)
    del config["files"][EMBEDDING_NAME]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="embedding_density file"):
        EstimatorBundle.from_pretrained(path)


def test_a_density_of_another_width_is_refused(dense):
    bundle, _ = dense
    with pytest.raises(ValueError, match="embeds spectra in 16 dimensions"):
        EstimatorBundle(
            bundle.network,
            bundle.pca,
            bundle.labels,
            embedding_density=EmbeddingDensity(np.zeros(3), np.eye(3)),
        )


def test_the_flag_reads_the_embedding(dense):
    bundle, flux = dense
    x = bundle.features(flux)
    given_embedding = bundle.out_of_distribution(flux, embedding=bundle.embed(x))
    np.testing.assert_array_equal(given_embedding, bundle.out_of_distribution(flux))
    # predict returns the embedding it computed, the same as embed's
    prediction = bundle.predict(flux, n_samples=4, seed=0)
    np.testing.assert_array_equal(prediction.embedding, bundle.embed(x))
    # an embedding far from the training spectra's is flagged, whatever the PCA says
    whitening = bundle.embedding_density.whitening
    spread = np.sqrt(np.diag(np.linalg.inv(whitening @ whitening.T)))
    far = bundle.embed(x) + 50 * spread
    assert not bundle.out_of_distribution(flux, percentile=100).any()
    assert bundle.out_of_distribution(flux, embedding=far, percentile=100).all()
    # without the density, or without its percentiles, only the PCA distances count
    plain = EstimatorBundle(bundle.network, bundle.pca, bundle.labels, reference=bundle.reference)
    assert not plain.out_of_distribution(flux, embedding=far, percentile=100).any()


def test_a_network_trained_on_dwarfs_flags_giants_by_its_embedding(shared_data):
    # Real LAMOST DR10 spectra: train on 300 dwarfs (LASP log g >= 3.8), then show the
    # model 100 giants (log g < 3.5). Measured (seed 0): the embedding flags 46 % of the
    # giants and 5 % of the held-out dwarfs; the PCA distances alone 13 % and 10 %.
    from test_train import CONTINUUM

    from astro_spt.estimation import preprocess_inputs
    from astro_spt.training import EstimatorConfig, TrainingConfig

    folder = shared_data / "lamost-lrs" / "dr10"
    table = Table.read(folder / "labels.csv")
    logg = np.asarray(table["logg"])
    paths = np.array([str(folder / "spectra" / name) for name in table["file"]])
    dwarfs, giants = np.flatnonzero(logg >= 3.8)[:300], np.flatnonzero(logg < 3.5)[:100]
    spectra = preprocess_inputs(list(paths[dwarfs]), CONTINUUM)
    labels = QTable(
        {
            "teff": table["teff"][dwarfs] * u.K,
            "logg": logg[dwarfs],
            "feh": np.asarray(table["feh"])[dwarfs],
        }
    )
    config = EstimatorConfig(
        n_components=48,
        network={"d_model": 64, "n_heads": 4, "n_blocks": 1, "dropout": 0.1},
        n_samples=20,
        training=TrainingConfig(
            learning_rate=1e-3, max_epochs=40, batch_size=32, patience=8, seed=0
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", astro_spt.exceptions.AstroSPTWarning)
        bundle, history = astro_spt.train(spectra, labels, config=config)
    assert bundle.embedding_density.n_features == 64
    assert set(bundle.reference.embedding_distance) == set(bundle.reference.latent_distance)
    # the density is of the training part, its percentiles of the validation part
    rows = history.split["train"]
    projection = bundle.project(spectra.flux[rows].astype(float), spectra.mask[rows])
    train_part = bundle.embed(projection.coefficients)
    refit = EmbeddingDensity.fit(train_part)
    np.testing.assert_allclose(refit.mean, bundle.embedding_density.mean, rtol=1e-6, atol=1e-9)

    def rates(result, rows):
        projection = bundle.project(result.flux[rows].astype(float), result.mask[rows])
        embedding = bundle.embed(projection.coefficients)
        beyond = bundle.embedding_density.distance(embedding) > bundle.reference.threshold(
            "embedding_distance"
        )
        flagged = bundle.out_of_distribution(projection=projection, embedding=embedding)
        density, bundle.embedding_density = bundle.embedding_density, None
        try:
            by_pca = bundle.out_of_distribution(projection=projection)
        finally:
            bundle.embedding_density = density
        np.testing.assert_array_equal(flagged, beyond | by_pca)
        return beyond.mean(), by_pca.mean()

    held_out = rates(spectra, history.split["test"])
    seen_giants = preprocess_inputs(list(paths[giants]), CONTINUUM)
    giant = rates(seen_giants, np.arange(len(seen_giants.flux)))
    assert held_out[0] <= 0.1, held_out
    assert giant[0] >= 0.3 and giant[0] >= 2 * giant[1], giant


def test_an_embedding_that_cannot_be_measured_is_out_of_distribution(dense):
    bundle, flux = dense
    embedding = bundle.embed(bundle.features(flux[:3]))
    embedding[1, 0] = np.nan
    embedding[2, 0] = np.inf
    flagged = bundle.out_of_distribution(flux[:3], embedding=embedding, percentile=100)
    assert flagged.tolist() == [False, True, True]
