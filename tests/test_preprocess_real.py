"""Preprocessing of real LAMOST DR10 spectra, untouched and with injected anomalies.

Each injected anomaly must set its own flag bit, on spectra whose untouched version does
not have that bit. The spectra are read with ``Spectrum.read`` (the LAMOST reader of
`astro_spt.io`). The DR1 spectra check that a release's standard masks do not set
``missing_values`` (issue 14).
"""

import csv
import functools

import numpy as np
import pytest

from astro_spt import flags
from astro_spt.preprocess import AnomalyConfig, PreprocessConfig, preprocess

specutils = pytest.importorskip("specutils")

N_SPECTRA = 12


@pytest.fixture(scope="module")
def dr10(shared_data):
    """A dozen DR10 spectra: the first giants and dwarfs of ``labels.csv`` with S/N > 20."""
    folder = shared_data / "lamost-lrs" / "dr10"
    with open(folder / "labels.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if float(row["snrg"]) > 20]
    giants = [row for row in rows if row["giant_candidate"] == "True"][: N_SPECTRA // 2]
    dwarfs = [row for row in rows if row["giant_candidate"] != "True"][: N_SPECTRA // 2]
    return [specutils.Spectrum.read(folder / "spectra" / row["file"]) for row in giants + dwarfs]


def copy_with(spectrum, flux):
    return specutils.Spectrum(
        flux=flux * spectrum.flux.unit,
        spectral_axis=spectrum.spectral_axis,
        uncertainty=spectrum.uncertainty,
        mask=spectrum.mask,
        meta=spectrum.meta,
    )


def pixels_between(spectrum, low_aa, high_aa):
    wavelength = spectrum.spectral_axis.value
    return (wavelength > low_aa) & (wavelength < high_aa)


def inject_gap(spectrum):
    flux = spectrum.flux.value.copy()
    flux[pixels_between(spectrum, 5000, 5120)] = np.nan
    return copy_with(spectrum, flux)


def inject_fill(spectrum):
    """A fill value (zero) in place of the data, its inverse variance kept."""
    flux = spectrum.flux.value.copy()
    flux[pixels_between(spectrum, 5000, 5120)] = 0.0
    return copy_with(spectrum, flux)


def inject_negative(spectrum):
    flux = spectrum.flux.value.copy()
    flux[pixels_between(spectrum, 6000, 6040)] *= -0.3
    return copy_with(spectrum, flux)


def inject_spikes(spectrum):
    flux = spectrum.flux.value.copy()
    level = np.nanmedian(flux)
    for center in (4500, 6100, 7700):
        pixel = np.argmin(np.abs(spectrum.spectral_axis.value - center))
        flux[pixel] += 3 * level
    return copy_with(spectrum, flux)


def inject_ripple(spectrum, period=40.0):
    wavelength = spectrum.spectral_axis.value
    ripple = 1 + 0.05 * np.sin(2 * np.pi * wavelength / period)
    return copy_with(spectrum, spectrum.flux.value * ripple)


# a period of 8 Å: six grid pixels, four to nine of a LAMOST file
inject_short_ripple = functools.partial(inject_ripple, period=8.0)


def inject_emission(spectrum):
    """Nebular emission lines (Balmer, [O II], [O III], [N II], [S II]) on the star."""
    wavelength = spectrum.spectral_axis.value
    level = np.nanmedian(spectrum.flux.value)
    lines = [3727, 4102, 4341, 4861, 4959, 5007, 6548, 6563, 6583, 6717, 6731]
    emission = sum(np.exp(-0.5 * ((wavelength - c) / 2.0) ** 2) for c in lines)
    return copy_with(spectrum, spectrum.flux.value + 2 * level * emission)


def inject_dips(spectrum):
    """Dips of 30 % in one pixel of the file out of every twenty."""
    flux = spectrum.flux.value.copy()
    flux[::20] *= 0.7
    return copy_with(spectrum, flux)


def inject_smoothing(spectrum):
    """The flux smoothed by a Gaussian of 20 Å: its lines far broader than LAMOST's."""
    from scipy.ndimage import gaussian_filter1d

    wavelength = spectrum.spectral_axis.value
    flux = spectrum.flux.value
    good = np.isfinite(flux)
    filled = np.interp(wavelength, wavelength[good], flux[good])
    return copy_with(spectrum, gaussian_filter1d(filled, 20.0 / np.median(np.diff(wavelength))))


@pytest.fixture(scope="module")
def untouched(dr10):
    return preprocess(dr10)


def test_untouched_spectra(dr10, untouched):
    assert untouched.flux.shape == (N_SPECTRA, 4096)
    assert np.isfinite(untouched.flux).all()
    assert not flags.has_flag(untouched.flags, "unreadable").any()
    assert not flags.has_flag(untouched.flags, "no_redshift").any()
    assert not flags.has_flag(untouched.flags, "oscillation").any()
    assert not flags.has_flag(untouched.flags, "emission_features").any()
    assert not flags.has_flag(untouched.flags, "unresolved_features").any()
    assert not flags.has_flag(untouched.flags, "negative_flux").any()
    np.testing.assert_allclose(untouched.redshift, [s.meta["redshift"] for s in dr10])
    # standardised by default (docs/benchmarks.rst); real stars stay within a sane range
    np.testing.assert_allclose(untouched.flux.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(untouched.flux.std(axis=1), 1, atol=1e-4)
    assert np.abs(untouched.flux).max() < 8


@pytest.mark.parametrize(
    ("inject", "name"),
    [
        (inject_gap, "missing_values"),
        (inject_fill, "missing_values"),
        (inject_negative, "negative_flux"),
        (inject_spikes, "outliers"),
        (inject_ripple, "oscillation"),
        (inject_short_ripple, "oscillation"),
        (inject_emission, "emission_features"),
        (inject_dips, "unresolved_features"),
        (inject_smoothing, "featureless"),
    ],
    ids=[
        "gap",
        "fill value",
        "negative",
        "spikes",
        "ripple",
        "8 Å ripple",
        "emission",
        "one-pixel dips",
        "smoothed",
    ],
)
def test_injected_anomalies_are_flagged(dr10, untouched, inject, name):
    clean = ~flags.has_flag(untouched.flags, name)
    assert clean.sum() >= N_SPECTRA // 2
    spectra = [inject(spectrum) for spectrum, ok in zip(dr10, clean, strict=True) if ok]
    result = preprocess(spectra)
    assert flags.has_flag(result.flags, name).all(), result.flag_names
    assert np.isfinite(result.flux).all()
    not_repaired = ("oscillation", "emission_features", "unresolved_features", "featureless")
    if name not in not_repaired:
        assert (result.n_repaired > untouched.n_repaired[clean]).all()


def test_repaired_spectrum_stays_close_to_the_original(dr10, untouched):
    result = preprocess([inject_spikes(dr10[0]), inject_negative(dr10[0])])
    for row in result.flux:
        assert np.median(np.abs(row - untouched.flux[0])) < 0.01


def test_batch_of_real_spectra_equals_single(dr10, untouched):
    for i in (0, N_SPECTRA - 1):
        single = preprocess(dr10[i])
        np.testing.assert_allclose(single.flux[0], untouched.flux[i], rtol=1e-5, atol=1e-5)
        assert single.flags[0] == untouched.flags[i]


@pytest.fixture(scope="module")
def dr1(shared_data):
    """The ten DR1 spectra."""
    folder = shared_data / "lamost-lrs" / "dr1" / "spectra"
    return [specutils.Spectrum.read(path) for path in sorted(folder.glob("spec-*.fits*"))]


def test_dr1_standard_masks_are_not_missing_values(dr1):
    result = preprocess(dr1)
    assert len(result) == 10
    # DR1 sets the inverse variance to 0 over the telluric A band in every file (68 % of
    # the 7,550-7,700 Å window) and over part of the red end above 9,000 Å
    grid = result.wavelength.value
    a_band = (grid >= 7550) & (grid <= 7700)
    np.testing.assert_allclose(result.mask[:, a_band].mean(axis=1), 0.68, atol=0.01)
    red_end = grid >= 9000
    assert (result.mask[:, red_end].mean(axis=1) > 0.1).all()
    assert flags.has_flag(result.flags, "masked_standard_regions").all()
    assert not flags.has_flag(result.flags, "missing_values").any()
    # without the windows every one of them was flagged, for its standard masks alone
    every_gap = PreprocessConfig(anomalies=AnomalyConfig(standard_mask_windows_aa=()))
    before = preprocess(dr1, every_gap)
    assert flags.has_flag(before.flags, "missing_values").all()
    assert not flags.has_flag(before.flags, "masked_standard_regions").any()
    # the repair is the same either way
    np.testing.assert_array_equal(before.flux, result.flux)
    np.testing.assert_array_equal(before.mask, result.mask)
    np.testing.assert_array_equal(before.n_repaired, result.n_repaired)
    # and a gap outside the standard masks is still a defect
    injected = preprocess([inject_gap(spectrum) for spectrum in dr1])
    assert flags.has_flag(injected.flags, "missing_values").all()


def test_dr10_windows_only_clear_missing_values(dr10, untouched):
    every_gap = PreprocessConfig(anomalies=AnomalyConfig(standard_mask_windows_aa=()))
    before = preprocess(dr10, every_gap)
    two = flags.MISSING_VALUES | flags.MASKED_STANDARD_REGIONS
    np.testing.assert_array_equal(before.flags & ~two, untouched.flags & ~two)
    assert not (untouched.flags & ~before.flags & flags.MISSING_VALUES).any()
