"""`estimate` over many files on all cores: a pool of worker processes, each running the
whole pipeline (read, preprocess, network, row flags) on a task of files with the model
shipped to it once; the calling process only merges. Results are bit-identical to one
process's.
"""

import atexit
import contextlib
import os
import sys
import threading
import warnings

import numpy as np

from ..exceptions import (
    AstroSPTWarning,
)
from .batches import _ROW_FIELDS, _warn_unknown_medium, iter_preprocessed
from .rows import _NETWORK_CHUNK, _estimate_rows, _Estimated

# Reading and preprocessing are GIL-bound Python and numpy, the network one thread a
# process: estimate() spreads the whole pipeline over processes, this process merges.
# Fewer files than this per worker do not pay a worker's start-up (measured: ~0.3 s CPU
# a worker from a preloaded forkserver, ~0.1 s to load the model, ~5 ms CPU a file).
_MIN_FILES_PER_WORKER = 64
# Files a worker estimates per task, at most: the rows the network runs at once
# (``_NETWORK_CHUNK * _NETWORK_BLOCKS``). Fewer inputs are split evenly (`_task_sizes`),
# so that every worker stays busy to the end.
_WORKER_TASK = 512
# CPU seconds the workers spent on tasks, for benchmarks: they are no children of this
# process (the forkserver's), so resource.RUSAGE_CHILDREN does not count them.
_WORKER_CPU_SECONDS = [0.0]
# The largest peak resident memory (MB) a worker reported, for the same reason.
_WORKER_PEAK_RSS_MB = [0.0]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _checked_n_jobs(n_jobs):
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or n_jobs < 1
    ):
        raise ValueError(f"n_jobs must be None (all cores) or a positive integer, got {n_jobs!r}")
    return n_jobs


def _n_workers(n_jobs, items) -> int:
    """Worker processes for reading and preprocessing: 0 means this process does it."""
    n_jobs = _usable_cpus() if _checked_n_jobs(n_jobs) is None else int(n_jobs)
    if n_jobs == 1 or any(item.spectrum is not None for item in items):
        # in-memory spectra: pickling them to a worker costs what preprocessing them does
        return 0
    import multiprocessing

    if multiprocessing.current_process().daemon:
        # a daemonic process (a Dask worker's, a pool's) may not start processes: the
        # processes around it already share the cores
        return 0
    n_files = sum(item.path is not None for item in items)
    return int(min(n_jobs, n_files // _MIN_FILES_PER_WORKER))


def _one_thread_each():
    """One BLAS and one torch thread in this process, restored afterwards.

    Processes, not threads, share the cores: measured on 2 shared cores, OpenBLAS's two
    threads made the batched 143×143 inverses of the gappy PCA 20× slower in CPU time,
    and torch's two threads the network 2×; the results are the same bit for bit.
    """
    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    else:
        stack.enter_context(threadpool_limits(1))
    torch = sys.modules.get("torch")  # not imported for it
    if torch is not None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        stack.callback(torch.set_num_threads, threads)
    return stack


def _task_sizes(n_items, n_workers):
    """Sizes of the tasks that ``n_items`` files are split into: as equal as can be, at most
    ``_WORKER_TASK`` each, and a multiple of ``n_workers`` tasks, so that the workers
    finish together, unless that would leave tasks of less than a network block
    (``_NETWORK_CHUNK`` rows, which a smaller task would pad and run all the same)."""
    n_tasks = -(-n_items // _WORKER_TASK)
    n_tasks = -(-n_tasks // n_workers) * n_workers
    n_tasks = min(n_tasks, -(-n_items // _NETWORK_CHUNK))
    base, extra = divmod(n_items, n_tasks)
    return [base + 1] * extra + [base] * (n_tasks - extra)


def _estimated_batches(
    items, config, n_jobs, bundle, settings, device, done, *, batch_size, **options
):
    """`estimate`'s batches as `_Estimated` parts, with one thread per process.

    With worker processes (``n_jobs`` and the number of files call for them) and the
    network on the CPU, the workers run the whole pipeline (read, preprocess, network,
    flags), each on tasks of up to ``_WORKER_TASK`` files, the model sent to each worker once;
    this process only merges. On another device the workers read and preprocess, this
    process runs the network. Either way the network sees the blocks of
    ``_NETWORK_CHUNK`` rows that make a row's result independent of its batch, so the
    results are the same bit for bit.
    """
    n_workers = _n_workers(n_jobs, items)
    with _one_thread_each():
        if n_workers == 0:
            for batch in iter_preprocessed(items, config, batch_size=batch_size, **options):
                yield _estimate_rows(bundle, items, batch, settings, device, done)
            return
        shipped = _shipped(bundle) if device.type == "cpu" else None
        try:
            network = None if shipped is None else (*shipped, settings)
            for first, part in _batches_in_workers(
                items, config, n_workers, batch_size, options, network
            ):
                if network is None:  # a preprocessed batch: the network runs here
                    yield _estimate_rows(bundle, items, part, settings, device, done)
                elif isinstance(part, _Estimated):
                    done(len(part.rows))
                    yield part.shifted(first)
                else:  # the workers failed: this process goes on with the rest
                    yield _estimate_rows(bundle, items, part, settings, device, done)
        finally:
            if shipped is not None:
                _unship(shipped[0])


def _batches_in_workers(items, config, n_workers, batch_size, options, network=None):
    """Yields ``(first, part)``.

    Without ``network``: each batch of ``batch_size`` items read and preprocessed by the
    workers, merged into one batch of `iter_preprocessed` (``first`` 0: its rows count
    from the first item). With ``network`` (``(key, path, settings)``, see `_shipped`):
    each task's `_Estimated`, its rows counted from ``first``. Should the workers fail,
    the rest is read here and comes as batches of `iter_preprocessed` (``first`` 0).
    """
    import collections
    import concurrent.futures
    import itertools

    n = len(items)
    per_item = {}
    for name in ("redshift", "air"):
        value = options.get(name)
        if value is not None:
            try:
                per_item[name] = np.broadcast_to(value, (n,))
            except ValueError:  # iter_preprocessed says what is wrong with it
                for batch in iter_preprocessed(items, config, batch_size=batch_size, **options):
                    yield 0, batch
                return
    executor = _worker_pool(n_workers)

    def submit(start):
        tasks = []
        first = start
        for size in _task_sizes(min(start + batch_size, n) - start, n_workers):
            last = first + size
            task = {**options, **{k: v[first:last] for k, v in per_item.items()}}
            future = executor.submit(_worker_batch, items[first:last], config, task, network)
            tasks.append((first, last, future))
            first = last
        return tasks

    # Two batches ahead: the workers work while this process merges (or runs the
    # network), and at most three batches are in memory whatever the number of files.
    starts = iter(range(0, n, batch_size))
    unknown_medium = []
    pending = collections.deque()
    done = 0  # the rows before it are yielded
    try:
        pending.extend(submit(start) for start in itertools.islice(starts, 2))
        while pending:
            tasks = pending.popleft()
            start = next(starts, None)
            if start is not None:
                pending.append(submit(start))
            parts = []
            for first, last, future in tasks:
                part, caught, unknown, seconds, peak_mb = future.result()
                _WORKER_CPU_SECONDS[0] += seconds
                _WORKER_PEAK_RSS_MB[0] = max(_WORKER_PEAK_RSS_MB[0], peak_mb)
                unknown_medium.extend(unknown)
                for message, category, filename, lineno in caught:
                    warnings.warn_explicit(message, category, filename, lineno)
                if network is not None:
                    yield first, part
                    done = last
                else:
                    parts.append((first, *part))
            if network is None:
                yield 0, _merged(parts)
                done = min(done + batch_size, n)
    except concurrent.futures.process.BrokenProcessPool as err:
        with _POOL_LOCK:
            _POOL.clear()
        first = done
        warnings.warn(
            f"estimate() continues in one process: its worker processes failed ({err}). A "
            "script that calls estimate() on many files must do so under "
            "'if __name__ == \"__main__\":', as any script that starts processes",
            AstroSPTWarning,
            stacklevel=4,
        )
        rest = {**options, **{k: v[first:] for k, v in per_item.items()}}
        for rows, result, obsids, messages in iter_preprocessed(
            items[first:], config, batch_size=batch_size, unknown_medium=unknown_medium, **rest
        ):
            shift = (
                {k + first: v for k, v in obsids.items()},
                {k + first: v for k, v in messages.items()},
            )
            yield 0, (rows + first, result, *shift)
    finally:
        # the pool stays for later calls; what this call will not read is dropped
        for tasks in pending:
            for *_, future in tasks:
                future.cancel()
    _warn_unknown_medium(unknown_medium, n, stacklevel=5)


# The worker pool, kept for later calls of this process: a worker's start (a fork of the
# server, its first imports and caches) costs ~1 s of wall clock and ~0.1 s of CPU, as
# much as reading 30 files. "key" is (workers, the pid that made it): a forked child
# makes its own.
_POOL = {}
_POOL_LOCK = threading.Lock()  # estimate() called from several threads shares one pool


def _pool_is_ours() -> bool:
    return "key" in _POOL and _POOL["key"][1] == os.getpid()


def _worker_pool(n_workers):
    import concurrent.futures
    import multiprocessing

    with _POOL_LOCK:
        if _POOL.get("key") != (n_workers, os.getpid()):
            if _pool_is_ours():
                # its workers exit once the tasks given to it (by another thread?) are done
                _POOL["executor"].shutdown(wait=False)
            if "forkserver" in multiprocessing.get_all_start_methods():
                # forked from one server that imported the reader, preprocessing and the
                # network's modules once
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(
                    [
                        "astro_spt.estimation",
                        "astro_spt.preprocess",
                        "astro_spt.io.reading",
                        "torch",
                        "astro_spt.bundle",
                    ]
                )
            else:  # pragma: no cover - macOS, Windows
                context = multiprocessing.get_context("spawn")
            _POOL["executor"] = concurrent.futures.ProcessPoolExecutor(
                n_workers, mp_context=context
            )
            _POOL["key"] = (n_workers, os.getpid())
        return _POOL["executor"]


# Models sent to the workers: each pickled once into a private folder of this process,
# under the hash of its pickle (a model changed between calls gets a new file), and
# loaded by each worker once (`_worker_model`). "dir" is (the folder, the pid that made
# it); "users" counts the calls using each file: a file no call uses is deleted when
# another call ends, so that one file or so stays for the next call. "last" is the model
# sent last, as (`_model_parts`' pickle, copies of its arrays, key): a call with the
# same model finds it there without pickling and hashing it again (for the default
# model, ~0.08 s of this process's CPU a call while the workers wait for it).
_SHIPPED = {"users": {}}
# Arrays of a model smaller than this (bytes) stay in `_model_parts`' pickle.
_COMPARED_ARRAY_BYTES = 4096


def _model_parts(bundle):
    """The pickle of ``bundle`` without its larger arrays (torch tensors, numeric numpy
    arrays), and those arrays, in the order the pickle refers to them."""
    import io
    import pickle

    import torch

    arrays = []

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, torch.Tensor) or (
                isinstance(obj, np.ndarray)
                and obj.dtype.kind in "biufc"
                and obj.nbytes >= _COMPARED_ARRAY_BYTES
            ):
                arrays.append(obj)
                return len(arrays) - 1
            return None

    file = io.BytesIO()
    Pickler(file, protocol=pickle.HIGHEST_PROTOCOL).dump(bundle)
    return file.getvalue(), arrays


def _copies(arrays):
    import torch

    return [
        a.detach().to("cpu", copy=True) if isinstance(a, torch.Tensor) else a.copy() for a in arrays
    ]


def _same_arrays(arrays, copies) -> bool:
    """Whether ``arrays`` hold what ``copies`` (`_copies`) do, bit for bit (a NaN, not
    being equal to itself, makes them differ: the model is then sent again)."""
    import torch

    def same(array, copy):
        if isinstance(array, torch.Tensor):
            return (
                isinstance(copy, torch.Tensor)
                and array.device.type == "cpu"
                and (array.dtype, array.shape) == (copy.dtype, copy.shape)
                and torch.equal(array.detach(), copy)
            )
        return (
            isinstance(copy, np.ndarray)
            and array.dtype == copy.dtype
            and np.array_equal(array, copy)
        )

    return len(arrays) == len(copies) and all(map(same, arrays, copies))


def _shipped(bundle):
    """``(key, path)`` of ``bundle`` pickled for the workers; None if it cannot be
    pickled (its network then runs in this process)."""
    import hashlib
    import pickle
    import tempfile

    try:
        structure, arrays = _model_parts(bundle)
    except Exception:
        return None
    with _POOL_LOCK:
        if _SHIPPED.get("dir", (None, None))[1] != os.getpid():
            folder = tempfile.mkdtemp(prefix=_MODELS_PREFIX)  # readable by us only
            _SHIPPED.clear()
            _SHIPPED.update({"dir": (folder, os.getpid()), "users": {}})
            _SHIPPED["lock"] = _hold_lock(folder)
            _remove_abandoned(folder)
        folder = _SHIPPED["dir"][0]
        last = _SHIPPED.get("last")
        key = None
        if last is not None and last[0] == structure and _same_arrays(arrays, last[1]):
            key = last[2]
        if key is None or not os.path.exists(os.path.join(folder, f"{key}.pickle")):
            try:
                data = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                return None
            key = hashlib.sha256(data).hexdigest()[:32]
            path = os.path.join(folder, f"{key}.pickle")
            if not os.path.exists(path):
                with tempfile.NamedTemporaryFile(dir=folder, delete=False) as file:
                    file.write(data)
                os.replace(file.name, path)
            _SHIPPED["last"] = (structure, _copies(arrays), key)
        _SHIPPED["users"][key] = _SHIPPED["users"].get(key, 0) + 1
    return key, os.path.join(folder, f"{key}.pickle")


_MODELS_PREFIX = "astro_spt-models-"
# A folder of models without a lock file (being made, or by an older version) is left
# alone until it is this old (seconds).
_UNLOCKED_FOLDER_AGE_S = 24 * 3600


def _hold_lock(folder):
    """An exclusive lock on ``folder``'s lock file, held while this process lives (the
    system releases it when the process ends, killed or not); None where there are no
    file locks (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    # locked before it gets its name: a process that finds ".lock" finds it held
    lock = open(os.path.join(folder, ".lock-being-made"), "w")  # held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(lock.name, os.path.join(folder, ".lock"))
    except OSError:  # a file system without locks: the folder counts as lockless
        lock.close()
        return None
    return lock


def _is_abandoned(folder) -> bool:
    """Whether a folder of models was left by a process that is gone: no process holds
    its lock, or, without a lock file, it is older than ``_UNLOCKED_FOLDER_AGE_S``."""
    import fcntl
    import time

    try:
        lock = open(os.path.join(folder, ".lock"))
    except FileNotFoundError:
        return time.time() - os.stat(folder).st_mtime > _UNLOCKED_FOLDER_AGE_S
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process is alive
    return True


def _remove_abandoned(ours):
    """Delete the folders of models that processes killed before their clean-up at exit
    left behind (each holds a pickle of its model, 25 MB for the default one): those of
    this user whose lock no process holds."""
    import glob
    import shutil

    if os.name != "posix":  # pragma: no cover - no fcntl locks (Windows)
        return
    parent = os.path.dirname(ours)
    for folder in glob.glob(os.path.join(glob.escape(parent), _MODELS_PREFIX + "*")):
        with contextlib.suppress(OSError):
            if folder != ours and os.stat(folder).st_uid == os.getuid() and _is_abandoned(folder):
                shutil.rmtree(folder, ignore_errors=True)


def _unship(key):
    """The call that used ``key``'s file is over: delete the files no call uses, but
    this one (the next call likely sends the same model)."""
    with _POOL_LOCK:
        if _SHIPPED.get("dir", (None, None))[1] != os.getpid():
            return
        users = _SHIPPED["users"]
        users[key] -= 1
        for other in [k for k, count in users.items() if count == 0 and k != key]:
            del users[other]
            with contextlib.suppress(OSError):
                os.remove(os.path.join(_SHIPPED["dir"][0], f"{other}.pickle"))


@atexit.register
def _close_pool():
    """Shut the pool down before the interpreter tears its modules down (else its clean-up
    at exit prints "Exception ignored" tracebacks); delete the models sent to it."""
    import shutil

    if _pool_is_ours():
        _POOL["executor"].shutdown(wait=True, cancel_futures=True)
    _POOL.clear()
    folder, pid = _SHIPPED.get("dir", (None, None))
    if pid == os.getpid():
        shutil.rmtree(folder, ignore_errors=True)
        if _SHIPPED.get("lock") is not None:
            _SHIPPED["lock"].close()
    _SHIPPED.clear()
    _SHIPPED["users"] = {}


# In a worker process: the models it was sent, by key, the last few (a pool shared by
# threads that estimate with different models).
_WORKER_MODELS = {}
_WORKER_MODELS_KEPT = 2


def _worker_model(key, path):
    """The model sent as ``key`` (a pickle this package's process wrote, `_shipped`),
    loaded once per worker."""
    import pickle

    bundle = _WORKER_MODELS.pop(key, None)
    if bundle is None:
        with open(path, "rb") as file:
            bundle = pickle.load(file)
    _WORKER_MODELS[key] = bundle  # the most recent last
    while len(_WORKER_MODELS) > _WORKER_MODELS_KEPT:
        del _WORKER_MODELS[next(iter(_WORKER_MODELS))]
    return bundle


def _worker_batch(items, config, options, network=None):
    """A worker's task: `iter_preprocessed` of a few items (with ``network``, ``(key,
    path, settings)``, their `_Estimated` by the model sent as ``key``), the warnings it
    gave, its CPU seconds and its process's peak resident memory so far (MB)."""
    import time

    started = time.process_time()
    unknown_medium = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the model first: unpickling it imports torch, whose threads are limited next
        bundle = None if network is None else _worker_model(*network[:2])
        with _one_thread_each():
            (batch,) = iter_preprocessed(
                items, config, batch_size=len(items), unknown_medium=unknown_medium, **options
            )
            if bundle is not None:
                import torch

                batch = _estimate_rows(bundle, items, batch, network[2], torch.device("cpu"))
    caught = [(w.message, w.category, w.filename, w.lineno) for w in caught]
    return batch, caught, unknown_medium, time.process_time() - started, _peak_rss_mb()


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB (0 where the OS does not say).

    On Linux the high-water mark of this program's own memory (``VmHWM``): the
    ``ru_maxrss`` of `resource.getrusage` keeps that of the process it was forked from
    across ``exec``, so a small program started by a large one reports the large one's.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes / KiB


def _merged(parts):
    """One batch of `iter_preprocessed` from consecutive parts (rows counted from each
    part's ``first`` row)."""
    import dataclasses

    rows = np.concatenate([first + rows for first, rows, *_ in parts]).astype(int)
    obsids = {first + k: v for first, _, _, part, _ in parts for k, v in part.items()}
    messages = {first + k: v for first, *_, part in parts for k, v in part.items()}
    results = [result for _, _, result, _, _ in parts if result is not None]
    if not results:
        return rows, None, obsids, messages
    merged = dataclasses.replace(
        results[0],
        **{name: np.concatenate([getattr(r, name) for r in results]) for name in _ROW_FIELDS},
        messages={},
    )
    offset = 0
    for result in results:
        merged.messages.update({offset + k: v for k, v in result.messages.items()})
        offset += len(result)
    return rows, merged, obsids, messages
