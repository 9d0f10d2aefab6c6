"""Tests of astro_spt.mock: the mock LAMOST × APOKASC-2 sample."""

import gzip

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import InverseVariance
from astropy.table import QTable
from specutils import Spectrum

from astro_spt.emulator import LAMOSTEmulator, lamost_log_grid
from astro_spt.mock import (
    LOGG_SUN,
    NUMAX_SUN,
    TEFF_SUN,
    logg_from_mass_radius,
    mock_catalog,
    select_templates,
    simulate_spectrum,
    teff_from_numax,
    write_lamost_coadd,
    write_mock_spectra,
)


def test_scaling_relations_give_the_sun():
    assert logg_from_mass_radius(1 * u.solMass, 1 * u.solRad) == pytest.approx(LOGG_SUN)
    teff = teff_from_numax(NUMAX_SUN, 1 * u.solMass, 1 * u.solRad)
    assert teff.unit == u.K and teff.value == pytest.approx(5772.0)
    # Units are converted: the Sun in SI units and numax in mHz.
    teff = teff_from_numax(3.09 * u.mHz, 1.98841e30 * u.kg, 6.957e8 * u.m)
    assert teff.to_value(u.K) == pytest.approx(5772.0, rel=1e-4)
    # log g of the Sun from G M / R² (IAU nominal values).
    g = (1.3271244e20 * u.m**3 / u.s**2 / (6.957e8 * u.m) ** 2).to_value(u.cm / u.s**2)
    assert np.log10(g) == pytest.approx(LOGG_SUN, abs=1e-3)


def test_scaling_relations_invert_numax():
    mass, radius, teff = 1.3 * u.solMass, 11.0 * u.solRad, 4800 * u.K
    numax = NUMAX_SUN * (mass / u.solMass) * (radius / u.solRad) ** -2 * (teff / TEFF_SUN) ** -0.5
    assert teff_from_numax(numax, mass, radius).to_value(u.K) == pytest.approx(4800.0)
    assert logg_from_mass_radius(mass, radius) == pytest.approx(
        4.438 + np.log10(1.3) - 2 * np.log10(11.0)
    )
    # Other solar reference values.
    hotter = teff_from_numax(numax, mass, radius, numax_sun=3100 * u.uHz)
    assert hotter.to_value(u.K) == pytest.approx(4800.0 * (3100 / 3090) ** 2)


def _catalogues():
    apokasc = QTable(
        {
            "kic": [3, 1, 2, 7],
            "mass": [1.0, 1.2, 1.5, 0.9] * u.solMass,
            "mass_err": [0.1] * 4 * u.solMass,
            "age": [9.0, 5.0, 2.0, 12.0] * u.Gyr,
            "age_err": [1.0] * 4 * u.Gyr,
            "radius": [10.0, 11.0, 9.0, 8.0] * u.solRad,
            "numax": [30.0, 40.0, 50.0, 60.0] * u.uHz,
        }
    )
    miglio = QTable(
        {
            "kic": [2, 3, 5],
            "apogee_id": ["a", "b", "c"],
            "ra": [290.0, 291.0, 292.0] * u.deg,
            "dec": [40.0, 41.0, 42.0] * u.deg,
            "feh": [0.1, -0.2, 0.0],
            "alpha_m": [0.0, 0.1, 0.0],
            "mass": [1.4, 1.1, 1.0] * u.solMass,
            "age": [2.5, np.nan, 4.0] * u.Gyr,
            "radius": [9.1, 10.2, 8.0] * u.solRad,
            "evstate": np.array([1, 2, 1], dtype=np.int16),
        }
    )
    return apokasc, miglio


def test_mock_catalog_cross_match():
    apokasc, miglio = _catalogues()
    table = mock_catalog(apokasc2=apokasc, miglio2021=miglio)
    assert list(table["kic"]) == [2, 3]
    assert table.meta["n_apokasc2"] == 4 and table.meta["n_miglio2021"] == 3
    assert table.meta["n_matched"] == 2
    # Mass and age from APOKASC-2, [Fe/H] from Miglio et al.
    np.testing.assert_array_equal(table["mass"].to_value(u.solMass), [1.5, 1.0])
    np.testing.assert_array_equal(table["age"].to_value(u.Gyr), [2.0, 9.0])
    np.testing.assert_array_equal(table["feh"], [0.1, -0.2])
    np.testing.assert_array_equal(table["mass_miglio2021"].to_value(u.solMass), [1.4, 1.1])
    assert np.isnan(table["age_miglio2021"][1])
    assert table["teff"].unit == u.K
    expected = 5772 * (1.5 / 9.0**2 * 3090 / 50.0) ** 2
    assert table["teff"][0].to_value(u.K) == pytest.approx(expected)
    assert table["logg"][0] == pytest.approx(4.438 + np.log10(1.5) - 2 * np.log10(9.0))
    with pytest.raises(ValueError, match="catalog_dir"):
        mock_catalog(apokasc2=apokasc)


def test_mock_catalog_from_the_real_catalogues(shared_data):
    pytest.importorskip("h5py")
    table = mock_catalog(shared_data / "catalogs")
    assert table.meta["n_apokasc2"] == 6355
    assert table.meta["n_miglio2021"] == 3315
    assert table.meta["n_matched"] == len(table) == 3305
    assert np.unique(table["kic"]).size == len(table)
    for name, unit in (("mass", u.solMass), ("age", u.Gyr), ("radius", u.solRad), ("teff", u.K)):
        assert table[name].unit == unit
        assert np.all(np.isfinite(table[name]))
    # Red giants: APOKASC-2's M, R and numax give the temperatures of giants.
    assert 4300 < table["teff"].to_value(u.K).min() and table["teff"].to_value(u.K).max() < 5400
    assert 2.2 < table["logg"].min() and table["logg"].max() < 3.4
    assert -1.6 < table["feh"].min() and table["feh"].max() < 0.6
    # Miglio et al. masses agree with APOKASC-2's to a few per cent.
    ratio = table["mass_miglio2021"] / table["mass"]
    assert abs(np.median(ratio) - 1) < 0.05


def _template(n=3000, snr_g=40.0, seed=0):
    """A synthetic LAMOST-like spectrum as astro_spt.io.read_lamost_lrs returns one."""
    rng = np.random.default_rng(seed)
    wavelength = lamost_log_grid(n) * (1 + 1e-7)  # float32-like, not exactly the grid
    continuum = 1000 * (wavelength / 6000.0) ** 2
    sigma = continuum / snr_g
    flux = continuum + sigma * rng.standard_normal(n)
    ivar = sigma**-2
    mask = np.zeros(n, dtype=bool)
    ivar[100:110] = 0.0
    mask[100:110] = True
    flux[-5:] = 0.0  # LAMOST's fill value at the red end
    mask[-5:] = True
    header = fits.Header(
        {"TELESCOP": "LAMOST", "FILENAME": "spec-test.fits", "OBSID": 1, "Z": 0.0, "SNRG": snr_g}
    )
    normalization = np.ones(n)
    normalization[200:-200] = flux[200:-200] / continuum[200:-200]
    andmask = np.zeros(n, dtype=np.int32)
    andmask[100:110] = 4
    return Spectrum(
        flux=flux * u.dimensionless_unscaled,
        spectral_axis=wavelength * u.AA,
        uncertainty=InverseVariance(ivar),
        mask=mask,
        meta={
            "snr": dict(
                zip("ugriz", [snr_g / 10, snr_g, 2 * snr_g, 3 * snr_g, 2 * snr_g], strict=True)
            ),
            "header": header,
            "andmask": andmask,
            "ormask": andmask,
            "normalization": normalization,
            "teff": 4800.0,
        },
    )


def _flat_emulator(depth=0.3):
    """An emulator with one absorption line at 6564.6 Å whose depth grows with [Fe/H]."""
    grid = lamost_log_grid()
    emulator = LAMOSTEmulator(order=1)
    emulator.wavelength = grid
    emulator.label_offset = np.array([4800.0, 2.5, 0.0])
    emulator.label_scale = np.array([300.0, 0.5, 0.3])
    emulator.label_min, emulator.label_max = (
        np.array([4000.0, 1.0, -2.0]),
        np.array([5600, 3.8, 0.5]),
    )
    coefficients = np.zeros((grid.size, emulator.n_terms))
    coefficients[:, 0] = 1.0
    line = np.exp(-0.5 * ((grid - 6564.6) / 2.0) ** 2)
    coefficients[:, 0] -= depth * line
    coefficients[:, 3] = -0.1 * line  # the [Fe/H] term
    emulator.coefficients = coefficients
    emulator.scatter = np.zeros(grid.size)
    return emulator


def test_simulate_spectrum_noise_and_masks():
    template = _template()
    emulator = _flat_emulator()
    normalized = emulator.predict([4800.0, 2.5, 0.0])
    arrays = simulate_spectrum(emulator, normalized, template, 80.0, 1e-4, np.random.default_rng(1))
    n = template.flux.size
    assert all(arrays[key].shape == (n,) for key in ("flux", "ivar", "wavelength", "normalization"))
    np.testing.assert_array_equal(arrays["wavelength"], template.spectral_axis.value)
    # S/N doubled from 40 to 80: ivar four times the template's.
    ivar = template.uncertainty.array
    good = ~template.mask
    np.testing.assert_allclose(arrays["ivar"][good], 4 * ivar[good])
    assert np.all(arrays["ivar"][100:110] == 0)
    assert np.all(arrays["flux"][-5:] == 0)
    np.testing.assert_allclose(arrays["snr"], [8, 80, 160, 240, 160])
    # The residuals about the noiseless model are unit Gaussians.
    from astro_spt.mock import template_continuum

    rest = arrays["wavelength"] / (1 + 1e-4)
    model = template_continuum(template) * np.interp(rest, emulator.wavelength, normalized)
    z = ((arrays["flux"] - model) * np.sqrt(arrays["ivar"]))[good]
    assert abs(np.std(z) - 1) < 0.05 and abs(np.mean(z)) < 0.05
    # The absorption line sits at its redshifted wavelength.
    window = (arrays["wavelength"] > 6500) & (arrays["wavelength"] < 6630)
    deepest = arrays["wavelength"][window][
        np.argmin((arrays["flux"] / model)[window] + (model / model.max())[window])
    ]
    assert abs(deepest - 6564.6 * (1 + 1e-4)) < 3.5


def test_write_lamost_coadd_layout_and_determinism(tmp_path):
    template = _template(n=500)
    arrays = {
        "wavelength": template.spectral_axis.value,
        "flux": template.flux.value,
        "ivar": template.uncertainty.array,
        "andmask": template.meta["andmask"],
        "ormask": template.meta["ormask"],
        "normalization": template.meta["normalization"],
    }
    header = template.meta["header"].copy()
    header["NAXIS1"] = 3909  # a stray structural card, as real LAMOST headers carry
    first = write_lamost_coadd(tmp_path / "a.fits.gz", arrays, header)
    second = write_lamost_coadd(tmp_path / "b.fits.gz", arrays, header)
    assert first.read_bytes() == second.read_bytes()
    assert gzip.decompress(first.read_bytes())[:6] == b"SIMPLE"
    with fits.open(first) as hdul:
        assert hdul[0].header["TELESCOP"] == "LAMOST" and hdul[0].header["NAXIS"] == 0
        assert hdul[1].name == "COADD" and len(hdul[1].data) == 1
        names = hdul[1].columns.names
        assert names == ["FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK", "NORMALIZATION"]
        assert all(fmt == "500E" for fmt in hdul[1].columns.formats)
        np.testing.assert_allclose(hdul[1].data["FLUX"][0], arrays["flux"], rtol=1e-6)
    plain = write_lamost_coadd(tmp_path / "c.fits", arrays, header)
    with fits.open(plain) as hdul:
        assert hdul[1].header["NAXIS2"] == 1


@pytest.fixture(scope="module")
def real_giants(shared_data):
    """Real LAMOST giants with LASP labels and an emulator fitted to them."""
    from astro_spt.emulator import normalize_spectra
    from astro_spt.mock import read_labelled_lamost, spectra_arrays

    labels, spectra = read_labelled_lamost(shared_data, teff_max=5600.0, giants_only=True)
    wavelength, flux, ivar = spectra_arrays(spectra)
    flux, ivar = normalize_spectra(wavelength, flux, ivar, labels["redshift"])
    emulator = LAMOSTEmulator().fit(lamost_log_grid(), flux, ivar, labels)
    return labels, spectra, emulator


def test_read_labelled_lamost(real_giants):
    labels, spectra, _ = real_giants
    assert len(labels) == len(spectra) == 190  # 185 DR10 and 5 DR1 giants
    assert set(labels["release"]) == {"DR10", "DR1"}
    assert np.all(labels["giant"]) and labels["teff"].unit == u.K
    dr1 = labels["release"] == "DR1"
    assert np.all(np.abs(labels["redshift"][dr1]) < 1e-3)


def test_mock_spectra_read_back_as_lamost_files(real_giants, tmp_path, shared_data):
    labels, spectra, emulator = real_giants
    templates = select_templates(labels, spectra)
    assert 100 < len(templates) < len(spectra)
    catalog = mock_catalog(shared_data / "catalogs")[:3] if _has_h5py() else _fake_catalog()
    written = write_mock_spectra(
        catalog, emulator, templates, labels["snrg"], labels["redshift"], tmp_path, seed=7
    )
    assert list(written.colnames[-4:]) == ["file", "snrg", "redshift", "template"]
    write_mock_spectra(
        catalog[1:2],
        emulator,
        templates,
        labels["snrg"],
        labels["redshift"],
        tmp_path / "b",
        seed=7,
    )
    name = written["file"][1]
    assert (tmp_path / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(ValueError, match="at least one template"):
        write_mock_spectra(catalog, emulator, [], labels["snrg"], labels["redshift"], tmp_path)

    kic = int(catalog["kic"][0])
    with fits.open(tmp_path / written["file"][0]) as hdul:
        header = hdul[0].header
        assert header["TELESCOP"].strip() == "LAMOST"
        assert header["OBSID"] == kic and header["KIC"] == kic and header["MOCK"] is True
        assert header["DATA_V"] == "LAMOST DR10 MOCK"
        assert header["SNRG"] == pytest.approx(written["snrg"][0], abs=0.01)
        assert header["MOCKTEFF"] == pytest.approx(catalog["teff"][0].to_value(u.K), abs=0.1)
        assert hdul[1].name == "COADD"
        data = hdul[1].data[0]
        assert np.all(np.diff(data["WAVELENGTH"]) > 0)
        assert 3690 < data["WAVELENGTH"][0] < 3710 and data["FLUX"].dtype.kind == "f"

    # Importing astro_spt registered the LAMOST readers with specutils.
    spectrum = Spectrum.read(tmp_path / written["file"][0])
    assert spectrum.meta["layout"] == "coadd-table"
    assert spectrum.meta["obsid"] == kic
    assert spectrum.meta["data_release"] == "DR10 MOCK"
    assert spectrum.meta["redshift"] == pytest.approx(written["redshift"][0])
    assert spectrum.mask.mean() < 0.1


def test_mock_spectra_pass_the_preprocessing(real_giants, tmp_path):
    preprocess = pytest.importorskip("astro_spt.preprocess").preprocess
    from astro_spt.flags import decode_flags

    labels, spectra, emulator = real_giants
    written = write_mock_spectra(
        _fake_catalog(),
        emulator,
        select_templates(labels, spectra),
        [60.0],
        [0.0],
        tmp_path,
        seed=1,
    )
    result = preprocess([Spectrum.read(tmp_path / name) for name in written["file"]])
    assert np.all(np.isfinite(result.flux))
    for names in decode_flags(result.flags):
        assert "unreadable" not in names and "low_snr" not in names


def _has_h5py():
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


def _fake_catalog():
    return QTable(
        {
            "kic": [10000001, 10000002],
            "ra": [290.0, 291.0] * u.deg,
            "dec": [40.0, 41.0] * u.deg,
            "teff": [4700.0, 4900.0] * u.K,
            "logg": [2.5, 2.9],
            "feh": [0.0, -0.3],
            "mass": [1.2, 1.0] * u.solMass,
            "age": [4.0, 8.0] * u.Gyr,
        }
    )
