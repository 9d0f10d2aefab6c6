"""Build the mock LAMOST × APOKASC-2 sample from ``../shared/data`` in one command.

Fits the LAMOST spectrum emulator to the real DR10 + DR1 spectra with LASP labels (a
seeded fifth of the giants held out), prints its residuals on the held-out and the
training giants, and writes into the output folder:

- ``lamost_emulator.npz``: the emulator (`astro_spt.mock.LAMOSTEmulator.load`);
- ``emulator_residuals.ecsv``: residual statistics of every real spectrum;
- ``mock_catalog.ecsv``: APOKASC-2 ∩ Miglio et al. 2021 with the mock labels and the
  file name of each mock spectrum;
- ``spectra/mock-kic<KIC>.fits.gz``: the mock spectra (LAMOST DR10 ``COADD`` layout).

Then it reads a few mock and real giant spectra back with ``Spectrum.read`` and runs the
package's preprocessing on them, to show that the mock files pass where real ones do.

Usage::

    python scripts/build_mock_sample.py [--data ../shared/data] [--output build/mock]
                                        [--seed N] [--limit N] [--cross-validate]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from astro_spt.mock import (
    DEFAULT_SEED,
    LAMOSTEmulator,
    build_mock_sample,
    lamost_log_grid,
    normalize_spectra,
    read_labelled_lamost,
    spectra_arrays,
)

REPO = Path(__file__).resolve().parents[1]


def _print_table(table, formats):
    names = list(formats)
    cells = [[format(row[name], formats[name]) for name in names] for row in table]
    widths = [max(len(name), *(len(row[j]) for row in cells)) for j, name in enumerate(names)]
    print("  " + "  ".join(f"{name:>{w}}" for name, w in zip(names, widths, strict=True)))
    for row in cells:
        print("  " + "  ".join(f"{cell:>{w}}" for cell, w in zip(row, widths, strict=True)))


def cross_validate(data_dir: Path, seed: int, holdout_fraction: float = 0.2) -> None:
    """5-fold cross-validation on the training giants of the seeded split.

    Compares training selections (LASP Teff limits) and polynomial degrees by the
    residuals of the left-out giants; the held-out giants are not used.
    """
    labels, spectra = read_labelled_lamost(data_dir, teff_max=7000.0)
    wavelength, flux, ivar = spectra_arrays(spectra)
    grid = lamost_log_grid()
    flux, ivar = normalize_spectra(wavelength, flux, ivar, labels["redshift"], grid)
    teff = labels["teff"].value
    # The same split as build_mock_sample: its giants are those with Teff < 5,600 K,
    # in the same order, so the permutation matches.
    giants = np.flatnonzero(labels["giant"])
    rng = np.random.default_rng(seed)
    holdout = rng.permutation(giants)[: round(holdout_fraction * giants.size)]
    rest = np.setdiff1d(giants, holdout)
    folds = np.array_split(np.random.default_rng(seed + 1).permutation(rest), 5)
    print("\n5-fold cross-validation on the training giants (held-out giants unused):")
    rows = []
    for teff_max in (5600.0, 6000.0, 6500.0, 7000.0):
        for order in (2, 3):
            chi2, absz, rms = [], [], []
            for fold in folds:
                train = teff < teff_max
                train[holdout] = False
                train[fold] = False
                emulator = LAMOSTEmulator(order=order).fit(
                    grid, flux[train], ivar[train], labels[train]
                )
                stats = emulator.residual_statistics(flux[fold], ivar[fold], labels[fold])
                chi2.append(stats["chi2_per_pixel"])
                absz.append(stats["median_abs_z"])
                rms.append(stats["rms_residual"])
            rows.append(
                {
                    "teff_max": teff_max,
                    "order": order,
                    "chi2_median": np.median(np.concatenate(chi2)),
                    "chi2_mean": np.mean(np.concatenate(chi2)),
                    "median_abs_z": np.median(np.concatenate(absz)),
                    "rms_median": np.median(np.concatenate(rms)),
                }
            )
    _print_table(
        rows,
        {
            "teff_max": ".0f",
            "order": "d",
            "chi2_median": ".3f",
            "chi2_mean": ".3f",
            "median_abs_z": ".3f",
            "rms_median": ".4f",
        },
    )


def check_with_package(sample, data_dir: Path, n: int = 200) -> None:
    """Read mock and real giant spectra with Spectrum.read and preprocess both."""
    from specutils import Spectrum

    from astro_spt.flags import decode_flags
    from astro_spt.preprocess import preprocess

    folder = sample.paths["spectra"]
    mock = [Spectrum.read(folder / name) for name in sample.catalog["file"][:n]]
    giants = sample.residuals[sample.residuals["giant"]]
    real = []
    for name in giants["file"][:n]:
        matches = list((data_dir / "lamost-lrs").glob(f"*/spectra/{name}"))
        real.append(Spectrum.read(matches[0]))
    print(f"\nPreprocessing {len(mock)} mock and {len(real)} real giant spectra:")
    for label, spectra in (("mock", mock), ("real giants", real)):
        result = preprocess(spectra)
        counts = {}
        for names in decode_flags(result.flags):
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
        print(
            f"  {label:12s} median S/N on the grid {np.nanmedian(result.snr):6.1f}; "
            f"flags set: {summary}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=REPO / "build" / "mock")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--teff-max", type=float, default=6500.0)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="write only N spectra")
    parser.add_argument(
        "--cross-validate",
        action="store_true",
        help="also compare emulator settings by cross-validation on the training giants",
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    print(f"Building the mock sample from {args.data} into {args.output} (seed {args.seed})")
    sample = build_mock_sample(
        args.data,
        args.output,
        seed=args.seed,
        teff_max=args.teff_max,
        order=args.order,
        limit=args.limit,
        log=print,
    )

    print("\nEmulator residuals on real spectra (normalised flux):")
    print("  chi2 = mean (f - model)^2 ivar per pixel, noise only; chi2_scatter adds the")
    print("  intrinsic scatter; median_abs_z = median |f - model| / sigma (0.674 for noise)")
    _print_table(
        sample.summary,
        {
            "group": "s",
            "n": "d",
            "chi2_median": ".3f",
            "chi2_mean": ".3f",
            "chi2_scatter_median": ".3f",
            "median_abs_z": ".3f",
            "rms_median": ".4f",
        },
    )

    catalog = sample.catalog
    meta = catalog.meta
    print(
        f"\nMock catalogue: {meta['n_matched']} stars (APOKASC-2 {meta['n_apokasc2']}, "
        f"Miglio et al. 2021 {meta['n_miglio2021']}); "
        f"{meta['n_inside_emulator_range']} inside the emulator's training label box"
    )
    for name in ("teff", "logg", "feh", "mass", "age"):
        values = np.asarray(
            catalog[name].value if hasattr(catalog[name], "unit") else catalog[name]
        )
        print(
            f"  {name:5s} 5/50/95 %: "
            + " / ".join(f"{v:.3g}" for v in np.percentile(values, [5, 50, 95]))
        )
    if "snrg" in catalog.colnames:
        snr = np.asarray(catalog["snrg"])
        print(
            "  snrg  5/50/95 %: " + " / ".join(f"{v:.3g}" for v in np.percentile(snr, [5, 50, 95]))
        )
        check_with_package(sample, args.data)

    if args.cross_validate:
        clock = time.perf_counter()
        cross_validate(args.data, args.seed)
        sample.timings["cross-validate"] = time.perf_counter() - clock

    print("\nTimings:")
    for name, seconds in sample.timings.items():
        print(f"  {name:15s} {seconds:7.1f} s")
    print(f"  {'total':15s} {time.perf_counter() - start:7.1f} s")
    print("Wrote:", ", ".join(str(p) for p in sample.paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
