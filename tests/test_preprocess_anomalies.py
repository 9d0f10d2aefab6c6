"""Tests of `astro_spt.preprocess.anomalies` on synthetic spectra on the model grid.

Real LAMOST spectra with injected anomalies are in ``test_preprocess_real.py``.
"""

import numpy as np
import pytest

from astro_spt import flags
from astro_spt.exceptions import InvalidSpectrumError
from astro_spt.preprocess import (
    AnomalyConfig,
    PreprocessConfig,
    detect_anomalies,
    make_wavelength_grid,
)

GRID = make_wavelength_grid()
LINES = [3934, 3969, 4102, 4341, 4861, 5175, 5270, 5893, 6563, 8498, 8542, 8662]


def synthetic(n=4, snr=100.0, seed=0):
    """Absorption-line spectra on the model grid, continuum 100, noise 100 / snr."""
    rng = np.random.default_rng(seed)
    continuum = 100 * (GRID / 6000) ** -1.5
    profile = np.ones_like(GRID)
    for center in LINES:
        profile -= 0.5 * np.exp(-0.5 * ((GRID - center) / 1.5) ** 2)
    clean = continuum * profile
    sigma = 100 / snr
    flux = clean + rng.normal(0, sigma, (n, GRID.size))
    ivar = np.full_like(flux, 1 / sigma**2)
    return flux, ivar


def names(value):
    return set(flags.decode_flags(int(value)))


def test_clean_spectra_are_not_flagged():
    flux, ivar = synthetic()
    result = detect_anomalies(flux, ivar)
    assert (result.flags == 0).all(), [names(f) for f in result.flags]
    assert (result.n_repaired == 0).all()
    np.testing.assert_allclose(result.snr, np.median(flux * 1.0, axis=1) / 1.0, rtol=0.01)
    np.testing.assert_array_equal(result.flux, flux.astype(np.float32))
    assert result.flux.dtype == np.float32


def test_short_gap_is_repaired_silently():
    flux, ivar = synthetic(1)
    flux[0, 1000:1010] = np.nan
    result = detect_anomalies(flux, ivar)
    assert names(result.flags[0]) == set()
    assert result.n_repaired[0] == 10
    assert result.mask[0, 1000:1010].all() and (result.ivar[0, 1000:1010] == 0).all()
    assert np.isfinite(result.flux).all()
    expected = np.linspace(flux[0, 999], flux[0, 1010], 12)[1:-1]
    np.testing.assert_allclose(result.flux[0, 1000:1010], expected, rtol=1e-5)


def test_long_gap_and_many_missing_pixels():
    flux, ivar = synthetic(2)
    ivar[0, 2000:2100] = 0  # 129 Å gap
    rng = np.random.default_rng(1)
    scattered = rng.choice(GRID.size, 600, replace=False)  # 15 % of pixels, all short
    mask = np.zeros(flux.shape, bool)
    mask[1, scattered] = True
    result = detect_anomalies(flux, ivar, mask)
    assert {"missing_values", "repaired_pixels"} <= names(result.flags[0])
    assert "missing_values" in names(result.flags[1])


def test_spikes_and_troughs_are_clipped():
    flux, ivar = synthetic(3)
    flux[0, [500, 1500, 3000]] *= 4  # cosmic rays
    flux[1, 2500] = 0.0  # dead pixel
    result = detect_anomalies(flux, ivar)
    assert "outliers" in names(result.flags[0])
    assert "outliers" in names(result.flags[1])
    assert "outliers" not in names(result.flags[2])
    assert result.n_spikes.tolist() == [3, 1, 0]
    clean, _ = synthetic(3)
    for row, pixel in [(0, 500), (0, 1500), (0, 3000), (1, 2500)]:
        assert abs(result.flux[row, pixel] - clean[row, pixel]) < 5
    assert result.mask[0, 499:502].all()


def test_absorption_lines_are_not_troughs():
    flux, ivar = synthetic(2, snr=1000)
    result = detect_anomalies(flux, ivar)
    assert (result.n_spikes == 0).all()


def test_negative_stretch():
    flux, ivar = synthetic(2)
    flux[0, 3000:3030] = -5.0
    result = detect_anomalies(flux, ivar)
    assert "negative_flux" in names(result.flags[0])
    assert "negative_flux" not in names(result.flags[1])
    assert (result.flux[0, 3000:3030] > 0).all()
    assert result.n_repaired[0] >= 30


def test_ripple_is_flagged():
    flux, ivar = synthetic(2)
    flux[0] *= 1 + 0.05 * np.sin(2 * np.pi * GRID / 60.0)
    result = detect_anomalies(flux, ivar)
    assert "oscillation" in names(result.flags[0])
    assert "oscillation" not in names(result.flags[1])
    assert result.oscillation_amplitude[0] == pytest.approx(0.05, rel=0.2)
    # a ripple is not repaired
    np.testing.assert_array_equal(result.flux[0], flux[0].astype(np.float32))


def test_poor_coverage_low_snr_and_heavy_damage():
    flux, ivar = synthetic(3)
    covered = np.ones(flux.shape, bool)
    covered[0, :500] = False  # 12 % of the grid missing
    flux[0, :500] = np.nan
    ivar[1] = 1 / 40.0**2  # S/N about 2.5
    ivar[2, :1200] = 0  # 29 % of the grid missing: heavy damage
    result = detect_anomalies(flux, ivar, covered=covered)
    assert names(result.flags[0]) == {"poor_coverage"}
    np.testing.assert_allclose(result.flux[0, :500], flux[0, 500], rtol=1e-6)
    assert result.coverage[0] == pytest.approx(1 - 500 / 4096)
    assert names(result.flags[1]) == {"low_snr"}
    assert {"heavy_damage", "missing_values"} <= names(result.flags[2])


def test_unreadable_rows():
    flux, ivar = synthetic(3)
    flux[0] = np.nan
    ivar[1, :3000] = 0  # fewer than half of the pixels valid
    covered = np.ones(flux.shape, bool)
    result = detect_anomalies(flux, ivar, covered=covered)
    assert "unreadable" in names(result.flags[0])
    assert "unreadable" in names(result.flags[1])
    assert names(result.flags[2]) == set()
    assert (result.flux[:2] == 0).all()
    assert np.isnan(result.snr[0])


def test_thresholds_come_from_config():
    flux, ivar = synthetic(1)
    flux[0, 1000:1010] = np.nan
    strict = PreprocessConfig(anomalies=AnomalyConfig(max_gap_aa=5.0))
    assert "missing_values" in names(detect_anomalies(flux, ivar, config=strict).flags[0])
    fussy = PreprocessConfig(anomalies=AnomalyConfig(min_snr=1000))
    assert "low_snr" in names(detect_anomalies(flux, ivar, config=fussy).flags[0])


def test_one_dimensional_input_and_defaults():
    flux, _ = synthetic(1)
    result = detect_anomalies(flux[0])
    assert result.flux.shape == (1, GRID.size)
    assert result.flags.dtype == flags.FLAG_DTYPE


def test_mismatched_shapes():
    flux, ivar = synthetic(2)
    with pytest.raises(InvalidSpectrumError, match="ivar has shape"):
        detect_anomalies(flux, ivar[:1])
    with pytest.raises(InvalidSpectrumError, match="covered has shape"):
        detect_anomalies(flux, ivar, covered=np.ones(10, bool))
