"""Tests of the ``astro-spt`` command line."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hf_server import LocalHub, isolate_huggingface_hub, make_bundle
from hypothesis import given
from hypothesis import strategies as st

from astro_spt import flags
from astro_spt.cli import (
    EXIT_HUB_ERROR,
    EXIT_INTERNAL_ERROR,
    EXIT_OK,
    EXIT_USAGE_ERROR,
    EXIT_USER_ERROR,
    main,
    write_table,
)

REPO = "astro-spt-tests/cli"


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    isolate_huggingface_hub(monkeypatch)


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(seed=2)[0]


@pytest.fixture
def bundle_dir(bundle, tmp_path):
    return bundle.save_pretrained(tmp_path / "bundle")


@pytest.fixture
def hub(bundle_dir):
    with LocalHub() as server:
        server.commit_folder(REPO, bundle_dir)
        yield server


@pytest.mark.parametrize(
    "argv", [["--help"], ["download", "--help"], ["info", "--help"], ["estimate", "--help"]]
)
def test_help(argv, capsys):
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert "usage: astro-spt" in out
    assert "exit codes: 0 success; 1 user or input error; 2 usage error; 3 network" in out


def test_usage_errors(capsys):
    assert main([]) == EXIT_USAGE_ERROR
    assert main(["frobnicate"]) == EXIT_USAGE_ERROR
    assert main(["download"]) == EXIT_USAGE_ERROR
    assert "REPO" in capsys.readouterr().err
    assert main(["--version"]) == EXIT_OK


def test_download(hub, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    argv = [
        "download",
        REPO,
        "--revision",
        "main",
        "--cache-dir",
        str(cache),
        "--endpoint",
        hub.url,
    ]
    assert main(argv) == EXIT_OK
    captured = capsys.readouterr()
    path = Path(captured.out.strip())
    assert path.is_dir() and (path / "config.json").is_file()
    assert path.is_relative_to(cache.resolve())
    assert "cached and verified" in captured.err
    # Later, offline, it loads from the cache.
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["info", REPO, "--cache-dir", str(cache)]) == EXIT_OK
    assert "age [Gyr] (log10), mass [solMass] (linear)" in capsys.readouterr().out


def test_download_errors(hub, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert (
        main(["download", "astro-spt-tests/none", "--cache-dir", cache, "--endpoint", hub.url]) == 3
    )
    assert "was not found" in capsys.readouterr().err
    assert main(["download", REPO, "-r", "v7", "--cache-dir", cache, "--endpoint", hub.url]) == 3
    assert "revision 'v7'" in capsys.readouterr().err
    code = main(["info", REPO, "--offline", "--cache-dir", cache, "--endpoint", hub.url])
    assert code == EXIT_HUB_ERROR
    assert f"astro-spt download {REPO} --revision main" in capsys.readouterr().err
    assert main(["download", "not a repo", "--cache-dir", cache]) == EXIT_USER_ERROR


def test_info_on_a_directory(bundle_dir, capsys):
    assert main(["info", str(bundle_dir)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"astro_spt estimator bundle from {bundle_dir}" in out
    assert "labels:         age [Gyr] (log10), mass [solMass] (linear)" in out
    assert "training data:  random numbers (test bundle, not a science model)" in out
    assert "8 components of 64 pixels" in out
    assert "age [Gyr]  16  1.5" in out  # the accuracy table
    assert "model.safetensors" in out


def test_info_errors(bundle_dir, capsys):
    weights = bundle_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\1")
    assert main(["info", str(bundle_dir)]) == EXIT_USER_ERROR
    assert "model.safetensors" in capsys.readouterr().err
    assert main(["info"]) == EXIT_OK  # the embedded default model
    assert "mock" in capsys.readouterr().out.lower()


def test_python_dash_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "astro_spt.cli", "info", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_USER_ERROR
    assert "neither a bundle directory nor a hub repository id" in result.stderr


@pytest.fixture
def spt_dir(untrained_bundle, tmp_path):
    return untrained_bundle.save_pretrained(tmp_path / "spt")


@pytest.mark.parametrize("suffix", [".ecsv", ".fits", ".csv"])
def test_estimate_writes_tables(spt_dir, lamost_files, tmp_path, capsys, suffix):
    from astropy.table import QTable

    out = tmp_path / f"ages{suffix}"
    broken = str(tmp_path / "missing.fits")
    argv = ["estimate", *lamost_files[:2], broken, "-o", str(out), "--model", str(spt_dir)]
    assert main([*argv, "--samples", "8", "--no-progress"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "3 spectra: 1 bad, " in err and "bad: 1 unreadable" in err
    table = QTable.read(out)
    assert len(table) == 3
    assert list(table["flags"] & flags.UNREADABLE != 0) == [False, False, True]
    if suffix != ".csv":
        assert table["age"].unit == "Gyr" and table["mass"].unit == "solMass"
    if suffix == ".fits":  # the keywords astro_spt.distributed writes too
        assert table.meta["SPTSEED"] == 0 and table.meta["SPTNSAMP"] == 8
    # an existing output is kept unless asked
    assert main(argv) == EXIT_USER_ERROR
    assert "--overwrite" in capsys.readouterr().err


def test_estimate_prints_and_fails_clearly(spt_dir, lamost_files, tmp_path, capsys):
    assert main(["estimate", lamost_files[0], "--model", str(spt_dir), "--samples", "4"]) == 0
    assert "age" in capsys.readouterr().out
    missing = str(tmp_path / "missing.fits")
    assert main(["estimate", missing, "--model", str(spt_dir), "--strict"]) == EXIT_USER_ERROR
    assert "missing.fits" in capsys.readouterr().err
    assert main(["estimate", lamost_files[0], "--model", str(spt_dir), "-o", "x.txt"]) == 1
    assert "format" in capsys.readouterr().err
    assert main(["estimate", str(tmp_path / "none-*.fits"), "--model", str(spt_dir)]) == 1


def test_train_evaluate_estimate_from_the_shell(shared_data, tmp_path, capsys):
    import json

    folder = shared_data / "lamost-lrs" / "dr10"
    files = sorted(str(p) for p in (folder / "spectra").glob("*.fits.gz"))[:80]
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "n_components": 16,
                "network": {"d_model": 16, "n_heads": 2, "n_blocks": 1},
                "n_samples": 10,
                "training": {"learning_rate": 1e-3, "batch_size": 16},
            }
        )
    )
    model, split, out = tmp_path / "model", tmp_path / "split.ecsv", tmp_path / "eval"
    labels = str(folder / "labels.csv")
    argv = ["train", "--spectra", *files, "--labels", labels, "--label", "teff:K"]
    argv += ["--label", "logg", "--config", str(config), "--epochs", "3", "-o", str(model)]
    assert main([*argv, "--split", str(split), "--float16"]) == EXIT_OK
    assert (model / "config.json").is_file()
    argv = ["evaluate", str(model), "--spectra", *files, "--labels", labels]
    assert main([*argv, "--split", str(split), "-o", str(out)]) == EXIT_OK
    from astropy.table import Table

    metrics = Table.read(out / "metrics.ecsv")
    assert list(metrics["label"]) == ["teff", "logg"]
    assert metrics["n"][0] == 16  # the test fifth of the 80 spectra
    for name in (
        "learning_curve",
        "predicted_vs_true_teff",
        "bland_altman_logg",
        "uncertainty_teff",
    ):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert (
        main(["estimate", *files[:3], "--model", str(model), "-o", str(tmp_path / "e.ecsv")]) == 0
    )
    assert Table.read(tmp_path / "e.ecsv")["teff"].unit == "K"
    # labels that cannot be matched to the spectra are a user error
    bad = ["train", "--spectra", *files[:5], "--labels", str(split), "--label", "teff"]
    assert main([*bad, "-o", str(tmp_path / "m2")]) == EXIT_USER_ERROR


# -- user errors: one line, exit code 1, before any work (issue 18) ------------------------


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--device", "bogus"], "invalid --device 'bogus'"),
        (["--device", "meta"], "invalid --device 'meta'"),
        (["--samples", "0"], "--samples must be at least 1"),
        (["--batch-size", "-3"], "--batch-size must be at least 1"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["-o", "{tmp}/no/such/folder/out.ecsv"], "is not a folder"),
        (["-o", "{tmp}/a-file/out.ecsv"], "is not a folder"),
        (["-o", "{tmp}"], "format"),
        (["-o", "{tmp}/out.txt"], "format"),
    ],
)
def test_estimate_refuses_bad_options_before_the_work(tmp_path, capsys, monkeypatch, extra, match):
    import astro_spt.hub

    (tmp_path / "a-file").write_text("")
    loaded = []
    monkeypatch.setattr(astro_spt.hub, "load_model", lambda *a, **k: loaded.append(a))
    extra = [e.format(tmp=tmp_path) for e in extra]
    assert main(["estimate", "spectrum.fits", *extra]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert loaded == []  # refused before the model was even loaded


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anyway")
def test_unwritable_output_folder_is_found_before_the_work(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["estimate", "x.fits", "-o", str(folder / "out.ecsv")]) == EXIT_USER_ERROR
    finally:
        folder.chmod(0o700)
    assert "cannot write in" in capsys.readouterr().err


@pytest.mark.parametrize("labels", ["binary", "missing", "folder"])
def test_labels_file_that_is_not_a_table(lamost_files, tmp_path, capsys, labels):
    path = {"binary": tmp_path / "labels.bin", "missing": tmp_path / "none.csv"}.get(labels)
    if labels == "binary":
        path.write_bytes(b"\x00\x01\x02\xff" * 100)
    path = str(path or tmp_path)
    argv = ["train", "--spectra", lamost_files[0], "--labels", path, "--label", "age:Gyr"]
    assert main([*argv, "-o", str(tmp_path / "model")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert path in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unexpected_errors_are_one_line_with_their_own_exit_code(monkeypatch, capsys):
    import astro_spt.cli

    def bug(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(astro_spt.cli, "run_info", bug)
    monkeypatch.delenv("ASTRO_SPT_TRACEBACK", raising=False)
    assert main(["info"]) == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "astro-spt info: internal error: RuntimeError: something unexpected (set "
        "ASTRO_SPT_TRACEBACK=1 to see where; please report it)"
    ]
    monkeypatch.setenv("ASTRO_SPT_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        main(["info"])


def test_tables_are_written_atomically(tmp_path):
    from astropy.table import QTable

    from astro_spt._files import write_atomically

    path = tmp_path / "ages.ecsv"
    write_table(QTable({"age": [1.0, 2.0]}), str(path))
    before = path.read_bytes()

    def disk_full(tmp):
        Path(tmp).write_bytes(before[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(str(path), disk_full)
    assert path.read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ages.ecsv"]  # no leftovers
    with pytest.raises(ValueError, match="--overwrite"):
        write_table(QTable({"age": [3.0]}), str(path))


def test_fits_output_holds_non_ascii_text(tmp_path):
    from astropy.table import QTable

    table = QTable({"source": ["spéc-α.fits", "b.fits"], "message": ["σ too large", ""]})
    table.meta.update(model="/data/modèle", seed=0)
    write_table(table, str(tmp_path / "out.fits"))
    again = QTable.read(tmp_path / "out.fits")
    assert list(again["source"]) == ["sp\\xe9c-\\u03b1.fits", "b.fits"]
    assert again["message"][0] == "\\u03c3 too large"


def test_written_tables_keep_column_descriptions(tmp_path):
    """FITS, ECSV and CSV output of the command line: every column keeps its unit and
    its description where the format holds one (CSV holds neither)."""
    import astropy.units as u
    from astropy.table import QTable

    table = QTable({"age": [3.0, 4.0] * u.Gyr, "source": ["spéc.fits", "b.fits"]})
    table["age"].info.description = "Age estimate"
    table["source"].info.description = "File name of the input"
    for suffix in ("fits", "ecsv"):
        path = tmp_path / f"out.{suffix}"
        write_table(table, str(path))
        again = QTable.read(path)
        assert again["age"].unit == u.Gyr
        for name in table.colnames:
            assert again[name].info.description == table[name].info.description, (suffix, name)


@given(
    st.lists(
        st.lists(st.sampled_from([f.value for f in flags.FLAGS]), max_size=4).map(
            lambda values: sum(set(values))
        ),
        min_size=1,
        max_size=30,
    )
)
def test_flag_summary_counts_each_row_under_its_worst_severity(values):
    """The four counts partition the rows; each flag's count is the rows that have it."""
    import re

    from astropy.table import Table

    from astro_spt.cli import flag_summary

    line = flag_summary(Table({"flags": np.array(values, dtype=flags.FLAG_DTYPE)}))
    numbers = re.match(
        r"(\d+) spectra: (\d+) bad, (\d+) with warnings, (\d+) with notes only, (\d+) "
        r"unflagged",
        line,
    )
    n, bad, warned, noted, clean = map(int, numbers.groups())
    v = np.array(values)
    is_bad = (v & flags.FLAGS.mask_of("bad")) != 0
    is_warned = ~is_bad & ((v & flags.FLAGS.mask_of("warning")) != 0)
    assert (n, bad, warned, clean) == (len(v), is_bad.sum(), is_warned.sum(), (v == 0).sum())
    assert bad + warned + noted + clean == n
    for flag in flags.FLAGS:
        count = int(np.count_nonzero(v & flag.value))
        assert (f" {count} {flag.name}" in line) == (count > 0)
