"""Tests of what a person reads (issue 15): printed tables, failure reports, air
wavelengths, the model's input, progress, 2-D spectra, `astro-spt info` and help."""

import io
import os
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable
from specutils import Spectrum

import astro_spt
from astro_spt import cli
from astro_spt.estimation import estimate
from astro_spt.exceptions import AstroSPTWarning, FailedInputWarning
from astro_spt.flags import flag_table
from astro_spt.io import example_files
from astro_spt.io.reading import read_spectrum
from astro_spt.preprocess import preprocess
from astro_spt.preprocess.grid import air_to_vacuum


@pytest.fixture(scope="module")
def model():
    return astro_spt.load_model()


@pytest.fixture(scope="module")
def examples():
    return [str(p) for p in example_files()[:3]]


# -- 1. printed tables ---------------------------------------------------------------


def test_columns_formats_descriptions(model, examples):
    table = estimate(examples, model, n_samples=5, error_sources=True)
    assert list(table["source"]) == [os.path.basename(p) for p in examples]
    assert list(table["path"]) == examples
    assert table.colnames[-3:] == ["flag_names", "message", "path"]
    assert table["age"].info.format == ".2f" and table["mass_err"].info.format == ".2f"
    assert table["age_err_noise"].info.format == ".2f"
    for name in table.colnames:
        assert table[name].info.description, name
    assert table["flag_names"][2] == (
        "repaired_pixels,out_of_distribution,large_uncertainty,masked_standard_regions"
    )
    printed = estimate(examples, model, n_samples=5)
    text = str(printed)
    assert "..." not in text
    for name in ("age", "age_err", "mass", "mass_err"):  # two decimals
        assert all(f"{value:.2f}" in text for value in printed[name].value), name
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("fmt", ["ecsv", "fits", "parquet"])
def test_round_trip(model, examples, tmp_path, fmt):
    pytest.importorskip("pyarrow") if fmt == "parquet" else None
    with pytest.warns(FailedInputWarning):
        table = estimate([*examples, str(tmp_path / "missing.fits")], model, n_samples=5)
    path = str(tmp_path / f"out.{fmt}")
    if fmt == "fits":
        cli.write_table(table, path)  # FITS headers hold no dict: the command line's writer
    else:
        table.write(path)
    back = QTable.read(path)
    for name in ("source", "flag_names", "message", "path"):
        column = back[name]  # ECSV and FITS read an empty text back as masked
        column = column.filled("") if hasattr(column, "filled") else column
        assert list(column) == list(table[name]), name
    assert np.array_equal(back["age"].value, table["age"].value, equal_nan=True)
    assert back["age"].unit == u.Gyr
    if fmt != "fits":  # FITS keeps units, not descriptions
        assert back["age"].info.format == ".2f"
        assert back["message"].info.description == table["message"].info.description


def test_flag_table_prints_everything():
    text = str(flag_table())
    for definition in astro_spt.flags.FLAGS:
        assert definition.name in text
    assert "severity" in text and "Periodic ripple" in text and "..." not in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_cli_flags_and_explain(capsys, examples):
    assert cli.main(["flags"]) == 0
    assert "unphysical_value" in capsys.readouterr().out
    assert cli.main(["estimate", examples[2], "--samples", "5", "--explain-flags"]) == 0
    captured = capsys.readouterr()
    assert "out_of_distribution" in captured.out  # the flag_names column
    assert "The spectrum lies outside the training distribution" in captured.err


# -- 2. failures are not silent ------------------------------------------------------


def test_one_warning_for_failed_inputs(model, examples, tmp_path):
    missing = [str(tmp_path / f"missing-{k}.fits") for k in range(5)]
    with pytest.warns(FailedInputWarning) as caught:
        table = estimate([examples[0], *missing], model, n_samples=5)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert text.startswith("5 of 6 inputs could not be estimated")
    assert "missing-0.fits (cannot read: " in text and "and 2 more" in text
    # the message does not repeat the path
    assert str(tmp_path) not in table["message"][1].split("No such file")[0]
    assert table["message"][0] == "" and table["message"][1].startswith("cannot read: ")


def test_good_inputs_do_not_warn(model, examples):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate(examples, model, n_samples=5)


def test_cli_failed_inputs_and_exit_codes(capsys, examples, tmp_path):
    missing = str(tmp_path / "missing.fits")
    assert cli.main(["estimate", examples[0], missing, "--samples", "5"]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert f"astro-spt estimate: {missing}: cannot read: " in err
    assert cli.main(["estimate", missing, "--samples", "5"]) == cli.EXIT_USER_ERROR
    assert err.count("cannot read") == 1


# -- 3. air wavelengths --------------------------------------------------------------


def _awav_file(tmp_path, ctype):
    """A LAMOST spectrum written as a wcs1d-fits file in air wavelengths."""
    lamost = read_spectrum(example_files()[1])
    vacuum = lamost.spectral_axis.to_value(u.AA)
    air = np.linspace(vacuum[0] / 1.0003, vacuum[-1] / 1.0003, 4000)
    air_as_vacuum = air_to_vacuum(air)
    flux = np.interp(air_as_vacuum, vacuum, lamost.flux.value)
    header = fits.Header()
    header.update(
        CTYPE1=ctype,
        CUNIT1="Angstrom",
        CRPIX1=1,
        CRVAL1=air[0],
        CDELT1=air[1] - air[0],
        BUNIT="erg / (s cm2 Angstrom)",
    )
    path = tmp_path / f"{ctype}.fits"
    fits.PrimaryHDU(flux, header=header).writeto(path)
    return str(path), lamost.meta["redshift"]


def test_awav_file_is_converted(model, tmp_path):
    path, z = _awav_file(tmp_path, "AWAV")
    spectrum = Spectrum.read(path, format="wcs1d-fits")
    assert spectrum.wcs.wcs.ctype[0] == "AWAV"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the medium is known: no warning
        from_file = preprocess(spectrum, redshift=z)
    as_air = preprocess(
        Spectrum(spectral_axis=spectrum.spectral_axis, flux=spectrum.flux), redshift=z, air=True
    )
    as_vacuum = preprocess(
        Spectrum(spectral_axis=spectrum.spectral_axis, flux=spectrum.flux), redshift=z, air=False
    )
    assert np.array_equal(from_file.flux, as_air.flux)
    assert not np.array_equal(from_file.flux, as_vacuum.flux)
    # estimate reads the file the same way, and air= overrides it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = estimate(path, model, n_samples=5, redshift=z)
        told = estimate(path, model, n_samples=5, redshift=z, air=True)
        wrong = estimate(path, model, n_samples=5, redshift=z, air=False)
    assert read["age"][0] == told["age"][0] != wrong["age"][0]


def test_unknown_medium_warns_once(model):
    lamost = read_spectrum(example_files()[1])
    bare = [
        Spectrum(spectral_axis=lamost.spectral_axis, flux=lamost.flux, meta={"redshift": 0.0})
        for _ in range(3)
    ]
    with pytest.warns(AstroSPTWarning, match="3 of 4 spectra do not say whether") as caught:
        estimate([*bare, example_files()[0]], model, n_samples=5, batch_size=2)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate(bare, model, n_samples=5, air=False)  # said: no warning
        estimate(example_files()[:2], model, n_samples=5)  # LAMOST: vacuum


def test_cli_air_option(capsys, tmp_path):
    path, _ = _awav_file(tmp_path, "WAVE")
    assert cli.main(["estimate", path, "--samples", "5", "--air"]) == 0
    air = capsys.readouterr().out
    assert cli.main(["estimate", path, "--samples", "5", "--vacuum"]) == 0
    vacuum = capsys.readouterr().out
    assert air != vacuum
    assert cli.main(["estimate", path, "--air", "--vacuum"]) == cli.EXIT_USAGE_ERROR


# -- 4. what the model sees ----------------------------------------------------------


def test_model_preprocess_is_what_estimate_feeds(examples):
    model = astro_spt.load_model()
    inputs = [*examples, "no/such/file.fits"]
    seen = model.preprocess(inputs, batch_size=2)
    assert seen.spectra.config == model.preprocess_settings()
    assert seen.used.tolist() == [True, True, True, False]
    assert np.isnan(seen.features[3]).all()
    fed = []
    original = model.predict_scaled

    def spy(features, *args, **kwargs):
        fed.append(np.asarray(features, dtype=np.float32)[: len(examples)])
        return original(features, *args, **kwargs)

    model.predict_scaled = spy
    with pytest.warns(FailedInputWarning):
        model.estimate(inputs, n_samples=5, batch_size=8)
    assert np.array_equal(fed[0], seen.features[:3])
    assert np.array_equal(seen.projection.coefficients.astype(np.float32), seen.features[:3])


# -- 5. progress ---------------------------------------------------------------------


def test_progress_counts_spectra(model, examples, capsys):
    estimate(examples * 3, model, n_samples=5, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "9/9" in err and "spectrum" in err and "batch" not in err


def test_no_progress_off_a_terminal(model, examples, capsys):
    estimate(examples, model, n_samples=5)
    assert capsys.readouterr().err == ""


def test_training_progress_counts_epochs(capsys):
    # fit_network's bar comes from the same helper as estimate's
    from astro_spt.nn import SpectralTransformer
    from astro_spt.training import TrainingConfig, fit_network

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)), rng.normal(size=(40, 2))
    for progress in (True, False):
        net = SpectralTransformer(n_inputs=4, d_model=8, n_heads=2, n_blocks=1)
        config = TrainingConfig(max_epochs=3)
        fit_network(net, x[:30], y[:30], x[30:], y[30:], config, progress=progress)
        err = capsys.readouterr().err
        assert ("training" in err and "3/3" in err and "epoch" in err) == progress


# -- 7. 2-D spectra ------------------------------------------------------------------


def test_2d_spectrum_with_redshift_per_row(model):
    spectra = [read_spectrum(p) for p in example_files()[:3]]
    axis = spectra[0].spectral_axis
    flux = np.stack([np.interp(axis, s.spectral_axis, s.flux.value) for s in spectra])
    z = np.array([s.meta["redshift"] for s in spectra])
    two_d = Spectrum(flux=flux * u.one, spectral_axis=axis, meta={"redshift": z, "vacuum": True})
    table = estimate(two_d, model, n_samples=5)
    assert np.isfinite(table["age"].value).all()
    one = estimate(
        Spectrum(flux=flux[1] * u.one, spectral_axis=axis, meta={"redshift": z[1], "vacuum": True}),
        model,
        n_samples=5,
    )
    assert table["age"][1] == one["age"][0]


# -- 9. info and help ----------------------------------------------------------------


def test_info_is_readable(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "comparison with classical baselines" in out and "catboost" in out
    assert "astro-spt train --spectra" in out and "--scaling age:log10" in out
    assert "weights stored as float16 (computed in float32)" in out
    assert '{"' not in out  # no raw JSON
    assert "0.7222195534317682" not in out  # no 16-digit numbers


@pytest.mark.parametrize("command", ["estimate", "train", "evaluate", "download", "info", "flags"])
def test_help_is_wrapped(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "%%" not in out
    assert "cache_dir=" not in out and "local_files_only" not in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_hub_messages_name_the_options():
    message = (
        "x is not in the cache c and network access is disabled (local_files_only=True). "
        "While online, run it, or pass cache_dir= (astro_spt.conf.cache_dir) pointing at a cache"
    )
    words = cli._cli_words(message)
    assert "(--offline)" in words and "pass --cache-dir with a cache" in words


def test_unreachable_hub_fails_fast(monkeypatch):
    import socket

    from astro_spt import hub

    def refuse(*args, **kwargs):
        raise OSError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in hub._PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert hub._unreachable("https://example.org") == "Connection refused"


def test_print_stream_is_captured():
    # the progress helper writes to the stderr of the moment (pytest's capture)
    from astro_spt._progress import progress_bar

    buffer = io.StringIO()
    bar = progress_bar(3, progress=False, unit="spectrum", desc="x")
    bar.update(3)
    bar.close()
    assert buffer.getvalue() == ""
