"""Tests of `astro_spt.preprocess.preprocess` on synthetic `specutils` spectra.

Real LAMOST spectra are in ``test_preprocess_real.py``.
"""

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import InverseVariance, StdDevUncertainty
from astropy.utils.exceptions import AstropyDeprecationWarning

from astro_spt import flags
from astro_spt.exceptions import AstroSPTWarning, InvalidSpectrumError
from astro_spt.preprocess import (
    DenoiseConfig,
    NormalizeConfig,
    PreprocessConfig,
    make_wavelength_grid,
    preprocess,
)

pytestmark = [
    # synthetic spectra that do not say their medium: tests/test_readable_output.py
    # tests that warning
    pytest.mark.filterwarnings("ignore:.*do not say whether their wavelengths"),
]

specutils = pytest.importorskip("specutils")
Spectrum = specutils.Spectrum

F_LAMBDA = u.Unit("1e-17 erg / (s cm2 AA)")
LINES = [3934, 3969, 4102, 4341, 4861, 5175, 5270, 5893, 6563, 8498, 8542, 8662]


def stellar_flux(wavelength_aa):
    flux = 300 * (wavelength_aa / 6000) ** -1.5
    for center in LINES:
        flux *= 1 - 0.4 * np.exp(-0.5 * ((wavelength_aa - center) / 2.0) ** 2)
    return flux


def make_spectrum(seed=0, n_pixels=3900, start=3690.0, stop=9210.0, redshift=0.0, **kwargs):
    """A LAMOST-like spectrum: log-spaced pixels, S/N about 50, a few masked pixels."""
    rest = np.geomspace(start, stop, n_pixels)
    rng = np.random.default_rng(seed)
    flux = stellar_flux(rest)
    sigma = flux / 50
    flux = flux + rng.normal(0, 1, n_pixels) * sigma
    mask = np.zeros(n_pixels, bool)
    mask[rng.choice(n_pixels, 5, replace=False)] = True
    return Spectrum(
        flux=flux * F_LAMBDA,
        spectral_axis=rest * (1 + redshift) * u.AA,
        uncertainty=InverseVariance(1 / sigma**2 / F_LAMBDA**2),
        mask=mask,
        **kwargs,
    )


def relative_difference(a, b):
    return np.max(np.abs(a - b) / np.abs(a))


def test_result_structure():
    result = preprocess(make_spectrum(), redshift=0.0)
    assert len(result) == 1
    assert result.flux.shape == (1, 4096) and result.flux.dtype == np.float32
    assert result.ivar.shape == (1, 4096) and result.ivar.dtype == np.float32
    assert result.mask.shape == (1, 4096)
    assert result.flags.dtype == flags.FLAG_DTYPE
    assert result.flag_names == [[]]
    assert result.wavelength.unit == u.AA
    np.testing.assert_array_equal(result.wavelength.value, make_wavelength_grid())
    assert np.isfinite(result.flux).all()
    assert 30 < result.snr[0] < 80
    assert result.coverage[0] == 1.0
    assert result.n_repaired[0] >= 5
    assert result.config == PreprocessConfig()
    # standardised by default (docs/benchmarks.rst): zero mean, unit standard deviation
    assert abs(result.flux.mean()) < 1e-4
    assert result.flux.std() == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize(
    "unit", [u.nm, u.um, u.Hz, u.THz, u.eV, u.cm**-1, u.Unit("1 / um")], ids=str
)
def test_spectral_units_give_the_same_vector(unit):
    reference = make_spectrum()
    axis = reference.spectral_axis.to(unit, equivalencies=u.spectral())
    converted = Spectrum(
        flux=reference.flux,
        spectral_axis=axis,
        uncertainty=reference.uncertainty,
        mask=reference.mask,
    )
    a = preprocess(reference, redshift=0).flux
    b = preprocess(converted, redshift=0).flux
    assert relative_difference(a, b) < 1e-6


def test_flux_per_frequency_is_converted():
    reference = make_spectrum()
    wavelength = reference.spectral_axis
    f_nu = reference.flux.to(u.mJy, equivalencies=u.spectral_density(wavelength))
    sigma = (reference.uncertainty.array**-0.5 * F_LAMBDA).to(
        u.mJy, equivalencies=u.spectral_density(wavelength)
    )
    as_nu = Spectrum(
        flux=f_nu,
        spectral_axis=wavelength,
        uncertainty=StdDevUncertainty(sigma),
        mask=reference.mask,
    )
    a = preprocess(reference, redshift=0)
    b = preprocess(as_nu, redshift=0)
    assert relative_difference(a.flux, b.flux) < 1e-5
    np.testing.assert_allclose(a.snr, b.snr, rtol=1e-5)


def test_air_wavelengths_are_converted():
    from specutils.utils.wcs_utils import vac_to_air

    reference = make_spectrum()
    air_axis = vac_to_air(reference.spectral_axis)
    kwargs = dict(flux=reference.flux, uncertainty=reference.uncertainty, mask=reference.mask)
    declared = Spectrum(spectral_axis=air_axis, meta={"vacuum": False}, **kwargs)
    undeclared = Spectrum(spectral_axis=air_axis, **kwargs)
    a = preprocess(reference, redshift=0).flux
    assert relative_difference(a, preprocess(declared, redshift=0).flux) < 1e-5
    assert relative_difference(a, preprocess(undeclared, redshift=0, air=True).flux) < 1e-5
    # without the conversion the lines are 1.5 Å (about a pixel) off
    assert relative_difference(a, preprocess(undeclared, redshift=0).flux) > 0.05


def test_redshift_sources():
    z = 0.0012  # 360 km/s, about 5 Å at 4000 Å
    rest = preprocess(make_spectrum(), redshift=0).flux
    shifted = make_spectrum(redshift=z)
    # relativistic Doppler shift, as specutils relates radial_velocity and redshift
    velocity = ((1 + z) ** 2 - 1) / ((1 + z) ** 2 + 1) * 299792.458 * u.km / u.s
    cases = {
        "argument": preprocess(shifted, redshift=z),
        "meta z": preprocess(make_spectrum(redshift=z, meta={"redshift": z})),
        "meta rv": preprocess(make_spectrum(redshift=z, meta={"radial_velocity": velocity})),
        "attribute": preprocess(
            Spectrum(
                flux=shifted.flux,
                spectral_axis=u.Quantity(shifted.spectral_axis),
                redshift=z,
                uncertainty=shifted.uncertainty,
                mask=shifted.mask,
            )
        ),
        "header": preprocess(make_spectrum(redshift=z, meta={"header": fits.Header({"Z": z})})),
    }
    for name, result in cases.items():
        assert relative_difference(rest, result.flux) < 1e-5, name
        assert result.redshift[0] == pytest.approx(z, rel=1e-9), name
        assert not flags.has_flag(result.flags[0], "no_redshift"), name
    unknown = preprocess(shifted)
    assert flags.decode_flags(unknown.flags[0]) == ["no_redshift"]
    assert np.isnan(unknown.redshift[0])
    assert relative_difference(rest, unknown.flux) > 0.05


def test_header_keywords():
    header = fits.Header({"Z": -9999, "VACUUM": True})
    result = preprocess(make_spectrum(meta={"header": header}))
    assert flags.has_flag(result.flags[0], "no_redshift")


def test_batch_equals_single_spectra():
    spectra = [
        make_spectrum(seed=i, n_pixels=3800 + 30 * i, start=3690 + 20 * i, meta={"z": 0.0})
        for i in range(5)
    ]
    batch = preprocess(spectra)
    chunked = preprocess(spectra, chunk_size=2)
    for i, spectrum in enumerate(spectra):
        single = preprocess(spectrum)
        np.testing.assert_allclose(batch.flux[i], single.flux[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(batch.flags[i], single.flags[0])
    np.testing.assert_allclose(batch.flux, chunked.flux, rtol=1e-6, atol=1e-6)
    assert preprocess(specutils.SpectrumList(spectra)).flux.shape == (5, 4096)
    assert preprocess(tuple(spectra)).flux.shape == (5, 4096)


def test_two_dimensional_spectrum_is_a_batch():
    singles = [make_spectrum(seed=i) for i in range(3)]
    stacked = Spectrum(
        flux=np.vstack([s.flux.value for s in singles]) * F_LAMBDA,
        spectral_axis=singles[0].spectral_axis,
        uncertainty=InverseVariance(np.vstack([s.uncertainty.array for s in singles])),
        mask=np.vstack([s.mask for s in singles]),
    )
    per_row_z = preprocess(stacked, redshift=[0.0, 0.001, 0.0])
    batch = preprocess(stacked, redshift=0.0)
    for i, single in enumerate(singles):
        np.testing.assert_allclose(batch.flux[i], preprocess(single, redshift=0).flux[0], 1e-6)
    np.testing.assert_array_equal(per_row_z.flux[[0, 2]], batch.flux[[0, 2]])
    assert relative_difference(batch.flux[1], per_row_z.flux[1]) > 0.01
    with pytest.raises(InvalidSpectrumError, match="redshift has shape"):
        preprocess(stacked, redshift=[0.0, 0.0])
    with pytest.raises(InvalidSpectrumError, match="air has shape"):
        preprocess(stacked, redshift=0.0, air=[True, False])


def test_spectrum1d_alias():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyDeprecationWarning)
        reference = make_spectrum()
        alias = specutils.Spectrum1D(
            flux=reference.flux,
            spectral_axis=reference.spectral_axis,
            uncertainty=reference.uncertainty,
            mask=reference.mask,
        )
    np.testing.assert_array_equal(
        preprocess(alias, redshift=0).flux, preprocess(reference, redshift=0).flux
    )


def test_no_uncertainty_uses_der_snr():
    reference = make_spectrum()
    bare = Spectrum(flux=reference.flux, spectral_axis=reference.spectral_axis)
    result = preprocess(bare, redshift=0)
    assert result.flag_names == [[]]
    # DER_SNR sees the lines as noise too: within a factor 2 of the true S/N of 50
    assert 25 < result.snr[0] < 100


def test_settings_are_applied():
    reference = make_spectrum()
    raw = preprocess(
        reference,
        PreprocessConfig(denoise=DenoiseConfig(enabled=False), normalize=NormalizeConfig("none")),
        redshift=0,
    )
    # physical units come back untouched
    grid = make_wavelength_grid()
    far = np.abs(grid - 6000) < 10
    np.testing.assert_allclose(raw.flux[0, far], stellar_flux(grid[far]), rtol=0.1)
    median = preprocess(
        reference, PreprocessConfig(normalize=NormalizeConfig("median")), redshift=0
    )
    assert np.median(median.flux) == pytest.approx(1, abs=1e-3)
    standard = preprocess(
        reference, PreprocessConfig(normalize=NormalizeConfig("standardize")), redshift=0
    )
    assert abs(standard.flux.mean()) < 1e-4
    smooth = preprocess(reference, redshift=0).flux
    rough = preprocess(
        reference, PreprocessConfig(denoise=DenoiseConfig(enabled=False)), redshift=0
    ).flux
    assert np.std(np.diff(smooth)) < np.std(np.diff(rough))


def bad_spectra():
    good = make_spectrum()
    kwargs = dict(flux=good.flux, uncertainty=good.uncertainty)
    wavelength = good.spectral_axis.value.copy()
    wavelength[100] = wavelength[101]
    return {
        "no spectral unit": (
            Spectrum(flux=good.flux, uncertainty=good.uncertainty),
            "not a wavelength",
        ),
        "duplicate wavelengths": (
            Spectrum(spectral_axis=wavelength * u.AA, **kwargs),
            "duplicate",
        ),
        "one pixel": (
            Spectrum(flux=[1.0] * F_LAMBDA, spectral_axis=[5000.0] * u.AA),
            "at least 2 pixels",
        ),
        "3-D flux": (
            Spectrum(
                flux=np.ones((1, 2, 50)) * F_LAMBDA,
                spectral_axis=np.linspace(4000, 5000, 50) * u.AA,
            ),
            "1-D or 2-D",
        ),
        # a magnitude rises where the light falls: lines would read as emission
        "flux in magnitudes": (
            Spectrum(flux=good.flux.value * u.mag, spectral_axis=good.spectral_axis),
            "logarithmic",
        ),
        "flux in dex": (
            Spectrum(flux=good.flux.value * u.dex, spectral_axis=good.spectral_axis),
            "logarithmic",
        ),
        "complex flux": (
            Spectrum(flux=good.flux.astype(complex), spectral_axis=good.spectral_axis),
            "real numbers",
        ),
    }


@pytest.mark.parametrize("case", list(bad_spectra()))
def test_malformed_input_is_flagged_or_raises(case):
    spectrum, message = bad_spectra()[case]
    good = make_spectrum()
    with pytest.warns(AstroSPTWarning, match=message):
        result = preprocess([good, spectrum, good], redshift=0)
    assert (result.flags[0] == 0) and (result.flags[-1] == 0)
    assert (result.flags[1:-1] == flags.UNREADABLE).all()
    assert np.isnan(result.flux[1:-1]).all()
    assert message in result.messages[1]
    with pytest.raises(InvalidSpectrumError, match=f"spectrum 1: .*{message}"):
        preprocess([good, spectrum], redshift=0, strict=True)


def test_unusable_data_is_flagged_or_raises():
    good = make_spectrum()
    axis = good.spectral_axis
    nan_flux = Spectrum(flux=np.full(axis.size, np.nan) * F_LAMBDA, spectral_axis=axis)
    infrared = Spectrum(flux=good.flux, spectral_axis=axis * 3, uncertainty=good.uncertainty)
    negative = Spectrum(flux=-good.flux, spectral_axis=axis, uncertainty=good.uncertainty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # data problems are flags, not warnings
        result = preprocess([nan_flux, infrared, negative, good], redshift=0, air=False)
    assert [flags.has_flag(f, "unreadable") for f in result.flags] == [True, True, True, False]
    assert flags.has_flag(result.flags[1], "poor_coverage")
    assert np.isnan(result.flux[:3]).all() and np.isfinite(result.flux[3]).all()
    assert (result.ivar[:3] == 0).all()
    assert "too little usable data" in result.messages[0]
    for bad in (nan_flux, infrared, negative):
        with pytest.raises(InvalidSpectrumError, match="unreadable"):
            preprocess(bad, redshift=0, strict=True)


def test_not_spectra():
    with pytest.raises(InvalidSpectrumError, match="expected a specutils Spectrum"):
        preprocess(np.ones((3, 4096)))
    with pytest.raises(InvalidSpectrumError, match="item 1 is a str"):
        preprocess([make_spectrum(), "spec.fits"])
    with pytest.raises(TypeError, match="PreprocessConfig"):
        preprocess(make_spectrum(), config={"denoise": {}})


# -- issue 18: one spectrum never aborts the batch nor changes another's row ----------


def _same_rows(a, b):
    return all(
        np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True)
        for name in ("flux", "ivar", "mask", "flags", "n_repaired", "snr", "coverage")
    )


@pytest.mark.parametrize("n_pixels", [2, 3, 4])
def test_a_few_pixels_without_uncertainty_is_an_unreadable_row(n_pixels):
    tiny = Spectrum(
        flux=np.ones(n_pixels) * u.Jy, spectral_axis=np.linspace(4000, 8000, n_pixels) * u.AA
    )
    good = make_spectrum()
    result = preprocess([good, tiny], redshift=0.0)
    assert result.flags[1] & flags.UNREADABLE and 1 in result.messages
    assert _same_rows(_rows(result, [0]), preprocess(good, redshift=0.0))


def _rows(result, index):
    """A result of the rows ``index`` of ``result`` (for comparing rows)."""
    from dataclasses import replace

    return replace(
        result,
        **{
            name: getattr(result, name)[index]
            for name in ("flux", "ivar", "mask", "flags", "n_repaired", "snr", "coverage")
        },
    )


@pytest.mark.parametrize(
    "meta",
    [
        {"air": np.array([True, False])},
        {"vacuum": "no"},
        {"header": fits.Header([("VACUUM", 2)])},
    ],
)
def test_air_or_vacuum_that_is_no_boolean_is_a_message(meta):
    odd = make_spectrum(meta=meta)
    with pytest.warns(AstroSPTWarning, match="could not be read"):
        result = preprocess([make_spectrum(), odd], redshift=0.0)
    assert result.flags[1] & flags.UNREADABLE
    assert "expected True or False" in result.messages[1]
    with pytest.raises(InvalidSpectrumError, match="expected True or False"):
        preprocess(odd, redshift=0.0, strict=True)


def test_a_neighbour_of_extreme_wavelengths_changes_no_other_row():
    wide = Spectrum(flux=np.ones(3000) * u.Jy, spectral_axis=np.geomspace(1e-3, 4e13, 3000) * u.AA)
    good = [make_spectrum(seed) for seed in range(3)]
    # wide's row is unusable (too few of its pixels on the grid) or not: either way...
    together = preprocess([good[0], wide, good[1], good[2]], redshift=0.0)
    for k, spectrum in zip((0, 2, 3), good, strict=True):
        alone = preprocess(spectrum, redshift=0.0)
        assert _same_rows(_rows(together, [k]), alone)


def test_an_extreme_redshift_is_that_row_s_problem():
    good = make_spectrum()
    with pytest.warns(AstroSPTWarning, match="not > -1"):
        result = preprocess([good, good, good], redshift=[0.0, -1.0, 1e300])
    assert (result.flags[1:] & flags.UNREADABLE).all() and sorted(result.messages) == [1, 2]
    assert _same_rows(_rows(result, [0]), preprocess(good, redshift=0.0))


def test_the_short_way_of_well_formed_spectra_changes_nothing(monkeypatch, lamost_files):
    """One-dimensional spectra in vacuum with a finite, increasing rest-frame axis skip the
    copies and checks of the long way (`pipeline._simple_row`); without the shortcut every
    row, flag and message is the same."""
    from astro_spt.io.reading import _read_fields
    from astro_spt.preprocess import pipeline
    from astro_spt.preprocess.pipeline import PlainSpectrum

    plain = [PlainSpectrum(**_read_fields(path)) for path in lamost_files]
    w, f, ivar, mask = plain[0][:4]
    odd = [
        plain[0]._replace(wavelength=w[::-1], flux=f[::-1], ivar=ivar[::-1], mask=mask[::-1]),
        plain[0]._replace(air=True),
        plain[0]._replace(redshift=-2.0),
        plain[0]._replace(redshift=np.nan),
        plain[0]._replace(mask=mask[:-1]),
        plain[0]._replace(mask=None),
        plain[0]._replace(wavelength=np.where(np.arange(w.size) == 9, np.nan, w)),
        plain[0]._replace(wavelength=np.sort(np.r_[w[:-1], w[5]])),
    ]
    synthetic = [
        make_spectrum(meta={"z": 0.01, "air": False}),
        make_spectrum(seed=1, meta={"air": True}),
        make_spectrum(seed=2, redshift=0.02, meta={"vacuum": True, "redshift": 0.02}),
    ]
    spectra = [*plain, *odd, *synthetic]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstroSPTWarning)
        short = preprocess(spectra)
        monkeypatch.setattr(pipeline, "_simple_row", lambda *args: None)
        long = preprocess(spectra)
    assert _same_rows(short, long)
    assert short.messages == long.messages
    np.testing.assert_array_equal(short.redshift, long.redshift)
    assert len(short.messages) >= 3  # the malformed ones took the long way to a message
