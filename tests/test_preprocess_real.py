"""Preprocessing of real LAMOST DR10 spectra, untouched and with injected anomalies.

Each injected anomaly must set its own flag bit, on spectra whose untouched version does
not have that bit. The spectra are read with ``Spectrum.read`` (the LAMOST reader of
`astro_spt.io`).
"""

import csv

import numpy as np
import pytest

from astro_spt import flags
from astro_spt.preprocess import preprocess

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


def inject_ripple(spectrum):
    wavelength = spectrum.spectral_axis.value
    ripple = 1 + 0.05 * np.sin(2 * np.pi * wavelength / 40.0)
    return copy_with(spectrum, spectrum.flux.value * ripple)


@pytest.fixture(scope="module")
def untouched(dr10):
    return preprocess(dr10)


def test_untouched_spectra(dr10, untouched):
    assert untouched.flux.shape == (N_SPECTRA, 4096)
    assert np.isfinite(untouched.flux).all()
    assert not flags.has_flag(untouched.flags, "unreadable").any()
    assert not flags.has_flag(untouched.flags, "no_redshift").any()
    assert not flags.has_flag(untouched.flags, "oscillation").any()
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
        (inject_negative, "negative_flux"),
        (inject_spikes, "outliers"),
        (inject_ripple, "oscillation"),
    ],
    ids=["gap", "negative", "spikes", "ripple"],
)
def test_injected_anomalies_are_flagged(dr10, untouched, inject, name):
    clean = ~flags.has_flag(untouched.flags, name)
    assert clean.sum() >= N_SPECTRA // 2
    spectra = [inject(spectrum) for spectrum, ok in zip(dr10, clean, strict=True) if ok]
    result = preprocess(spectra)
    assert flags.has_flag(result.flags, name).all(), result.flag_names
    assert np.isfinite(result.flux).all()
    if name != "oscillation":  # ripples are flagged, not repaired
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
