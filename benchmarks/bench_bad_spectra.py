"""What the quality flags say about generated spectra that no star gives.

Usage::

    python benchmarks/bench_bad_spectra.py [--files N] [--snr S] [--seed K] [--model DIR]

Takes ``--files`` real LAMOST DR10 spectra of giant candidates (``giant_candidate`` of
``../shared/data/lamost-lrs/dr10/labels.csv``, the stars the default model is for;
default 20) and, from each, builds the same kinds of bad input on its own spectral axis,
at S/N ``--snr`` (default 50) with Gaussian noise and a matching inverse variance:
continua without lines (flat, a random walk), a continuum with one feature (a step),
periodic patterns (dips one pixel wide, sines and a square wave), lines at wrong
wavelengths (the spectrum shifted by 80 Å, its pixels shuffled or reversed, absorption
lines at random wavelengths), its lines turned into emission, its flux smoothed far beyond
LAMOST's resolution (a Gaussian of 20 Å), and emission spikes; and the real spectrum
itself, its noise kept, with 500 Å filled with one value or clipped at one level. The
real spectra themselves (noise added) and the same spectra reddened by a λ⁴ slope (a
real star's, which must not be flagged) are the controls. Everything goes through
`astro_spt.estimate` with the default model (or ``--model``), seed 0.

Prints one row per kind of input: how many of the ``--files`` got a ``bad`` flag (no
estimate), a ``warning`` flag but no ``bad`` one (an estimate to be read with care), or
neither (an estimate given as if the input were a star), and the flags set most often.
A kind whose "neither" column is not 0 passes the package's checks unnoticed.
"""

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_lamost as rl
from calibration import bad_pixels


def giant_files(n):
    """The first ``n`` DR10 files of LAMOST giant candidates (``giant_candidate`` of
    ``labels.csv``): the stars the default model is for."""
    table, paths = rl.load_sample(rl.DEFAULT_DATA)
    giants = zip(paths, table["giant_candidate"], strict=True)
    return sorted(path for path, giant in giants if str(giant) == "True")[:n]


def continuum_of(flux, width=101):
    """A running median of ``flux`` over ``width`` pixels, smoothed by as wide a boxcar:
    the continuum a line pattern is cut from or pasted onto."""
    from scipy.ndimage import median_filter, uniform_filter1d

    good = np.isfinite(flux) & (flux > 0)
    filled = np.where(good, flux, np.median(flux[good]))
    return uniform_filter1d(median_filter(filled, width), width)


def bad_inputs(spectrum, rng):
    """Name to noiseless flux (same unit and axis as ``spectrum``) of each kind of input."""
    import astropy.units as u
    from scipy.ndimage import gaussian_filter1d

    wavelength = spectrum.spectral_axis.to_value(u.AA)
    flux = np.asarray(spectrum.flux.value, dtype=float)
    flux = np.where(np.isfinite(flux), flux, np.nan)
    n = flux.size
    continuum = continuum_of(flux)
    level = np.nanmedian(continuum)
    slope = level * (wavelength / 6000.0) ** -1.0
    lines = np.nan_to_num(flux / continuum, nan=1.0)
    centres = rng.uniform(wavelength[0], wavelength[-1], 60)
    random_lines = np.prod(
        [1 - 0.3 * np.exp(-0.5 * ((wavelength - c) / 3.0) ** 2) for c in centres], axis=0
    )
    return {
        "flat continuum": np.full(n, level),
        "random walk, 0.5 % a pixel": level * (1 + np.cumsum(rng.normal(0, 0.005, n))),
        "step: flux doubles at 6,000 Å": np.where(wavelength < 6000, level, 2 * level),
        "one-pixel dips of 30 %, every 20 pixels": level * (1 - 0.3 * (np.arange(n) % 20 == 0)),
        "sine, 10 Å period, 5 %": slope * (1 + 0.05 * np.sin(2 * np.pi * wavelength / 10)),
        "sine, 50 Å period, 5 %": slope * (1 + 0.05 * np.sin(2 * np.pi * wavelength / 50)),
        "square wave, 30 Å period, 5 %": slope
        * (1 + 0.05 * np.sign(np.sin(2 * np.pi * wavelength / 30))),
        "shifted by 80 Å": np.interp(wavelength, wavelength + 80, np.nan_to_num(flux, nan=level)),
        "pixels shuffled": rng.permutation(np.nan_to_num(flux, nan=level)),
        "pixels reversed": np.nan_to_num(flux, nan=level)[::-1],
        "absorption lines at random wavelengths": slope * random_lines,
        "its lines in emission": continuum * (2 - lines),
        "smoothed by a Gaussian of 20 Å": gaussian_filter1d(
            np.nan_to_num(flux, nan=level), 20.0 / np.median(np.diff(wavelength))
        ),
        "emission spikes on 1 % of pixels": slope * (1 + 2 * (rng.random(n) < 0.01)),
    }


def noisy(spectrum, flux, snr, rng):
    """A `~specutils.Spectrum` of ``flux`` plus Gaussian noise of σ = median / ``snr``,
    with the pixels the file marks as bad masked, as they were."""
    from astropy.nddata import InverseVariance
    from specutils import Spectrum

    sigma = np.full(flux.size, abs(np.nanmedian(flux)) / snr)
    unit = spectrum.flux.unit
    return Spectrum(
        flux=(flux + rng.normal(0, sigma)) * unit,
        spectral_axis=spectrum.spectral_axis,
        uncertainty=InverseVariance(1 / sigma**2 / unit**2),
        mask=bad_pixels(spectrum),
        meta=dict(spectrum.meta),
    )


def with_flux(spectrum, flux, uncertainty=None):
    """``spectrum`` with the flux ``flux`` (a `~astropy.units.Quantity`) and, if given,
    ``uncertainty``: same spectral axis, mask and meta."""
    from specutils import Spectrum

    return Spectrum(
        flux=flux,
        spectral_axis=spectrum.spectral_axis,
        uncertainty=spectrum.uncertainty if uncertainty is None else uncertainty,
        mask=spectrum.mask,
        meta=dict(spectrum.meta),
    )


def reddened(spectrum):
    """The real spectrum, its own noise and mask kept, times (λ / 6000 Å)⁴."""
    import astropy.units as u
    from astropy.nddata import InverseVariance

    factor = (spectrum.spectral_axis.to_value(u.AA) / 6000.0) ** 4
    with np.errstate(divide="ignore"):
        ivar = spectrum.uncertainty.represent_as(InverseVariance)
    return with_flux(
        spectrum, spectrum.flux * factor, InverseVariance(ivar.array / factor**2, unit=ivar.unit)
    )


def damaged(spectrum):
    """Name to `~specutils.Spectrum` of each kind of damage done to the real spectrum
    itself, noise and inverse variance kept: data replaced by a fill value, and a flux
    clipped (saturated) at one level."""
    import astropy.units as u

    wavelength = spectrum.spectral_axis.to_value(u.AA)
    flux = spectrum.flux
    fill = np.where((wavelength > 5000) & (wavelength < 5500), np.nanmedian(flux), flux)
    clipped = np.minimum(flux, np.nanpercentile(flux, 60))
    return {
        "the real spectrum, 5,000-5,500 Å filled with its median": with_flux(spectrum, fill),
        "the real spectrum, clipped at its 60th percentile": with_flux(spectrum, clipped),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20, help="real spectra to start from")
    parser.add_argument("--snr", type=float, default=50.0, help="S/N of the generated noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="a bundle (default: the embedded one)")
    args = parser.parse_args(argv)
    files = giant_files(args.files)
    if not files:
        sys.exit(f"no DR10 giant candidates under {rl.DEFAULT_DATA}")

    import astro_spt
    from astro_spt import flags
    from astro_spt.io import read_spectrum

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    inputs = collections.defaultdict(list)
    for path in files:
        spectrum = read_spectrum(path)
        inputs["control: the real spectrum, as read"].append(spectrum)
        inputs["control: the same, reddened: times (λ/6000 Å)^4"].append(reddened(spectrum))
        for name, flux in bad_inputs(spectrum, rng).items():
            inputs[name].append(noisy(spectrum, flux, args.snr, rng))
        for name, bad in damaged(spectrum).items():
            inputs[name].append(bad)
    names = list(inputs)
    everything = [s for name in names for s in inputs[name]]
    model = astro_spt.load_model(args.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = astro_spt.estimate(everything, model, seed=0, progress=False)
    values = np.asarray(table["flags"])
    bad_mask, warning_mask = flags.FLAGS.mask_of("bad"), flags.FLAGS.mask_of("warning")
    rows = []
    for k, name in enumerate(names):
        part = values[k * len(files) : (k + 1) * len(files)]
        bad = (part & bad_mask) != 0
        warned = ~bad & ((part & warning_mask) != 0)
        counts = collections.Counter(
            f.name for v in part for f in flags.FLAGS if v & f.value and f.severity != "info"
        )
        common = ", ".join(f"{f} {c}" for f, c in counts.most_common(3)) or "—"
        rows.append(
            (
                name,
                str(int(bad.sum())),
                str(int(warned.sum())),
                str(int((~bad & ~warned).sum())),
                common,
            )
        )
    header = ("input", "bad", "warning only", "neither", "flags set most often (not info)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(
        f"{len(files)} DR10 spectra each, S/N {args.snr:g}, model {model.name or model.source}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
