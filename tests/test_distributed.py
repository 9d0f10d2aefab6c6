"""Tests of astro_spt.distributed: estimate_files in this process and on a LocalCluster.

The cluster tests share one 2-worker LocalCluster (starting one costs ~10 s on the
2-core test machine). Faults are injected into the worker processes with
``client.run``: the functions below replace a function of ``astro_spt.distributed`` in
each worker, and a marker file makes the fault happen once across all of them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astro_spt import flags
from astro_spt.distributed import MANIFEST_NAME, estimate_files, read_results
from astro_spt.estimation import estimate
from astro_spt.exceptions import AstroSPTError

LABEL_COLUMNS = ("age", "age_err", "mass", "mass_err")
PARTITION_SIZE = 8

# The inputs hold unreadable files on purpose: estimate()'s warning about them is tested
# in tests/test_readable_output.py
pytestmark = pytest.mark.filterwarnings("ignore::astro_spt.exceptions.FailedInputWarning")


def assert_same_table(a, b):
    """Bit-for-bit equal values (NaN where NaN), flags, sources, obsids and meta."""
    assert a.colnames == b.colnames
    for name in LABEL_COLUMNS:
        assert a[name].unit == b[name].unit
        assert np.array_equal(a[name].value, b[name].value, equal_nan=True), name
    for name in ("source", "obsid", "flags"):
        assert np.array_equal(a[name], b[name]), name
    # Not the version: any `pip install -e .` in this checkout rewrites astro_spt/_version.py
    # (setuptools_scm), and worker processes started after it report the new one.
    assert {k: v for k, v in a.meta.items() if k != "astro_spt_version"} == {
        k: v for k, v in b.meta.items() if k != "astro_spt_version"
    }


def temporaries(folder):
    from astro_spt._files import TEMPORARY_MARK

    return sorted(p.name for p in Path(folder).iterdir() if TEMPORARY_MARK in p.name)


@pytest.fixture(scope="module")
def model_dir(untrained_bundle, tmp_path_factory):
    # Workers load the model from disk, once each; a torch model is never pickled.
    return str(untrained_bundle.save_pretrained(tmp_path_factory.mktemp("model") / "bundle"))


@pytest.fixture(scope="module")
def inputs(shared_data, lamost_files, tmp_path_factory):
    """40 real DR10 files, the 5 committed fixtures, and a truncated file at row 20."""
    dr10 = sorted((shared_data / "lamost-lrs" / "dr10" / "spectra").glob("*.fits.gz"))[:40]
    truncated = tmp_path_factory.mktemp("corrupt") / "spec-truncated.fits"
    plain = next(p for p in lamost_files if p.endswith(".fits"))
    truncated.write_bytes(Path(plain).read_bytes()[:5000])
    paths = [str(p) for p in dr10] + list(lamost_files)
    paths.insert(20, str(truncated))
    return paths


@pytest.fixture(scope="module")
def reference(inputs, model_dir):
    """The single-process result."""
    return estimate(inputs, model_dir)


@pytest.fixture
def parquet():
    """Parquet output (the default) needs pyarrow, which comes with the dask extra."""
    pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as connected:
        yield connected
    cluster.close()


# -- fault injection in the workers (run there through client.run) ----------------------


def fail_once(marker, source):
    """Make the partition that holds ``source`` raise, the first time any worker runs it."""
    import astro_spt.distributed as module

    original = module.estimate

    def estimate(paths, *args, **kwargs):
        if source in paths and not os.path.exists(marker):
            Path(marker).touch()
            raise RuntimeError("injected failure")
        return original(paths, *args, **kwargs)

    module.estimate = estimate
    module._original_estimate = original


def die_while_writing_once(marker, file_name):
    """Kill the worker process half-way through writing ``file_name``, once."""
    import astro_spt.distributed as module
    from astro_spt._files import temporary_name

    original = module._write_table

    def write_table(table, path, output_format):
        if path.name == file_name and not os.path.exists(marker):
            Path(marker).touch()
            temporary_name(path).write_bytes(b"half a file")
            os._exit(1)
        return original(table, path, output_format)

    module._write_table = write_table
    module._original_write_table = original


def restore():
    import astro_spt.distributed as module

    module.estimate = getattr(module, "_original_estimate", module.estimate)
    module._write_table = getattr(module, "_original_write_table", module._write_table)


# -- in this process --------------------------------------------------------------------


def test_import_does_not_import_dask():
    code = "import astro_spt.distributed, sys; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_dask_says_how_to_install(monkeypatch, lamost_files, model_dir):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "astro-spt\[dask\]"'):
        estimate_files(lamost_files, model_dir, client="tcp://127.0.0.1:1")


@pytest.mark.parametrize("output_format", ["fits", "ecsv", None])
def test_in_process_equals_estimate(inputs, model_dir, reference, tmp_path, output_format):
    kwargs = (
        {} if output_format is None else {"output_dir": tmp_path, "output_format": output_format}
    )
    table = estimate_files(inputs, model_dir, partition_size=PARTITION_SIZE, **kwargs)
    assert_same_table(table, reference)
    if output_format is not None:
        assert_same_table(read_results(tmp_path), reference)


@pytest.mark.parametrize("output_format", ["parquet", "fits", "ecsv"])
def test_partition_files_keep_units_descriptions_formats(
    lamost_files, model_dir, tmp_path, output_format
):
    if output_format == "parquet":
        pytest.importorskip("pyarrow")
    reference = estimate(lamost_files, model_dir)
    run = {"partition_size": 2, "output_dir": tmp_path, "output_format": output_format}
    for table in (estimate_files(lamost_files, model_dir, **run), read_results(tmp_path)):
        assert table.colnames == reference.colnames
        for name in reference.colnames:
            got, expected = table[name], reference[name]
            assert got.info.description == expected.info.description, name
            assert got.info.description, name
            assert getattr(got, "unit", None) == getattr(expected, "unit", None), name
            assert got.info.format == expected.info.format, name
        assert reference.pformat(max_width=80) == table.pformat(max_width=80)


def test_interrupted_run_resumes(inputs, model_dir, reference, tmp_path, monkeypatch, parquet):
    import astro_spt.distributed as module

    computed, interrupt_after = [], [2]

    def interrupted(paths, *args, **kwargs):
        if len(computed) in interrupt_after:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the third partition
        computed.append(paths[0])
        return estimate(paths, *args, **kwargs)

    monkeypatch.setattr(module, "estimate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        estimate_files(inputs, model_dir, partition_size=PARTITION_SIZE, output_dir=tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert not manifest["complete"]
    assert [p["n_rows"] for p in manifest["partitions"][:3]] == [
        PARTITION_SIZE,
        PARTITION_SIZE,
        None,
    ]
    assert sorted(p.name for p in tmp_path.glob("part-*")) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    assert temporaries(tmp_path) == []
    with pytest.raises(AstroSPTError, match="missing"):
        read_results(tmp_path)

    computed.clear()
    interrupt_after.clear()
    table = estimate_files(inputs, model_dir, partition_size=PARTITION_SIZE, output_dir=tmp_path)
    # only the four unfinished partitions ran again
    assert computed == inputs[2 * PARTITION_SIZE :: PARTITION_SIZE]
    assert_same_table(table, reference)
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["complete"]


def test_output_dir_of_another_run_is_refused(inputs, model_dir, tmp_path, parquet):
    files = inputs[:10]
    estimate_files(files, model_dir, partition_size=4, output_dir=tmp_path, collect=False)
    with pytest.raises(AstroSPTError, match=r"different run.*seed"):
        estimate_files(files, model_dir, partition_size=4, output_dir=tmp_path, seed=1)
    with pytest.raises(AstroSPTError, match="the list of input files"):
        estimate_files(files[:9], model_dir, partition_size=4, output_dir=tmp_path)
    table = estimate_files(
        files[:5], model_dir, partition_size=4, output_dir=tmp_path, seed=1, resume=False
    )
    assert_same_table(table, estimate(files[:5], model_dir, seed=1))
    assert sorted(p.name for p in tmp_path.glob("part-*")) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]


def test_bad_arguments(lamost_files, model_dir):
    from specutils import Spectrum

    with pytest.raises(ValueError, match="output_format"):
        estimate_files(lamost_files, model_dir, output_dir="x", output_format="hdf5")
    with pytest.raises(ValueError, match="collect=False"):
        estimate_files(lamost_files, model_dir, collect=False)
    with pytest.raises(TypeError, match="in-memory spectra"):
        estimate_files([Spectrum.read(lamost_files[0])], model_dir)
    assert len(estimate_files([], model_dir)) == 0


def test_worker_refuses_a_different_model(model_dir):
    from astro_spt.distributed import _ModelRef, _worker_bundle

    with pytest.raises(AstroSPTError, match="differs from the one the client loaded"):
        _worker_bundle(_ModelRef(model_dir, None, digest="not this model"))


# -- on a 2-worker LocalCluster ---------------------------------------------------------


def test_cluster_equals_single_process(client, inputs, model_dir, reference):
    table = estimate_files(inputs, model_dir, client=client, partition_size=PARTITION_SIZE)
    assert_same_table(table, reference)
    # the truncated file: a flagged NaN row; the others as if it were not there
    assert table["flags"][20] & flags.UNREADABLE
    assert np.isnan(table["age"][20].value) and np.isnan(table["mass"][20].value)
    assert "cannot read" in table.meta["messages"][inputs[20]]
    without = estimate(inputs[:20] + inputs[21:], model_dir)
    rest = table[np.arange(len(table)) != 20]
    del rest.meta["messages"][inputs[20]]
    assert_same_table(rest, without)


def test_cluster_by_scheduler_address(client, inputs, model_dir):
    # a client of its own, connected to the address and closed at the end
    address = client.scheduler.address
    table = estimate_files(inputs[:12], model_dir, client=address, partition_size=5)
    assert_same_table(table, estimate(inputs[:12], model_dir))


def test_cluster_resumes_and_survives_a_killed_worker(
    client, inputs, model_dir, reference, tmp_path, parquet
):
    output = tmp_path / "results"
    try:
        # Run 1: partition 3 raises (no retries): the others finish and are kept.
        client.run(fail_once, str(tmp_path / "failed"), inputs[3 * PARTITION_SIZE + 1])
        with pytest.raises(AstroSPTError, match=r"1 of 6 partitions failed.*injected failure"):
            estimate_files(
                inputs,
                model_dir,
                client=client,
                partition_size=PARTITION_SIZE,
                output_dir=output,
                retries=0,
            )
        client.run(restore)
        done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in output.glob("part-*")}
        assert sorted(done) == [f"part-{i:06d}.parquet" for i in (0, 1, 2, 4, 5)]
        assert not json.loads((output / MANIFEST_NAME).read_text())["complete"]

        # Run 2 computes partition 3 only. Its first try raises (Dask retries it), in its
        # second the worker dies half-way through writing it (Dask reruns it elsewhere).
        client.run(fail_once, str(tmp_path / "failed again"), inputs[3 * PARTITION_SIZE + 1])
        client.run(die_while_writing_once, str(tmp_path / "killed"), "part-000003.parquet")
        table = estimate_files(
            inputs, model_dir, client=client, partition_size=PARTITION_SIZE, output_dir=output
        )
        assert (tmp_path / "failed again").exists() and (tmp_path / "killed").exists()
    finally:
        client.run(restore)
    assert_same_table(table, reference)
    assert len(set(table["source"])) == len(inputs)  # each input exactly once
    # finished partitions were not recomputed, and nothing half-written is left
    assert {p: (output / p).stat().st_ino for p in done} == {p: v[0] for p, v in done.items()}
    assert {p: (output / p).stat().st_mtime_ns for p in done} == {p: v[1] for p, v in done.items()}
    assert temporaries(output) == []
    manifest = json.loads((output / MANIFEST_NAME).read_text())
    assert manifest["complete"]
    assert [(p["start"], p["stop"], p["n_rows"]) for p in manifest["partitions"]] == [
        (s, min(s + PARTITION_SIZE, len(inputs)), min(PARTITION_SIZE, len(inputs) - s))
        for s in range(0, len(inputs), PARTITION_SIZE)
    ]


def test_cluster_needs_a_model_workers_can_load(client, lamost_files, untrained_bundle):
    with pytest.raises(ValueError, match="save_pretrained"):
        estimate_files(lamost_files, untrained_bundle, client=client)


@pytest.mark.parametrize(
    ("output_format", "damage"),
    [("parquet", "truncated"), ("parquet", "garbage"), ("parquet", "rows"), ("fits", "garbage")],
)
def test_damaged_partition_is_recomputed_on_resume(
    lamost_files, model_dir, tmp_path, output_format, damage
):
    from astro_spt.exceptions import DamagedPartitionWarning

    pytest.importorskip("pyarrow")
    run = {"partition_size": 2, "output_dir": tmp_path, "output_format": output_format}
    first = estimate_files(lamost_files, model_dir, **run)
    part, other = sorted(tmp_path.glob("part-*"))[1:3]
    data = part.read_bytes()
    if damage == "truncated":
        part.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        part.write_bytes(bytes(range(256)) * 8)
    else:  # a readable file with another partition's rows
        part.write_bytes(other.read_bytes())
    with pytest.raises(AstroSPTError, match=f"{part.name}.*run estimate_files again"):
        read_results(tmp_path)
    with pytest.warns(DamagedPartitionWarning, match=f"{part.name}.*computing it again"):
        again = estimate_files(lamost_files, model_dir, **run)
    assert_same_table(again, first)
    assert_same_table(read_results(tmp_path), first)
