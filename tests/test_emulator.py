"""Tests of astro_spt.emulator: the data-driven LAMOST spectrum emulator."""

import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable

from astro_spt.emulator import (
    LAMOSTEmulator,
    lamost_log_grid,
    normalize_spectra,
    pseudo_continuum,
)

N_PIXELS = 40


def _labels(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.uniform(4200, 5500, n), rng.uniform(1.5, 3.7, n), rng.uniform(-1.2, 0.4, n)]
    )


def _synthetic_model(order=2, seed=1):
    """A random polynomial emulator on a small grid, with known coefficients."""
    labels = _labels(300, seed)
    truth = LAMOSTEmulator(order=order)
    truth.label_offset = labels.mean(axis=0)
    truth.label_scale = labels.std(axis=0)
    truth.label_min, truth.label_max = labels.min(axis=0), labels.max(axis=0)
    truth.wavelength = np.linspace(5000.0, 5100.0, N_PIXELS)
    rng = np.random.default_rng(seed + 1)
    coefficients = 0.03 * rng.normal(size=(N_PIXELS, truth.n_terms))
    coefficients[:, 0] = rng.uniform(0.6, 1.0, N_PIXELS)
    truth.coefficients = coefficients
    truth.scatter = np.zeros(N_PIXELS)
    return truth, labels


def test_lamost_log_grid_is_native_lamost_sampling():
    grid = lamost_log_grid()
    assert grid.size == 3909
    np.testing.assert_allclose(np.diff(np.log10(grid)), 1e-4, rtol=1e-9)
    assert lamost_log_grid(10).size == 10


def test_pseudo_continuum_ignores_masked_pixels():
    wavelength = np.linspace(4000.0, 6000.0, 2001)
    flux = np.full((2, wavelength.size), 2.0)
    ivar = np.ones_like(flux)
    flux[0, 1000] = 1e6  # a bad pixel, masked by ivar = 0
    ivar[0, 1000] = 0.0
    flux[1, 500] = np.nan  # non-finite counts as masked
    continuum = pseudo_continuum(wavelength, flux, ivar)
    np.testing.assert_allclose(continuum, 2.0)


def test_pseudo_continuum_is_nan_without_data():
    wavelength = np.linspace(4000.0, 6000.0, 2001)
    ivar = np.ones(wavelength.size)
    ivar[:1500] = 0.0
    continuum = pseudo_continuum(wavelength, np.ones(wavelength.size), ivar, sigma_aa=10.0)
    assert np.all(np.isnan(continuum[:1400]))
    np.testing.assert_allclose(continuum[1500:], 1.0)


def test_pseudo_continuum_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        pseudo_continuum(np.arange(5.0), np.ones(5), np.ones(4))


def test_normalize_spectra_shifts_to_rest_frame():
    grid = lamost_log_grid()
    z = 2e-4  # 60 km/s, a little less than one pixel
    line = 6564.6
    wavelength = grid.copy()
    observed_line = line * (1 + z)
    flux = 500 * (1 - 0.5 * np.exp(-0.5 * ((wavelength - observed_line) / 3.0) ** 2))
    ivar = np.full(grid.size, 1.0)
    norm, norm_ivar = normalize_spectra([wavelength], [flux], [ivar], [z])
    valid = norm_ivar[0] > 0
    assert abs(grid[valid][np.argmin(norm[0, valid])] - line) < 1.6  # one pixel is 1.5 Å
    # The last grid pixel, redshifted, lies beyond the input's range: no data there.
    assert norm_ivar[0, -1] == 0 and norm_ivar[0, 0] > 0
    # The variance of an interpolated value: 1 / ((1 - t)² + t²) times the input ivar,
    # the same t at every pixel of the log grid; here 500² times that.
    _, flat_ivar = normalize_spectra([wavelength], [np.full(grid.size, 500.0)], [ivar], [z])
    gain = flat_ivar[0, :-1] / 500.0**2
    t = np.log10(1 + z) / 1e-4 % 1
    np.testing.assert_allclose(gain, 1 / ((1 - t) ** 2 + t**2), rtol=1e-4)


def test_normalize_spectra_masks_bad_neighbours():
    grid = lamost_log_grid()
    ivar = np.ones(grid.size)
    ivar[2000] = 0.0
    norm, norm_ivar = normalize_spectra([grid], [np.ones(grid.size)], [ivar], [1e-5])
    assert norm_ivar[0, 2000] == 0 and norm[0, 2000] == 0
    assert norm_ivar[0, 1990] > 0


def test_normalize_spectra_checks_lengths():
    with pytest.raises(ValueError, match="one array per spectrum"):
        normalize_spectra([np.arange(3.0)], [np.ones(3), np.ones(3)], [np.ones(3)])
    with pytest.raises(ValueError, match="redshifts"):
        normalize_spectra([np.arange(3.0)], [np.ones(3)], [np.ones(3)], [0.0, 0.0])


@pytest.mark.parametrize("order", [2, 3])
def test_fit_recovers_synthetic_polynomial_model(order):
    truth, labels = _synthetic_model(order)
    rng = np.random.default_rng(3)
    noise = 0.003
    flux = truth.predict(labels) + noise * rng.standard_normal((len(labels), N_PIXELS))
    ivar = np.full(flux.shape, noise**-2)
    fitted = LAMOSTEmulator(order=order).fit(truth.wavelength, flux, ivar, labels)
    # The same training labels give the same standardisation, so θ compares directly.
    np.testing.assert_allclose(fitted.label_offset, truth.label_offset)
    np.testing.assert_allclose(fitted.coefficients, truth.coefficients, atol=0.005)
    test_labels = _labels(50, seed=9)
    np.testing.assert_allclose(fitted.predict(test_labels), truth.predict(test_labels), atol=0.005)
    # No intrinsic scatter was injected: the fitted scatter is what the noise of 300
    # residuals allows (their variance is uncertain by sqrt(2/300) = 8 %).
    assert np.all(fitted.scatter < 0.6 * noise)
    assert np.median(fitted.scatter) < 0.2 * noise
    stats = fitted.residual_statistics(flux, ivar, labels)
    assert 0.8 < np.median(stats["chi2_per_pixel"]) < 1.2
    assert 0.6 < np.median(stats["median_abs_z"]) < 0.75


def test_fit_recovers_intrinsic_scatter():
    truth, labels = _synthetic_model()
    rng = np.random.default_rng(4)
    noise, intrinsic = 0.005, np.where(np.arange(N_PIXELS) < 20, 0.0, 0.02)
    flux = truth.predict(labels) + rng.standard_normal((len(labels), N_PIXELS)) * np.hypot(
        noise, intrinsic
    )
    ivar = np.full(flux.shape, noise**-2)
    fitted = LAMOSTEmulator().fit(truth.wavelength, flux, ivar, labels)
    assert np.all(fitted.scatter[:20] < 0.003)
    np.testing.assert_allclose(fitted.scatter[20:], 0.02, rtol=0.2)
    stats = fitted.residual_statistics(flux, ivar, labels)
    assert np.median(stats["chi2_per_pixel"]) > 5  # the scatter is not noise...
    assert 0.8 < np.median(stats["chi2_per_pixel_scatter"]) < 1.2  # ...but is modelled


def test_fit_handles_masked_pixels_and_empty_pixels():
    truth, labels = _synthetic_model()
    flux = truth.predict(labels)
    ivar = np.full(flux.shape, 1e4)
    rng = np.random.default_rng(5)
    ivar[rng.random(ivar.shape) < 0.2] = 0.0
    flux[ivar == 0] = np.nan  # masked values may be anything
    ivar[:, 0] = 0.0  # no data at all in the first pixel
    fitted = LAMOSTEmulator().fit(truth.wavelength, flux, ivar, labels)
    prediction = fitted.predict(labels)
    np.testing.assert_allclose(prediction[:, 0], 1.0)  # damped towards a flat spectrum
    np.testing.assert_allclose(prediction[:, 1:], truth.predict(labels)[:, 1:], atol=1e-3)


def test_labels_by_name_from_a_table():
    truth, labels = _synthetic_model()
    table = QTable(
        {"feh": labels[:, 2], "teff": labels[:, 0] * u.K, "logg": labels[:, 1], "x": labels[:, 0]}
    )
    np.testing.assert_array_equal(truth.predict(table), truth.predict(labels))
    assert truth.predict(labels[0]).shape == (N_PIXELS,)


def test_round_trip_through_arrays_and_npz(tmp_path):
    truth, labels = _synthetic_model(order=3)
    flux = truth.predict(labels)
    emulator = LAMOSTEmulator(order=3).fit(truth.wavelength, flux, np.full(flux.shape, 1e4), labels)
    arrays = emulator.to_arrays()
    assert all(isinstance(value, np.ndarray) and value.dtype != object for value in arrays.values())
    restored = LAMOSTEmulator.from_arrays(arrays)
    np.testing.assert_array_equal(restored.predict(labels), emulator.predict(labels))
    path = emulator.save(tmp_path / "emulator")
    assert path.name == "emulator.npz"
    loaded = LAMOSTEmulator.load(path)
    assert loaded.order == 3 and loaded.label_names == ("teff", "logg", "feh")
    np.testing.assert_array_equal(loaded.predict(labels), emulator.predict(labels))
    np.testing.assert_array_equal(loaded.scatter, emulator.scatter)
    assert "3 " not in repr(LAMOSTEmulator()) and "unfitted" in repr(LAMOSTEmulator())


def test_from_arrays_rejects_bad_input():
    truth, _ = _synthetic_model()
    arrays = truth.to_arrays()
    with pytest.raises(ValueError, match="lack scatter"):
        LAMOSTEmulator.from_arrays({k: v for k, v in arrays.items() if k != "scatter"})
    with pytest.raises(ValueError, match="do not match"):
        LAMOSTEmulator.from_arrays({**arrays, "coefficients": arrays["coefficients"][:, :3]})
    with pytest.raises(ValueError, match="label_scale"):
        LAMOSTEmulator.from_arrays({**arrays, "label_scale": np.ones(2)})


def test_errors():
    with pytest.raises(ValueError, match="order"):
        LAMOSTEmulator(order=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        LAMOSTEmulator().predict([5000.0, 3.0, 0.0])
    truth, labels = _synthetic_model()
    with pytest.raises(ValueError, match="3 columns"):
        truth.predict(labels[:, :2])
    with pytest.raises(ValueError, match="finite"):
        truth.predict([np.nan, 3.0, 0.0])
    with pytest.raises(ValueError, match="cannot constrain"):
        LAMOSTEmulator().fit(
            truth.wavelength, np.ones((5, N_PIXELS)), np.ones((5, N_PIXELS)), labels[:5]
        )
    with pytest.raises(ValueError, match="label rows"):
        LAMOSTEmulator().fit(
            truth.wavelength, np.ones((50, N_PIXELS)), np.ones((50, N_PIXELS)), labels[:40]
        )
    with pytest.raises(ValueError, match="pixels"):
        LAMOSTEmulator().fit(
            truth.wavelength[:5], np.ones((50, N_PIXELS)), np.ones((50, N_PIXELS)), labels[:50]
        )


def test_in_training_range():
    truth, labels = _synthetic_model()
    inside = truth.in_training_range(np.vstack([labels[:2], [[9000.0, 3.0, 0.0]]]))
    np.testing.assert_array_equal(inside, [True, True, False])


@pytest.fixture(scope="module")
def real_cool_stars(shared_data):
    """Normalised real LAMOST spectra with LASP Teff < 5,600 K, and their labels."""
    from astro_spt.mock import read_labelled_lamost, spectra_arrays

    labels, spectra = read_labelled_lamost(shared_data, teff_max=5600.0)
    wavelength, flux, ivar = spectra_arrays(spectra)
    flux, ivar = normalize_spectra(wavelength, flux, ivar, labels["redshift"])
    return labels, flux, ivar


def test_predicts_held_out_real_giants_within_noise(real_cool_stars):
    labels, flux, ivar = real_cool_stars
    giants = np.flatnonzero(labels["giant"])
    holdout = np.random.default_rng(0).permutation(giants)[:40]
    train = np.ones(len(labels), dtype=bool)
    train[holdout] = False
    emulator = LAMOSTEmulator().fit(lamost_log_grid(), flux[train], ivar[train], labels[train])
    held = emulator.residual_statistics(flux[holdout], ivar[holdout], labels[holdout])
    seen = emulator.residual_statistics(
        flux[train & labels["giant"]],
        ivar[train & labels["giant"]],
        labels[train & labels["giant"]],
    )
    # Measured on this split: median chi2/pixel of the held-out (training) giants 2.5
    # (1.7) against the noise alone, 1.0 (0.9) against noise and intrinsic scatter;
    # median |residual|/sigma 0.79 (0.71), against 0.674 for pure noise.
    assert np.median(held["chi2_per_pixel_scatter"]) < 1.3
    assert np.median(held["median_abs_z"]) < 0.85
    assert np.median(held["chi2_per_pixel"]) < 1.5 * np.median(seen["chi2_per_pixel"]) + 0.5
    # The intrinsic scatter stays small against a normalised flux of ~1 over most pixels.
    assert np.median(emulator.scatter) < 0.03
