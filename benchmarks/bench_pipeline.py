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
- ``preprocessing``: ms of CPU per spectrum of `astro_spt.preprocess.preprocess` with the
  default model's settings, in batches of 256, on the spectra as `astro_spt.estimate`
  reads them (bare arrays, `PlainSpectrum`) and as `specutils.Spectrum`; the same for
  `preprocess_floor`, the same arithmetic in bare numpy and PyWavelets (checked to give
  the same rows), and the ratio of preprocess to it (issue 17's target: at most 1.5).
- ``projection``: ms of CPU per spectrum of the default model's gappy PCA projection
  (`astro_spt.pca.PCABasis.project`) of the preprocessed files, in the 64-row blocks
  `astro_spt.estimate` projects, one BLAS thread.
- ``network``: Monte Carlo dropout (`astro_spt.nn.mc_predict`, T = 100, one torch
  thread) on the rows `astro_spt.estimate` runs at once: 512 for many spectra (issue
  17's target: at least 60 %), and 64, a single block, for up to 64. For the default
  model and a network of the paper's size (`astro_spt.nn.SpectralTransformer`
  defaults): ms of CPU per spectrum and the fraction of the fp32 matrix-multiply peak,
  the best rate of one thread over the products the two networks compute
  (`bench_nn.gemm_shapes`); work counted by
  `~astro_spt.nn.SpectralTransformer.forward_flops`.
- ``end to end``: `astro_spt.estimate` of the files with the default model (T = 100),
  in one process and with a worker per core: spectra per CPU second (all processes) and
  per wall-clock second, the speed-up (the two kinds of run alternate, so that both see
  the same machine), the speed-up the machine itself gives a plain CPU-bound job in as
  many processes as cores (the ceiling of the previous one), and the peak memory of a
  fresh process on every core (the main process and its largest worker) for a quarter
  of the files and for all of them (it must not grow with their number).
- ``cli``: ``astro-spt estimate ONE_FILE`` against ``python -c "import torch"``, and
  their ratio (issue 17's target: at most 2.5).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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


# --- preprocessing floor -------------------------------------------------------------
# The arithmetic of `astro_spt.preprocess.preprocess` with the default model's settings
# (continuum normalisation, Haar MODWT of level 4, the 4,096-pixel grid), written once
# more in bare numpy and PyWavelets for a batch of well-formed spectra in vacuum: every
# step preprocess takes (resampling with masks and variances, anomaly repair and flags,
# S/N, denoising, normalisation), without per-spectrum Python, without checks beyond
# what the arithmetic needs, each step by the fastest of the formulations tried. The
# row-wise kernels (medians, runs, gap filling, smoothing, the Haar inverse, the runs of
# one value that count as missing, and the statistics of the emission_features,
# featureless and unresolved_features flags) are the package's own, already bare
# vectorised numpy: the floor removes what preprocess adds around them. It gives the same
# rows as preprocess, bit for bit (checked by every run).


def preprocess_floor(spectra, config):
    """`preprocess` of a list of `PlainSpectrum` (vacuum, Å, well formed) in bare numpy:
    a dict of the arrays `PreprocessResult` holds."""
    import pywt

    from astro_spt import flags as F
    from astro_spt.preprocess._numerics import (
        MAD_TO_SIGMA,
        fill_gaps,
        gaussian_smooth,
        median_rows,
        nanmedian_rows,
        running_median,
        runs,
    )
    from astro_spt.preprocess.anomalies import (
        EMISSION_MIN_SKEWNESS,
        FEATURELESS_MAX_CONTRAST,
        UNRESOLVED_MIN_COUNT,
        _constant_runs,
        _line_contrast,
        _unresolved,
    )
    from astro_spt.preprocess.denoise import _haar_imodwt

    g, a, d, norm = config.grid, config.anomalies, config.denoise, config.normalize
    assert (g.spacing, a.spike_window, norm.method) == ("linear", 7, "continuum")
    assert (d.enabled, d.wavelet, d.threshold, d.mode) == (True, "haar", "universal", "soft")
    grid = np.linspace(g.wavelength_min_aa, g.wavelength_max_aa, g.n_pixels)
    m, n, scale_aa = grid.size, len(spectra), g.pixel_scale_aa
    # --- all spectra one after the other, in the rest frame
    lengths = np.array([s.flux.size for s in spectra])
    ends = np.cumsum(lengths)
    starts = ends - lengths
    row = np.repeat(np.arange(n), lengths)
    z = np.array([s.redshift for s in spectra], dtype=np.float64)
    shift = np.where(np.isfinite(z), 1 + z, 1.0)
    rest = np.concatenate([s.wavelength for s in spectra]) / shift[row]
    flux = np.concatenate([s.flux for s in spectra])
    ivar = np.concatenate([s.ivar for s in spectra])
    mask = np.concatenate([s.mask for s in spectra])
    steps = np.diff(rest)
    steps[ends[:-1] - 1] = 1  # across spectra
    if not (np.all(shift > 0) and np.all(np.isfinite(rest)) and np.all(steps > 0)):
        raise ValueError("the floor takes well-formed spectra only")
    # --- to order unity: the median |flux| of every 8th valid pixel
    good = ~mask & np.isfinite(flux) & (ivar > 0)
    column = np.arange(-(-lengths.max() // 8)) * 8
    inside = column < lengths[:, None]
    pick = np.where(inside, starts[:, None] + column, 0)
    level = nanmedian_rows(np.where(inside & good[pick], np.abs(flux[pick]), np.nan))
    empty = ~np.isfinite(level)
    for i in np.flatnonzero(empty):  # fewer than one valid pixel in eight: rare
        part = slice(starts[i], ends[i])
        level[i] = nanmedian_rows(np.where(good[part], np.abs(flux[part]), np.nan)[None])[0]
    level = np.where(np.isfinite(level) & (level > 0), level, 1.0)
    # --- linear interpolation onto the grid, with mask and variance
    f = (flux / level[row]).astype(np.float32)
    v = (ivar * (level**2)[row]).astype(np.float32)
    bad = mask | ~np.isfinite(f) | ~(v > 0) | ~np.isfinite(v)
    pairs = np.zeros((f.size, 2), np.float32)
    pairs[:, 0] = np.where(bad, 0, f)
    np.divide(1, v, out=pairs[:, 1], where=~bad)
    packed = pairs.view(np.uint64)[:, 0]  # one 8-byte gather fetches flux and variance
    # Where the grid falls in every row at once: each wavelength's place in the grid,
    # counted per row (as fast as one search of the grid per row).
    after = np.searchsorted(grid, rest, "left") + row * (m + 1)
    position = np.cumsum(np.bincount(after, minlength=n * (m + 1)).reshape(n, m + 1)[:, :m], 1)
    hi = starts[:, None] + np.clip(position, 1, (lengths - 1)[:, None])
    lo = hi - 1
    w_lo = rest[lo]
    t = np.clip((grid - w_lo) / (rest[hi] - w_lo), 0.0, 1.0)
    covered = (grid >= rest[starts][:, None]) & (grid <= rest[ends - 1][:, None])
    weight_hi = t.astype(np.float32)
    weight_lo = 1 - weight_hi
    p_lo = packed[lo].view(np.float32).reshape(n, m, 2)
    p_hi = packed[hi].view(np.float32).reshape(n, m, 2)
    out_flux = weight_lo * p_lo[..., 0] + weight_hi * p_hi[..., 0]
    out_var = weight_lo * p_lo[..., 1] + weight_hi * p_hi[..., 1]
    out_mask = ~covered | (bad[lo] & (t < 1)) | (bad[hi] & (t > 0))
    out_flux[out_mask] = np.nan
    out_ivar = np.zeros_like(out_var)
    np.divide(1, out_var, out=out_ivar, where=~out_mask & (out_var > 0))
    # --- anomalies: coverage, missing values, S/N
    valid = ~out_mask & np.isfinite(out_flux) & np.isfinite(out_ivar) & (out_ivar > 0)
    valid &= ~_constant_runs(out_flux, valid)
    flags = np.zeros(n, F.FLAG_DTYPE)
    n_covered = covered.sum(axis=1)
    coverage = n_covered / m
    unreadable = valid.sum(axis=1) < max(2, a.min_valid_fraction * m)
    flags[1 - coverage > a.max_uncovered_fraction] |= F.POOR_COVERAGE
    missing = covered & ~valid
    standard = np.zeros(m, bool)
    windows = []
    for low, high in a.standard_mask_windows_aa:
        window = slice(np.searchsorted(grid, low, "left"), np.searchsorted(grid, high, "right"))
        if window.stop > window.start:
            standard[window] = True
            windows.append(window)
    counted = missing & ~standard
    index, first, _ = runs(missing)
    inside = np.add.reduceat(counted.reshape(-1)[index].astype(np.intp), first)
    long_gap = np.zeros(n, bool)
    long_gap[index[first][inside > max(1, round(a.max_gap_aa / scale_aa))] // m] = True
    too_many = counted.sum(axis=1) > a.max_missing_fraction * np.maximum(n_covered, 1)
    flags[long_gap | too_many] |= F.MISSING_VALUES
    for window in windows:
        n_missing = missing[:, window].sum(axis=1)
        most = a.standard_mask_min_fraction * covered[:, window].sum(axis=1)
        flags[(n_missing > 0) & (n_missing > most)] |= F.MASKED_STANDARD_REGIONS
    filled = fill_gaps(out_flux, valid)
    snr = nanmedian_rows(np.where(valid, filled * np.sqrt(np.where(valid, out_ivar, 0)), np.nan))
    flags[snr < a.min_snr] |= F.LOW_SNR
    # --- spikes: against a running median, beyond the noise and half the local flux
    smooth = running_median(filled, 7)
    residual = filled - smooth
    sigma = np.full_like(filled, np.nan)
    np.divide(1.0, np.sqrt(out_ivar), out=sigma, where=valid & (out_ivar > 0))
    n_blocks = -(-m // 128)
    blocks = np.full((n, n_blocks * 128), np.nan, np.float32)
    blocks[:, :m] = np.where(valid, np.abs(residual), np.nan)
    block_scale = MAD_TO_SIGMA * nanmedian_rows(blocks.reshape(n, n_blocks, 128))
    scale = np.fmax(sigma, np.repeat(block_scale, 128, axis=1)[:, :m])
    spikes = (
        valid
        & (np.abs(residual) > a.spike_threshold * scale)
        & (np.abs(residual) > a.spike_min_relative * np.abs(smooth))
    )
    grown = spikes.copy()
    grown[:, 1:] |= spikes[:, :-1]
    grown[:, :-1] |= spikes[:, 1:]
    spikes = grown & covered
    flags[spikes.any(axis=1)] |= F.OUTLIERS
    filled = np.where(spikes, smooth, filled)
    repaired = missing | spikes
    n_unresolved = _unresolved(filled, out_ivar, valid & ~spikes, smooth, a)
    flags[n_unresolved >= UNRESOLVED_MIN_COUNT] |= F.UNRESOLVED_FEATURES
    # --- negative stretches
    index, _, run = runs(covered & (filled < 0))
    negative = np.zeros((n, m), bool)
    negative.reshape(-1)[
        index[np.repeat(run >= max(1, round(a.negative_min_run_aa / scale_aa)), run)]
    ] = True
    flags[negative.any(axis=1)] |= F.NEGATIVE_FLUX
    filled = fill_gaps(filled, ~negative)
    repaired |= negative
    # --- oscillation: a narrow periodogram peak over its local median power
    max_period = a.oscillation_max_period_aa / scale_aa
    smooth = gaussian_smooth(filled, max_period)
    denominator = np.maximum(smooth, 0.1 * np.abs(median_rows(smooth[:, ::8]))[:, None])
    relative = np.zeros_like(filled)
    np.divide(filled - smooth, denominator, out=relative, where=covered & (denominator > 0))
    hann = np.hanning(m).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(relative * hann, axis=1))
    k_min = max(1, int(np.floor(m / max_period)))
    k_max = min(spectrum.shape[1] - 1, int(np.ceil(m / (a.oscillation_min_period_aa / scale_aa))))
    band = spectrum[:, k_min : k_max + 1] ** 2
    n_bins = band.shape[1]
    n_blocks = -(-n_bins // 32)
    blocks = np.full((n, n_blocks * 32), np.nan, dtype=band.dtype)
    blocks[:, :n_bins] = band
    baseline = np.repeat(nanmedian_rows(blocks.reshape(n, n_blocks, 32)), 32, axis=1)[:, :n_bins]
    ratio = np.zeros_like(band)
    np.divide(band, baseline, out=ratio, where=baseline > 0)
    peak = np.argmax(ratio, axis=1)
    power = np.take_along_axis(ratio, peak[:, None], 1)[:, 0]
    amplitude = 2 * np.take_along_axis(spectrum, k_min + peak[:, None], 1)[:, 0] / hann.sum()
    flags[(power > a.oscillation_threshold) & (amplitude > a.oscillation_min_amplitude)] |= (
        F.OSCILLATION
    )
    # --- no lines, and emission: departure from a smooth continuum beyond the noise
    contrast, skewness = _line_contrast(filled, out_ivar, valid, scale_aa)
    flags[~(contrast >= FEATURELESS_MAX_CONTRAST)] |= F.FEATURELESS
    flags[skewness > EMISSION_MIN_SKEWNESS] |= F.EMISSION_FEATURES
    # --- damage
    n_repaired = repaired.sum(axis=1)
    flags[n_repaired > a.min_repaired_fraction * m] |= F.REPAIRED_PIXELS
    flags[(n_repaired + (m - n_covered)) / m > a.heavy_damage_fraction] |= F.HEAVY_DAMAGE
    flags[unreadable] = F.UNREADABLE | (flags[unreadable] & F.POOR_COVERAGE)
    filled[unreadable] = 0.0
    not_measured = repaired | ~covered
    weights = np.where(not_measured | ~valid, np.float32(0), out_ivar)
    # --- MODWT denoising of the readable rows (PyWavelets' forward transform)
    readable = ~unreadable
    block = 2**d.level
    left = min(block, m - 1)
    right = left + (-(m + 2 * left)) % block
    padded = np.pad(filled[readable], ((0, 0), (left, right)), mode="symmetric")
    coefficients = pywt.swt(padded, "haar", level=d.level, norm=True, trim_approx=True, axis=-1)
    sigma_1 = (MAD_TO_SIGMA * median_rows(np.abs(coefficients[-1]))[:, None]).astype(np.float32)
    factor = float(np.sqrt(2 * np.log(m)))
    for index in range(1, d.level + 1):
        limit = sigma_1 * 2 ** (-(d.level - index) / 2) * factor
        coefficients[index] = coefficients[index] - np.clip(coefficients[index], -limit, limit)
    clean = filled
    clean[readable] = _haar_imodwt(coefficients)[:, left : left + m]
    # --- division by the inverse-variance weighted pseudo-continuum
    sigma = norm.continuum_sigma_aa / scale_aa
    weighted = gaussian_smooth(clean * weights, sigma)
    total = gaussian_smooth(weights, sigma)
    usable = total > 1e-3 * median_rows(total)[:, None]
    continuum = np.where(usable, weighted / np.where(usable, total, 1), 0)
    rows = ~usable.all(axis=1)
    if rows.any():
        plain = gaussian_smooth(clean[rows], sigma)
        continuum[rows] = np.where(usable[rows], continuum[rows], plain)
    continuum = np.maximum(continuum, 0.05 * median_rows(continuum)[:, None])
    ok = np.all(np.isfinite(continuum) & (continuum > 0), axis=1, keepdims=True)
    normalized = np.where(ok, clean / np.where(ok, continuum, 1), np.nan)
    unreadable |= ~np.all(np.isfinite(normalized), axis=1)
    flags[unreadable] |= F.UNREADABLE
    normalized[unreadable] = np.nan
    ivar_out = weights * continuum**2
    ivar_out[unreadable] = 0
    flags[~np.isfinite(z)] |= F.NO_REDSHIFT
    return {
        "flux": normalized,
        "ivar": ivar_out,
        "mask": not_measured,
        "flags": flags,
        "n_repaired": n_repaired,
        "snr": snr,
        "coverage": coverage,
        "redshift": np.where(np.isfinite(z), z, np.nan),
    }


def _plain_spectra(files):
    """The files as `astro_spt.estimate` reads them (`PlainSpectrum`)."""
    from astro_spt.estimation.inputs import _expand, _read

    return [_read(item, strict=True)[0] for item in _expand([str(path) for path in files])]


def _floor_difference(result, floor):
    """Largest relative difference of the floor's arrays from preprocess's (0: the same)."""
    largest = 0.0
    for name, values in floor.items():
        expected = getattr(result, name)
        if np.array_equal(expected, values, equal_nan=True):
            continue
        if expected.dtype.kind != "f" or not np.array_equal(np.isnan(expected), np.isnan(values)):
            raise AssertionError(f"the floor's {name} differs from preprocess's")
        scale = np.maximum(np.abs(expected), np.finfo(expected.dtype).tiny)
        largest = max(largest, float(np.nanmax(np.abs(values - expected) / scale)))
    return largest


def bench_preprocessing(files, repeats):
    """`preprocess` with the default model's settings on the spectra as `estimate` reads
    them (`PlainSpectrum`) and as `specutils.Spectrum` (`read_spectrum`), in batches of
    256, and `preprocess_floor` on the same batches in preprocess's chunks; the three
    timed in turn, so that the load of other jobs weighs on all alike."""
    import inspect

    from threadpoolctl import threadpool_limits

    import astro_spt
    from astro_spt.io import read_spectrum
    from astro_spt.preprocess import preprocess

    config = astro_spt.load_model().preprocess_settings()
    chunk = inspect.signature(preprocess).parameters["chunk_size"].default
    plain = _plain_spectra(files)

    def floor(batch):
        return [preprocess_floor(batch[i : i + chunk], config) for i in range(0, len(batch), chunk)]

    runs = {
        "plain": (lambda batch: preprocess(batch, config), plain),
        "spectrum": (lambda batch: preprocess(batch, config), [read_spectrum(p) for p in files]),
        "floor": (floor, plain),
    }
    best = dict.fromkeys(runs, float("inf"))
    with threadpool_limits(1), np.errstate(all="ignore"):
        difference = max(
            _floor_difference(preprocess(plain[i : i + chunk], config), part)
            for i, part in zip(range(0, len(plain), chunk), floor(plain), strict=True)
        )
        for _ in range(repeats):
            for name, (run, spectra) in runs.items():
                start = time.process_time()
                for i in range(0, len(spectra), 256):
                    run(spectra[i : i + 256])
                best[name] = min(best[name], (time.process_time() - start) / len(files) * 1e3)
    if difference > 1e-6:
        raise AssertionError(f"the floor differs from preprocess by {difference:.1e} (relative)")
    ms = "ms CPU / spectrum"
    return [
        (
            "preprocessing",
            "preprocess(), PlainSpectrum as estimate reads",
            f"{best['plain']:.2f}",
            ms,
        ),
        ("preprocessing", "preprocess(), specutils Spectrum", f"{best['spectrum']:.2f}", ms),
        (
            "preprocessing",
            "floor: same arithmetic, bare numpy/PyWavelets",
            f"{best['floor']:.2f}",
            ms,
        ),
        (
            "preprocessing",
            "  floor's rows against preprocess's",
            f"{difference:.0e} relative" if difference else "identical",
            "",
        ),
        (
            "preprocessing",
            "ratio to its floor (target <= 1.5)",
            f"{best['plain'] / best['floor']:.2f}",
            "x",
        ),
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
    from astro_spt.estimation.rows import _NETWORK_BLOCKS, _NETWORK_CHUNK
    from astro_spt.nn import SpectralTransformer, mc_predict

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # the rows the pipeline runs at once for many spectra, and for up to 64
    sizes = (_NETWORK_CHUNK * _NETWORK_BLOCKS, _NETWORK_CHUNK)
    try:
        torch.manual_seed(0)
        networks = {
            "default model": astro_spt.load_model().network.eval(),
            "paper-size network": SpectralTransformer().eval(),
        }
        shapes = sorted(
            {s for net in networks.values() for n in sizes for s in gemm_shapes(net, n, n_samples)}
        )

        def peak():
            return gemm_peak(shapes, "cpu", lambda: None, repeats, time.process_time)

        best, shape = peak()
        rows = []
        for name, net in networks.items():
            for n in sizes:
                x = torch.randn(n, net.hparams["n_inputs"])
                seconds = best_time(
                    lambda net=net, x=x: mc_predict(net, x, n_samples, seed=0),
                    repeats,
                    lambda: None,
                    time.process_time,
                )
                rows.append((name, n, seconds, net.forward_flops(n_samples) * n / seconds))
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
    for name, n, seconds, rate in rows:
        target = " (target >= 60 %)" if n == sizes[0] else ""
        result += [
            (
                "network",
                f"MC T={n_samples}, {name}, {n} rows",
                f"{seconds / n * 1e3:.2f}",
                "ms CPU / spectrum",
            ),
            ("network", f"  fraction of GEMM peak{target}", f"{rate / best:.0%}", ""),
        ]
    return result


def bench_projection(files, repeats):
    """The default model's gappy PCA projection (`astro_spt.pca.PCABasis.project`) of the
    preprocessed files, in the 64-row blocks `estimate` projects, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    import astro_spt
    from astro_spt.estimation import preprocess_inputs
    from astro_spt.estimation.rows import _NETWORK_CHUNK

    model = astro_spt.load_model()
    spectra = preprocess_inputs(files, model.preprocess_settings())
    blocks = [
        (spectra.flux[i : i + _NETWORK_CHUNK], spectra.mask[i : i + _NETWORK_CHUNK])
        for i in range(0, len(spectra.flux), _NETWORK_CHUNK)
    ]
    with threadpool_limits(1):
        per_block = _best_cpu_ms(lambda block: model.pca.project(*block), blocks, repeats)
    masked = spectra.mask.sum(axis=1)
    return [
        (
            "projection",
            f"gappy PCA, {_NETWORK_CHUNK}-row blocks, 1 thread",
            f"{per_block * len(blocks) / len(spectra.flux):.2f}",
            "ms CPU / spectrum",
        ),
        ("projection", "  masked pixels per spectrum, median", f"{np.median(masked):.0f}", ""),
    ]


def _estimate_cpu(files, n_jobs):
    """CPU seconds of this process and of the workers, and wall seconds, of one run."""
    import astro_spt
    from astro_spt import estimation

    workers = estimation.workers._WORKER_CPU_SECONDS[0]
    cpu, wall = time.process_time(), time.perf_counter()
    table = astro_spt.estimate(files, n_jobs=n_jobs, progress=False)
    cpu = time.process_time() - cpu + estimation.workers._WORKER_CPU_SECONDS[0] - workers
    assert len(table) == len(files)
    return cpu, time.perf_counter() - wall, table


def _same_table(a, b):
    """Whether two tables are equal bit for bit (NaN equal to NaN)."""
    if a.colnames != b.colnames or a.meta != b.meta:
        return False
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        same = (
            x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)
            if x.dtype.kind == "f"
            else x.tolist() == y.tolist()
        )
        if not same:
            return False
    return True


def _peak_rss_mb(files):
    """Peak resident memory (MB) of a fresh process estimating ``files`` on every core:
    of the main process, and of the largest of its worker processes as they report it
    (0 without any; they are the forkserver's children, not this process's)."""
    code = (
        "import sys, astro_spt\n"
        "from astro_spt.estimation import workers\n"
        "astro_spt.estimate(sys.argv[1:], progress=False)\n"
        "print(workers._peak_rss_mb(), workers._WORKER_PEAK_RSS_MB[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, files)], check=True, capture_output=True
    )
    main, worker = out.stdout.split()[-2:]
    return float(main), float(worker)


def _plain_compute(_):
    """Wall seconds of a fixed CPU-bound job of one thread: single-precision matrix
    products and a Python loop, about 0.5 s."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    started = time.perf_counter()
    for _ in range(800):
        a @ a
    total = 0
    for i in range(1_000_000):
        total += i
    return time.perf_counter() - started


def _machine_speedup(n_processes, repeats):
    """What ``n_processes`` processes of plain compute give over one on this machine now
    (ideal: ``n_processes``): the ceiling of the speed-up of `astro_spt.estimate`'s
    workers, lower where the cores are not whole (shared, throttled, hyper-threads)."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(n_processes, mp_context=context) as pool:
        list(pool.map(_plain_compute, range(n_processes)))  # started and imported
        ratios = []
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(_plain_compute, [0]))
            alone = time.perf_counter() - started
            started = time.perf_counter()
            list(pool.map(_plain_compute, range(n_processes)))
            together = time.perf_counter() - started
            ratios.append(n_processes * alone / together)
    return float(np.median(ratios))


def bench_end_to_end(files, repeats):
    """`astro_spt.estimate` on the files with the default model (T = 100): spectra per
    CPU second (this process and its workers) and per second of wall clock, in one
    process (``n_jobs=1``) and on every core (``n_jobs=None``); peak memory of a fresh
    process for a quarter of the files and for all of them."""
    from astro_spt.estimation.workers import _usable_cpus

    files = [str(path) for path in files]
    load_before = os.getloadavg()[0]
    _estimate_cpu(files[:8], None)  # model loaded, imports done, outside the timings
    _estimate_cpu(files, None)  # the worker processes started, the model sent to them
    # alternating, so that both see the same machine (its speed drifts by 15-20 %)
    runs = [(_estimate_cpu(files, 1), _estimate_cpu(files, None)) for _ in range(repeats)]
    one = min((run[0] for run in runs), key=lambda r: r[1])
    every = min((run[1] for run in runs), key=lambda r: r[1])
    cores = _usable_cpus()
    ceiling = _machine_speedup(cores, repeats)
    n = len(files)
    identical = "yes" if _same_table(one[2], every[2]) else "NO"
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
        (
            "end to end",
            f"the machine's own speed-up: {cores} processes of plain compute",
            f"{ceiling:.2f}",
            "x",
        ),
        ("end to end", "tables identical, n_jobs=1 and all cores", identical, ""),
        (
            "end to end",
            "load average (1 min), before and after",
            f"{load_before:.2f}, {os.getloadavg()[0]:.2f}",
            "",
        ),
    ]
    quarter = max(n // 4, 1)
    for k in (quarter, n):
        main, worker = _peak_rss_mb(files[:k])
        rows.append(
            (
                "end to end",
                f"peak memory, {k} files: main process, largest worker",
                f"{main:.0f}, {worker:.0f}",
                "MB",
            )
        )
    return rows


STAGES = {
    "reading": bench_reading,
    "preprocessing": bench_preprocessing,
    "projection": bench_projection,
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
