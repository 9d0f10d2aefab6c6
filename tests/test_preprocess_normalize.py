"""Tests of `astro_spt.preprocess.normalize`."""

import numpy as np
import pytest

from astro_spt.preprocess import make_wavelength_grid, normalize

GRID = make_wavelength_grid()


def spectrum_with_lines():
    continuum = 500 * (GRID / 6000) ** -2
    profile = np.ones_like(GRID)
    for center in (4102, 4861, 5175, 6563, 8542):
        profile -= 0.4 * np.exp(-0.5 * ((GRID - center) / 2.0) ** 2)
    return continuum, continuum * profile


def test_median():
    flux = np.array([[1.0, 2, 3, 4, 5], [10, 10, 20, 30, 40]])
    normalized, scale = normalize(flux, "median")
    np.testing.assert_allclose(np.median(normalized, axis=1), 1)
    np.testing.assert_allclose(scale[:, 0], [3, 20])


def test_standardize():
    rng = np.random.default_rng(0)
    flux = rng.normal(50, 7, (3, 1000))
    normalized, _ = normalize(flux, "standardize")
    np.testing.assert_allclose(normalized.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(normalized.std(axis=1), 1)


def test_continuum_flattens_the_slope_and_keeps_lines():
    _, flux = spectrum_with_lines()
    normalized, scale = normalize(flux[None, :], "continuum", continuum_sigma=38.7)
    assert scale.shape == (1, GRID.size)
    inner = slice(200, -200)
    # away from the lines the normalised flux is flat, close to 1
    far = np.ones(GRID.size, bool)
    for center in (4102, 4861, 5175, 6563, 8542):
        far &= np.abs(GRID - center) > 60
    assert np.abs(normalized[0, inner][far[inner]] - 1).max() < 0.03
    # the lines keep most of their depth
    core = np.argmin(np.abs(GRID - 6563))
    assert normalized[0, core] < 0.65


def test_continuum_ignores_zero_weight_pixels():
    _, flux = spectrum_with_lines()
    damaged = flux.copy()
    damaged[1000:1040] = 0.0  # filled gap with no weight
    ivar = np.ones_like(flux)
    ivar[1000:1040] = 0
    _, scale = normalize(damaged[None, :], "continuum", ivar=ivar[None, :])
    _, clean_scale = normalize(flux[None, :], "continuum")
    np.testing.assert_allclose(scale[0, 1000:1040], clean_scale[0, 1000:1040], rtol=0.03)


def test_none_and_scale_invariance():
    _, flux = spectrum_with_lines()
    same, scale = normalize(flux, "none")
    np.testing.assert_array_equal(same, flux)
    assert scale.shape == (1,)
    for method in ("continuum", "median", "standardize"):
        a, _ = normalize(flux[None, :], method)
        b, _ = normalize(1e-3 * flux[None, :], method)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_unusable_rows_become_nan():
    flux = np.vstack([np.full(100, -5.0), np.full(100, 3.0), np.zeros(100)])
    normalized, _ = normalize(flux, "median")
    assert np.isnan(normalized[0]).all() and np.isnan(normalized[2]).all()
    np.testing.assert_allclose(normalized[1], 1)
    standardized, _ = normalize(flux, "standardize")
    assert np.isnan(standardized).all()  # constant rows have no spread


def test_unknown_method():
    with pytest.raises(ValueError, match="method must be one of"):
        normalize(np.ones((1, 10)), "max")
