"""Estimation over many files on a Dask cluster (SPEC §2, layer 9).

`estimate_files` splits a list of files into partitions of consecutive inputs and runs
`astro_spt.estimate` on each partition, in this process or on a Dask cluster
(``distributed.LocalCluster``, dask-jobqueue, any scheduler address). Because a
spectrum's Monte Carlo randomness depends on the seed and the spectrum only, and the
network always runs on fixed-size blocks, the assembled table is the table
``estimate(paths)`` gives in one process.

With ``output_dir`` each partition is written to its own file, atomically (a hidden
temporary name in the same folder, ``fsync``, ``os.replace``), and ``manifest.json`` lists
the run's parameters and each partition's input range, file and row count. A file that
exists is complete, so a restarted run skips the partitions whose files exist and
computes the rest; `read_results` assembles the files in input order.

Dask itself is imported only when a cluster is used; ``pip install "astro-spt[dask]"``
installs it (and pyarrow, for Parquet output).
"""

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._files import temporaries, write_atomically
from .estimation import estimate, expand_inputs
from .estimation.rows import _load
from .estimation.table import _FITS_META_KEYWORDS, _HIDDEN_IN_PRINT
from .estimation.workers import _checked_n_jobs
from .exceptions import AstroSPTError, DamagedPartitionWarning, FailedInputWarning

__all__ = ["MANIFEST_NAME", "estimate_files", "read_results"]

MANIFEST_NAME = "manifest.json"
"""Name of the index file that `estimate_files` writes in its ``output_dir``."""

_MANIFEST_VERSION = 1
# output_format -> (astropy format name, file extension)
_FORMATS = {
    "parquet": ("parquet", "parquet"),
    "fits": ("fits", "fits"),
    "ecsv": ("ascii.ecsv", "ecsv"),
}
# The manifest is rewritten at most this often while partitions finish: with ~10^4
# partitions, rewriting it after each would cost O(n^2) bytes. The partition files, not
# the manifest, say what has finished, so a stale manifest loses nothing.
_MANIFEST_INTERVAL_S = 10.0
_MESSAGE_COLUMN = "message"
_INSTALL_HINT = 'pip install "astro-spt[dask]"'

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# The model, once per worker


@dataclass(frozen=True)
class _ModelRef:
    """How a worker loads the model: ``load_model(name, revision=revision)``.

    ``name`` None is the embedded default; ``digest`` identifies the bundle's content,
    so that a worker with a different model installed is caught, not silently used.
    """

    name: str | None
    revision: str | None
    digest: str


_BUNDLES: dict = {}
_BUNDLES_LOCK = threading.Lock()


def _bundle_digest(bundle) -> str:
    """sha256 of everything that determines a bundle's predictions."""
    config = bundle.to_config()
    config.pop("astro_spt_version", None)  # the running package's version, not the model's
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(bundle.network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for array in (bundle.pca.mean, bundle.pca.components):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _worker_bundle(ref: "_ModelRef"):
    """The bundle of ``ref``, loaded once per worker thread.

    One copy per thread rather than per process: Monte Carlo prediction sets dropout
    masks on the network's layers in place, so two threads must not share a network.
    With the recommended one thread per worker process this is one load per worker.
    """
    key = (ref, threading.get_ident())
    with _BUNDLES_LOCK:
        bundle = _BUNDLES.get(key)
    if bundle is not None:
        return bundle
    from .hub import load_model

    bundle = load_model(ref.name, revision=ref.revision)
    if _bundle_digest(bundle) != ref.digest:
        raise AstroSPTError(
            f"the model this worker loaded ({bundle.source}) differs from the one the client "
            "loaded: install the same model and astro_spt version on every worker"
        )
    with _BUNDLES_LOCK:
        # A worker keeps only the models of the current run.
        for old in [k for k in _BUNDLES if k[0] != ref]:
            del _BUNDLES[old]
        _BUNDLES[key] = bundle
    return bundle


def _model_ref(model, bundle, digest: str) -> "_ModelRef | None":
    """What workers load, or None if ``bundle`` exists only in this process's memory."""
    if bundle.revision is not None:  # a hub repository, pinned to the commit loaded here
        return _ModelRef(bundle.name, bundle.revision, digest)
    if model is None or _is_embedded(bundle):
        # by name, not path: the package may sit elsewhere on the workers
        return _ModelRef(None, None, digest)
    if bundle.source is not None and Path(bundle.source).is_dir():
        return _ModelRef(os.path.abspath(bundle.source), None, digest)
    return None


def _is_embedded(bundle) -> bool:
    from .exceptions import ModelNotFoundError
    from .hub import _embedded_model_path

    try:
        embedded = _embedded_model_path().resolve()
    except ModelNotFoundError:
        return False
    return bundle.source is not None and Path(bundle.source).resolve() == embedded


# ---------------------------------------------------------------------------------------
# One partition


@dataclass
class _Partition:
    """A task: estimate ``paths`` and write them to ``path`` (or return them)."""

    index: int
    paths: list
    model: object  # a _ModelRef, or the bundle itself when running in this process
    options: dict
    path: str | None = None
    output_format: str = "parquet"


@dataclass
class _Done:
    index: int
    n_rows: int
    seconds: float
    table: object = None


def _run_partition(task: _Partition) -> _Done:
    """Estimate one partition; runs on a worker (or in this process)."""
    started = time.perf_counter()
    model = task.model
    if isinstance(model, _ModelRef):
        model = _worker_bundle(model)
    with warnings.catch_warnings():
        # a partition's failed inputs are in its rows' messages, not worth a warning each
        warnings.simplefilter("ignore", FailedInputWarning)
        table = estimate(task.paths, model, progress=False, **task.options)
    stored = _to_storable(table)
    if task.path is None:
        return _Done(task.index, len(table), time.perf_counter() - started, stored)
    _write_table(stored, Path(task.path), task.output_format)
    return _Done(task.index, len(table), time.perf_counter() - started)


def _to_storable(table):
    """estimate()'s table without the messages' dict in meta (FITS headers hold no dicts):
    its ``message`` column holds them."""
    stored = table.copy(copy_data=False)
    stored.meta.pop("messages", None)
    return stored


def _from_storable(table):
    table.meta["messages"] = {
        source: message
        for source, message in zip(_inputs_of(table), table[_MESSAGE_COLUMN], strict=True)
        if message
    }
    return table


def _inputs_of(table) -> list[str]:
    """The input of each row of estimate()'s table: its ``path`` (``source`` holds the
    file's name only), or ``source`` in tables written before there was a ``path``."""
    if "path" not in table.colnames:
        return [str(s) for s in table["source"]]
    return [str(p) or str(s) for p, s in zip(table["path"], table["source"], strict=True)]


def _write_table(table, path: Path, output_format: str) -> None:
    """Write ``table`` to ``path`` atomically: complete or not at all."""
    astropy_format, _ = _FORMATS[output_format]
    if output_format == "fits":
        write_atomically(path, lambda tmp: _write_fits(table, tmp))
    elif output_format == "ecsv":
        # ECSV drops the leading blanks of continuation lines in multi-line strings
        # (specutils' "format not identified" message has some): store them escaped.
        escaped = table.copy(copy_data=False)
        escaped[_MESSAGE_COLUMN] = _messages_converted(table[_MESSAGE_COLUMN], json.dumps)
        write_atomically(path, lambda tmp: escaped.write(tmp, format=astropy_format))
    else:
        write_atomically(path, lambda tmp: table.write(tmp, format=astropy_format))


def _messages_converted(column, convert):
    """The ``message`` column with ``convert`` applied to each message, its description
    kept (assigning a list to a column replaces the column and its description)."""
    from astropy.table import Column

    return Column([convert(m) if m else "" for m in column], description=column.info.description)


def _write_fits(table, path: Path) -> None:
    from astropy.table import QTable

    # Table.write, not fits.table_to_hdu: only the former keeps the columns' descriptions
    # (in the header's serialized-columns comment, which astropy's reader decodes).
    bare = QTable(table, copy=False)
    bare.meta = {
        keyword: table.meta[key]
        for key, keyword in _FITS_META_KEYWORDS.items()
        if table.meta.get(key) is not None
    }
    bare.write(path, format="fits")


def _read_table(path: Path, output_format: str):
    from astropy.table import QTable

    if output_format == "parquet":
        return QTable.read(path, format="parquet")
    if output_format == "ecsv":
        table = QTable.read(path, format="ascii.ecsv")
        table[_MESSAGE_COLUMN] = _messages_converted(table[_MESSAGE_COLUMN], json.loads)
        return table
    table = QTable.read(path, format="fits", hdu=1, character_as_bytes=False)
    for column in table.itercols():
        # astropy takes display formats from TDISP, with a width ("F11.2" -> "{:11.2f}")
        # that widens the printed table; estimate()'s have none (".2f")
        fixed = re.fullmatch(r"\{:\d+(\.\d+[a-zA-Z])\}", str(column.info.format))
        if fixed:
            column.info.format = fixed.group(1)
    header = {key.upper(): value for key, value in table.meta.items()}
    table.meta = {key: header.get(keyword) for key, keyword in _FITS_META_KEYWORDS.items()}
    return table


# ---------------------------------------------------------------------------------------
# Output folder: manifest, resume, cleanup


def _partition_file(index: int, output_format: str) -> str:
    return f"part-{index:06d}.{_FORMATS[output_format][1]}"


def _fingerprint(sources, parameters: dict) -> tuple[str, str]:
    inputs = hashlib.sha256("\n".join(sources).encode()).hexdigest()
    run = hashlib.sha256(json.dumps([inputs, parameters], sort_keys=True).encode()).hexdigest()
    return inputs, run


def _write_manifest(output_dir: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1)
    write_atomically(output_dir / MANIFEST_NAME, lambda tmp: tmp.write_text(text, "utf-8"))


def _read_manifest(output_dir: Path) -> dict:
    path = output_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AstroSPTError(f"{output_dir} holds no {MANIFEST_NAME}") from None
    except (OSError, ValueError) as err:
        raise AstroSPTError(f"cannot read {path}: {err}") from err
    if manifest.get("manifest_version") != _MANIFEST_VERSION:
        raise AstroSPTError(f"{path} has an unknown layout (manifest_version)")
    return manifest


def _remove_temporaries(output_dir: Path) -> None:
    """Delete what writers killed mid-write left behind (their files never got renamed)."""
    left = temporaries(output_dir, "part-*") + temporaries(output_dir, MANIFEST_NAME)
    # and the temporary names of astro_spt before 0.1 ("part-*" or manifest, then .tmp)
    left += list(output_dir.glob(".part-*.tmp")) + list(output_dir.glob(f".{MANIFEST_NAME}.*.tmp"))
    for path in left:
        path.unlink(missing_ok=True)


def _partition_files(output_dir: Path) -> list[Path]:
    return sorted(
        p for ext in {e for _, e in _FORMATS.values()} for p in output_dir.glob(f"part-*.{ext}")
    )


def _prepare_output(output_dir: Path, manifest: dict, resume: bool) -> set[int]:
    """Check ``output_dir`` against this run; return the indices of finished partitions."""
    output_dir.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(output_dir)
    old = None
    if (output_dir / MANIFEST_NAME).exists():
        old = _read_manifest(output_dir)
    elif _partition_files(output_dir) and resume:
        raise AstroSPTError(
            f"{output_dir} holds partition files but no {MANIFEST_NAME}: pass resume=False to "
            "replace them, or use another output_dir"
        )
    if resume and old is not None and old["fingerprint"] != manifest["fingerprint"]:
        changed = [k for k, v in manifest["parameters"].items() if old["parameters"].get(k) != v]
        if old.get("inputs_sha256") != manifest["inputs_sha256"]:
            changed.insert(0, "the list of input files")
        raise AstroSPTError(
            f"{output_dir} holds the results of a different run ({', '.join(changed)} "
            "differ): use another output_dir, or pass resume=False to replace them"
        )
    if not resume:
        for path in _partition_files(output_dir):
            path.unlink()
        return set()
    finished = set()
    for entry in manifest["partitions"]:
        path = output_dir / entry["file"]
        if not path.is_file():
            continue
        try:
            _check_partition(path, entry, manifest["parameters"]["output_format"])
        except AstroSPTError as err:
            # Written atomically, so damaged later (a disk error, a copy cut short, an
            # edit): recomputing it is the only way to a complete result.
            warnings.warn(f"{err}; computing it again", DamagedPartitionWarning, stacklevel=3)
            path.unlink()
        else:
            finished.add(entry["index"])
    return finished


def _check_partition(path: Path, entry: dict, output_format: str):
    """Read a partition file and check it holds the manifest's inputs; return its table."""
    try:
        table = _read_table(path, output_format)
        sources = _inputs_of(table)
    except Exception as err:  # pyarrow, astropy.io.fits and ECSV each raise their own
        raise AstroSPTError(
            f"partition file {path} is damaged ({type(err).__name__}: {err})"
        ) from err
    expected = entry["stop"] - entry["start"]
    if len(sources) != expected or (
        sources and (sources[0], sources[-1]) != (entry["first_source"], entry["last_source"])
    ):
        raise AstroSPTError(
            f"partition file {path} holds {len(sources)} rows, not the {expected} inputs "
            f"{entry['start']}-{entry['stop'] - 1} of its manifest entry"
        )
    return table


# ---------------------------------------------------------------------------------------
# Running the partitions


def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise ImportError(
            f"running astro_spt on a Dask cluster needs dask.distributed: {_INSTALL_HINT}"
        ) from err
    return distributed


def _connect(client):
    """The client for the ``client`` argument, and what to close at the end."""
    if client is None:
        return None, []
    distributed = _import_distributed()
    if isinstance(client, distributed.Client):
        return client, []
    if isinstance(client, str) and client == "local":
        cluster = distributed.LocalCluster(
            n_workers=os.cpu_count(), threads_per_worker=1, processes=True
        )
        connected = distributed.Client(cluster, set_as_default=False)
        return connected, [connected, cluster]
    # a scheduler address or a cluster object (LocalCluster, dask-jobqueue, ...): the
    # cluster is the caller's, only the connection is ours
    connected = distributed.Client(client, set_as_default=False)
    return connected, [connected]


def _run_in_process(tasks, on_done):
    failures = {}
    for task in tasks:
        try:
            done = _run_partition(task)
        except Exception as err:  # the other partitions still run; the error is re-raised
            failures[task.index] = err
            continue
        on_done(done)
    return failures


def _run_on_cluster(client, tasks, on_done, retries):
    distributed = _import_distributed()
    run_id = uuid.uuid4().hex[:8]  # unique keys: a failed earlier run's keys may linger

    def submit(task):
        return client.submit(
            _run_partition,
            task,
            key=f"astro_spt-partition-{task.index}-{run_id}",
            retries=retries,
        )

    def window():
        # Enough tasks queued to keep every thread busy, not the whole (maybe huge) list
        # in the scheduler's memory; recomputed because adaptive clusters grow.
        return max(4, 2 * sum(client.nthreads().values()))

    pending = iter(tasks)
    futures = {}
    for task in pending:
        futures[submit(task)] = task.index
        if len(futures) >= window():
            break
    failures = {}
    completed = distributed.as_completed(list(futures), loop=client.loop)
    for future in completed:
        index = futures.pop(future)
        if future.status == "finished":
            on_done(future.result())
        elif future.status == "error":  # raised after its retries, or KilledWorker
            failures[index] = future.exception()
        else:
            failures[index] = AstroSPTError(f"the task was {future.status}")
        future.release()
        while len(futures) < window():
            task = next(pending, None)
            if task is None:
                break
            new = submit(task)
            futures[new] = task.index
            completed.add(new)
    return failures


def estimate_files(
    paths,
    model=None,
    *,
    client=None,
    partition_size: int = 1000,
    output_dir=None,
    output_format: str = "parquet",
    resume: bool = True,
    collect: bool = True,
    seed: int | None = None,
    n_samples: int | None = None,
    batch_size: int | None = None,
    device=None,
    large_uncertainty: float | None = None,
    n_jobs: int | None = None,
    retries: int = 2,
    progress: bool | None = None,
):
    """Estimate the labels of many spectrum files, in partitions, on a Dask cluster.

    The inputs are split into partitions of ``partition_size`` consecutive files, and
    `~astro_spt.estimate` runs on each, each worker loading the model once. The result
    equals ``astro_spt.estimate(paths, model, seed=seed, ...)`` row for row: same values,
    flags, order and meta. A file that cannot be read gives a NaN row flagged
    ``unreadable``, as in `~astro_spt.estimate`; the run goes on.

    Parameters
    ----------
    paths : path, folder, glob pattern or list of these
        The spectrum files (see `~astro_spt.estimate`); folders and patterns are expanded
        here, so workers must see the files under the same paths (a shared file system).
    model : `~astro_spt.bundle.EstimatorBundle`, str, path or None
        As in `~astro_spt.estimate`. Workers load it themselves from its directory, hub
        repository (pinned to the commit loaded here) or the embedded default; a bundle
        that exists only in memory works only with ``client=None`` (save it with
        ``save_pretrained`` and pass the directory).
    client : `distributed.Client`, str, cluster object or None
        Where to run: ``None`` in this process, one partition after the other; a
        ``distributed.Client``; a scheduler address (``"tcp://host:8786"``) or a cluster
        object (``LocalCluster``, a dask-jobqueue cluster), to which a client is connected
        and closed at the end; or ``"local"`` for a ``LocalCluster`` of one single-threaded
        worker process per CPU, closed at the end.
    partition_size : int
        Files per partition: the unit of scheduling, of output files and of the work
        redone after a failure.
    output_dir : path or None
        Folder for one file per partition plus ``manifest.json``; ``None`` returns the
        results to this process only. Workers must be able to write to it.
    output_format : {"parquet", "fits", "ecsv"}
        Format of the partition files (Parquet needs pyarrow). Each holds the columns of
        `~astro_spt.estimate`'s table plus ``message`` (why a row failed, or empty).
    resume : bool
        With ``output_dir``: skip the partitions whose files a previous run of the same
        inputs and parameters has written. ``False`` replaces any earlier results.
    collect : bool
        Read the results back into one table; ``False`` (with ``output_dir``) returns
        None, leaving the files (see `read_results`).
    seed, n_samples, batch_size, device, large_uncertainty
        As in `~astro_spt.estimate`; ``device`` applies on each worker (``"auto"`` picks
        a worker's GPU where it has one).
    n_jobs : int or None
        Processes that estimate each partition's files, as in `~astro_spt.estimate`:
        with ``client=None`` all cores by default (the processes and the model sent to
        them stay from one partition to the next). Dask's worker processes are daemonic
        and may not start processes, so on a cluster each worker estimates its
        partitions itself (run one single-threaded worker per core, as
        ``client="local"`` does). Results do not depend on it.
    retries : int
        How often Dask reruns a partition that raised. A partition whose worker died is
        rerun by Dask anyway (up to ``distributed.scheduler.allowed-failures`` times).
    progress : bool or None
        Show a progress bar of partitions; ``None`` shows one for more than 10 partitions
        on a terminal.

    Returns
    -------
    `~astropy.table.QTable` or None
        One row per input file, in input order, as `~astro_spt.estimate` returns. The
        Monte Carlo samples (``return_samples``) are not offered: for a survey they
        would be T times the size of the table. Redshifts come from the files.

    Raises
    ------
    AstroSPTError
        If partitions failed (after their retries). The other partitions ran to the end;
        with ``output_dir`` they are kept, and running the same call again computes only
        the failed ones. Also if ``output_dir`` holds the results of a different run.
    ImportError
        If a cluster is asked for and dask.distributed is not installed.

    Examples
    --------
    In this process, one partition after the other (no Dask needed):

    >>> from astro_spt.distributed import estimate_files
    >>> table = estimate_files("spectra/*.fits.gz", output_dir="results")  # doctest: +SKIP

    On a cluster: every worker process loads the model once and writes its partitions
    to ``results/``; run the same line again after an interruption to finish the job.

    >>> from distributed import Client, LocalCluster
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
    >>> with Client(cluster) as client:  # doctest: +SKIP
    ...     table = estimate_files("spectra/", "path/to/bundle", client=client,
    ...                            output_dir="results", seed=1)
    """
    from .bundle import LARGE_UNCERTAINTY_FRACTION, EstimatorBundle

    if output_format not in _FORMATS:
        raise ValueError(f"output_format must be one of {sorted(_FORMATS)}, got {output_format!r}")
    if partition_size < 1:
        raise ValueError(f"partition_size must be positive, got {partition_size}")
    if not collect and output_dir is None:
        raise ValueError("collect=False needs an output_dir to keep the results in")
    if client is not None:
        _import_distributed()  # before loading the model: fail fast
    if output_dir is not None and output_format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise ImportError(f"Parquet output needs pyarrow: {_INSTALL_HINT}") from err

    items = expand_inputs(paths)
    not_files = [source for source, item in items if not isinstance(item, str)]
    if not_files:
        raise TypeError(
            f"estimate_files() takes files; got in-memory spectra ({not_files[0]}, ...): "
            "use astro_spt.estimate for those"
        )
    sources = [source for source, _ in items]
    _checked_n_jobs(n_jobs)
    bundle = model if isinstance(model, EstimatorBundle) else _load(model)
    seed = 0 if seed is None else int(seed)
    n_samples = bundle.n_samples if n_samples is None else int(n_samples)
    if large_uncertainty is None:
        large_uncertainty = LARGE_UNCERTAINTY_FRACTION
    options = {
        "seed": seed,
        "n_samples": n_samples,
        "batch_size": batch_size,
        "device": device,
        "large_uncertainty": large_uncertainty,
        "n_jobs": n_jobs,
    }

    digest = _bundle_digest(bundle)
    client, to_close = _connect(client)
    try:
        if client is None:
            reference = bundle
        else:
            reference = _model_ref(model, bundle, digest)
            if reference is None:
                raise ValueError(
                    "workers cannot load a model that exists only in memory: save it with "
                    "bundle.save_pretrained(path) and pass the path"
                )
        partitions = [
            (index, start, min(start + partition_size, len(sources)))
            for index, start in enumerate(range(0, len(sources), partition_size))
        ]
        parameters = {
            "model": bundle.name or bundle.source or bundle.description,
            "model_revision": bundle.revision,
            "model_digest": digest,
            "seed": seed,
            "n_samples": n_samples,
            "large_uncertainty": float(large_uncertainty),
            "partition_size": int(partition_size),
            "output_format": output_format,
        }
        inputs_sha256, fingerprint = _fingerprint(sources, parameters)
        manifest = {
            "manifest_version": _MANIFEST_VERSION,
            "fingerprint": fingerprint,
            "inputs_sha256": inputs_sha256,
            "n_inputs": len(sources),
            "parameters": parameters,
            "complete": False,
            "partitions": [
                {
                    "index": index,
                    "file": _partition_file(index, output_format),
                    "start": start,
                    "stop": stop,
                    "first_source": sources[start],
                    "last_source": sources[stop - 1],
                    "n_rows": None,
                    "seconds": None,
                }
                for index, start, stop in partitions
            ],
        }
        out = None if output_dir is None else Path(output_dir)
        finished = set() if out is None else _prepare_output(out, manifest, resume)
        if finished:
            _log.info("resuming: %d of %d partitions done", len(finished), len(partitions))
        for index in finished:
            entry = manifest["partitions"][index]
            entry["n_rows"] = entry["stop"] - entry["start"]  # written files are complete
        if out is not None:
            _write_manifest(out, manifest)

        tasks = [
            _Partition(
                index,
                sources[start:stop],
                reference,
                options,
                None if out is None else str(out / _partition_file(index, output_format)),
                output_format,
            )
            for index, start, stop in partitions
            if index not in finished
        ]
        tables = {}
        bar = _progress_bar(progress, len(partitions), len(finished))
        last_write = time.monotonic()

        def on_done(done: _Done) -> None:
            nonlocal last_write
            entry = manifest["partitions"][done.index]
            entry["n_rows"], entry["seconds"] = done.n_rows, round(done.seconds, 3)
            if done.table is not None:
                tables[done.index] = done.table
            if bar is not None:
                bar.update()
            if out is not None and time.monotonic() - last_write > _MANIFEST_INTERVAL_S:
                _write_manifest(out, manifest)
                last_write = time.monotonic()

        try:
            if client is None:
                failures = _run_in_process(tasks, on_done)
            else:
                failures = _run_on_cluster(client, tasks, on_done, retries)
        finally:
            if bar is not None:
                bar.close()
            if out is not None:
                _remove_temporaries(out)
                manifest["complete"] = all(p["n_rows"] is not None for p in manifest["partitions"])
                _write_manifest(out, manifest)
    finally:
        for resource in to_close:
            resource.close()

    if failures:
        first = min(failures)
        entry = manifest["partitions"][first]
        again = " Run the same call again to compute only those." if out is not None else ""
        raise AstroSPTError(
            f"{len(failures)} of {len(partitions)} partitions failed (partition {first}, "
            f"inputs {entry['start']}-{entry['stop'] - 1}, {entry['first_source']}...: "
            f"{failures[first]!r}).{again}"
        ) from failures[first]
    if not collect:
        return None
    if not partitions:  # no inputs: estimate() makes the empty table with the model's columns
        return estimate([], bundle, **options)
    if out is not None:
        return read_results(out)
    return _assemble([tables[index] for index, _, _ in partitions])


def _assemble(parts):
    """One table from partition tables in input order; None when there are none."""
    if not parts:
        return None
    from astropy.table import vstack

    has_obsid = any("obsid" in part.colnames for part in parts)
    messages = {}
    for part in parts:
        _from_storable(part)
        messages.update(part.meta.pop("messages"))
        if has_obsid and "obsid" not in part.colnames:
            # estimate() adds the column when any input has an obsid; -1 marks none
            part.add_column(np.full(len(part), -1, dtype=np.int64), name="obsid", index=1)
    meta = dict(parts[0].meta)
    for part in parts:
        part.meta = {}
    table = vstack(parts, join_type="exact")
    table.meta = {**meta, "messages": messages}
    table.pprint_exclude_names = _HIDDEN_IN_PRINT  # FITS partitions do not keep it
    return table


def read_results(output_dir):
    """Assemble the partition files of an `estimate_files` run into one table.

    Every partition must be there: the rows come out in input order, each input once,
    which is checked against the manifest's hash of the input list.

    Parameters
    ----------
    output_dir : path
        The ``output_dir`` of `estimate_files`.

    Returns
    -------
    `~astropy.table.QTable`
        The table `estimate_files` (and `~astro_spt.estimate`) returns.

    Raises
    ------
    AstroSPTError
        If partitions are missing (the run has not finished: run it again) or their
        files do not hold the manifest's inputs.

    Examples
    --------
    >>> from astro_spt.distributed import read_results
    >>> table = read_results("results")  # doctest: +SKIP
    """
    output_dir = Path(output_dir)
    manifest = _read_manifest(output_dir)
    output_format = manifest["parameters"]["output_format"]
    missing = [p for p in manifest["partitions"] if not (output_dir / p["file"]).is_file()]
    if missing:
        raise AstroSPTError(
            f"{len(missing)} of {len(manifest['partitions'])} partitions of {output_dir} are "
            f"missing (first: {missing[0]['file']}, inputs {missing[0]['start']}-"
            f"{missing[0]['stop'] - 1}): run estimate_files again to finish them"
        )
    parts = []
    for entry in manifest["partitions"]:
        try:
            parts.append(_check_partition(output_dir / entry["file"], entry, output_format))
        except AstroSPTError as err:
            raise AstroSPTError(
                f"{err}: run estimate_files again to compute it anew"
            ) from err.__cause__
    table = _assemble(parts)
    if table is None:
        from astropy.table import QTable

        return QTable()
    inputs_sha256, _ = _fingerprint(_inputs_of(table), {})
    if inputs_sha256 != manifest["inputs_sha256"]:
        raise AstroSPTError(
            f"the partition files of {output_dir} do not hold the inputs of its manifest "
            "(files from another run?)"
        )
    return table


def _progress_bar(progress, total: int, initial: int):
    from ._progress import progress_bar

    return progress_bar(
        total, progress=progress, unit="partition", desc="estimating", initial=initial
    )
