"""Throughput and memory of `astro_spt.preprocess.preprocess`, and flag rates on real data.

Usage::

    python benchmarks/bench_preprocess.py            # throughput table
    python benchmarks/bench_preprocess.py --flags    # + flag fractions of all DR10 files

The throughput test replicates 64 real LAMOST DR10 spectra with fresh noise into 10,000
spectra, held in memory as `specutils.Spectrum` objects so that reading is not timed, and
preprocesses them in batches of 1, 64 and 1,024 spectra. Two kinds of input are timed:

- ``2-D``: one `~specutils.Spectrum` with 2-D flux per batch, all on one spectral axis
  (e.g. a survey's spectra already on a common grid);
- ``list``: a list of 1-D spectra, each on its own wavelength array, as read from files
  (each DR10 file has its own start wavelength; spectra are also shifted by their own
  redshift).

Batch size 1 is timed on the first 500 spectra only (it is per-call overhead bound). Peak
memory is the tracemalloc peak of one call at each batch size (numpy reports its buffers
to tracemalloc), and the process's maximum resident set size at the end. "spectra/s" is
wall-clock throughput; "per CPU s" divides by the process's CPU time instead, which is
the fairer number on a machine shared with other jobs (the numerics are single-threaded).
"""

import argparse
import csv
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

N_SPECTRA = 10_000
N_TEMPLATES = 64
BATCH_SIZES = (1, 64, 1024)
SUBSET_FOR_BATCH_1 = 500
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lamost-lrs" / "dr10"


def read_templates(n):
    from specutils import Spectrum

    import astro_spt  # noqa: F401  (registers the LAMOST reader)

    files = sorted((DATA / "spectra").glob("*.fits.gz"))[:n]
    return [Spectrum.read(path) for path in files]


def replicate(templates, n, seed=0):
    """n spectra: templates with fresh Gaussian noise at their own inverse variance."""
    from astropy.nddata import InverseVariance
    from specutils import Spectrum

    rng = np.random.default_rng(seed)
    spectra = []
    for i in range(n):
        template = templates[i % len(templates)]
        ivar = template.uncertainty.array
        sigma = np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), 0)
        flux = template.flux.value + rng.normal(0, 1, ivar.size) * sigma
        spectra.append(
            Spectrum(
                flux=flux * template.flux.unit,
                spectral_axis=template.spectral_axis,
                uncertainty=InverseVariance(ivar),
                mask=template.mask,
                meta={"redshift": template.meta["redshift"]},
            )
        )
    return spectra


def stack(spectra, batch_size):
    """2-D spectra of batch_size rows on the first spectrum's spectral axis."""
    from astropy.nddata import InverseVariance
    from specutils import Spectrum

    width = min(s.flux.size for s in spectra)
    batches = []
    for start in range(0, len(spectra), batch_size):
        part = spectra[start : start + batch_size]
        batches.append(
            Spectrum(
                flux=np.vstack([s.flux.value[:width] for s in part]) * part[0].flux.unit,
                spectral_axis=part[0].spectral_axis[:width],
                uncertainty=InverseVariance(np.vstack([s.uncertainty.array[:width] for s in part])),
                mask=np.vstack([s.mask[:width] for s in part]),
            )
        )
    return batches


def time_batches(batches, n_spectra, **kwargs):
    from astro_spt.preprocess import preprocess

    preprocess(batches[0], **kwargs)  # warm-up: imports, first-touch of memory
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        preprocess(batch, **kwargs)
    return n_spectra / (time.perf_counter() - wall), n_spectra / (time.process_time() - cpu)


def peak_memory(batch, **kwargs):
    from astro_spt.preprocess import preprocess

    tracemalloc.start()
    preprocess(batch, **kwargs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def throughput():
    print(f"Reading {N_TEMPLATES} DR10 templates and building {N_SPECTRA} spectra ...")
    spectra = replicate(read_templates(N_TEMPLATES), N_SPECTRA)
    print()
    header = (
        f"{'input':>6} {'batch':>6} {'spectra timed':>14} {'spectra/s':>10} "
        f"{'per CPU s':>10} {'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for kind in ("2-D", "list"):
        for batch_size in BATCH_SIZES:
            n = SUBSET_FOR_BATCH_1 if batch_size == 1 else N_SPECTRA
            if kind == "2-D":
                batches = stack(spectra[:n], batch_size)
                kwargs = {"redshift": 0.0}
            else:
                batches = [spectra[i : i + batch_size] for i in range(0, n, batch_size)]
                kwargs = {}
            rate, cpu_rate = time_batches(batches, n, **kwargs)
            peak = peak_memory(batches[0], **kwargs)
            print(f"{kind:>6} {batch_size:>6} {n:>14} {rate:>10.0f} {cpu_rate:>10.0f} {peak:>9.0f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmaximum resident set size of the process: {rss:.0f} MiB (includes the inputs)")


def flag_fractions():

    import astro_spt  # noqa: F401
    from astro_spt import flags
    from astro_spt.estimation import preprocess_inputs

    with open(DATA / "labels.csv") as handle:
        giant = {row["file"]: row["giant_candidate"] == "True" for row in csv.DictReader(handle)}
    files = sorted((DATA / "spectra").glob("*.fits.gz"))
    start = time.perf_counter()
    values = preprocess_inputs(files, batch_size=256).flags
    is_giant = np.array([giant[path.name] for path in files])
    elapsed = time.perf_counter() - start
    print(f"\nFlags of {len(values)} untouched DR10 spectra ({is_giant.sum()} giants), read and")
    print(f"preprocessed in {elapsed:.0f} s:\n")
    print(f"{'flag':<22} {'all':>7} {'giants':>7}")
    for definition in flags.FLAGS:
        bit = flags.has_flag(values, definition.name)
        print(f"{definition.name:<22} {bit.mean():>7.2%} {bit[is_giant].mean():>7.2%}")
    print(f"{'(none)':<22} {np.mean(values == 0):>7.2%} {np.mean(values[is_giant] == 0):>7.2%}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", action="store_true", help="also measure flag fractions")
    parser.add_argument("--no-throughput", action="store_true", help="skip the timing")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: the benchmark needs the shared LAMOST data")
    if not args.no_throughput:
        throughput()
    if args.flags:
        flag_fractions()


if __name__ == "__main__":
    main()
