"""Tests of astro_spt.bundle: saving, loading, verifying and predicting with bundles."""

import io
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hf_server import make_bundle

from astro_spt.bundle import (
    SCHEMA_VERSION,
    EstimatorBundle,
    LabelSpec,
    ReferenceStats,
    find_corrupt_files,
    read_bundle_config,
)
from astro_spt.exceptions import BundleError, BundleIntegrityError, UnsupportedSchemaError
from astro_spt.nn import SpectralTransformer
from astro_spt.pca import PCABasis


@pytest.fixture(scope="module")
def trained():
    return make_bundle(seed=3)


@pytest.fixture
def saved(trained, tmp_path):
    bundle, _ = trained
    return bundle.save_pretrained(tmp_path / "bundle")


def _rewrite_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_layout_and_config(saved, trained):
    bundle, _ = trained
    assert sorted(p.name for p in saved.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "pca.safetensors",
    ]
    config = json.loads((saved / "config.json").read_text())
    assert config["schema_version"] == SCHEMA_VERSION
    assert isinstance(config["astro_spt_version"], str)
    assert config["labels"][0] == {
        "name": "age",
        "unit": "Gyr",
        "scaling": "log10",
        "mean": bundle.labels[0].mean,
        "scale": bundle.labels[0].scale,
    }
    assert config["network"]["hparams"] == bundle.network.hparams
    assert config["pca"]["n_components"] == 8 and config["pca"]["n_features"] == 64
    assert config["mc_dropout"] == {"n_samples": 16, "tau": bundle.tau, "uncertainty_scale": None}
    assert set(config["reference"]) >= {"reconstruction_error", "latent_distance", "label_ranges"}
    assert config["provenance"]["seed"] == 3
    assert set(config["files"]) == {"model.safetensors", "pca.safetensors", "README.md"}
    assert find_corrupt_files(saved, config) == {}
    # No leftovers of the atomic write beside the bundle.
    assert [p.name for p in saved.parent.iterdir()] == ["bundle"]


def test_round_trip_is_exact(saved, trained):
    bundle, _ = trained
    again = EstimatorBundle.from_pretrained(saved)
    original_state = bundle.network.state_dict()
    loaded_state = again.network.state_dict()
    assert original_state.keys() == loaded_state.keys()
    for key, value in original_state.items():
        assert loaded_state[key].dtype == value.dtype
        assert torch.equal(loaded_state[key], value), key
    for name, value in bundle.pca.to_arrays().items():
        assert np.array_equal(again.pca.to_arrays()[name], value)
    assert again.labels == bundle.labels
    assert again.reference == bundle.reference
    assert again.provenance == bundle.provenance
    assert again.preprocess_config == bundle.preprocess_config
    assert np.array_equal(again.label_covariance, bundle.label_covariance)
    assert (again.n_samples, again.tau) == (bundle.n_samples, bundle.tau)
    assert again.description == bundle.description
    assert again.model_card == (saved / "README.md").read_text()
    assert again.source == str(saved)
    assert not again.network.training
    # Saving the loaded bundle again gives the same files.
    resaved = again.save_pretrained(saved.parent / "resaved")
    for name in ("config.json", "model.safetensors", "pca.safetensors", "README.md"):
        assert (resaved / name).read_bytes() == (saved / name).read_bytes(), name


def test_saved_trained_bundle_predicts_bit_identically(saved, trained):
    bundle, flux = trained
    again = EstimatorBundle.from_pretrained(saved)
    features = bundle.features(flux[:10])
    assert features.dtype == np.float32
    assert np.array_equal(again.features(flux[:10]), features)
    before = bundle.predict_scaled(features, seed=123, return_samples=True)
    after = again.predict_scaled(again.features(flux[:10]), seed=123, return_samples=True)
    assert before.samples.shape == (10, 16, 2)  # the bundle's default n_samples
    assert torch.equal(before.mean, after.mean)
    assert torch.equal(before.covariance, after.covariance)
    assert torch.equal(before.samples, after.samples)
    physical_before, physical_after = bundle.unscale(before), again.unscale(after)
    assert np.array_equal(physical_before.mean, physical_after.mean)
    assert np.array_equal(physical_before.covariance, physical_after.covariance)
    # Another seed gives other samples.
    other = again.predict_scaled(features, seed=124)
    assert not torch.equal(other.mean, after.mean)


def test_loading_leaves_the_global_generator_alone(saved):
    state = torch.get_rng_state()
    EstimatorBundle.from_pretrained(saved)
    assert torch.equal(torch.get_rng_state(), state)


def test_float16_storage(trained, tmp_path):
    bundle, flux = trained
    full = bundle.save_pretrained(tmp_path / "full")
    half = bundle.save_pretrained(tmp_path / "half", dtype="float16", pca_dtype="float32")
    assert (half / "model.safetensors").stat().st_size < 0.6 * (
        full / "model.safetensors"
    ).stat().st_size
    assert json.loads((half / "config.json").read_text())["network"]["dtype"] == "float16"
    a = EstimatorBundle.from_pretrained(half)
    b = EstimatorBundle.from_pretrained(half)
    assert all(p.dtype == torch.float32 for p in a.network.parameters())
    assert torch.equal(
        a.network.state_dict()["blocks.0.norm1.num_batches_tracked"],
        bundle.network.state_dict()["blocks.0.norm1.num_batches_tracked"],
    )
    features = a.features(flux[:8])
    pa, pb = a.predict_scaled(features, seed=5), b.predict_scaled(features, seed=5)
    assert torch.equal(pa.mean, pb.mean)
    reference = bundle.predict_scaled(bundle.features(flux[:8]), seed=5)
    torch.testing.assert_close(pa.mean, reference.mean, rtol=0, atol=5e-2)


def test_npz_pca_format(trained, tmp_path):
    bundle, _ = trained
    path = bundle.save_pretrained(tmp_path / "npz", pca_format="npz")
    assert (path / "pca.npz").is_file() and not (path / "pca.safetensors").exists()
    again = EstimatorBundle.from_pretrained(path)
    assert np.array_equal(again.pca.components, bundle.pca.components)


def test_pickled_arrays_are_refused(trained, tmp_path):
    bundle, _ = trained
    path = bundle.save_pretrained(tmp_path / "npz", pca_format="npz")
    # An object array can only be stored pickled; its hash is made to match, so only
    # allow_pickle=False stands between it and code execution.
    buffer = io.BytesIO()
    arrays = bundle.pca.to_arrays()
    np.savez(buffer, **{**arrays, "mean": np.array([{"evil": 1}], dtype=object)})
    (path / "pca.npz").write_bytes(buffer.getvalue())
    config = json.loads((path / "config.json").read_text())
    import hashlib

    config["files"]["pca.npz"]["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"cannot read the PCA basis in pca\.npz"):
        EstimatorBundle.from_pretrained(path)


@pytest.mark.parametrize("name", ["model.safetensors", "pca.safetensors", "README.md"])
def test_changed_byte_is_detected(saved, name):
    data = bytearray((saved / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (saved / name).write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=name.replace(".", r"\.")) as info:
        EstimatorBundle.from_pretrained(saved)
    assert info.value.filename == name
    assert "sha256" in str(info.value)
    assert find_corrupt_files(saved, read_bundle_config(saved)) == {name: "sha256 mismatch"}


def test_missing_file_is_detected(saved):
    (saved / "pca.safetensors").unlink()
    with pytest.raises(BundleIntegrityError, match=r"pca\.safetensors is missing"):
        EstimatorBundle.from_pretrained(saved)


def test_newer_schema_names_the_version_to_install(saved):
    _rewrite_config(saved, schema_version=SCHEMA_VERSION + 1, astro_spt_version="7.2.0+g1234")
    with pytest.raises(UnsupportedSchemaError) as info:
        EstimatorBundle.from_pretrained(saved)
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "astro_spt 7.2.0+g1234" in message
    assert "pip install --upgrade 'astro-spt>=7.2.0'" in message


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no config.json"),
        ("{not json", "cannot read"),
        ('{"labels": []}', "no integer schema_version"),
        ('{"schema_version": 1, "labels": []}', "lacks the entries"),
    ],
)
def test_not_a_bundle(tmp_path, content, match):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(BundleError, match=match):
        EstimatorBundle.from_pretrained(tmp_path)


def test_file_names_cannot_escape_the_bundle(saved):
    config = json.loads((saved / "config.json").read_text())
    config["files"]["../outside"] = {"sha256": "0" * 64}
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="invalid file name"):
        EstimatorBundle.from_pretrained(saved)


def test_weights_must_fit_the_network(saved):
    config = json.loads((saved / "config.json").read_text())
    config["network"]["hparams"]["d_model"] = 32
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="do not fit the network"):
        EstimatorBundle.from_pretrained(saved)


def test_save_is_atomic(trained, tmp_path, monkeypatch):
    bundle, _ = trained
    target = tmp_path / "bundle"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError, match="disk full"):
        bundle.save_pretrained(target)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    bundle.save_pretrained(target)
    old_config = (target / "config.json").read_bytes()
    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError, match="disk full"):
        bundle.save_pretrained(target, dtype="float16")
    monkeypatch.undo()
    # The earlier bundle is intact and nothing else was left behind.
    assert (target / "config.json").read_bytes() == old_config
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    EstimatorBundle.from_pretrained(target)

    # An existing bundle is replaced.
    bundle.save_pretrained(target, dtype="float16")
    assert json.loads((target / "config.json").read_text())["network"]["dtype"] == "float16"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_save_refuses_to_clobber(trained, tmp_path):
    bundle, _ = trained
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(BundleError, match="refusing"):
        bundle.save_pretrained(tmp_path / "notes")
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        bundle.save_pretrained(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    bundle.save_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="dtype"):
        bundle.save_pretrained(tmp_path / "x", dtype="bfloat16")


def test_model_card(saved):
    text = (saved / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    metadata = yaml.safe_load(front)
    assert metadata["library_name"] == "astro-spt"
    assert metadata["license"] == "bsd-3-clause"
    assert {"astronomy", "spectroscopy", "lamost", "red-giants", "pytorch"} <= set(metadata["tags"])
    assert "| age [Gyr] | 16 | 1.5 | 30 |" in body  # the measured accuracy
    assert "random numbers (test bundle, not a science model)" in body
    assert "age | Gyr | log10" in body


def test_unscale_delta_and_samples(trained):
    bundle, flux = trained
    prediction = bundle.predict_scaled(bundle.features(flux[:20]), 200, seed=0, return_samples=True)
    by_samples = bundle.unscale(prediction)  # default with samples
    by_delta = bundle.unscale(prediction, method="delta")
    assert by_samples.samples.shape == (20, 200, 2)
    assert by_delta.names == ("age", "mass") and by_delta.units == ("Gyr", "solMass")
    age, mass = bundle.labels
    mean = prediction.mean.double().numpy()
    cov = prediction.covariance.double().numpy()
    # Linear label: both methods agree, and match the affine map exactly.
    np.testing.assert_allclose(by_delta.mean[:, 1], mean[:, 1] * mass.scale + mass.mean)
    np.testing.assert_allclose(by_delta.covariance[:, 1, 1], cov[:, 1, 1] * mass.scale**2)
    np.testing.assert_allclose(by_samples.mean[:, 1], by_delta.mean[:, 1], rtol=1e-6)
    np.testing.assert_allclose(
        by_samples.covariance[:, 1, 1], by_delta.covariance[:, 1, 1], rtol=1e-6
    )
    # log10 label: the delta method maps the mean (a median); the samples' mean is above it.
    median = 10 ** (mean[:, 0] * age.scale + age.mean)
    np.testing.assert_allclose(by_delta.mean[:, 0], median)
    np.testing.assert_allclose(
        by_delta.covariance[:, 0, 0], (np.log(10) * age.scale * median) ** 2 * cov[:, 0, 0]
    )
    assert np.all(by_samples.mean[:, 0] >= median * (1 - 1e-9))
    np.testing.assert_allclose(by_samples.std, np.sqrt(np.diagonal(by_samples.covariance, 0, 1, 2)))
    assert by_samples.seed == 0
    with pytest.raises(ValueError, match="return_samples"):
        bundle.unscale(bundle.predict_scaled(bundle.features(flux[:2]), seed=0), method="samples")


def test_label_spec_round_trip_and_validation():
    age = LabelSpec("age", "Gyr", "log10", mean=0.6, scale=0.2)
    values = np.array([1.0, 4.0, 13.0])
    np.testing.assert_allclose(age.from_network(age.to_network(values)), values)
    bundle, _ = make_bundle(trained=False)
    y = np.array([[2.0, 1.0], [5.0, 1.5]])
    expected = np.stack([bundle.labels[i].to_network(y[:, i]) for i in range(2)], axis=1)
    np.testing.assert_allclose(bundle.labels_to_network(y), expected)
    with pytest.raises(ValueError, match="scaling"):
        LabelSpec("age", "Gyr", "ln")
    with pytest.raises(ValueError, match="cannot parse unit"):
        LabelSpec("age", "furlongs per fortnight")
    with pytest.raises(ValueError, match="scale positive"):
        LabelSpec("age", "Gyr", scale=0.0)


def test_bundle_validation():
    pca = PCABasis.fit(np.random.default_rng(0).normal(size=(20, 10)), n_components=4)
    labels = [LabelSpec("age", "Gyr"), LabelSpec("mass", "solMass")]
    with pytest.raises(ValueError, match="4 components"):
        EstimatorBundle(
            SpectralTransformer(n_inputs=5, d_model=16, n_heads=2, n_blocks=1), pca, labels
        )
    net = SpectralTransformer(n_inputs=4, d_model=16, n_heads=2, n_blocks=1)
    with pytest.raises(ValueError, match="2 outputs for 1 labels"):
        EstimatorBundle(net, pca, labels[:1])
    with pytest.raises(ValueError, match="unique"):
        EstimatorBundle(net, pca, [labels[0], labels[0]])
    with pytest.raises(ValueError, match="label_covariance"):
        EstimatorBundle(net, pca, labels, label_covariance=np.eye(3))
    with pytest.raises(ValueError, match="tau"):
        EstimatorBundle(net, pca, labels, tau=0.0)
    config = types.SimpleNamespace(to_dict=lambda: {"wavelet": {"level": 4}})
    assert EstimatorBundle(net, pca, labels, preprocess_config=config).preprocess_config == {
        "wavelet": {"level": 4}
    }
    with pytest.raises(BundleError, match="no reference statistics"):
        EstimatorBundle(net, pca, labels).out_of_distribution(np.zeros((1, 10)))


def test_out_of_distribution_flags(trained):
    bundle, flux = trained
    flags = bundle.out_of_distribution(flux)
    assert flags.mean() <= 0.05  # the training set itself, at the 99.9th percentile
    odd = flux[:3] + np.linspace(-5, 5, flux.shape[1])  # a strong slope never seen
    assert bundle.out_of_distribution(odd).all()
    far = bundle.pca.inverse_transform(20 * np.sqrt(bundle.pca.explained_variance)[None, :])
    assert bundle.out_of_distribution(far).all()  # familiar features, unusual amount
    assert bundle.out_of_distribution(flux, percentile=50).mean() > 0.3
    lo, hi = bundle.reference.label_ranges["age"]
    values = np.array([[lo, 1.5], [hi * 1.01, 1.5], [(lo + hi) / 2, 100.0]])
    assert bundle.outside_label_range(values).tolist() == [False, True, True]


def test_reference_stats():
    ref = ReferenceStats(10, {99.9: 1.0, 100: 2.0}, {"99.9": 3.0, "100": 4.0})
    assert ref.threshold("reconstruction_error") == 1.0
    assert ref.threshold("latent_distance", 100) == 4.0
    assert ReferenceStats.from_dict(ref.to_dict()) == ref
    with pytest.raises(KeyError, match=r"stored: 99\.9, 100"):
        ref.threshold("latent_distance", 95)
    with pytest.raises(ValueError, match="unknown reference statistic"):
        ref.threshold("colour")
    with pytest.raises(ValueError, match="ood_percentile 95"):
        ReferenceStats(10, {100: 1.0}, {100: 1.0}, ood_percentile=95)


def test_preprocess_settings():
    from astro_spt import preprocess

    bundle, _ = make_bundle(trained=False)
    bundle.preprocess_config = preprocess.PreprocessConfig().to_dict()
    assert bundle.preprocess_settings() == preprocess.PreprocessConfig()


def test_uncertainty_scale_stretches_spread_and_round_trips(tmp_path):
    bundle, _ = make_bundle()
    x = bundle.features(np.random.default_rng(3).normal(size=(5, bundle.pca.n_features)))
    plain = bundle.predict_scaled(x, 12, seed=2, return_samples=True)
    bundle.uncertainty_scale = (2.0, 0.5)
    scaled = bundle.predict_scaled(x, 12, seed=2, return_samples=True)
    assert torch.equal(scaled.mean, plain.mean)
    assert torch.allclose(scaled.std, plain.std * torch.tensor([2.0, 0.5], dtype=torch.float64))
    # the samples carry the whole predictive spread, floor included
    assert torch.allclose(scaled.samples.std(dim=1, unbiased=False), scaled.std)
    bundle.save_pretrained(tmp_path / "b")
    again = EstimatorBundle.from_pretrained(tmp_path / "b")
    assert again.uncertainty_scale == (2.0, 0.5)
    with pytest.raises(ValueError, match="uncertainty_scale"):
        EstimatorBundle(bundle.network, bundle.pca, bundle.labels, uncertainty_scale=[1.0])
