"""The ``featureless`` flag: continua without absorption lines, never real stars."""

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import InverseVariance
from hypothesis import given, settings
from hypothesis import strategies as st
from specutils import Spectrum

import astro_spt
from astro_spt import flags
from astro_spt.estimation import preprocess_inputs
from astro_spt.exceptions import FailedInputWarning, InvalidSpectrumError
from astro_spt.io import read_spectrum
from astro_spt.preprocess import preprocess

FLUX_UNIT = u.Unit("1e-17 erg / (s cm2 AA)")
WAVELENGTH = np.geomspace(3690, 9210, 3900)


def continuum(kind, parameter):
    """A smooth continuum without lines, median 100."""
    if kind == "flat":
        shape = np.ones_like(WAVELENGTH)
    elif kind == "slope":
        shape = 1 + parameter * (WAVELENGTH - WAVELENGTH.mean()) / np.ptp(WAVELENGTH)
    else:  # a black body of temperature 3,000-30,000 K
        temperature = 3000 + 27000 * parameter
        shape = WAVELENGTH**-5 / np.expm1(1.4388e8 / (WAVELENGTH * temperature))
    return 100 * shape / np.median(shape)


def spectrum(flux, snr):
    ivar = (snr / flux) ** 2
    return Spectrum(
        flux=flux * FLUX_UNIT,
        spectral_axis=WAVELENGTH * u.AA,
        uncertainty=InverseVariance(ivar * FLUX_UNIT**-2),
        meta={"redshift": 0.0, "air": False},
    )


def is_featureless(spectra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = preprocess(spectra)
    return (result.flags & flags.FEATURELESS) != 0


def structured(flux, structure, parameter, rng):
    """``flux`` times a structure that is no line: a step at a random wavelength (the
    flux halves or doubles) or a random walk of up to 0.5 % a pixel."""
    if structure == "step":
        edge = rng.uniform(4500, 8500)
        return flux * np.where(WAVELENGTH < edge, 1.0, 0.5 if parameter < 0.45 else 2.0)
    if structure == "random walk":
        return flux * (1 + np.cumsum(rng.normal(0, 0.005 * parameter, flux.size)))
    return flux


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["flat", "slope", "black body"]),
    st.sampled_from(["none", "step", "random walk"]),
    st.floats(0.0, 0.9),
    st.floats(15.0, 1000.0),
    st.integers(0, 2**32 - 1),
)
def test_continua_with_noise_are_featureless(kind, structure, parameter, snr, seed):
    # a continuum has no lines, whatever its S/N and whether or not it steps or wanders
    # (such structure departs from a 50 Å continuum, but not at the scale of lines)
    rng = np.random.default_rng(seed)
    flux = structured(continuum(kind, parameter), structure, parameter, rng)
    noisy = flux * (1 + rng.normal(0, 1 / snr, flux.size))
    assert is_featureless(spectrum(noisy, snr)).all()


@settings(max_examples=15, deadline=None)
@given(st.floats(0.1, 0.5), st.integers(150, 400), st.integers(0, 2**32 - 1))
def test_absorption_lines_are_features(depth, n_lines, seed):
    # a continuum with lines of an RMS contrast of at least about 3.5 % (the least-lined
    # real LAMOST spectrum has 3.8 %) is not featureless
    rng = np.random.default_rng(seed)
    centres = rng.uniform(3700, 9200, n_lines)
    profile = np.exp(-0.5 * ((WAVELENGTH[:, None] - centres) / 2.5) ** 2).sum(axis=1)
    flux = continuum("slope", 0.3) * (1 - depth * np.minimum(profile, 1))
    noisy = flux * (1 + rng.normal(0, 0.01, flux.size))
    assert not is_featureless(spectrum(noisy, 100)).any()


def test_no_real_spectrum_is_featureless(shared_data):
    lrs = shared_data / "lamost-lrs"
    files = sorted(str(p) for p in (lrs / "dr10" / "spectra").glob("*.fits.gz"))[::4]
    files += sorted(str(p) for p in (lrs / "dr1" / "spectra").glob("*.fits*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = preprocess_inputs(files, astro_spt.load_model().preprocess_settings())
    assert len(files) > 400
    assert not (result.flags & flags.FEATURELESS).any()


def test_no_real_spectrum_is_featureless_with_dr1_masks(shared_data):
    # LAMOST DR1 files mask about half of 3,800-4,000 Å and most of 7,550-7,700 Å, where
    # hot stars have much of their line contrast (Ca II H and K, the Balmer series):
    # those windows masked, the least-lined DR10 spectrum departs by 1.5 %, over 1 %
    lrs = shared_data / "lamost-lrs"
    files = sorted((lrs / "dr10" / "spectra").glob("*.fits.gz"))[::4]
    spectra = []
    for path in files:
        spectrum = read_spectrum(path)
        wavelength = spectrum.spectral_axis.to_value(u.AA)
        mask = np.zeros(wavelength.size, bool) if spectrum.mask is None else spectrum.mask
        blue = (wavelength > 3800) & (wavelength < 4000) & (np.arange(wavelength.size) % 2 == 0)
        red = (wavelength > 7550) & (wavelength < 7700)
        spectra.append(
            Spectrum(
                flux=spectrum.flux,
                spectral_axis=spectrum.spectral_axis,
                uncertainty=spectrum.uncertainty,
                mask=mask | blue | red,
                meta=spectrum.meta,
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = preprocess(spectra, config=astro_spt.load_model().preprocess_settings())
    assert len(spectra) > 400
    assert flags.has_flag(result.flags, "masked_standard_regions").mean() > 0.9
    assert not (result.flags & flags.FEATURELESS).any()


@pytest.mark.parametrize("n_pixels", [128, 256, 512])
def test_coarse_grids_still_see_lines(shared_data, n_pixels):
    # on a grid whose pixels (10-41 Å) are wider than a line, the scale of lines is the
    # grid's own (two pixels): real stars keep their lines, and a continuum has none
    from astro_spt.preprocess import GridConfig, PreprocessConfig

    config = PreprocessConfig(grid=GridConfig(n_pixels=n_pixels))
    files = sorted((shared_data / "lamost-lrs" / "dr10" / "spectra").glob("*.fits.gz"))[::20]
    flux = continuum("slope", 0.3) * (
        1 + np.random.default_rng(4).normal(0, 0.005, WAVELENGTH.size)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = preprocess([read_spectrum(path) for path in files], config=config)
        flat = preprocess(spectrum(flux, 200), config=config)
    assert len(files) > 90
    assert not (real.flags & flags.FEATURELESS).any()
    assert flat.flags[0] & flags.FEATURELESS


@pytest.mark.parametrize("kind", ["flat", "black body"])
def test_estimate_flags_a_continuum_bad(kind):
    flux = continuum(kind, 0.1) * (1 + np.random.default_rng(3).normal(0, 0.01, WAVELENGTH.size))
    with pytest.warns(FailedInputWarning, match="featureless"):
        table = astro_spt.estimate(spectrum(flux, 100), progress=False)
    assert table["flags"][0] & flags.FEATURELESS
    assert table["flags"][0] & flags.FLAGS.mask_of("bad")
    # no star, so no number: NaN values and a message, like any input that fails
    assert np.isnan(table["age"][0]) and np.isnan(table["mass_err"][0])
    assert table["message"][0].startswith("featureless")
    with pytest.raises(InvalidSpectrumError, match="featureless"):
        astro_spt.estimate(spectrum(flux, 100), progress=False, strict=True)
