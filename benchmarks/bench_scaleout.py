"""Scale-out benchmark: spectra/s of estimation in 1 process, on a Dask cluster, on a GPU.

Prints Markdown tables:

1. throughput (spectra/s) of ``astro_spt.estimate`` in one process (``n_jobs=1``: the
   work of one Dask worker, without Dask) and with its worker processes
   (``n_jobs=None``, one per core, the default: each runs the whole pipeline on its
   tasks), of
   ``astro_spt.distributed.estimate_files`` on a ``LocalCluster`` of one and of
   ``--workers`` single-threaded worker processes (Parquet partitions written to a
   temporary folder and read back), and of ``estimate`` on one GPU when CUDA is
   available; also per CPU second (the CPU time of all processes involved, which a busy
   shared machine disturbs less than wall-clock time); and whether the cluster's table
   is bit-for-bit the single-process one;
2. where a worker spends its time (one thread): reading files, preprocessing, PCA and
   the network (Monte Carlo dropout, including drawing the dropout masks, which is also
   timed on its own), on a sample;
3. the network's achieved FLOP/s against the measured fp32 matrix-multiply peak of one
   thread (and of the GPU); the work per spectrum is the shared part of the network once
   plus the MLP head T times (``SpectralTransformer.forward_flops(T)``), counted on the
   padded 64-row blocks the network runs;
4. the time the 11 million spectra of LAMOST DR9 would take, scaling the measured
   per-worker rate linearly with the number of workers, both the wall-clock rate and
   the rate per CPU second (what a worker would do with a core to itself).

The inputs are the 1,979 real LAMOST DR10 files of ``../shared/data``, repeated to
``--n-files`` and read once before timing, so that they come from the page cache:
"reading" is decompressing and parsing FITS, not disk or network I/O. The model is the
embedded default (or ``--model``); without one, an untrained network of the paper's size
stands in (the cost does not depend on the weights).

Run: ``python benchmarks/bench_scaleout.py [--n-files 4000] [--workers 2]``
"""

import argparse
import contextlib
import datetime
import itertools
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lamost-lrs" / "dr10"
DR9_SPECTRA = 11_000_000


def input_files(n):
    files = sorted(str(p) for p in (DATA / "spectra").glob("*.fits.gz"))
    return list(itertools.islice(itertools.cycle(files), n))


def paper_size_bundle(files, directory):
    """An untrained bundle of the paper's size (143 PCA components, d_model 512)."""
    from astro_spt.bundle import EstimatorBundle, LabelSpec
    from astro_spt.estimation import preprocess_inputs
    from astro_spt.nn import SpectralTransformer
    from astro_spt.pca import PCABasis
    from astro_spt.preprocess import PreprocessConfig

    config = PreprocessConfig()
    flux = preprocess_inputs(files[:400], config).flux
    flux = flux[np.all(np.isfinite(flux), axis=1)]
    network = SpectralTransformer(n_inputs=143, d_model=512)
    labels = [LabelSpec("age", "Gyr", "log10", 0.6, 0.2), LabelSpec("mass", "solMass")]
    bundle = EstimatorBundle(
        network, PCABasis.fit(flux, n_components=143), labels, preprocess_config=config, tau=4.0
    )
    return str(bundle.save_pretrained(Path(directory) / "paper-size"))


def matmul_peak(device, n=2048, repeat=5):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def stage_times(bundle, files, device, batch_size=256):
    """Seconds spent reading, preprocessing, in PCA and in the network, on ``files``.

    Also returns the seconds of drawing the dropout masks (part of the network's time,
    timed again on its own) and the number of rows the network ran.
    """
    from astro_spt.estimation.inputs import _Item, _read
    from astro_spt.estimation.rows import _padded_blocks, _project_by_block, _resolve_device
    from astro_spt.exceptions import AstroSPTWarning
    from astro_spt.nn.mc import _draw_masks
    from astro_spt.preprocess import preprocess

    device = _resolve_device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    config = bundle.preprocess_settings()
    times = dict.fromkeys(("read", "preprocess", "PCA", "network"), 0.0)
    n_valid, masks = 0, 0.0
    layers = bundle.network.stochastic_layers()
    for start in range(0, len(files), batch_size):
        t0 = time.perf_counter()
        spectra = [_read(_Item(p, path=p), False)[0] for p in files[start : start + batch_size]]
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstroSPTWarning)
            result = preprocess([s for s in spectra if s is not None], config)
        rows = np.flatnonzero(np.all(np.isfinite(result.flux), axis=1))
        t2 = time.perf_counter()
        # the gappy projection, as estimate() runs it
        blocks = [
            (_project_by_block(bundle, flux, mask), ivar)
            for _, flux, ivar, mask in _padded_blocks(result, rows)
        ]
        t3 = time.perf_counter()
        # Monte Carlo dropout, aleatoric head, noise propagation (Jacobian) and samples
        for projection, ivar in blocks:
            bundle.predict_scaled(
                projection.coefficients,
                seed=0,
                device=device,
                projection=projection,
                ivar=ivar,
                return_samples=True,
            )
        sync()
        t4 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[key] += seconds
        for _ in blocks:  # one set of T masks per network call
            t0 = time.perf_counter()
            _draw_masks(0, bundle.n_samples, layers)
            masks += time.perf_counter() - t0
        # the network runs on padded blocks: count the rows it ran
        n_valid += sum(len(ivar) for _, ivar in blocks)
    return times, masks, n_valid


def timed(function, *args, **kwargs):
    """Result, wall-clock seconds and this process's CPU seconds (all its threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - t0, time.process_time() - c0


def same_table(a, b):
    columns = [c for c in a.colnames if c not in ("source",)]
    return a.colnames == b.colnames and all(
        np.array_equal(
            getattr(a[c], "value", a[c]),
            getattr(b[c], "value", b[c]),
            equal_nan=np.asarray(getattr(a[c], "value", a[c])).dtype.kind == "f",
        )
        for c in columns
    )


def run_cluster(n_workers, files, model, partition_size, tmp):
    """(table, seconds, CPU seconds of workers and client, start-up seconds) on a LocalCluster."""
    from distributed import Client, LocalCluster

    from astro_spt.distributed import estimate_files

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    # each worker imports astro_spt and loads the model once
    estimate_files(files[: 2 * n_workers * 16], model, client=client, partition_size=16)
    startup = time.perf_counter() - t0
    cpu_before = client.run(time.process_time)
    table, seconds, cpu_client = timed(
        estimate_files,
        files,
        model,
        client=client,
        partition_size=partition_size,
        output_dir=tmp / f"results-{n_workers}",
    )
    cpu_after = client.run(time.process_time)
    client.close()
    cluster.close()
    cpu_workers = sum(cpu_after[w] - cpu_before[w] for w in cpu_after)
    return table, seconds, cpu_workers + cpu_client, startup


def hours(rate):
    return DR9_SPECTRA / rate / 3600


@contextlib.contextmanager
def one_thread():
    """PyTorch and BLAS on one thread, as in a Dask worker process (OMP_NUM_THREADS=1)."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-files", type=int, default=4000, help="inputs (DR10 files, repeated)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--partition-size", type=int, default=250)
    parser.add_argument("--sample", type=int, default=1024, help="files of the stage timing")
    parser.add_argument("--model", default=None, help="bundle directory (default: embedded)")
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()

    from astro_spt import estimation
    from astro_spt.estimation import estimate
    from astro_spt.exceptions import ModelNotFoundError
    from astro_spt.hub import load_model

    files = input_files(args.n_files)
    for path in set(files):
        Path(path).read_bytes()  # into the page cache: every run then reads the same way
    load_before = os.getloadavg()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        try:
            bundle = load_model(model)
        except ModelNotFoundError:
            model = paper_size_bundle(files, tmp)
            bundle = load_model(model)
        hp = bundle.network.hparams

        estimate(files[:64], bundle, n_jobs=1)  # warm-up: imports, first-call allocations
        # estimate() runs one torch and one BLAS thread per process itself
        single, t_single, cpu_single = timed(estimate, files, bundle, n_jobs=1)
        rows = [("1 process, n_jobs=1 (one worker's work, no Dask)", t_single, cpu_single, "")]
        n_workers = estimation.workers._n_workers(None, estimation.inputs._expand(files))
        estimate(files[: 64 * n_workers], bundle)  # the worker processes started, model sent
        workers_cpu = estimation.workers._WORKER_CPU_SECONDS[0]
        pooled, t_pool, cpu_pool = timed(estimate, files, bundle)
        cpu_pool += estimation.workers._WORKER_CPU_SECONDS[0] - workers_cpu
        same = "yes" if same_table(single, pooled) else "NO"
        name = f"1 process + {n_workers} worker processes (n_jobs=None, the default)"
        rows.append((name, t_pool, cpu_pool, same))

        clusters = {}
        if not args.skip_cluster:
            for n_workers in sorted({1, args.workers}):
                clusters[n_workers] = run_cluster(
                    n_workers, files, model, args.partition_size, Path(tmp)
                )
                on_cluster, seconds, cpu, startup = clusters[n_workers]
                name = f"LocalCluster, {n_workers} worker{'s' if n_workers > 1 else ''}"
                same = "yes" if same_table(single, on_cluster) else "NO"
                rows.append((f"{name} × 1 thread, Parquet out", seconds, cpu, same))

        gpu = torch.cuda.is_available()
        if gpu:
            estimate(files[:64], bundle, device="cuda")
            on_gpu, t_gpu, cpu_gpu = timed(estimate, files, bundle, device="cuda")
            close = all(
                np.allclose(single[c].value, on_gpu[c].value, rtol=1e-4, equal_nan=True)
                for c in ("age", "mass")
            )
            name = f"1 process + GPU ({torch.cuda.get_device_name()})"
            rows.append((name, t_gpu, cpu_gpu, f"within 1e-4: {close}"))

        sample = files[: args.sample]
        peak_machine = matmul_peak(torch.device("cpu"))
        with one_thread():
            stages, masks, n_network = stage_times(bundle, sample, "cpu")
            _, t_sample, _ = timed(estimate, sample, bundle)
            peak_core = matmul_peak(torch.device("cpu"))
        networks = [("CPU, 1 thread", stages["network"], masks, peak_core)]
        if gpu:
            gpu_stages, gpu_masks, _ = stage_times(bundle, sample, "cuda")
            peak_gpu = matmul_peak(torch.device("cuda"), n=8192)
            networks.append(("GPU", gpu_stages["network"], gpu_masks, peak_gpu))
    load_after = os.getloadavg()

    n = len(files)
    print(
        f"# Scale-out benchmark, {datetime.date.today()}: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{'GPU ' + torch.cuda.get_device_name() if gpu else 'no GPU'}; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print()
    print(
        f"Model: {bundle.name} (d_model {hp['d_model']}, {hp['n_blocks']} blocks, "
        f"{hp['n_inputs']} PCA components, T = {bundle.n_samples} MC samples); {n:,} inputs "
        f"(DR10 files repeated), partitions of {args.partition_size}."
    )
    print()
    print("| run | seconds | spectra/s | spectra per CPU s | identical to 1 process |")
    print("|---|---|---|---|---|")
    for name, seconds, cpu, same in rows:
        print(f"| {name} | {seconds:.1f} | {n / seconds:,.1f} | {n / cpu:,.1f} | {same} |")
    print()
    if clusters:
        startup = max(c[3] for c in clusters.values())
        print(f"Cluster start-up and model loading on the workers: up to {startup:.1f} s (once).")
        if args.workers > 1:
            wall = clusters[1][1] / (args.workers * clusters[args.workers][1])
            cpu = clusters[1][2] / clusters[args.workers][2]
            print(
                f"{args.workers} workers against {args.workers} × 1 worker: {wall:.0%} "
                f"parallel efficiency in wall-clock time, {cpu:.0%} in CPU time per spectrum."
            )
        print()
    total = sum(stages.values())
    print(
        f"Where a worker spends its time (1 thread, {len(sample):,} files, {total:.1f} s; "
        f"estimate() on the same files: {t_sample:.1f} s):"
    )
    print()
    print("| stage | seconds | share | ms per spectrum |")
    print("|---|---|---|---|")
    for name, seconds in [*stages.items(), ("network: of which dropout masks", masks)]:
        print(
            f"| {name} | {seconds:.2f} | {seconds / total:.0%} | "
            f"{1e3 * seconds / len(sample):.2f} |"
        )
    print()
    flops = bundle.network.forward_flops(bundle.n_samples)
    print(
        f"Network work: {flops / 1e6:.1f} MFLOP per spectrum (shared part once, head "
        f"{bundle.n_samples} times). Matrix-multiply peak (fp32, 2048²): "
        f"{peak_machine / 1e9:.0f} GFLOP/s on {threads} threads, {peak_core / 1e9:.0f} on 1."
    )
    print()
    print("| network (MC dropout) | GFLOP/s | of peak | without masks: GFLOP/s | of peak |")
    print("|---|---|---|---|---|")
    for name, seconds, mask_seconds, peak in networks:
        achieved = flops * n_network / seconds
        compute = flops * n_network / max(seconds - mask_seconds, 1e-9)
        print(
            f"| {name} | {achieved / 1e9:.2f} | {achieved / peak:.1%} | "
            f"{compute / 1e9:.2f} | {compute / peak:.1%} |"
        )
    print()
    print(
        f"Extrapolation to the {DR9_SPECTRA / 1e6:.0f} million spectra of LAMOST DR9, from "
        "the wall-clock rate and from the rate per CPU second (each worker on a core of "
        "its own):"
    )
    print()
    print("| setup | spectra/s | hours | spectra/s, dedicated cores | hours |")
    print("|---|---|---|---|---|")
    for name, seconds, cpu_seconds in [
        ("1 process, n_jobs=1", t_single, cpu_single),
        (f"1 process + {n_workers} workers", t_pool, cpu_pool),
    ]:
        wall, cpu = n / seconds, n / cpu_seconds
        print(
            f"| {name} | {wall:,.0f} | {hours(wall):,.1f} | "
            f"{cpu:,.0f} per CPU s | {hours(cpu):,.1f} |"
        )
    if clusters:
        _, t_cluster, cpu_cluster, _ = clusters[args.workers]
        for workers in (args.workers, 16, 128, 1024):
            measured = " (measured)" if workers == args.workers else ""
            wall = workers * n / t_cluster / args.workers
            cpu = workers * n / cpu_cluster
            print(
                f"| {workers} workers{measured} | {wall:,.0f} | {hours(wall):,.2f} | "
                f"{cpu:,.0f} | {hours(cpu):,.2f} |"
            )
    if gpu:
        print(f"| 1 process + GPU | {n / t_gpu:,.0f} | {hours(n / t_gpu):,.1f} | | |")


if __name__ == "__main__":
    main()
