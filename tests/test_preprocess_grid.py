"""Tests of `astro_spt.preprocess.grid`: the model grid, air to vacuum, resampling."""

import astropy.units as u
import numpy as np
import pytest

from astro_spt.exceptions import InvalidSpectrumError
from astro_spt.preprocess import GridConfig, air_to_vacuum, make_wavelength_grid, resample_to_grid


def test_model_grid():
    grid = make_wavelength_grid()
    assert grid.shape == (4096,)
    assert grid[0] == 3800 and grid[-1] == 9100
    np.testing.assert_allclose(np.diff(grid), 5300 / 4095)
    log_grid = make_wavelength_grid(GridConfig(spacing="log", n_pixels=100))
    np.testing.assert_allclose(np.diff(np.log(log_grid)), np.log(9100 / 3800) / 99)


def test_air_to_vacuum_inverts_specutils():
    from specutils.utils.wcs_utils import air_to_vac, vac_to_air

    vacuum = np.linspace(3500, 9500, 50)
    air = vac_to_air(vacuum * u.AA).to_value(u.AA)
    np.testing.assert_allclose(air_to_vacuum(air), vacuum, rtol=0, atol=1e-8)
    # and agrees with specutils' own (approximate) inversion to far below a pixel
    specutils_vacuum = air_to_vac(air * u.AA).to_value(u.AA)
    np.testing.assert_allclose(air_to_vacuum(air), specutils_vacuum, atol=1e-4)
    assert air_to_vacuum(5000.0) > 5000
    with pytest.raises(ValueError, match="2000"):
        air_to_vacuum([1500.0, 3000.0])


def test_linear_function_is_reproduced():
    wavelength = np.linspace(3700, 9200, 1000)
    flux = 2.0 * wavelength + 5
    out = resample_to_grid(wavelength, flux, dtype=np.float64)
    grid = make_wavelength_grid()
    np.testing.assert_allclose(out.flux[0], 2 * grid + 5, rtol=1e-12)
    assert not out.mask.any()
    assert out.covered.all()


def test_mask_and_coverage_are_carried():
    wavelength = np.arange(10.0)
    flux = np.arange(10.0)
    ivar = np.full(10, 4.0)
    ivar[3] = 0
    flux[6] = np.nan
    mask = np.zeros(10, bool)
    mask[8] = True
    grid = np.array([-1.0, 1.5, 2.5, 3.0, 4.5, 5.5, 6.5, 7.5, 8.0, 8.5, 9.0, 9.5])
    out = resample_to_grid(wavelength, flux, ivar, mask, grid=grid)
    expected_mask = [True, False, True, True, False, True, True, True, True, True, False, True]
    np.testing.assert_array_equal(out.mask[0], expected_mask)
    np.testing.assert_array_equal(out.covered[0], (grid >= 0) & (grid <= 9))
    np.testing.assert_allclose(out.flux[0, [1, 4, 10]], [1.5, 4.5, 9.0])
    np.testing.assert_allclose(out.ivar[0, [1, 4, 10]], [4.0, 4.0, 4.0])
    assert np.isnan(out.flux[0][out.mask[0]]).all()
    assert (out.ivar[0][out.mask[0]] == 0).all()


def test_variance_is_interpolated():
    out = resample_to_grid([0.0, 1.0], [1.0, 1.0], [1.0, 0.25], grid=[0.25], dtype=np.float64)
    # variance 0.75 * 1 + 0.25 * 4
    np.testing.assert_allclose(out.ivar, [[1 / 1.75]])


def test_per_row_grids_match_shared_grid():
    rng = np.random.default_rng(3)
    wavelength = np.geomspace(3700, 9200, 800)
    flux = rng.normal(10, 1, (4, 800))
    shared = resample_to_grid(wavelength, flux)
    per_row = resample_to_grid(np.tile(wavelength, (4, 1)), flux)
    np.testing.assert_array_equal(shared.flux, per_row.flux)
    np.testing.assert_array_equal(shared.mask, per_row.mask)

    # different lengths, NaN-padded; each row equals its own 1-D resampling
    short = wavelength[100:600]
    padded_w = np.full((2, 800), np.nan)
    padded_f = np.full((2, 800), np.nan)
    padded_w[0], padded_f[0] = wavelength, flux[0]
    padded_w[1, :500], padded_f[1, :500] = short, flux[1, 100:600]
    both = resample_to_grid(padded_w, padded_f)
    first = resample_to_grid(wavelength, flux[0])
    second = resample_to_grid(short, flux[1, 100:600])
    np.testing.assert_array_equal(both.flux[0], first.flux[0])
    np.testing.assert_array_equal(both.flux[1], second.flux[0])
    np.testing.assert_array_equal(both.covered[1], second.covered[0])


@pytest.mark.parametrize(
    ("wavelength", "flux", "message"),
    [
        ([1.0, 3.0, 2.0, 4.0], [1.0] * 4, "strictly increasing.*decreasing"),
        ([4.0, 3.0, 2.0, 1.0], [1.0] * 4, "strictly increasing"),
        ([1.0, 2.0, 2.0, 4.0], [1.0] * 4, "duplicate"),
        ([1.0, 2.0, 3.0], [1.0] * 4, "wavelength has shape"),
        ([1.0], [1.0], "at least 2 pixels"),
        ([[1.0, np.nan, 3.0]], [[1.0] * 3], "padded with NaN at the end"),
        (np.ones((2, 2, 2)), np.ones((2, 2, 2)), "1-D or 2-D"),
    ],
)
def test_bad_input_raises_clearly(wavelength, flux, message):
    with pytest.raises(InvalidSpectrumError, match=message):
        resample_to_grid(wavelength, flux, grid=[1.5, 2.5])


def test_mismatched_ivar_shape():
    with pytest.raises(InvalidSpectrumError, match="ivar has shape"):
        resample_to_grid([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], ivar=[1.0, 1.0])
    with pytest.raises(InvalidSpectrumError, match="mask has shape"):
        resample_to_grid([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], mask=[True])
