"""Per-star uncertainties: gappy projection, noise propagation, aleatoric head, samples
that match the errors, and flags with honest rates (docs/uncertainties.rst)."""

import astropy.units as u
import numpy as np
import pytest
import torch
from astropy.table import QTable
from hypothesis import given, settings
from hypothesis import strategies as st

import astro_spt
from astro_spt.bundle import UNCERTAINTY_SOURCES, EstimatorBundle, LabelSpec, ReferenceStats
from astro_spt.nn import SpectralTransformer, predictive_samples
from astro_spt.pca import PCABasis

N_PIXELS = 96


def low_rank_spectra(n, seed=0, k=4, noise=0.02):
    """Smooth spectra made of k patterns plus white noise, and their k amplitudes."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, N_PIXELS)
    patterns = np.stack([np.sin((j + 1) * np.pi * x + j) for j in range(k)])
    amplitudes = rng.normal(size=(n, k))
    return 1 + amplitudes @ patterns + rng.normal(scale=noise, size=(n, N_PIXELS)), amplitudes


@pytest.fixture(scope="module")
def bundle():
    """A small predictive bundle: gappy PCA, aleatoric head, every source weighted 1."""
    flux, amplitudes = low_rank_spectra(600)
    train, held = flux[:400], flux[400:]
    pca = PCABasis.fit(train, n_components=8)
    torch.manual_seed(0)
    network = SpectralTransformer(
        n_inputs=8, d_model=16, n_heads=2, n_blocks=1, dropout=0.1, aleatoric=True
    ).eval()
    labels = [LabelSpec("teff", "K", mean=5000.0, scale=500.0), LabelSpec("feh", "")]
    y = np.stack([5000 + 500 * amplitudes[:, 0], 0.3 * amplitudes[:, 1]], axis=1)
    return EstimatorBundle(
        network,
        pca,
        labels,
        n_samples=32,
        projection="gappy",
        uncertainty={"weights": {s: [1.0, 1.0] for s in UNCERTAINTY_SOURCES}},
        reference=ReferenceStats.from_training(
            pca,
            held,
            y[:400],
            ["teff", "feh"],
            gappy=True,
            percentiles=(99.0, 100.0),
            ood_percentile=100.0,
        ),
    )


def test_gappy_projection_ignores_masked_pixels():
    flux, _ = low_rank_spectra(50, seed=1)
    pca = PCABasis.fit(flux, n_components=4)
    mask = np.zeros(flux.shape, bool)
    mask[:, 30:45] = True
    damaged = flux.copy()
    damaged[:, 30:45] = 1e3  # whatever an interpolation put there
    gappy = pca.project(damaged, mask).coefficients
    np.testing.assert_allclose(gappy, pca.project(flux, mask).coefficients, rtol=1e-12)
    # and it recovers the unmasked projection closely, unlike the orthogonal one
    clean = pca.project(flux).coefficients
    assert np.abs(gappy - clean).max() < 0.05 < np.abs(pca.transform(damaged) - clean).max()


def test_masking_raises_the_coefficient_uncertainty():
    flux, _ = low_rank_spectra(50, seed=2)
    pca = PCABasis.fit(flux, n_components=4)
    ivar = np.full((1, N_PIXELS), 1e4)
    jacobian = np.eye(4)[None]  # the outputs are the coefficients themselves
    sums = []
    for width in (0, 20, 50):
        mask = np.zeros((1, N_PIXELS), bool)
        mask[:, :width] = True
        noise, gaps = pca.project(flux[:1], mask).output_covariance(jacobian, ivar)
        sums.append(np.trace(noise[0] + gaps[0]))
    assert sums[0] < sums[1] < sums[2]


def test_noisier_spectrum_gets_a_larger_sigma(bundle):
    flux, _ = low_rank_spectra(5, seed=3)
    ivar = np.full(flux.shape, 1e3)
    clean = bundle.predict(flux, ivar, seed=0)
    noisy = bundle.predict(flux, ivar / 16, seed=0)
    assert (noisy.components["noise"] > 1.5 * clean.components["noise"]).all()
    assert (noisy.std > clean.std).all()
    np.testing.assert_array_equal(noisy.mean, clean.mean)


def test_masked_region_raises_sigma(bundle):
    flux, _ = low_rank_spectra(5, seed=4)
    ivar = np.full(flux.shape, 1e3)
    mask = np.zeros(flux.shape, bool)
    mask[:, 10:70] = True
    # the spectrum's own noise and gaps, the part of sigma that masking changes
    whole = bundle.predict(flux, ivar, seed=0, sources=["noise"])
    gappy = bundle.predict(flux, np.where(mask, 0, ivar), mask, seed=0, sources=["noise"])
    assert (gappy.std > whole.std).all()


def test_samples_match_errors_row_by_row(bundle):
    flux, _ = low_rank_spectra(7, seed=5)
    labels = bundle.predict(flux, np.full(flux.shape, 100.0), seed=1, return_samples=True)
    assert labels.samples.shape == (7, 32, 2)
    np.testing.assert_allclose(labels.samples.std(axis=1), labels.std, rtol=1e-9)


def test_sources_can_be_switched_off(bundle):
    flux, _ = low_rank_spectra(4, seed=6)
    ivar = np.full(flux.shape, 100.0)
    full = bundle.predict(flux, ivar, seed=0)
    assert set(full.components) == set(UNCERTAINTY_SOURCES)
    epistemic = bundle.predict(flux, ivar, seed=0, sources=["epistemic"])
    assert set(epistemic.components) == {"epistemic"}
    assert (epistemic.std < full.std).all()
    without = bundle.predict(flux, ivar, seed=0, sources=["noise", "aleatoric"])
    assert set(without.components) == {"noise", "aleatoric"}
    # the sources add in quadrature (linear labels: exactly)
    total = without.std**2 + full.components["epistemic"] ** 2
    np.testing.assert_allclose(total, full.std**2, rtol=1e-9)
    with pytest.raises(ValueError, match="unknown uncertainty sources"):
        bundle.predict(flux, ivar, sources=["cosmic"])


def test_predictive_bundle_round_trips(bundle, tmp_path):
    flux, _ = low_rank_spectra(4, seed=7)
    ivar = np.full(flux.shape, 100.0)
    again = EstimatorBundle.from_pretrained(bundle.save_pretrained(tmp_path / "b"))
    assert again.projection == "gappy" and again.uncertainty == bundle.uncertainty
    assert again.pca.residual_variance == bundle.pca.residual_variance
    a, b = bundle.predict(flux, ivar, seed=0), again.predict(flux, ivar, seed=0)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)


@settings(max_examples=40, deadline=None)
@given(
    extra_passes=st.integers(0, 60),
    n_labels=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(1e-4, 1e2),
)
def test_predictive_samples_have_exact_moments(extra_passes, n_labels, seed, spread):
    n_passes = 2 * n_labels + 2 + extra_passes  # enough to orthogonalise the draws
    rng = np.random.default_rng(seed)
    passes = torch.from_numpy(rng.normal(scale=0.1, size=(3, n_passes, n_labels)))
    factor = rng.normal(scale=spread, size=(3, n_labels, n_labels))
    covariance = torch.from_numpy(factor @ factor.transpose(0, 2, 1))
    samples = predictive_samples(passes, covariance, keys=[b"a", b"b", b"c"], seed=seed % 97)
    centred = samples - samples.mean(dim=1, keepdim=True)
    got = centred.mT @ centred / n_passes
    passes_centred = passes - passes.mean(dim=1, keepdim=True)
    expected = covariance + passes_centred.mT @ passes_centred / n_passes
    scale = expected.diagonal(dim1=1, dim2=2).max()
    assert torch.allclose(got, expected, atol=1e-8 * float(scale), rtol=1e-6)
    assert torch.allclose(samples.mean(dim=1), passes.mean(dim=1), atol=1e-9 * (1 + spread))


def test_reference_on_held_out_spectra_gives_an_honest_rate():
    # statistics measured on the basis' own fitting set flag new spectra of the very
    # same distribution far more often than the percentile says; held-out ones do not
    flux, _ = low_rank_spectra(2300, seed=8, k=6, noise=0.05)
    fit, held, new = flux[:300], flux[300:1300], flux[1300:]
    pca = PCABasis.fit(fit, n_components=60)  # enough components to fit some noise
    rates = {}
    for name, reference_set in (("in-sample", fit), ("held-out", held)):
        ref = ReferenceStats.from_training(pca, reference_set, gappy=True)
        projection = pca.project(new)
        latent = np.sqrt(np.sum(projection.coefficients**2 / pca.explained_variance, axis=1))
        rates[name] = np.mean(
            (projection.reconstruction_error > ref.threshold("reconstruction_error"))
            | (latent > ref.threshold("latent_distance"))
        )
    assert rates["held-out"] <= 0.01 < 0.2 < rates["in-sample"], rates


def test_large_uncertainty_is_relative_to_the_training_spread(bundle):
    spread = bundle.labels[1].scale  # of the (linear) metallicities in the training set
    # a metallicity near zero with a small error is no large uncertainty (it was when
    # the flag tested sigma / |value|)
    values = np.array([[5000.0, 0.01], [5000.0, 0.01], [5000.0, 0.3]])
    std = np.array([[10.0, 0.1 * spread], [10.0, 0.9 * spread], [600.0, 0.1 * spread]])
    at_most = bundle.large_uncertainty(values, std, 0.75)
    np.testing.assert_array_equal(at_most, [False, True, True])
    # 600 K is more than the 500 K spread of the training temperatures
    at_one_spread = bundle.large_uncertainty(values, std)  # default: the whole spread
    np.testing.assert_array_equal(at_one_spread, [False, False, True])


def test_table_with_samples_prints_and_round_trips(tmp_path):
    from astro_spt.io import example_files

    table = astro_spt.estimate(
        example_files()[:3], n_samples=10, return_samples=True, error_sources=True
    )
    assert table["age_samples"].shape == (3, 10)
    assert "age_samples" in "\n".join(table.pformat(max_width=-1))
    np.testing.assert_allclose(np.std(table["mass_samples"], axis=1), table["mass_err"], rtol=1e-9)
    assert any(name.startswith("age_err_") for name in table.colnames)
    table.meta.clear()  # FITS keywords are a matter of the writer (astro-spt estimate)
    for name in ("t.ecsv", "t.fits", "t.parquet"):
        table.write(tmp_path / name)
        again = QTable.read(tmp_path / name)
        for column in ("age", "age_err", "age_samples", "mass_samples"):
            np.testing.assert_array_equal(
                again[column].to_value(u.Gyr if "age" in column else u.solMass), table[column].value
            )
    distribution = astro_spt.samples_distribution(again["age_samples"])
    assert distribution.shape == (3,) and distribution.n_samples == 10


def test_scatter_head_learns_the_scatter_beyond_the_noise():
    from astro_spt.training import fit_scatter_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype("float32")
    noise_sigma = np.where(x[:, :1] > 0, 1.0, 0.2)  # half the stars four times as noisy
    y = rng.normal(size=(600, 2)) * np.hypot(noise_sigma, 0.3)
    noise = np.zeros((600, 2, 2))
    noise[:, 0, 0] = noise[:, 1, 1] = noise_sigma[:, 0] ** 2
    learned = {}
    for name, known in (("all", None), ("beyond", noise)):
        torch.manual_seed(0)
        net = SpectralTransformer(
            n_inputs=8, d_model=16, n_heads=2, n_blocks=1, aleatoric=True
        ).eval()
        extra = {} if known is None else {"noise_train": known[:450], "noise_val": known[450:]}
        fit_scatter_head(net, x[:450], y[:450], x[450:], y[450:], seed=0, **extra)
        with torch.no_grad():
            variance = torch.diagonal(net.scatter_covariance(torch.from_numpy(x)), dim1=1, dim2=2)
        learned[name] = variance.sqrt().mean().item()
    # the whole scatter averages about 0.6; beyond the noise it is 0.3
    assert 0.45 < learned["all"] and 0.15 < learned["beyond"] < 0.45, learned


def test_training_with_the_scatter_beyond_noise():
    from astropy.table import vstack

    from astro_spt.io import example_files
    from astro_spt.training import EstimatorConfig, TrainingConfig

    labels = QTable({"teff": [4916, 5014, 4658, 4748, 4813, 4876] * u.K})
    config = EstimatorConfig(
        n_components=4,
        network={"d_model": 16, "n_heads": 2, "n_blocks": 1},
        n_samples=8,
        scatter_folds=0,
        scatter_beyond_noise=True,
        training=TrainingConfig(batch_size=4, max_epochs=2),
    )
    bundle, _ = astro_spt.train(example_files() * 2, vstack([labels, labels]), config=config)
    assert set(bundle.uncertainty["weights"]) == set(UNCERTAINTY_SOURCES)
    assert bundle.provenance["estimator_config"]["scatter_beyond_noise"] is True


def test_coverage_is_calibrated_in_the_labels_units():
    from astro_spt.training.train import _coverage_scale, _label_sigma

    rng = np.random.default_rng(3)
    age = LabelSpec("age", "Gyr", "log10", mean=0.6, scale=0.25)
    # the log-normal's sigma is what the samples' standard deviation measures
    mean, sigma = np.array([-0.5, 0.0, 1.0]), np.array([0.2, 0.6, 1.0])
    draws = age.from_network(mean + sigma * rng.normal(size=(200_000, 3)))
    np.testing.assert_allclose(_label_sigma(age, mean, sigma), draws.std(axis=0), rtol=0.03)
    # stars whose log ages scatter by twice the network's sigma need a factor of 2, read
    # in Gyr about the point estimate (10**mean): that is not the same interval
    mean = rng.normal(size=4000)
    sigma = np.full(4000, 0.3)
    truth = mean + 2 * sigma * rng.normal(size=4000)
    error = np.abs(age.from_network(mean) - age.from_network(truth))[:, None]
    in_gyr = _coverage_scale(error, lambda k, d: _label_sigma(age, mean, k[:, None] * sigma))
    z = (np.abs(truth - mean) / sigma)[:, None]
    in_log = _coverage_scale(z, lambda k, d: k[:, None] * np.ones((1, 4000)))
    assert abs(in_log[0] - 2) < 0.1
    # at this spread (0.15 dex, 35 % in age) the log-space factor over-covers in Gyr
    inside = np.mean(error[:, 0] <= _label_sigma(age, mean, in_log[0] * sigma))
    assert inside > 0.72
    assert in_gyr[0] < in_log[0]


def test_a_head_that_reads_the_noise_follows_the_snr():
    from astro_spt.training import fit_scatter_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 8)).astype("float32")  # says nothing of the noise
    noise_sigma = np.where(rng.random(800) < 0.5, 1.0, 0.1)
    y = rng.normal(size=(800, 2)) * np.hypot(noise_sigma, 0.2)[:, None]
    noise = np.zeros((800, 2, 2))
    noise[:, 0, 0] = noise[:, 1, 1] = noise_sigma**2
    ratio = {}
    for reads in (False, True):
        torch.manual_seed(0)
        net = SpectralTransformer(
            n_inputs=8, d_model=16, n_heads=2, n_blocks=1, aleatoric=True, scatter_noise=reads
        ).eval()
        extra = {"noise_train": noise[:600], "noise_val": noise[600:], "beyond_noise": False}
        fit_scatter_head(net, x[:600], y[:600], x[600:], y[600:], seed=0, max_epochs=60, **extra)
        with torch.no_grad():
            covariance = net.scatter_covariance(
                torch.from_numpy(x), torch.from_numpy(noise).float() if reads else None
            )
        sigma = torch.diagonal(covariance, dim1=1, dim2=2).sqrt().numpy()[:, 0]
        ratio[reads] = np.median(sigma[noise_sigma == 1.0]) / np.median(sigma[noise_sigma < 1])
    # truth: hypot(1, 0.2) / hypot(0.1, 0.2) = 4.6; blind to the noise, one scatter for all
    assert ratio[True] > 2.5 and ratio[False] < 1.5, ratio


def test_a_head_that_reads_the_noise_needs_it(bundle, tmp_path):
    import copy

    work = copy.deepcopy(bundle)
    hparams = {**work.network.hparams, "scatter_noise": True}
    torch.manual_seed(1)
    work.network = SpectralTransformer(**hparams).eval()
    assert work.network.hparams["scatter_noise"] is True
    flux, _ = low_rank_spectra(4, seed=8)
    ivar = np.full(flux.shape, 100.0)
    with pytest.raises(ValueError, match="reads the spectrum's noise"):
        work.network.scatter_cholesky(work.network.backbone(torch.randn(2, 8)))
    projection = work.project(flux)
    with pytest.raises(ValueError, match="reads the spectrum's noise"):
        work.predict_scaled(projection.coefficients, seed=0)
    with pytest.raises(ValueError, match="reads the spectrum's noise"):
        work.predict(flux)  # no inverse variance, no noise to read
    # without the aleatoric source it needs no noise
    work.predict_scaled(projection.coefficients, seed=0, sources=["epistemic"])
    clean, noisy = work.predict(flux, ivar, seed=0), work.predict(flux, ivar / 100, seed=0)
    assert not np.allclose(clean.components["aleatoric"], noisy.components["aleatoric"])
    again = EstimatorBundle.from_pretrained(work.save_pretrained(tmp_path / "reads-noise"))
    assert again.network.hparams["scatter_noise"] is True
    np.testing.assert_array_equal(again.predict(flux, ivar, seed=0).std, clean.std)
