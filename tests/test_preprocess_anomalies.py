"""Tests of `astro_spt.preprocess.anomalies` on synthetic spectra on the model grid.

Real LAMOST spectra with injected anomalies are in ``test_preprocess_real.py``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astro_spt import flags
from astro_spt.exceptions import InvalidSpectrumError
from astro_spt.preprocess import (
    AnomalyConfig,
    GridConfig,
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
    flux[0, 3000:3030] = -5.0 + np.random.default_rng(1).normal(0, 1, 30)  # sky oversubtracted
    result = detect_anomalies(flux, ivar)
    assert "negative_flux" in names(result.flags[0])
    assert "negative_flux" not in names(result.flags[1])
    assert (result.flux[0, 3000:3030] > 0).all()
    assert result.n_repaired[0] >= 30


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 4000),
    st.integers(1, 300),
    st.sampled_from([0.0, -9999.0, 1.0, 100.0, 1e30]),
    st.integers(0, 2**32 - 1),
)
def test_runs_of_one_value_are_missing(start, length, value, seed):
    # a value repeated five times or more in a row is a fill value or a clipped stretch,
    # not a measurement: masked and repaired like a gap; shorter repeats are left alone
    flux, ivar = synthetic(1, seed=seed)
    stop = min(start + length, GRID.size)
    flux[0, start:stop] = value
    result = detect_anomalies(flux, ivar)
    if stop - start >= 5:
        assert result.mask[0, start:stop].all()
        assert result.n_repaired[0] >= stop - start
        assert np.isfinite(result.flux).all()
        assert "negative_flux" not in names(result.flags[0])
    if stop - start > 100:  # over 100 Å: a long gap
        assert "missing_values" in names(result.flags[0])


def test_four_repeats_are_left_alone():
    # no real spectrum repeats a value more than once in a row on the grid
    flux, ivar = synthetic(1)
    flux[0, 2000:2004] = flux[0, 2000]
    result = detect_anomalies(flux, ivar)
    assert not result.mask[0].any()
    assert result.n_repaired[0] == 0


def test_clipped_spectrum_is_damaged():
    flux, ivar = synthetic(2)
    flux[0] = np.minimum(flux[0], np.percentile(flux[0], 60))  # saturated at one level
    result = detect_anomalies(flux, ivar)
    assert {"missing_values", "heavy_damage"} <= names(result.flags[0])
    assert not {"missing_values", "heavy_damage"} & names(result.flags[1])


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


# --- Windows that surveys routinely mask (issue 14) ---------------------------------------

SETTINGS = AnomalyConfig()
WINDOWS = SETTINGS.standard_mask_windows_aa
PIXEL_AA = PreprocessConfig().pixel_scale_aa
MAX_GAP = round(SETTINGS.max_gap_aa / PIXEL_AA)  # pixels
EVERY_GAP_COUNTS = PreprocessConfig(anomalies=AnomalyConfig(standard_mask_windows_aa=()))


def between(low_aa, high_aa):
    return (GRID >= low_aa) & (GRID <= high_aa)


def in_windows():
    inside = np.zeros(GRID.size, bool)
    for low, high in WINDOWS:
        inside |= between(low, high)
    return inside


def test_default_windows():
    # the blue end, the telluric A band and the red end (measured on LAMOST DR1 / DR10)
    assert WINDOWS == ((3600.0, 4000.0), (7550.0, 7700.0), (9000.0, 9300.0))
    assert SETTINGS.standard_mask_min_fraction == 0.2
    assert in_windows().sum() == 155 + 116 + 78


def test_gap_in_the_a_band_is_not_missing_values():
    flux, ivar = synthetic(2)
    ivar[0, between(7580, 7680)] = 0  # LAMOST DR1's A-band mask, 100 Å
    ivar[1, between(5950, 6050)] = 0  # the same gap at 6,000 Å
    result = detect_anomalies(flux, ivar)
    assert names(result.flags[0]) == {"repaired_pixels", "masked_standard_regions"}
    assert names(result.flags[1]) == {"repaired_pixels", "missing_values"}
    # repaired and counted exactly like any other gap
    assert result.n_repaired.tolist() == [77, 77]
    assert result.mask[0, between(7580, 7680)].all()
    assert (result.ivar[0, between(7580, 7680)] == 0).all()
    gap = np.flatnonzero(between(7580, 7680))
    expected = np.linspace(flux[0, gap[0] - 1], flux[0, gap[-1] + 1], gap.size + 2)[1:-1]
    np.testing.assert_allclose(result.flux[0, gap], expected, rtol=1e-5)


def test_gaps_at_the_blue_and_red_ends():
    flux, ivar = synthetic(2)
    ivar[0, GRID < 3990] = 0  # 190 Å at the blue end
    ivar[1, GRID > 9010] = 0  # 90 Å at the red end
    result = detect_anomalies(flux, ivar)
    for value in result.flags:
        assert names(value) == {"repaired_pixels", "masked_standard_regions"}
    strict = detect_anomalies(flux, ivar, config=EVERY_GAP_COUNTS)
    assert flags.has_flag(strict.flags, "missing_values").all()


@pytest.mark.parametrize(
    ("low_aa", "high_aa", "missing"),
    [
        (7600, 7730, False),  # runs 30 Å out of the A band
        (7600, 7800, True),  # runs 100 Å out of it
        (7450, 7640, True),  # starts 100 Å before it
        (7510, 7740, True),  # 40 Å out on each side: 80 Å outside in one gap
        (3800, 4040, False),  # the blue end and 40 Å more
        (3800, 4100, True),  # the blue end and 100 Å more
        (8900, 9100, True),  # 100 Å before the red end
    ],
)
def test_gap_running_out_of_a_window(low_aa, high_aa, missing):
    flux, ivar = synthetic(1)
    flux[0, between(low_aa, high_aa)] = np.nan
    result = detect_anomalies(flux, ivar)
    assert flags.has_flag(result.flags[0], "missing_values") == missing
    assert flags.has_flag(result.flags[0], "masked_standard_regions")
    assert result.n_repaired[0] == between(low_aa, high_aa).sum()


def test_missing_fraction_counts_pixels_outside_the_windows_only():
    flux, ivar = synthetic(1)
    mask = np.zeros(flux.shape, bool)
    mask[0, in_windows()] = True  # every window missing: 8.5 % of the grid
    outside = np.flatnonzero(~in_windows())
    mask[0, outside[::20]] = True  # and 4.6 % scattered elsewhere, in single pixels
    assert mask.mean() > SETTINGS.max_missing_fraction
    result = detect_anomalies(flux, ivar, mask)
    assert names(result.flags[0]) == {"repaired_pixels", "masked_standard_regions"}
    strict = detect_anomalies(flux, ivar, mask, config=EVERY_GAP_COUNTS)
    assert names(strict.flags[0]) == {"repaired_pixels", "missing_values"}
    mask[0, outside[::8]] = True  # 13 % of the grid outside the windows
    assert "missing_values" in names(detect_anomalies(flux, ivar, mask).flags[0])


def test_masked_standard_regions_threshold():
    flux, ivar = synthetic(3)
    a_band = np.flatnonzero(between(7550, 7700))  # 116 pixels
    ivar[0, a_band[::8]] = 0  # 15 scattered pixels: 13 % of the window
    ivar[1, a_band[::4]] = 0  # 29 pixels: 25 %
    covered = np.ones(flux.shape, bool)
    covered[2, GRID > 9050] = False  # not observed is not missing
    result = detect_anomalies(flux, ivar, covered=covered)
    assert "masked_standard_regions" not in names(result.flags[0])
    assert "masked_standard_regions" in names(result.flags[1])
    assert names(result.flags[2]) == set()
    lax = PreprocessConfig(anomalies=AnomalyConfig(standard_mask_min_fraction=0.1))
    assert "masked_standard_regions" in names(detect_anomalies(flux, ivar, config=lax).flags[0])


def test_windows_change_nothing_but_the_two_flags():
    rng = np.random.default_rng(5)
    flux, ivar = synthetic(16)
    for row in range(16):
        for _ in range(3):
            start = rng.integers(0, GRID.size - 200)
            ivar[row, start : start + rng.integers(1, 200)] = 0
    default = detect_anomalies(flux, ivar)
    every = detect_anomalies(flux, ivar, config=EVERY_GAP_COUNTS)
    for name in ("flux", "ivar", "mask", "n_repaired", "n_spikes", "snr", "coverage"):
        np.testing.assert_array_equal(getattr(default, name), getattr(every, name))
    two = np.int32(flags.MISSING_VALUES | flags.MASKED_STANDARD_REGIONS)
    np.testing.assert_array_equal(default.flags & ~two, every.flags & ~two)
    # the windows can only clear missing_values, never set it
    assert not (default.flags & ~every.flags & flags.MISSING_VALUES).any()
    assert not (every.flags & flags.MASKED_STANDARD_REGIONS).any()


def test_windows_on_a_custom_grid():
    grid_config = GridConfig(wavelength_min_aa=7000.0, wavelength_max_aa=8000.0, n_pixels=1024)
    config = PreprocessConfig(grid=grid_config)
    grid = make_wavelength_grid(grid_config)
    flux = 100 + np.random.default_rng(0).normal(0, 1, (2, grid.size))
    flux[0, (grid > 7580) & (grid < 7680)] = np.nan  # 100 Å, in the A band
    flux[1, (grid > 7200) & (grid < 7300)] = np.nan
    result = detect_anomalies(flux, np.ones_like(flux), config=config)
    # a flat continuum: featureless too
    assert names(result.flags[0]) == {"repaired_pixels", "masked_standard_regions", "featureless"}
    assert "missing_values" in names(result.flags[1])
    with pytest.raises(InvalidSpectrumError, match="1024"):
        detect_anomalies(flux[:, :1000], config=config)


@pytest.mark.parametrize("n_pixels", [16, 32])
def test_grids_too_coarse_for_ripples(n_pixels):
    # the smallest grids GridConfig allows hold no period of the ripple band (5-300 Å):
    # no ripple is seen, rather than an error from inside numpy
    config = PreprocessConfig(grid=GridConfig(n_pixels=n_pixels))
    flux = 100 + np.random.default_rng(1).normal(0, 1, (2, n_pixels))
    result = detect_anomalies(flux, np.full_like(flux, 1e4), config=config)
    assert result.flux.shape == (2, n_pixels)
    assert not flags.has_flag(result.flags, "oscillation").any()
    np.testing.assert_array_equal(result.oscillation_power, 0)


def runs(flagged):
    """(start, stop) of each run of True pixels."""
    edges = np.diff(np.r_[0, flagged.astype(np.int8), 0])
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


# Property tests: any gap longer than max_gap_aa wholly outside the windows sets
# missing_values, and no gap wholly inside one does, whichever way it is missing.
CLEAN_FLUX, CLEAN_IVAR = synthetic(1, seed=7)
OUTSIDE_RUNS = [(a, b) for a, b in runs(~in_windows()) if b - a > MAX_GAP]
WINDOW_RUNS = [runs(between(low, high))[0] for low, high in WINDOWS]
GAP_KINDS = st.sampled_from(["nan", "zero ivar", "masked"])


def with_gap(start, stop, kind):
    flux, ivar = CLEAN_FLUX.copy(), CLEAN_IVAR.copy()
    mask = np.zeros(flux.shape, bool)
    if kind == "nan":
        flux[0, start:stop] = np.nan
    elif kind == "zero ivar":
        ivar[0, start:stop] = 0
    else:
        mask[0, start:stop] = True
    return detect_anomalies(flux, ivar, mask)


def test_clean_property_spectrum():
    assert OUTSIDE_RUNS == [(155, 2898), (3014, 4018)]  # 4,000-7,550 and 7,700-9,000 Å
    assert detect_anomalies(CLEAN_FLUX, CLEAN_IVAR).flags[0] == 0


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kind=GAP_KINDS)
def test_long_gap_outside_the_windows_sets_missing_values(data, kind):
    low, high = data.draw(st.sampled_from(OUTSIDE_RUNS))
    length = data.draw(st.integers(MAX_GAP + 1, min(high - low, 1000)))
    start = data.draw(st.integers(low, high - length))
    result = with_gap(start, start + length, kind)
    assert "missing_values" in names(result.flags[0])
    assert "masked_standard_regions" not in names(result.flags[0])
    assert result.n_repaired[0] == length


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kind=GAP_KINDS)
def test_gap_inside_a_window_never_sets_missing_values(data, kind):
    low, high = data.draw(st.sampled_from(WINDOW_RUNS))
    length = data.draw(st.integers(1, high - low))
    start = data.draw(st.integers(low, high - length))
    result = with_gap(start, start + length, kind)
    assert "missing_values" not in names(result.flags[0])
    substantial = length > SETTINGS.standard_mask_min_fraction * (high - low)
    assert ("masked_standard_regions" in names(result.flags[0])) == substantial
    assert result.n_repaired[0] == length


@settings(max_examples=30, deadline=None)
@given(st.floats(5.5, 290.0), st.floats(0.0, 6.28), st.integers(0, 2**32 - 1))
def test_ripples_of_any_period_in_the_band_are_flagged(period, phase, seed):
    # down to four pixels of the grid: a band that stopped at 10 Å missed 10 Å ripples
    flux, ivar = synthetic(1, seed=seed)
    flux *= 1 + 0.05 * np.sin(2 * np.pi * GRID / period + phase)
    assert "oscillation" in names(detect_anomalies(flux, ivar).flags[0])


def random_lines(rng, n_lines, sigma_aa, depth, snr):
    """A sloped continuum, the relative depth of Gaussian lines at random wavelengths,
    blended (capped at ``depth``), Gaussian noise of S/N ``snr`` and its inverse variance."""
    centres = rng.uniform(GRID[0], GRID[-1], n_lines)
    profile = np.exp(-0.5 * ((GRID[:, None] - centres) / sigma_aa) ** 2).sum(axis=1)
    continuum = 100 * (GRID / 6000) ** -1.5
    noise = rng.normal(0, continuum / snr)
    return continuum, depth * np.minimum(profile, 1), noise, (snr / continuum) ** 2


@settings(max_examples=20, deadline=None)
@given(
    st.integers(30, 300),
    st.floats(0.1, 0.8),
    st.floats(3.0, 500.0),
    st.integers(0, 2**32 - 1),
)
def test_emission_lines_are_flagged_and_absorption_lines_are_not(n_lines, depth, snr, seed):
    # absorption lines at any S/N, however faint, never; emission from S/N 30 up
    rng = np.random.default_rng(seed)
    continuum, lines, noise, ivar = random_lines(rng, n_lines, 1.5, depth, snr)
    absorption, emission = continuum * (1 - lines) + noise, continuum * (1 + lines) + noise
    found = detect_anomalies(np.stack([absorption, emission]), np.stack([ivar, ivar])).flags
    assert "emission_features" not in names(found[0])
    if snr >= 30:
        assert "emission_features" in names(found[1])


@settings(max_examples=25, deadline=None)
@given(
    st.floats(1.5, 4.0),
    st.floats(0.05, 0.95),
    st.floats(5.0, 2000.0),
    st.integers(0, 2**32 - 1),
)
def test_resolved_lines_are_never_unresolved_features(sigma_aa, depth, snr, seed):
    # 200 blended lines of any depth and S/N, centred anywhere, with sigma >= 1.5 Å (1.2
    # grid pixels; LAMOST's lines are wider: no real spectrum is flagged). At 1.3 Å, a
    # loop of 300 such spectra flagged 4, where blends deepen a core's neighbours.
    rng = np.random.default_rng(seed)
    continuum, lines, noise, ivar = random_lines(rng, 200, sigma_aa, depth, snr)
    found = detect_anomalies(continuum * (1 - lines) + noise, ivar).flags[0]
    assert "unresolved_features" not in names(found)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(8, 200), st.floats(0.3, 0.45), st.floats(100.0, 500.0), st.integers(0, 2**32 - 1)
)
def test_one_pixel_dips_are_unresolved_features(n_dips, depth, snr, seed):
    # shallower than the outliers' 50 % (those are repaired as spikes), flagged, kept;
    # the synthetic spectra's S/N halves from blue to red, hence S/N >= 100 at 6,000 Å
    flux, ivar = synthetic(1, snr=snr, seed=seed)
    rng = np.random.default_rng(seed)
    pixels = rng.choice(np.arange(10, GRID.size - 10, 5), n_dips, replace=False)
    flux[0, pixels] *= 1 - depth
    result = detect_anomalies(flux, ivar)
    assert "unresolved_features" in names(result.flags[0])
    # not repaired (a dip in a line's core can be deep enough to be an outlier: repaired)
    kept = ~result.mask[0, pixels]
    assert kept.mean() > 0.5
    np.testing.assert_array_equal(
        result.flux[0, pixels[kept]], flux[0, pixels[kept]].astype(np.float32)
    )
