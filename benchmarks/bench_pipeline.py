"""Per-stage cost of the estimation pipeline on real LAMOST DR10 files (issue 17).

Usage::

    python benchmarks/bench_pipeline.py                 # 200 files, every stage
    python benchmarks/bench_pipeline.py --files 50 --repeats 3 --no-cli

Prints one table row per measurement. Times are CPU seconds of this process
(`time.process_time`), the fair measure on a machine shared with other jobs, best of
``--repeats`` runs; the command-line rows are wall-clock times of fresh interpreters
(best of ``--repeats``), since start-up is what a user waits for.

Stages, one function each (add a function and list it in `STAGES` to add one):

- ``reading``: ms of CPU per file through the astropy.io.fits path
  (``read_lamost_lrs(path, memmap=False)``, the reader before the fast path), the fast
  path as `astro_spt.estimate` uses it (`astro_spt.io.read_spectrum`: bytes, gunzip,
  `numpy.frombuffer`, a `specutils.Spectrum`), and the arrays alone, without the
  Spectrum and its header object (the floor the Spectrum's construction sits on).
- ``preprocessing``: ms of CPU per spectrum of `astro_spt.preprocess.preprocess` on the
  spectra read, in batches of 256.
- ``network``: Monte Carlo dropout (`astro_spt.nn.mc_predict`, T = 100, one torch
  thread) on blocks of the rows `astro_spt.estimate` runs, for the default model and a
  network of the paper's size (`astro_spt.nn.SpectralTransformer` defaults): ms of CPU
  per spectrum and the fraction of the fp32 matrix-multiply peak, the best rate of one
  thread over the products the two networks compute (`bench_nn.gemm_shapes`); work
  counted by `~astro_spt.nn.SpectralTransformer.forward_flops` (issue 17's target: at
  least 60 %).
- ``end to end``: `astro_spt.estimate` of the files with the default model (T = 100),
  in one process and with a worker per core: spectra per CPU second (all processes) and
  per wall-clock second, the speed-up, and the peak memory of a fresh process for a
  quarter of the files and for all of them (it must not grow with their number).
- ``cli``: ``astro-spt estimate ONE_FILE`` against ``python -c "import torch"``, and
  their ratio (issue 17's target: at most 2.5).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lamost-lrs" / "dr10"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data"


def _best_cpu_ms(function, items, repeats):
    """Best-of-``repeats`` CPU milliseconds per item of ``function(item)`` over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            function(item)
        best = min(best, (time.process_time() - start) / len(items) * 1e3)
    return best


def bench_reading(files, repeats):
    from astro_spt.io import read_lamost_lrs, read_spectrum
    from astro_spt.io.lamost import _load_bytes, _read_source

    def arrays_only(path):
        return _load_bytes(_read_source(path, str(path)), str(path))[0]

    read_spectrum(files[0])  # imports outside the timing
    old = _best_cpu_ms(lambda p: read_lamost_lrs(p, memmap=False), files, repeats)
    fast = _best_cpu_ms(read_spectrum, files, repeats)
    bare = _best_cpu_ms(arrays_only, files, repeats)
    return [
        ("reading", "astropy.io.fits path", f"{old:.2f}", "ms CPU / file"),
        ("reading", "fast path (read_spectrum)", f"{fast:.2f}", "ms CPU / file"),
        ("reading", "fast path, arrays only", f"{bare:.2f}", "ms CPU / file"),
        ("reading", "speed-up of read_spectrum", f"{old / fast:.1f}", "x"),
    ]


def bench_preprocessing(files, repeats):
    from astro_spt.io import read_spectrum
    from astro_spt.preprocess import preprocess

    spectra = [read_spectrum(path) for path in files]
    batches = [spectra[i : i + 256] for i in range(0, len(spectra), 256)]
    preprocess(spectra[:2])  # warm-up
    per_batch = _best_cpu_ms(preprocess, batches, repeats)
    per_spectrum = per_batch * len(batches) / len(spectra)
    return [
        (
            "preprocessing",
            "preprocess(), batches of 256",
            f"{per_spectrum:.2f}",
            "ms CPU / spectrum",
        )
    ]


def _best_wall_s(command, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def bench_cli(files, repeats):
    example = sorted(EXAMPLE.glob("*.fits*"))[0]
    cli = shutil.which("astro-spt")
    if cli is None:
        return [("cli", "astro-spt not on PATH", "-", "")]
    torch = _best_wall_s([sys.executable, "-c", "import torch"], repeats)
    with tempfile.TemporaryDirectory() as tmp:
        output = str(Path(tmp) / "out.ecsv")
        command = [cli, "estimate", str(example), "-o", output, "--overwrite", "--no-progress"]
        estimate = _best_wall_s(command, repeats)
    return [
        ("cli", 'python -c "import torch"', f"{torch:.2f}", "s wall"),
        ("cli", f"astro-spt estimate {example.name}", f"{estimate:.2f}", "s wall"),
        ("cli", "ratio to import torch (target <= 2.5)", f"{estimate / torch:.2f}", "x"),
    ]


def bench_network(files, repeats, n_samples=100):
    import torch
    from bench_nn import best_time, gemm_peak, gemm_shapes

    import astro_spt
    from astro_spt.estimation import _NETWORK_CHUNK
    from astro_spt.nn import SpectralTransformer, mc_predict

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        networks = {
            "default model": astro_spt.load_model().network.eval(),
            "paper-size network": SpectralTransformer().eval(),
        }
        x = torch.randn(_NETWORK_CHUNK, networks["paper-size network"].hparams["n_inputs"])
        shapes = sorted(
            {s for net in networks.values() for s in gemm_shapes(net, len(x), n_samples)}
        )

        def peak():
            return gemm_peak(shapes, "cpu", lambda: None, repeats, time.process_time)

        best, shape = peak()
        rows = []
        for name, net in networks.items():
            seconds = best_time(
                lambda net=net: mc_predict(net, x, n_samples, seed=0),
                repeats,
                lambda: None,
                time.process_time,
            )
            rate = net.forward_flops(n_samples) * len(x) / seconds
            rows.append((name, seconds, rate))
        best, shape = max((best, shape), peak())  # the best of two, around the MC timings
    finally:
        torch.set_num_threads(threads)
    result = [
        (
            "network",
            f"fp32 GEMM peak, 1 thread ({'x'.join(map(str, shape))})",
            f"{best / 1e9:.1f}",
            "GFLOP/s",
        )
    ]
    for name, seconds, rate in rows:
        label = f"MC T={n_samples}, {name}, blocks of {len(x)}"
        result += [
            ("network", label, f"{seconds / len(x) * 1e3:.2f}", "ms CPU / spectrum"),
            ("network", "  fraction of GEMM peak (target >= 60 %)", f"{rate / best:.0%}", ""),
        ]
    return result


def _estimate_cpu(files, n_jobs):
    """CPU seconds of this process and of the workers, and wall seconds, of one run."""
    import astro_spt
    from astro_spt import estimation

    workers = estimation._WORKER_CPU_SECONDS[0]
    cpu, wall = time.process_time(), time.perf_counter()
    table = astro_spt.estimate(files, n_jobs=n_jobs, progress=False)
    cpu = time.process_time() - cpu + estimation._WORKER_CPU_SECONDS[0] - workers
    assert len(table) == len(files)
    return cpu, time.perf_counter() - wall


def _peak_rss_mb(files):
    """Peak resident memory (MB) of a fresh process estimating ``files``."""
    code = (
        "import resource, sys, astro_spt\n"
        "astro_spt.estimate(sys.argv[1:], progress=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, files)], check=True, capture_output=True
    )
    return float(out.stdout.split()[-1])


def bench_end_to_end(files, repeats):
    """`astro_spt.estimate` on the files with the default model (T = 100): spectra per
    CPU second (this process and its workers) and per second of wall clock, in one
    process (``n_jobs=1``) and on every core (``n_jobs=None``); peak memory of a fresh
    process for a quarter of the files and for all of them."""
    from astro_spt.estimation import _usable_cpus

    files = [str(path) for path in files]
    _estimate_cpu(files[:8], None)  # model loaded, imports done, outside the timings
    one = min((_estimate_cpu(files, 1) for _ in range(repeats)), key=lambda r: r[1])
    _estimate_cpu(files, None)  # the worker processes' server started
    every = min((_estimate_cpu(files, None) for _ in range(repeats)), key=lambda r: r[1])
    cores = _usable_cpus()
    n = len(files)
    rows = [
        ("end to end", "n_jobs=1 (target >= 120)", f"{n / one[0]:.0f}", "spectra / CPU s"),
        ("end to end", "n_jobs=1", f"{n / one[1]:.0f}", "spectra / s wall"),
        ("end to end", f"n_jobs=None ({cores} cores)", f"{n / every[0]:.0f}", "spectra / CPU s"),
        ("end to end", f"n_jobs=None ({cores} cores)", f"{n / every[1]:.0f}", "spectra / s wall"),
        (
            "end to end",
            "speed-up on all cores (target >= 1.8 on 2)",
            f"{one[1] / every[1]:.2f}",
            "x",
        ),
    ]
    quarter = max(n // 4, 1)
    rows += [
        ("end to end", f"peak memory, {k} files", f"{_peak_rss_mb(files[:k]):.0f}", "MB")
        for k in (quarter, n)
    ]
    return rows


STAGES = {
    "reading": bench_reading,
    "preprocessing": bench_preprocessing,
    "network": bench_network,
    "end to end": bench_end_to_end,
    "cli": bench_cli,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="DR10 files to read")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--no-cli", action="store_true", help="skip the command-line rows")
    parser.add_argument(
        "--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="stages to run"
    )
    args = parser.parse_args(argv)
    files = sorted((DATA / "spectra").glob("*.fits.gz"))[: args.files]
    if not files:
        sys.exit(f"no DR10 files under {DATA}")
    rows = []
    for name, stage in STAGES.items():
        if name not in args.stages or (name == "cli" and args.no_cli):
            continue
        rows += stage(files, args.repeats)
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    print(f"{len(files)} DR10 files, best of {args.repeats}")
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
