"""Tests of astro_spt.estimate: inputs, table contract, flags, batch invariance."""

import shutil
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable, vstack
from astropy.uncertainty import Distribution
from hypothesis import given
from hypothesis import strategies as st
from specutils import Spectrum, SpectrumList

import astro_spt
from astro_spt import estimation, flags
from astro_spt.estimation import (
    estimate,
    expand_inputs,
    iter_preprocessed,
    preprocess_inputs,
    samples_distribution,
)
from astro_spt.exceptions import AstroSPTError, FailedInputWarning
from astro_spt.preprocess import PreprocessConfig, preprocess

pytestmark = [
    # synthetic spectra that do not say their medium: tests/test_readable_output.py
    # tests that warning
    pytest.mark.filterwarnings("ignore:.*do not say whether their wavelengths"),
    # failed inputs are the subject of many tests here; the warning has its own
    pytest.mark.filterwarnings("ignore::astro_spt.exceptions.FailedInputWarning"),
]


def values_equal(a, b, columns=("age", "age_err", "mass", "mass_err")):
    return all(np.array_equal(a[c].value, b[c].value, equal_nan=True) for c in columns) and (
        np.array_equal(a["flags"], b["flags"])
    )


def test_table_contract(lamost_files, untrained_bundle):
    table = estimate(lamost_files, untrained_bundle)
    assert len(table) == len(lamost_files)
    assert list(table["path"]) == lamost_files
    assert list(table["source"]) == [Path(p).name for p in lamost_files]
    assert table["age"].unit == u.Gyr and table["age_err"].unit == u.Gyr
    assert table["mass"].unit == u.solMass and table["mass_err"].unit == u.solMass
    assert np.isfinite(table["age"].value).all() and (table["age_err"].value > 0).all()
    assert table["flags"].dtype == flags.FLAG_DTYPE
    assert "obsid" in table.colnames  # DR6-DR8 headers carry one
    assert table.meta["astro_spt_version"] == astro_spt.__version__
    assert table.meta["seed"] == 0 and table.meta["n_samples"] == 16
    assert not (table["flags"] & flags.UNREADABLE).any()


def test_inputs_in_every_form(lamost_files, untrained_bundle, tmp_path):
    spectra = [Spectrum.read(p) for p in lamost_files]
    reference = estimate(lamost_files, untrained_bundle)
    from_objects = estimate(spectra, untrained_bundle)
    assert values_equal(from_objects, reference)
    assert len(estimate(SpectrumList(spectra), untrained_bundle)) == len(spectra)
    assert len(estimate(spectra[0], untrained_bundle)) == 1
    for path in lamost_files:
        shutil.copy(path, tmp_path)
    assert values_equal(estimate(tmp_path, untrained_bundle), reference)
    assert len(estimate(str(tmp_path / "spec-*.fits.gz"), untrained_bundle)) == 3
    # a 2-D flux spectrum is one spectrum per row
    wave = np.linspace(3700, 9100, 3000) * u.AA
    flux = np.vstack([np.interp(wave.value, s.spectral_axis.value, s.flux.value) for s in spectra])
    two_d = estimate(
        Spectrum(flux=flux * u.dimensionless_unscaled, spectral_axis=wave), untrained_bundle
    )
    assert len(two_d) == len(spectra) and list(two_d["source"])[:2] == [
        "spectrum[0]",
        "spectrum[1]",
    ]
    with pytest.raises(TypeError, match="bare array"):
        estimate(flux, untrained_bundle)
    assert expand_inputs([lamost_files[0]]) == [(lamost_files[0], lamost_files[0])]


def test_bad_inputs_give_nan_rows_and_flags(lamost_files, untrained_bundle, tmp_path):
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(Path(lamost_files[2]).read_bytes()[:5000])
    not_lamost = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(not_lamost)
    good = Spectrum.read(lamost_files[0])
    all_nan = Spectrum(
        flux=np.full(3000, np.nan) * u.dimensionless_unscaled,
        spectral_axis=np.linspace(3700, 9100, 3000) * u.AA,
    )
    off_grid = Spectrum(
        flux=np.ones(100) * u.dimensionless_unscaled,
        spectral_axis=np.linspace(10000, 11000, 100) * u.AA,
    )
    inputs = [
        lamost_files[0],
        str(tmp_path / "missing.fits"),
        lamost_files[1],
        str(truncated),
        str(not_lamost),
        all_nan,
        good,
        off_grid,
        lamost_files[3],
    ]
    table = estimate(inputs, untrained_bundle)
    broken = np.array([False, True, False, True, True, True, False, True, False])
    assert len(table) == len(inputs)
    assert (
        np.isnan(table["age"].value[broken]).all()
        and np.isnan(table["mass_err"].value[broken]).all()
    )
    assert np.isfinite(table["age"].value[~broken]).all()
    assert ((table["flags"][broken] & flags.UNREADABLE) != 0).all()
    assert ((table["flags"][~broken] & flags.UNREADABLE) == 0).all()
    assert "missing.fits" in " ".join(table.meta["messages"])
    # the good rows are exactly what they are without the bad company
    alone = estimate([lamost_files[0], lamost_files[1], good, lamost_files[3]], untrained_bundle)
    assert values_equal(table[~broken], alone)
    with pytest.raises(AstroSPTError, match=r"missing\.fits"):
        estimate([lamost_files[0], str(tmp_path / "missing.fits")], untrained_bundle, strict=True)


def test_preprocess_inputs_keeps_rows_in_order_and_flags_unreadable(lamost_files, tmp_path):
    missing = str(tmp_path / "missing.fits")
    inputs = [lamost_files[0], missing, lamost_files[1], lamost_files[2]]
    result = preprocess_inputs(inputs, batch_size=2)
    direct = preprocess([Spectrum.read(f) for f in (lamost_files[0], *lamost_files[1:3])])
    assert result.flux.shape == (4, len(result.wavelength))
    assert result.wavelength.unit == u.AA
    assert np.isnan(result.flux[1]).all() and result.mask[1].all() and result.ivar[1].max() == 0
    assert result.flags[1] == flags.UNREADABLE and list(result.messages) == [1]
    assert "missing.fits" in result.messages[1]
    np.testing.assert_array_equal(result.flux[[0, 2, 3]], direct.flux)
    np.testing.assert_array_equal(result.flags[[0, 2, 3]], direct.flags)
    np.testing.assert_array_equal(result.snr[[0, 2, 3]], direct.snr)
    with pytest.raises(AstroSPTError, match=r"missing\.fits"):
        preprocess_inputs(inputs, strict=True)


def test_an_object_that_only_looks_like_a_spectrum_is_one_unreadable_row(
    lamost_files, untrained_bundle
):
    class LooksLikeASpectrum:
        flux = np.ones(100) * u.dimensionless_unscaled
        spectral_axis = np.linspace(4000, 5000, 100) * u.AA

    inputs = [lamost_files[0], LooksLikeASpectrum(), lamost_files[1]]
    result = preprocess_inputs(inputs)
    assert list(result.messages) == [1] and "not a specutils Spectrum" in result.messages[1]
    assert result.flags[1] == flags.UNREADABLE and np.isfinite(result.flux[[0, 2]]).all()
    table = estimate(inputs, untrained_bundle)
    assert np.isnan(table["age"][1]) and table["flags"][1] == flags.UNREADABLE
    assert values_equal(
        table[[0, 2]], estimate([lamost_files[0], lamost_files[1]], untrained_bundle)
    )
    with pytest.raises(AstroSPTError, match="not a specutils Spectrum"):
        estimate(inputs, untrained_bundle, strict=True)


def test_redshift_override_one_for_all_or_one_each(lamost_files, untrained_bundle):
    files = lamost_files[:3]
    assert (preprocess_inputs(files, redshift=0.0).redshift == 0).all()
    each = preprocess_inputs(files, redshift=[0.0, 1e-3, 2e-3])
    np.testing.assert_array_equal(each.redshift, [0.0, 1e-3, 2e-3])
    scalar = estimate(files, untrained_bundle, redshift=0.0)
    assert values_equal(scalar, estimate(files, untrained_bundle, redshift=[0.0, 0.0, 0.0]))
    assert not values_equal(scalar, estimate(files, untrained_bundle))
    with pytest.raises(ValueError):
        estimate(files, untrained_bundle, redshift=[0.0, 0.0])


def test_iter_preprocessed_takes_what_estimate_takes(lamost_files, tmp_path):
    folder = tmp_path / "spectra"
    folder.mkdir()
    for f in lamost_files[:3]:
        shutil.copy(f, folder)
    batches = list(iter_preprocessed(str(folder), PreprocessConfig(), batch_size=2))
    assert [rows.tolist() for rows, *_ in batches] == [[0, 1], [2]]
    assert all(result.flux.shape[0] == len(rows) for rows, result, *_ in batches)


def test_results_do_not_depend_on_batching(lamost_files, untrained_bundle):
    files = lamost_files * 3
    whole = estimate(files, untrained_bundle, batch_size=256)
    halves = vstack([estimate(files[:7], untrained_bundle), estimate(files[7:], untrained_bundle)])
    one_by_one = estimate(files, untrained_bundle, batch_size=1)
    assert values_equal(whole, halves)
    assert values_equal(whole, one_by_one)
    # the same spectrum gets the same numbers wherever it stands
    assert values_equal(whole[:5], whole[5:10])


def test_blocks_run_together_give_the_rows_they_give_alone(shared_data):
    # 150 real spectra in one batch run as three 64-row blocks at once (_NETWORK_BLOCKS);
    # in batches of 50, or in the reverse order, every block runs alone, with its rows
    # elsewhere in it: the same numbers, samples and flags bit for bit (issue 17)
    spectra = sorted((shared_data / "lamost-lrs" / "dr10" / "spectra").glob("*.fits.gz"))
    files = [str(path) for path in spectra[:150]]
    options = dict(n_samples=20, seed=3, return_samples=True, n_jobs=1, progress=False)
    together = estimate(files, batch_size=256, **options)
    alone = estimate(files, batch_size=50, **options)
    backwards = estimate(files[::-1], batch_size=50, **options)[::-1]
    assert np.isfinite(together["age"]).sum() > 100
    for other in (alone, backwards):
        _assert_same_tables(together, other)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_peak_memory_is_the_programs_own_not_its_parents():
    # ru_maxrss survives exec: a program started by a large one would report the large
    # one's peak (the benchmarks start fresh processes to measure memory)
    import subprocess
    import sys

    ballast = np.ones(40_000_000)  # 320 MB in this process
    code = "from astro_spt.estimation import workers; print(workers._peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 5 < float(out.stdout) < 200 < ballast.nbytes / 2**20


@given(st.integers(1, 5000), st.integers(1, 16))
def test_worker_tasks_are_even_and_fill_the_workers(n_items, n_workers):
    sizes = estimation.workers._task_sizes(n_items, n_workers)
    assert sum(sizes) == n_items
    assert max(sizes) <= estimation.workers._WORKER_TASK
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    # never more tasks than network blocks: e.g. 256 files for 8 workers are 4 tasks of
    # 64, not 8 of 32 that would each run a half-empty block
    blocks = -(-n_items // estimation.rows._NETWORK_CHUNK)
    assert len(sizes) <= blocks
    if len(sizes) < blocks:
        assert len(sizes) % n_workers == 0


def test_seed_and_samples(lamost_files, untrained_bundle):
    a = estimate(lamost_files[:2], untrained_bundle, seed=1, return_samples=True, n_samples=8)
    b = estimate(lamost_files[:2], untrained_bundle, seed=2)
    # plain 2-D columns, whose spread is the error column's
    assert not isinstance(a["age_samples"], Distribution)
    assert a["age_samples"].shape == (2, 8) and a["age_samples"].unit == u.Gyr
    np.testing.assert_allclose(np.std(a["age_samples"], axis=1), a["age_err"], rtol=1e-9)
    assert samples_distribution(a["age_samples"]).n_samples == 8
    assert not np.array_equal(a["age"].value, b["age"].value)
    assert a.meta["n_samples"] == 8


def test_model_by_path_and_bundle_method(lamost_files, untrained_bundle, tmp_path):
    untrained_bundle.save_pretrained(tmp_path / "model")
    by_path = estimate(lamost_files[:2], str(tmp_path / "model"))
    assert values_equal(by_path, untrained_bundle.estimate(lamost_files[:2]))
    assert by_path.meta["model"] == str(tmp_path / "model")


def test_errors(lamost_files, untrained_bundle):
    with pytest.raises(ValueError, match="positive"):
        estimate(lamost_files, untrained_bundle, n_samples=0)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(AstroSPTError, match="CUDA"):
            estimate(lamost_files, untrained_bundle, device="cuda")


@pytest.mark.slow
def test_one_thousand_real_spectra(shared_data, untrained_bundle, tmp_path):
    lrs = shared_data / "lamost-lrs"
    files = sorted(str(p) for p in (lrs / "dr10" / "spectra").glob("*.fits.gz"))[:910]
    files += sorted(str(p) for p in (lrs / "dr8" / "spectra").rglob("*.fits*"))[:80]
    files += sorted(str(p) for p in (lrs / "dr1" / "spectra").glob("*.fits*"))
    files += [str(p) for p in (lrs / "misc").glob("spec-*")]
    broken = {
        5: str(lrs / "misc" / "med-58408-TD230151N343645T01_sp01-015.fits"),
        100: str(tmp_path / "absent.fits.gz"),
    }
    truncated = tmp_path / "truncated.fits.gz"
    truncated.write_bytes(Path(files[0]).read_bytes()[:3000])
    broken[500] = str(truncated)
    for index, path in sorted(broken.items()):
        files.insert(index, path)
    files = files[:1000]
    table = estimate(files, untrained_bundle)
    assert len(table) == 1000
    assert table["age"].unit == u.Gyr and table["mass"].unit == u.solMass
    bad = np.isnan(table["age"].value)
    unreadable = (table["flags"] & flags.UNREADABLE) != 0
    assert np.array_equal(bad, unreadable)
    assert set(np.flatnonzero(unreadable)) == set(broken)


# -- issue 18: no input crashes a batch, changes a neighbour, or comes back as nonsense --


@pytest.fixture(scope="module")
def default_model():
    return astro_spt.load_model()


def _one_good_and(bad, lamost_files, model, **kwargs):
    """estimate() of a good spectrum, ``bad`` and another good one; checks the contract."""
    good = [Spectrum.read(path) for path in lamost_files[:2]]
    table = estimate([good[0], bad, good[1]], model, n_samples=4, **kwargs)
    alone = estimate(good, model, n_samples=4, **kwargs)
    assert len(table) == 3 and values_equal(table[[0, 2]], alone)
    assert np.isnan(table["age"][1]) and np.isnan(table["mass_err"][1]) and table["flags"][1]
    assert table["message"][1] and not table["message"][0] and not table["message"][2]
    with pytest.raises(AstroSPTError):
        estimate([good[0], bad], model, n_samples=4, strict=True, **kwargs)
    return table


@pytest.mark.parametrize("n_pixels", [1, 2, 3, 4])
def test_a_few_pixels_without_uncertainty(n_pixels, lamost_files, untrained_bundle):
    tiny = Spectrum(
        flux=np.ones(n_pixels) * u.Jy, spectral_axis=np.linspace(4000, 8000, n_pixels) * u.AA
    )
    table = _one_good_and(tiny, lamost_files, untrained_bundle)
    assert table["flags"][1] & flags.UNREADABLE


@pytest.mark.parametrize(
    "meta",
    [
        {"air": np.array([True, False])},
        {"vacuum": np.array([1, 0, 1])},
        {"air": "sometimes"},
        {"header": fits.Header([("VACUUM", "maybe")])},
    ],
)
def test_air_or_vacuum_of_the_wrong_type(meta, lamost_files, untrained_bundle):
    spectrum = Spectrum.read(lamost_files[3])
    odd = Spectrum(flux=spectrum.flux, spectral_axis=spectrum.spectral_axis, meta=meta)
    table = _one_good_and(odd, lamost_files, untrained_bundle)
    assert "expected True or False" in table["message"][1]


def test_an_object_with_flux_none(lamost_files, untrained_bundle):
    class NoFlux:
        flux = None
        spectral_axis = None

    table = _one_good_and(NoFlux(), lamost_files, untrained_bundle)
    assert "not a specutils Spectrum" in table["message"][1]


def test_obsid_beyond_int64_is_no_obsid(lamost_files, untrained_bundle):
    spectrum = Spectrum.read(lamost_files[0])
    huge = Spectrum(
        flux=spectrum.flux,
        spectral_axis=spectrum.spectral_axis,
        uncertainty=spectrum.uncertainty,
        meta={**spectrum.meta, "obsid": 2**70},
    )
    table = estimate([huge, lamost_files[1]], untrained_bundle, n_samples=4)
    assert np.isfinite(table["age"]).all() and not table["message"].any()
    assert "obsid" not in table.colnames or table["obsid"][0] == -1


def test_a_neighbour_spanning_1e_3_to_4e13_angstrom_changes_nothing(lamost_files, untrained_bundle):
    wide = Spectrum(flux=np.ones(3000) * u.Jy, spectral_axis=np.geomspace(1e-3, 4e13, 3000) * u.AA)
    good = [Spectrum.read(path) for path in lamost_files[:3]]
    table = estimate([good[0], wide, *good[1:]], untrained_bundle, n_samples=4)
    assert values_equal(table[[0, 2, 3]], estimate(good, untrained_bundle, n_samples=4))
    for k in (0, 2, 3):  # and each is what it is alone
        assert values_equal(
            table[[k]], estimate(good[max(k - 1, 0)], untrained_bundle, n_samples=4)
        )


def test_pure_noise_is_nan_and_unphysical_not_1e168_gyr(default_model):
    noise = Spectrum(
        flux=np.random.default_rng(1).normal(size=4000) * u.Jy,
        spectral_axis=np.linspace(3800, 9100, 4000) * u.AA,
    )
    table = estimate(noise, default_model, n_samples=4)
    assert np.isnan(table["age"][0]) and np.isnan(table["mass"][0])
    assert np.isnan(table["age_err"][0]) and np.isnan(table["mass_err"][0])
    assert table["flags"][0] & flags.UNPHYSICAL_VALUE
    assert "unphysical" in table["message"][0]
    with pytest.raises(AstroSPTError, match="unphysical"):
        estimate(noise, default_model, n_samples=4, strict=True)


def test_unphysical_values_are_flagged_not_returned(default_model):
    from astro_spt.estimation.rows import _unphysical

    values = np.array([[5.0, 1.2], [1e168, 1.2], [5.0, -0.3], [np.nan, 1.0], [5.0, 1.2]])
    errors = np.array([[1.0, 0.1], [1.0, 0.1], [1.0, 0.1], [1.0, 0.1], [np.inf, 0.1]])
    assert sorted(_unphysical(default_model, values, errors)) == [1, 2, 3, 4]


def test_the_default_model_keeps_its_values_on_good_spectra(default_model):
    table = estimate(astro_spt.io.example_files(), default_model, n_samples=20)
    assert np.isfinite(table["age"]).all() and not (table["flags"] & flags.UNPHYSICAL_VALUE).any()


def test_a_file_named_like_a_pattern_is_that_file(lamost_files, untrained_bundle, tmp_path):
    literal = tmp_path / "a[b].fits.gz"
    shutil.copy(lamost_files[0], literal)
    shutil.copy(lamost_files[1], tmp_path / "ab.fits.gz")  # what the pattern a[b] matches
    table = estimate(str(literal), untrained_bundle, n_samples=4)
    assert list(table["path"]) == [str(literal)] and list(table["source"]) == ["a[b].fits.gz"]
    assert values_equal(table, estimate(lamost_files[0], untrained_bundle, n_samples=4))
    folder = tmp_path / "x[1]"
    folder.mkdir()
    shutil.copy(lamost_files[0], folder / "one.fits.gz")
    assert [s for s, _ in expand_inputs(folder)] == [str(folder / "one.fits.gz")]


@pytest.mark.parametrize("device", ["meta", "bogus", "cuda:99"])
def test_a_device_that_cannot_run_leaves_the_model_usable(device, lamost_files, untrained_bundle):
    before = estimate(lamost_files[:2], untrained_bundle, n_samples=4)
    with pytest.raises(AstroSPTError, match="device"):
        estimate(lamost_files[:2], untrained_bundle, n_samples=4, device=device)
    assert next(untrained_bundle.network.parameters()).device.type == "cpu"
    assert values_equal(before, estimate(lamost_files[:2], untrained_bundle, n_samples=4))


def test_message_column_is_written_with_the_table(lamost_files, untrained_bundle, tmp_path):
    table = estimate([lamost_files[0], str(tmp_path / "missing.fits")], untrained_bundle)
    assert table["message"][0] == "" and "missing.fits" in table["message"][1]
    assert table.meta["messages"] == {table["path"][1]: table["message"][1]}
    table.meta = {}  # no FITS header holds a dict of messages: the column does
    for name in ("out.ecsv", "out.fits"):
        table.write(tmp_path / name)
        back = QTable.read(tmp_path / name)["message"]
        back = back.filled("") if hasattr(back, "filled") else back  # ECSV: "" is masked
        assert list(back) == list(table["message"])


def test_unusable_elements_of_a_list_are_rows_a_bad_top_level_input_is_refused(
    lamost_files, untrained_bundle
):
    from astro_spt.exceptions import InvalidInputError

    three_d = Spectrum(flux=np.ones((2, 2, 50)) * u.Jy, spectral_axis=np.arange(50) * u.AA)
    empty_2d = Spectrum(flux=np.ones((0, 50)) * u.Jy, spectral_axis=np.arange(50) * u.AA)
    inputs = [lamost_files[0], 42, np.ones(10), three_d, empty_2d, None, lamost_files[1]]
    table = estimate(inputs, untrained_bundle, n_samples=4)
    assert len(table) == len(inputs)
    assert np.isfinite(table["age"][[0, -1]]).all() and np.isnan(table["age"][1:-1]).all()
    assert all(table["message"][1:-1]) and (table["flags"][1:-1] & flags.UNREADABLE).all()
    with pytest.raises(InvalidInputError):
        estimate(42, untrained_bundle)
    with pytest.raises(AstroSPTError, match=r"spectrum\[1\]"):
        estimate(inputs, untrained_bundle, strict=True)


# -- issue 17: reading and preprocessing in worker processes ---------------------------


@pytest.fixture
def small_worker_tasks(monkeypatch):
    """Workers for a few files, in tasks of a few files: the pool's every path is run
    without reading hundreds of files."""
    monkeypatch.setattr(estimation.workers, "_MIN_FILES_PER_WORKER", 4)
    monkeypatch.setattr(estimation.workers, "_WORKER_TASK", 3)


def _assert_same_tables(a, b):
    assert a.colnames == b.colnames
    for name in a.colnames:
        left, right = np.asarray(a[name]), np.asarray(b[name])
        if left.dtype.kind == "f":
            np.testing.assert_array_equal(left, right, strict=True)
        else:
            assert left.tolist() == right.tolist(), name


def _real_files(shared_data, tmp_path, n_dr10=20, n_dr1=4):
    lrs = shared_data / "lamost-lrs"
    files = sorted(str(p) for p in (lrs / "dr10" / "spectra").glob("*.fits.gz"))[:n_dr10]
    files += sorted(str(p) for p in (lrs / "dr1" / "spectra").glob("*.fits*"))[:n_dr1]
    files.insert(7, str(tmp_path / "absent.fits.gz"))
    return files


@pytest.fixture
def network_calls(monkeypatch):
    """The blocks this process's network ran (the workers' are not counted: they are
    other processes)."""
    calls = []
    predict = estimation.rows._predict_block

    def counted(bundle, result, rows, *args, **kwargs):
        calls.append(len(rows))
        return predict(bundle, result, rows, *args, **kwargs)

    monkeypatch.setattr(estimation.rows, "_predict_block", counted)
    return calls


def test_worker_processes_give_the_same_table_bit_for_bit(
    shared_data, untrained_bundle, tmp_path, small_worker_tasks, network_calls
):
    """A caller's own (non-default) bundle, samples and error sources included: the
    workers read, preprocess and run the network, this process only merges."""
    files = _real_files(shared_data, tmp_path)
    options = dict(batch_size=8, n_samples=3, return_samples=True, error_sources=True)
    with pytest.warns(FailedInputWarning, match="1 of 25"):
        alone = estimate(files, untrained_bundle, n_jobs=1, **options)
    assert network_calls  # n_jobs=1: the network runs here
    network_calls.clear()
    worker_seconds = estimation.workers._WORKER_CPU_SECONDS[0]
    with pytest.warns(FailedInputWarning, match="1 of 25"):
        pooled = estimate(files, untrained_bundle, n_jobs=2, **options)
    assert estimation.workers._WORKER_CPU_SECONDS[0] > worker_seconds  # the workers read them
    assert not network_calls  # ... and ran the network
    _assert_same_tables(alone, pooled)
    assert alone.meta == pooled.meta
    assert alone["message"][7] and not any(alone["message"][:7])
    assert np.isfinite(pooled["age"][[0, 8, 24]]).all()
    assert pooled["age_samples"].shape == (25, 3) and "age_err_epistemic" in pooled.colnames
    # another seed, T and batch size: a changed model or argument reaches the workers
    options = dict(batch_size=5, n_samples=4, seed=7, return_samples=True)
    with pytest.warns(FailedInputWarning):
        _assert_same_tables(
            estimate(files, untrained_bundle, n_jobs=1, **options),
            estimate(files, untrained_bundle, n_jobs=2, **options),
        )


def test_worker_processes_with_the_default_model(shared_data, tmp_path, small_worker_tasks):
    files = _real_files(shared_data, tmp_path, n_dr10=10, n_dr1=2)
    options = dict(return_samples=True, error_sources=True, n_samples=20)
    with pytest.warns(FailedInputWarning):
        alone = estimate(files, n_jobs=1, **options)
    with pytest.warns(FailedInputWarning):
        pooled = estimate(files, n_jobs=2, **options)
    _assert_same_tables(alone, pooled)
    assert np.isfinite(pooled["age"]).sum() == len(files) - 1


def test_a_model_that_cannot_be_sent_runs_here(
    shared_data, untrained_bundle, tmp_path, small_worker_tasks, network_calls, monkeypatch
):
    """A model that cannot be pickled (or a network on a GPU): the workers read and
    preprocess, this process runs the network; the same table."""
    files = _real_files(shared_data, tmp_path, n_dr10=12, n_dr1=0)
    with pytest.warns(FailedInputWarning):
        alone = estimate(files, untrained_bundle, n_jobs=1, n_samples=3, return_samples=True)
    network_calls.clear()
    monkeypatch.setattr(estimation.workers, "_shipped", lambda bundle: None)
    with pytest.warns(FailedInputWarning):
        pooled = estimate(files, untrained_bundle, n_jobs=2, n_samples=3, return_samples=True)
    assert network_calls
    _assert_same_tables(alone, pooled)


def test_workers_raise_when_strict(shared_data, untrained_bundle, tmp_path, small_worker_tasks):
    files = _real_files(shared_data, tmp_path, n_dr10=12, n_dr1=0)
    with pytest.raises(AstroSPTError, match=r"absent\.fits\.gz"):
        estimate(files, untrained_bundle, n_jobs=2, n_samples=2, strict=True)


def test_models_sent_to_workers_are_kept_one_at_a_time(
    lamost_files, untrained_bundle, small_worker_tasks
):
    """Each model is pickled once per call into a private folder; a file that no call
    uses any more is deleted when the next call ends."""
    import copy
    import os

    files = lamost_files * 4
    other = copy.deepcopy(untrained_bundle)
    with torch_no_grad():
        next(other.network.parameters()).add_(1.0)  # another model: another file
    first = estimate(files, untrained_bundle, n_jobs=2, n_samples=2)
    folder = estimation.workers._SHIPPED["dir"][0]

    def pickles():
        return [name for name in os.listdir(folder) if name.endswith(".pickle")]

    assert len(pickles()) == 1 and os.stat(folder).st_mode & 0o077 == 0
    changed = estimate(files, other, n_jobs=2, n_samples=2)
    assert len(pickles()) == 1
    assert not np.array_equal(first["age"], changed["age"])
    _assert_same_tables(changed, estimate(files, other, n_jobs=1, n_samples=2))


def test_a_model_changed_in_place_is_sent_again(
    lamost_files, untrained_bundle, small_worker_tasks, monkeypatch
):
    """The same model object, unchanged, is not pickled again for the next call; changed
    in place (even through a numpy view, which torch does not count as a change), the
    workers get the changed model."""
    import copy
    import pickle

    files = lamost_files * 4
    model = copy.deepcopy(untrained_bundle)
    first = estimate(files, model, n_jobs=2, n_samples=2)
    pickled = []
    dumps = pickle.dumps
    monkeypatch.setattr(
        pickle, "dumps", lambda obj, *a, **k: pickled.append(type(obj)) or dumps(obj, *a, **k)
    )
    _assert_same_tables(first, estimate(files, model, n_jobs=2, n_samples=2))
    assert type(model) not in pickled
    weight = next(model.network.parameters())
    weight.detach().numpy()[...] += 1.0
    changed = estimate(files, model, n_jobs=2, n_samples=2)
    assert type(model) in pickled
    assert not np.array_equal(first["age"], changed["age"])
    _assert_same_tables(changed, estimate(files, model, n_jobs=1, n_samples=2))
    model.description = "another description"  # not an array: the pickle differs
    pickled.clear()
    estimate(files, model, n_jobs=2, n_samples=2)
    assert type(model) in pickled


@pytest.mark.skipif(sys.platform == "win32", reason="no file locks (fcntl)")
def test_folders_of_killed_processes_are_removed(tmp_path):
    """A process killed before its clean-up at exit leaves its folder of models (25 MB
    for the default model) behind; the next process to make one removes those whose
    lock no process holds, and no other."""
    import os
    import time

    from astro_spt.estimation.workers import _MODELS_PREFIX, _hold_lock, _remove_abandoned

    def folder(name, lock):
        path = tmp_path / (_MODELS_PREFIX + name)
        path.mkdir()
        (path / "model.pickle").write_bytes(b"x")
        if lock:
            (path / ".lock").touch()
        return path

    folder("killed", lock=True)  # its process gone: nobody holds the lock
    alive = folder("alive", lock=False)
    held = _hold_lock(alive)  # as its live process holds it
    being_made = folder("new", lock=False)  # made a moment ago, its lock not yet made
    old = folder("old", lock=False)  # by an older version, a day ago
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    other = tmp_path / "astro_spt-other"
    other.mkdir()
    ours = folder("ours", lock=False)
    try:
        _remove_abandoned(str(ours))
    finally:
        held.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (alive, being_made, other, ours)
    )


def torch_no_grad():
    import torch

    return torch.no_grad()


def test_unknown_medium_from_workers_warns_once(
    lamost_files, untrained_bundle, small_worker_tasks, tmp_path
):
    """Files that do not say their medium, read by two workers: one warning for all."""
    from astro_spt.exceptions import AstroSPTWarning

    spectrum = Spectrum.read(lamost_files[0])
    header = fits.Header()
    wavelength = spectrum.spectral_axis.to_value(u.AA)
    header.update(
        CTYPE1="LINEAR",
        CUNIT1="Angstrom",
        CRPIX1=1,
        CRVAL1=wavelength[0],
        CDELT1=(wavelength[-1] - wavelength[0]) / (len(wavelength) - 1),
        BUNIT="erg / (s cm2 Angstrom)",
    )
    bare = []
    for k in range(10):
        path = tmp_path / f"bare{k}.fits"
        fits.PrimaryHDU(spectrum.flux.value, header=header).writeto(path)
        bare.append(str(path))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimate([*bare, *lamost_files], untrained_bundle, n_jobs=2, n_samples=2)
    medium = [w for w in caught if "do not say whether" in str(w.message)]
    assert len(medium) == 1 and issubclass(medium[0].category, AstroSPTWarning)
    assert f"10 of {10 + len(lamost_files)} " in str(medium[0].message)


@pytest.mark.parametrize("n_jobs", [0, -1, 1.5, True, "2"])
def test_invalid_n_jobs_is_refused(lamost_files, untrained_bundle, n_jobs):
    with pytest.raises(ValueError, match="n_jobs"):
        estimate(lamost_files, untrained_bundle, n_jobs=n_jobs)


def _estimate_in_daemon(untrained_bundle, files, queue):
    table = estimate(files, untrained_bundle, n_jobs=2, n_samples=2)
    queue.put(np.asarray(table["age"]).tolist())


def test_a_daemonic_process_estimates_in_itself(lamost_files, untrained_bundle, small_worker_tasks):
    """Dask's and multiprocessing pools' workers are daemonic and may not start
    processes: estimate() reads in the process itself there."""
    import multiprocessing

    files = lamost_files * 4
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(
        target=_estimate_in_daemon, args=(untrained_bundle, files, queue), daemon=True
    )
    process.start()
    ages = queue.get(timeout=120)
    process.join(30)
    assert process.exitcode == 0
    expected = estimate(files, untrained_bundle, n_jobs=1, n_samples=2)
    np.testing.assert_array_equal(ages, np.asarray(expected["age"]))


def test_threads_share_the_worker_pool(lamost_files, untrained_bundle, small_worker_tasks):
    """estimate() called from two threads at once: one pool, each table as alone. (Each
    thread has its own bundle: Monte Carlo prediction sets the dropout masks on the
    network in place, so one bundle is not for two threads at once.)"""
    import concurrent.futures
    import copy

    files = lamost_files * 4
    expected = estimate(files, untrained_bundle, n_jobs=1, n_samples=2)
    bundles = [untrained_bundle, copy.deepcopy(untrained_bundle)]
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        tables = list(
            threads.map(lambda bundle: estimate(files, bundle, n_jobs=2, n_samples=2), bundles)
        )
    for table in tables:
        _assert_same_tables(expected, table)


def test_the_default_model_is_loaded_once_per_thread():
    """estimate(model=None) keeps the embedded model for later calls, one per thread (a
    bundle is not for two threads at once)."""
    import threading

    first = estimation.rows._embedded_default()
    assert estimation.rows._embedded_default() is first
    other = []
    thread = threading.Thread(target=lambda: other.append(estimation.rows._embedded_default()))
    thread.start()
    thread.join()
    assert other[0] is not first and other[0].name == first.name
