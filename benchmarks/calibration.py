"""Calibration benchmark: can the per-star uncertainties and quality flags be trusted?

Command (from the repository root; the reference run, about 9 minutes, is on two CPU
cores)::

    python benchmarks/calibration.py [--max-epochs N] [--model DIR | --save-model DIR]
        [--mock-model DIR] [--skip-real] [--skip-mock] [--output DIR]

Every number comes from `astro_spt.estimate` called on files or `~specutils.Spectrum`
objects, so the rows go through the whole public pipeline (reading, preprocessing, PCA,
Monte Carlo dropout, flags), at ``seed=0`` with the model's number of samples.

Part 1, real data. The 1,979 LAMOST DR10 spectra of ``../shared/data/lamost-lrs/dr10``
with their LASP labels (Teff, log g, [Fe/H]) and SPT trained exactly as
``benchmarks/real_lamost.py`` trains it (`real_lamost.preprocess_config`,
`real_lamost.spt_config`, seed `real_lamost.SEED`, the seeded 8:2 split stratified in Teff
that `astro_spt.train` makes; ``--max-epochs`` shortens training for a smoke run).
``--model DIR`` evaluates a saved bundle instead (``--save-model DIR`` saves one); its
split is rebuilt from its provenance. The test files are estimated, and per label it
prints

- the 1σ and 2σ coverage (share of ``|ŷ − y| ≤ σ`` and ``≤ 2σ``), overall and in each
  tercile of the test set's S/N (``snrg`` of ``labels.csv``); target 68 ± 4 % and
  95 ± 3 %; each coverage's distance from a Gaussian's in binomial standard deviations
  (`coverage_z`), and the chance that a perfectly calibrated model meets every target
  on test sets of these sizes (`calibrated_pass_probability`);
- the Spearman rank correlation of σ and ``|ŷ − y|`` (target ≥ 0.3), and the median σ in
  the lowest S/N tercile over that in the highest (target ≥ 1.5);
- per row ``|std(samples) / X_err − 1|``: its maximum and the share of rows within 10 %
  (target: every row);
- the 1σ and 2σ coverage of the hot stars (LAMOST class O, B, A; ``subclass`` of
  ``labels.csv``), whose LASP labels are least reliable, and of the others (part 1);
- the share of test rows flagged ``out_of_distribution`` (target ≤ 2 %),
  ``large_uncertainty`` (≤ 10 %), ``missing_values``, any flag, and any other flag set;
- Δ (mean ``|ŷ − y|``) with its bootstrap 1σ (1,000 resamples of the test rows), ΔP and
  the bias (mean ``ŷ − y``);
- the median σ of each source of uncertainty, when `astro_spt.estimate` accepts
  ``error_sources=True``.

Masking stress test (part 1). LAMOST DR1 files mask many pixels at 3,800–4,000 Å and
7,550–7,700 Å. The masked pixels (``mask`` set or inverse variance 0) of the 10 DR1
files of ``../shared/data/lamost-lrs/dr1`` inside those windows (observed frame) are
imposed on the test spectra: test spectrum i gets the mask of DR1 file i mod 10, mapped
to its nearest DR1 pixel, on top of its own. The spectra are rebuilt as
`~specutils.Spectrum` objects with the same flux, spectral axis, uncertainty and meta
(so the same LAMOST redshift moves them to the rest frame) and estimated again. It
prints the masked share of the windows achieved, and per label the bias unmasked and
masked and its shift (Teff target: ≤ 60 K), the 1σ coverage when masked (target
60–76 %) and the median σ unmasked and masked, and the flag rates. As a control, the
spectra rebuilt with their own mask are estimated too: the largest difference from the
estimates of the files is printed, and should be 0.

Part 2, the default model on its mock test set (labels age and mass). The default model
(`astro_spt.load_model`, or ``--mock-model DIR``) was trained by
``scripts/build_default_model.py`` on the mock spectra in ``build/default-model/mock``
(``--mock-dir``). Its test split is rebuilt as training made it: the bundle's
provenance (``estimator_config``), the mock files preprocessed with the bundle's
settings (`astro_spt.estimation.preprocess_inputs`), the catalogue's labels,
`astro_spt.training.split_training_rows`. The split sizes are checked against the
provenance. The test files get the tables of part 1 (S/N: the catalogue's ``snrg``).
Part 2 is skipped, with a message, while the mock catalogue does not exist.
Part 2 also shows the default model the real DR10 spectra of part 1, which it never saw,
and prints by LASP log g class (giants < 3.5 ≤ subgiants < 3.8 ≤ dwarfs) the share
flagged ``out_of_distribution``, ``outside_label_range``, ``large_uncertainty`` and any
of the three: a model of giants should warn on dwarfs and rarely on real giants.

Outputs in ``--output`` (default ``benchmarks/results/calibration/``): ``results.md``
and ``summary.json``.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_lamost as rl

DEFAULT_OUTPUT = rl.ROOT / "benchmarks" / "results" / "calibration"
DEFAULT_MOCK = rl.ROOT / "build" / "default-model" / "mock"
#: Observed-frame windows (Å) in which LAMOST DR1 files mask many pixels.
DR1_WINDOWS = ((3800.0, 4000.0), (7550.0, 7700.0))
#: Coverage targets in per cent, (centre, tolerance), at 1σ and 2σ.
COVERAGE_TARGET = {1: (68.0, 4.0), 2: (95.0, 3.0)}
SPEARMAN_MIN = 0.3
SIGMA_RATIO_MIN = 1.5
#: Tolerance of ``|std(samples) / X_err − 1|`` per row.
SAMPLES_TOLERANCE = 0.10
#: Flag rates (per cent of test rows) not to exceed; other flags are reported only.
FLAG_MAX = {"out_of_distribution": 2.0, "large_uncertainty": 10.0}
REPORTED_FLAGS = ("out_of_distribution", "large_uncertainty", "missing_values")
#: Largest shift of the bias when masked, per label, in the label's unit.
MASKED_SHIFT_MAX = {"teff": 60.0}
#: 1σ coverage (per cent) the masked spectra must keep.
MASKED_COVERAGE = (60.0, 76.0)
TERCILES = ("low", "mid", "high")


# --- estimates ------------------------------------------------------------------------


def run_estimate(inputs, bundle, *, n_samples=None, seed=0):
    """`astro_spt.estimate` with samples, and the error sources when it accepts them.

    Parameters
    ----------
    inputs : list
        File paths or `~specutils.Spectrum` objects.
    bundle : `~astro_spt.bundle.EstimatorBundle`
    n_samples : int or None
        Samples per spectrum; default the model's.
    seed : int
        Seed of `astro_spt.estimate`.

    Returns
    -------
    table : `~astropy.table.QTable`
    seconds : float
        Wall time of the call.
    """
    import astro_spt

    kwargs = {"model": bundle, "n_samples": n_samples, "seed": seed, "return_samples": True}
    start = time.perf_counter()
    try:
        table = astro_spt.estimate(inputs, error_sources=True, **kwargs)
    except TypeError as err:
        if "error_sources" not in str(err):
            raise
        table = astro_spt.estimate(inputs, **kwargs)
    return table, time.perf_counter() - start


def samples_array(column, unit):
    """The samples of a ``<label>_samples`` column as floats in ``unit``, shape (n, T).

    Takes an `~astropy.uncertainty.Distribution` column (samples along its last axis) as
    well as a plain 2-D `~astropy.units.Quantity`.
    """
    import astropy.units as u

    return u.Quantity(getattr(column, "distribution", column), unit).value


def read_predictions(table, names):
    """Per label: values, σ, samples and the σ of each error source, in the label's unit.

    Returns
    -------
    dict
        Label name to a dict with ``value`` and ``err`` (shape (n,)), ``samples``
        (shape (n, T)) and ``sources`` (source name to σ, shape (n,); empty when the
        table has no ``<label>_err_<source>`` columns).
    """
    out = {}
    for name in names:
        unit = table[name].unit
        prefix = f"{name}_err_"
        out[name] = {
            "value": table[name].to_value(unit),
            "err": table[f"{name}_err"].to_value(unit),
            "samples": samples_array(table[f"{name}_samples"], unit),
            "sources": {
                col[len(prefix) :]: table[col].to_value(unit)
                for col in table.colnames
                if col.startswith(prefix)
            },
        }
    return out


def unit_of(table, name):
    """The unit of label ``name`` in an estimate table, as text (``""`` if none)."""
    return table[name].unit.to_string()


# --- metrics --------------------------------------------------------------------------


def terciles(snr):
    """Tercile (0 low, 1 mid, 2 high) of each S/N value, and the two edges."""
    edges = np.nanquantile(snr, [1 / 3, 2 / 3])
    return np.searchsorted(edges, snr, side="right"), edges


def coverage(error, sigma):
    """Per cent of the ``error`` within 1σ and 2σ of their ``sigma``, and their number."""
    inside = {k: 100 * float(np.mean(error <= k * sigma)) for k in (1, 2)}
    return inside | {"n": int(np.size(error))}


def meets_target(value, k):
    """Whether a coverage of ``value`` per cent within ``k``σ meets `COVERAGE_TARGET`."""
    centre, tolerance = COVERAGE_TARGET[k]
    return np.abs(value - centre) <= tolerance


def label_metrics(truth, pred, tercile, *, n_boot, seed):
    """Calibration and accuracy of one label on the rows with a finite estimate.

    Parameters
    ----------
    truth : `~numpy.ndarray`, shape (n,)
    pred : dict
        One label of `read_predictions`.
    tercile : `~numpy.ndarray` of int, shape (n,)
        S/N tercile of each row (`terciles`).
    n_boot : int
        Bootstrap resamples of Δ.
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    dict
        Coverages in per cent (overall and per tercile), the Spearman correlation of σ
        with ``|ŷ − y|``, the median σ per tercile and their low/high ratio, the sample
        spread check, Δ with its bootstrap 1σ, ΔP (%), bias and the median σ of each
        source.
    """
    from scipy.stats import spearmanr

    value, err = pred["value"], pred["err"]
    ok = np.isfinite(value) & np.isfinite(err) & np.isfinite(truth)
    residual = value[ok] - truth[ok]
    error = np.abs(residual)
    sigma, group = err[ok], tercile[ok]

    rng = np.random.default_rng(seed)
    resampled = error[rng.integers(0, len(error), (n_boot, len(error)))].mean(axis=1)
    spread = np.std(pred["samples"][ok], axis=1) / sigma
    deviation = np.abs(spread - 1)
    median_sigma = {t: float(np.median(sigma[group == k])) for k, t in enumerate(TERCILES)}
    with np.errstate(divide="ignore", invalid="ignore"):
        delta_p = 100 * float(np.mean(error / np.abs(truth[ok])))
    return {
        "n": int(ok.sum()),
        "coverage": {"all": coverage(error, sigma)}
        | {t: coverage(error[group == k], sigma[group == k]) for k, t in enumerate(TERCILES)},
        "spearman": float(spearmanr(sigma, error).statistic),
        "median_sigma": {"all": float(np.median(sigma))} | median_sigma,
        "sigma_ratio": median_sigma["low"] / median_sigma["high"],
        "samples_max_deviation": float(deviation.max()),
        "samples_within": 100 * float(np.mean(deviation <= SAMPLES_TOLERANCE)),
        "delta": float(error.mean()),
        "delta_bootstrap": float(resampled.std()),
        "delta_p": delta_p,
        "bias": float(residual.mean()),
        "median_sigma_sources": {s: float(np.median(v[ok])) for s, v in pred["sources"].items()},
    }


#: LAMOST spectral classes (``subclass`` of ``labels.csv``, first letter) of the
#: hot stars, for which LASP's labels are least reliable.
HOT_CLASSES = ("O", "B", "A")


def coverage_by_class(estimates, truth, subclass, names):
    """1σ and 2σ coverage per label for the hot stars (LAMOST class O, B, A) and the
    others: where the real-data errors' heavy tails come from.

    Returns
    -------
    dict
        Group name to ``{label: {"n": n, 1: per cent, 2: per cent}}``.
    """
    predictions = read_predictions(estimates, names)
    hot = np.array([str(c)[:1] in HOT_CLASSES for c in subclass])
    groups = {"hot (LAMOST class O, B, A)": hot, "F, G, K, M": ~hot}
    out = {}
    for group, rows in groups.items():
        out[group] = {}
        for j, name in enumerate(names):
            value, err = predictions[name]["value"][rows], predictions[name]["err"][rows]
            error = np.abs(value - truth[rows, j])
            ok = np.isfinite(error) & np.isfinite(err)
            out[group][name] = coverage(error[ok], err[ok])
    return out


def flag_rates(flags):
    """Per cent of rows with each reported flag, any other flag set, and any flag at all."""
    from astro_spt.flags import FLAGS

    flags = np.asarray(flags, dtype=np.int64)
    rates = {name: 100 * float(np.mean(flags & FLAGS[name].value != 0)) for name in REPORTED_FLAGS}
    for definition in FLAGS:
        rate = 100 * float(np.mean(flags & definition.value != 0))
        if definition.name not in rates and rate > 0:
            rates[definition.name] = rate
    return rates | {"any flag": 100 * float(np.mean(flags != 0))}


#: LASP log g classes of the domain check (part 2): name, lower and upper bound
DOMAIN_CLASSES = (
    ("giants (log g < 3.5)", -np.inf, 3.5),
    ("subgiants (3.5 ≤ log g < 3.8)", 3.5, 3.8),
    ("dwarfs (log g ≥ 3.8)", 3.8, np.inf),
)
DOMAIN_FLAGS = ("out_of_distribution", "outside_label_range", "large_uncertainty")


def domain_rates(bundle, data):
    """Warning rates of a model of giants on real DR10 spectra, by LASP log g class.

    Returns
    -------
    dict
        Class name to ``{"n": stars, flag: per cent, ..., "any of these": per cent}``
        (`DOMAIN_FLAGS`).
    """
    import astro_spt
    from astro_spt.flags import FLAGS

    table, paths = rl.load_sample(data)
    estimated = astro_spt.estimate(paths, model=bundle, seed=0)  # the flags only
    flags = np.asarray(estimated["flags"], dtype=np.int64)
    logg = np.asarray(table["logg"], float)
    warned = np.zeros(len(flags), bool)
    per_flag = {}
    for name in DOMAIN_FLAGS:
        per_flag[name] = flags & FLAGS[name].value != 0
        warned |= per_flag[name]
    rates = {}
    for name, low, high in DOMAIN_CLASSES:
        rows = (logg >= low) & (logg < high)
        rates[name] = {"n": int(rows.sum())} | {
            flag: 100 * float(np.mean(hit[rows])) for flag, hit in per_flag.items()
        }
        rates[name]["any of these"] = 100 * float(np.mean(warned[rows]))
    return rates


# --- masking stress test --------------------------------------------------------------


def in_windows(wavelength):
    """Whether each wavelength (Å) lies in one of `DR1_WINDOWS`."""
    return np.any([(wavelength >= a) & (wavelength <= b) for a, b in DR1_WINDOWS], axis=0)


def bad_pixels(spectrum):
    """A spectrum's masked pixels: its ``mask``, or an inverse variance of 0."""
    from astropy.nddata import InverseVariance

    bad = np.zeros(spectrum.flux.shape, bool) if spectrum.mask is None else spectrum.mask.copy()
    if isinstance(spectrum.uncertainty, InverseVariance):
        bad |= spectrum.uncertainty.array == 0
    return bad


def window_fractions(wavelength, bad):
    """Per window of `DR1_WINDOWS`: the number of ``bad`` pixels and of all pixels in it."""
    counts = []
    for a, b in DR1_WINDOWS:
        inside = (wavelength >= a) & (wavelength <= b)
        counts.append((int(bad[inside].sum()), int(inside.sum())))
    return counts


def dr1_templates(folder):
    """The masked pixels of the DR1 files inside `DR1_WINDOWS`.

    Returns
    -------
    list of (`~numpy.ndarray`, `~numpy.ndarray`)
        Per file, in name order: the observed-frame wavelengths (Å) of its pixels inside
        the windows and whether each is masked.
    """
    import astropy.units as u
    from specutils import Spectrum

    templates = []
    for path in sorted(folder.glob("*.fits*")):
        spectrum = Spectrum.read(path)
        wavelength = spectrum.spectral_axis.to_value(u.AA)
        inside = in_windows(wavelength)
        templates.append((wavelength[inside], bad_pixels(spectrum)[inside]))
    return templates


def rebuild(spectrum, mask):
    """``spectrum`` with ``mask``: same flux, spectral axis, uncertainty and meta."""
    from specutils import Spectrum

    return Spectrum(
        flux=spectrum.flux,
        spectral_axis=spectrum.spectral_axis,
        uncertainty=spectrum.uncertainty,
        mask=mask,
        meta=spectrum.meta,
    )


def dr1_mask(spectrum, template):
    """The spectrum's mask plus the DR1 file's masked pixels, by nearest DR1 pixel.

    Only pixels inside `DR1_WINDOWS` change.
    """
    import astropy.units as u

    wavelength = spectrum.spectral_axis.to_value(u.AA)
    dr1_wavelength, dr1_bad = template
    inside = np.flatnonzero(in_windows(wavelength))
    right = np.clip(np.searchsorted(dr1_wavelength, wavelength[inside]), 1, len(dr1_wavelength) - 1)
    left_closer = (wavelength[inside] - dr1_wavelength[right - 1]) < (
        dr1_wavelength[right] - wavelength[inside]
    )
    nearest = np.where(left_closer, right - 1, right)
    mask = np.zeros(wavelength.shape, bool) if spectrum.mask is None else spectrum.mask.copy()
    mask[inside] |= dr1_bad[nearest]
    return mask


def masking_stress(paths, truth, names, unmasked, bundle, dr1_folder, *, n_samples=None):
    """The masking stress test on the test files (see the module docstring).

    Parameters
    ----------
    paths : list of str
        The test files.
    truth : `~numpy.ndarray`, shape (n, D)
        Their labels, in the order of ``names``.
    names : sequence of str
    unmasked : `~astropy.table.QTable`
        `astro_spt.estimate` of the files themselves.
    bundle : `~astro_spt.bundle.EstimatorBundle`
    dr1_folder : `~pathlib.Path`
        The DR1 spectra.
    n_samples : int or None
        Samples per spectrum; default the model's.

    Returns
    -------
    dict
        ``windows`` (masked share of each window in the DR1 files, the test files and
        the stressed test files, per cent), ``control`` (largest difference per label
        between the files' estimates and the rebuilt spectra's), ``labels`` (per label:
        bias, 1σ coverage and median σ, unmasked and masked), ``flags`` (flag rates
        unmasked and masked) and ``seconds``.
    """
    import astropy.units as u
    from specutils import Spectrum

    start = time.perf_counter()
    templates = dr1_templates(dr1_folder)
    dr1_counts = [window_fractions(w, bad) for w, bad in templates]
    spectra = [Spectrum.read(path) for path in paths]
    own, stressed = [], []
    before_counts, after_counts = [], []
    for i, spectrum in enumerate(spectra):
        wavelength = spectrum.spectral_axis.to_value(u.AA)
        own.append(rebuild(spectrum, None if spectrum.mask is None else spectrum.mask.copy()))
        stressed.append(rebuild(spectrum, dr1_mask(spectrum, templates[i % len(templates)])))
        before_counts.append(window_fractions(wavelength, bad_pixels(spectrum)))
        after_counts.append(window_fractions(wavelength, bad_pixels(stressed[-1])))

    def share(counts):
        counts = np.asarray(counts)  # (spectra, windows, 2)
        return [100 * float(c[0] / c[1]) for c in counts.sum(axis=0)]

    control, _ = run_estimate(own, bundle, n_samples=n_samples)
    masked, _ = run_estimate(stressed, bundle, n_samples=n_samples)
    pred_unmasked = read_predictions(unmasked, names)
    pred_masked = read_predictions(masked, names)
    pred_control = read_predictions(control, names)
    labels = {}
    for j, name in enumerate(names):
        stats = {}
        for key, pred in (("unmasked", pred_unmasked[name]), ("masked", pred_masked[name])):
            ok = np.isfinite(pred["value"]) & np.isfinite(pred["err"])
            error = pred["value"][ok] - truth[ok, j]
            stats[key] = {
                "n": int(ok.sum()),
                "bias": float(error.mean()),
                "coverage_1sigma": 100 * float(np.mean(np.abs(error) <= pred["err"][ok])),
                "median_sigma": float(np.median(pred["err"][ok])),
            }
        stats["shift"] = stats["masked"]["bias"] - stats["unmasked"]["bias"]
        stats["unit"] = unit_of(unmasked, name)
        labels[name] = stats
    return {
        "windows": {
            f"{a:.0f}-{b:.0f}": {"dr1": d, "test": t, "stressed": s}
            for (a, b), d, t, s in zip(
                DR1_WINDOWS,
                share(dr1_counts),
                share(before_counts),
                share(after_counts),
                strict=True,
            )
        },
        "dr1_files": [[100 * m / n for m, n in counts] for counts in dr1_counts],
        "control": {
            name: float(
                np.nanmax(np.abs(pred_control[name]["value"] - pred_unmasked[name]["value"]))
            )
            for name in names
        },
        "labels": labels,
        "flags": {"unmasked": flag_rates(unmasked["flags"]), "masked": flag_rates(masked["flags"])},
        "seconds": time.perf_counter() - start,
    }


# --- splits ---------------------------------------------------------------------------


def rebuild_split(bundle, paths, y):
    """The train/validation/test rows the bundle was trained on, from its provenance.

    Preprocesses ``paths`` with the bundle's settings and splits them with
    `astro_spt.training.split_training_rows` and the bundle's ``estimator_config``.

    Returns
    -------
    split : dict
        Index arrays ``train``, ``validation``, ``test``.
    mismatch : str or None
        Why the split may not be the model's (sizes differing from the provenance).
    result : `~astro_spt.preprocess.PreprocessResult`
    """
    from astro_spt.estimation import preprocess_inputs
    from astro_spt.exceptions import AstroSPTWarning
    from astro_spt.training import EstimatorConfig, split_training_rows

    config = EstimatorConfig.from_dict(bundle.provenance["estimator_config"])
    result = preprocess_inputs(paths, bundle.preprocess_settings())
    scalings = [config.label_scaling.get(name, "linear") for name in bundle.label_names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstroSPTWarning)  # rows left out, as in training
        split = split_training_rows(result, y, config, scalings)
    sizes = {part: len(rows) for part, rows in split.items()}
    recorded = {part: bundle.provenance.get(f"n_{part}") for part in split}
    mismatch = None
    if sizes != recorded:
        mismatch = f"split sizes {sizes} differ from the model's provenance {recorded}"
        rl.log(f"WARNING: {mismatch}")
    return split, mismatch, result


def model_summary(bundle):
    """What identifies a bundle: description, version and training facts."""
    provenance = bundle.provenance
    return {
        "description": bundle.description,
        "revision": bundle.revision,
        "astro_spt_version": provenance.get("astro_spt_version"),
        "epochs": provenance.get("epochs"),
        "uncertainty": (provenance.get("uncertainty") or {}).get("method"),
        "n_samples": bundle.n_samples,
    }


# --- parts ----------------------------------------------------------------------------


def evaluate(bundle, paths, truth, snr, *, n_samples=None, n_boot=1000):
    """Estimate the test files and compute every calibration table of one part.

    Parameters
    ----------
    bundle : `~astro_spt.bundle.EstimatorBundle`
    paths : list of str
        The test files.
    truth : `~numpy.ndarray`, shape (n, D)
        Their labels, in the order of ``bundle.label_names``.
    snr : `~numpy.ndarray`, shape (n,)
        Their S/N, which defines the terciles.
    n_samples : int or None
        Samples per spectrum; default the model's.
    n_boot : int
        Bootstrap resamples of Δ.

    Returns
    -------
    table : `~astropy.table.QTable`
        The estimates.
    summary : dict
        ``labels`` (`label_metrics` per label, plus its ``unit``), ``flags``
        (`flag_rates`), ``snr_edges``, ``error_sources`` (whether `astro_spt.estimate`
        gave them) and ``samples_column`` (the type of the samples column).
    """
    names = list(bundle.label_names)
    table, seconds = run_estimate(paths, bundle, n_samples=n_samples)
    rl.log(f"estimated {len(paths)} test files in {seconds:.0f} s")
    tercile, edges = terciles(snr)
    predictions = read_predictions(table, names)
    labels = {
        name: label_metrics(truth[:, j], predictions[name], tercile, n_boot=n_boot, seed=0)
        | {"unit": unit_of(table, name)}
        for j, name in enumerate(names)
    }
    return table, {
        "labels": labels,
        "flags": flag_rates(table["flags"]),
        "snr_edges": [float(e) for e in edges],
        "error_sources": any(predictions[n]["sources"] for n in names),
        "samples_column": type(table[f"{names[0]}_samples"]).__name__,
        "estimate_seconds": seconds,
    }


def real_part(args):
    """Part 1: SPT on real LAMOST DR10 spectra, and the masking stress test."""
    import astro_spt
    from astro_spt.estimation import preprocess_inputs

    times = {}
    start = time.perf_counter()
    table, paths = rl.load_sample(args.data)
    labels = rl.label_table(table)
    y = rl.label_array(labels)
    mismatch = None
    if args.model:
        bundle = astro_spt.load_model(args.model)
        split, mismatch, _ = rebuild_split(bundle, paths, y)
        times["preprocess_and_split"] = time.perf_counter() - start
        rl.log(f"loaded {args.model}, rebuilt its split in {times['preprocess_and_split']:.0f} s")
    else:
        overrides = {"training": {"max_epochs": args.max_epochs}} if args.max_epochs else {}
        config = rl.spt_config(args.seed, **overrides)
        result = preprocess_inputs(paths, rl.preprocess_config())
        times["preprocess"] = time.perf_counter() - start
        rl.log(f"read and preprocessed {len(paths)} spectra in {times['preprocess']:.0f} s")
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", astro_spt.exceptions.AstroSPTWarning)
            bundle, history = astro_spt.train(
                result, labels, label_names=list(rl.LABELS), config=config, device=args.device
            )
        times["train"] = time.perf_counter() - start
        split = history.split
        rl.log(f"SPT trained in {times['train']:.0f} s: {history.n_epochs} epochs")
        if args.save_model:
            bundle.save_pretrained(args.save_model)
            rl.log(f"saved the bundle to {args.save_model}")
    if tuple(bundle.label_names) != rl.LABELS:
        raise SystemExit(f"--model has labels {bundle.label_names}, expected {rl.LABELS}")

    i_test = split["test"]
    test_paths = [paths[i] for i in i_test]
    snr = np.asarray(table["snrg"], float)[i_test]
    estimates, summary = evaluate(
        bundle, test_paths, y[i_test], snr, n_samples=args.n_samples, n_boot=args.bootstrap
    )
    times["estimate"] = summary.pop("estimate_seconds")
    summary["by_class"] = coverage_by_class(
        estimates, y[i_test], np.asarray(table["subclass"])[i_test], list(rl.LABELS)
    )
    rl.log("masking stress test")
    summary["masking"] = masking_stress(
        test_paths,
        y[i_test],
        rl.LABELS,
        estimates,
        bundle,
        args.data / "lamost-lrs" / "dr1" / "spectra",
        n_samples=args.n_samples,
    )
    times["masking"] = summary["masking"].pop("seconds")
    return summary | {
        "title": "Part 1: SPT on real LAMOST DR10 spectra (LASP labels), test split",
        "data": (
            f"LAMOST DR10, {len(paths)} spectra; split {_sizes(split)} (seed {args.seed}); "
            "S/N = snrg of labels.csv"
        ),
        "split": _sizes(split),
        "split_mismatch": mismatch,
        "model": model_summary(bundle) | {"source": str(args.model or "trained by this run")},
        "times_s": times,
    }


def mock_part(args):
    """Part 2: the default model (or ``--mock-model``) on its mock test set; None if no mock."""
    import astropy.units as u
    from astropy.table import QTable

    import astro_spt

    catalog_path = args.mock_dir / "mock_catalog.ecsv"
    if not catalog_path.is_file():
        rl.log(f"part 2 skipped: no mock catalogue {catalog_path} (run build_default_model.py)")
        return None
    start = time.perf_counter()
    bundle = astro_spt.load_model(args.mock_model)
    catalog = QTable.read(catalog_path)
    paths = [str(args.mock_dir / "spectra" / Path(name).name) for name in catalog["file"]]
    y = np.stack(
        [
            u.Quantity(catalog[name], unit).value
            for name, unit in zip(bundle.label_names, bundle.label_units, strict=True)
        ],
        axis=1,
    )
    split, mismatch, result = rebuild_split(bundle, paths, y)
    times = {"preprocess_and_split": time.perf_counter() - start}
    seconds = times["preprocess_and_split"]
    rl.log(f"mock: {len(paths)} spectra, split {_sizes(split)} in {seconds:.0f} s")
    i_test = split["test"]
    if "snrg" in catalog.colnames:
        snr, snr_source = np.asarray(catalog["snrg"], float)[i_test], "snrg of the mock catalogue"
    else:
        snr, snr_source = result.snr[i_test], "preprocessing S/N"
    _, summary = evaluate(
        bundle,
        [paths[i] for i in i_test],
        y[i_test],
        snr,
        n_samples=args.n_samples,
        n_boot=args.bootstrap,
    )
    times["estimate"] = summary.pop("estimate_seconds")
    start = time.perf_counter()
    summary["domain"] = domain_rates(bundle, args.data)
    times["domain_check"] = time.perf_counter() - start
    return summary | {
        "title": "Part 2: the default model on its mock test set",
        "data": (
            f"mock LAMOST spectra in {args.mock_dir} ({len(paths)}); split rebuilt from the "
            f"provenance: {_sizes(split)}; S/N = {snr_source}"
        ),
        "split": _sizes(split),
        "split_mismatch": mismatch,
        "model": model_summary(bundle)
        | {"source": str(args.mock_model or "astro_spt.load_model()")},
        "times_s": times,
    }


def _sizes(split):
    return {part: len(rows) for part, rows in split.items()}


# --- tables ---------------------------------------------------------------------------


def markdown(header, rows):
    """A Markdown pipe table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def mark(ok):
    """✓ or ✗."""
    return "✓" if ok else "✗"


def _g(value):
    """Three significant digits, trailing zeros kept."""
    return f"{value:#.3g}".rstrip(".")


#: Coverage of a Gaussian within 1σ and 2σ (per cent).
GAUSSIAN_COVERAGE = {1: 68.27, 2: 95.45}


def coverage_z(value, n, k):
    """How many binomial standard deviations a coverage of ``value`` per cent over ``n``
    stars lies from a Gaussian's within ``k``σ: beyond about 2 (either way), the σ are
    miscalibrated there; within it, the stars are too few to tell."""
    p = GAUSSIAN_COVERAGE[k] / 100
    return (value / 100 - p) / np.sqrt(p * (1 - p) / n)


def calibrated_pass_probability(sizes, n_sim=20_000, seed=0):
    """Chance that a perfectly calibrated model meets every coverage check of a part.

    Its standardised errors are drawn from N(0, 1) for each label, with the S/N terciles'
    sizes of ``sizes`` (``{label: [n_low, n_mid, n_high]}``), and the coverage targets
    (`COVERAGE_TARGET`) checked overall and in each tercile, as `part_sections` checks
    them: what the finite test set alone allows.
    """
    rng = np.random.default_rng(seed)
    passed = np.ones(n_sim, bool)
    for counts in sizes.values():
        groups = [np.abs(rng.standard_normal((n_sim, n))) for n in counts]
        for z in [np.concatenate(groups, axis=1), *groups]:
            for k in COVERAGE_TARGET:
                passed &= meets_target(100 * np.mean(z <= k, axis=1), k)
    return float(passed.mean())


def part_sections(part):
    """The Markdown sections (title, table) of one part's summary."""
    labels = part["labels"]
    low, high = part["snr_edges"]
    subsets = {
        "all": "all",
        "low": f"low S/N (< {low:.0f})",
        "mid": f"mid S/N ({low:.0f}–{high:.0f})",
        "high": f"high S/N (≥ {high:.0f})",
    }
    rows = []
    for name, m in labels.items():
        for key, text in subsets.items():
            n = m["coverage"][key]["n"]
            cells = [text, str(n), f"{100 * np.sqrt(0.683 * 0.317 / n):.1f}"]
            for k in (1, 2):
                value = m["coverage"][key][k]
                cells.append(f"{value:.1f} {mark(meets_target(value, k))}")
            cells += [f"{coverage_z(m['coverage'][key][k], n, k):+.1f}" for k in (1, 2)]
            rows.append([name, *cells])
    coverage_table = markdown(
        [
            "label",
            "test stars",
            "n",
            "binomial 1σ of a 68 % coverage (%)",
            "within 1σ (%) [68 ± 4]",
            "within 2σ (%) [95 ± 3]",
            "1σ: z from 68.3 %",
            "2σ: z from 95.4 %",
        ],
        rows,
    )
    sizes = {name: [m["coverage"][t]["n"] for t in TERCILES] for name, m in labels.items()}
    coverage_table += (
        "\n\nz: the coverage's distance from a Gaussian's in binomial standard deviations "
        "(beyond about ±2: miscalibrated). A perfectly calibrated model would meet every "
        f"coverage target of this table with probability {calibrated_pass_probability(sizes):.3f} "
        "on test sets of these sizes (20,000 simulations of N(0, 1) errors): the "
        "±4 % tolerance at 1σ is about one binomial standard deviation of a tercile."
    )
    rows = [
        [
            name,
            m["unit"] or "—",
            f"{m['spearman']:.2f} {mark(m['spearman'] >= SPEARMAN_MIN)}",
            _g(m["median_sigma"]["low"]),
            _g(m["median_sigma"]["high"]),
            f"{m['sigma_ratio']:.2f} {mark(m['sigma_ratio'] >= SIGMA_RATIO_MIN)}",
        ]
        for name, m in labels.items()
    ]
    tracking = markdown(
        [
            "label",
            "unit",
            f"Spearman ρ(σ, abs. error) [≥ {SPEARMAN_MIN}]",
            "median σ, low S/N",
            "median σ, high S/N",
            f"ratio [≥ {SIGMA_RATIO_MIN}]",
        ],
        rows,
    )
    rows = [
        [
            name,
            f"{m['samples_max_deviation']:.3g}",
            f"{m['samples_within']:.1f} {mark(m['samples_within'] == 100)}",
        ]
        for name, m in labels.items()
    ]
    samples = markdown(
        ["label", "max abs(std(samples) / X_err − 1)", "rows within 10 % (%) [100]"], rows
    )
    rows = []
    for flag, rate in part["flags"].items():
        limit = FLAG_MAX.get(flag)
        target = "—" if limit is None else f"≤ {limit:g}"
        rows.append(
            [flag, f"{rate:.1f}" + ("" if limit is None else f" {mark(rate <= limit)}"), target]
        )
    flags = markdown(["flag", "test rows (%)", "target"], rows)
    rows = [
        [
            name,
            m["unit"] or "—",
            str(m["n"]),
            f"{_g(m['delta'])} ± {m['delta_bootstrap']:.2g}",
            f"{m['delta_p']:.2f}",
            _g(m["bias"]),
        ]
        for name, m in labels.items()
    ]
    accuracy = markdown(["label", "unit", "n", "Δ ± bootstrap 1σ", "ΔP (%)", "bias"], rows)
    sections = [
        ("Coverage of the test labels by the estimated uncertainties", coverage_table),
        ("Does σ track the error? (S/N terciles of the test set)", tracking),
        ("Samples against X_err, per row", samples),
        ("Flag rates on the test set", flags),
        ("Accuracy on the test set", accuracy),
    ]
    sources = sorted({s for m in labels.values() for s in m["median_sigma_sources"]})
    if sources:
        rows = [
            [name, m["unit"] or "—", _g(m["median_sigma"]["all"])]
            + [_g(m["median_sigma_sources"].get(s, np.nan)) for s in sources]
            for name, m in labels.items()
        ]
        sections.append(
            (
                "Median σ of each source of uncertainty (error_sources=True)",
                markdown(["label", "unit", "σ (total)", *(f"σ {s}" for s in sources)], rows),
            )
        )
    if "by_class" in part:
        rows = [
            [name, group, str(c["n"]), f"{c[1]:.1f}", f"{c[2]:.1f}"]
            for group, per_label in part["by_class"].items()
            for name, c in per_label.items()
        ]
        sections.append(
            (
                "Coverage by spectral class (LAMOST subclass): where the heavy tails are",
                markdown(["label", "stars", "n", "within 1σ (%)", "within 2σ (%)"], rows),
            )
        )
    if "masking" in part:
        sections += masking_sections(part["masking"])
    return sections


def masking_sections(masking):
    """The Markdown sections of the masking stress test."""
    rows = [
        [window, f"{s['dr1']:.1f}", f"{s['test']:.1f}", f"{s['stressed']:.1f}"]
        for window, s in masking["windows"].items()
    ]
    windows = markdown(
        ["window (Å, observed)", "DR1 files (%)", "test files (%)", "stressed test files (%)"],
        rows,
    )
    rows = []
    for name, m in masking["labels"].items():
        limit = MASKED_SHIFT_MAX.get(name)
        shift = _g(m["shift"]) + ("" if limit is None else f" {mark(abs(m['shift']) <= limit)}")
        cov = m["masked"]["coverage_1sigma"]
        lo, hi = MASKED_COVERAGE
        rows.append(
            [
                name,
                m["unit"] or "—",
                _g(m["unmasked"]["bias"]),
                _g(m["masked"]["bias"]),
                shift,
                "—" if limit is None else f"≤ {limit:g}",
                f"{m['unmasked']['coverage_1sigma']:.1f}",
                f"{cov:.1f} {mark(lo <= cov <= hi)}",
                _g(m["unmasked"]["median_sigma"]),
                _g(m["masked"]["median_sigma"]),
            ]
        )
    labels = markdown(
        [
            "label",
            "unit",
            "bias, unmasked",
            "bias, masked",
            "shift",
            "shift target",
            "1σ (%), unmasked",
            f"1σ (%), masked [{MASKED_COVERAGE[0]:g}–{MASKED_COVERAGE[1]:g}]",
            "median σ, unmasked",
            "median σ, masked",
        ],
        rows,
    )
    names = list(dict.fromkeys([*masking["flags"]["unmasked"], *masking["flags"]["masked"]]))
    rows = [
        [
            flag,
            f"{masking['flags']['unmasked'].get(flag, 0.0):.1f}",
            f"{masking['flags']['masked'].get(flag, 0.0):.1f}",
        ]
        for flag in names
    ]
    flags = markdown(["flag", "unmasked (%)", "masked (%)"], rows)
    control = ", ".join(f"{name} {value:.3g}" for name, value in masking["control"].items())
    return [
        (
            "Masking stress test: masked share of the DR1 windows (each test spectrum takes "
            "the mask of DR1 file i mod 10)",
            windows,
        ),
        (
            "Masking stress test: bias, coverage and σ (control: spectra rebuilt with their "
            f"own mask reproduce the files' estimates to max abs. difference {control})",
            labels,
        ),
        ("Masking stress test: flag rates", flags),
    ]


def render(parts, header):
    """The Markdown report of all parts."""
    text = [header, ""]
    for part in parts:
        text += [f"## {part['title']}", "", part["data"] + ".", ""]
        model = part["model"]
        text += [
            f"Model: {model['source']} ({model['description'].rstrip('.') or 'no description'}; "
            f"astro_spt {model['astro_spt_version']}, {model['epochs']} epochs, uncertainty "
            f"{model['uncertainty']}, {model['n_samples']} samples); times (s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in part["times_s"].items())
            + f"; samples column: {part['samples_column']}; error sources: "
            + ("yes" if part["error_sources"] else "no"),
            "",
        ]
        if part["split_mismatch"]:
            text += [f"**Warning**: {part['split_mismatch']}.", ""]
        for title, table in part_sections(part):
            text += [f"**{title}**", "", table, ""]
        if "domain" in part:
            rows = [
                [name, str(rates["n"])]
                + [f"{rates[k]:.1f}" for k in (*DOMAIN_FLAGS, "any of these")]
                for name, rates in part["domain"].items()
            ]
            text += [
                "**Real LAMOST DR10 spectra (never seen by this model), by LASP log g: "
                "per cent flagged**",
                "",
                markdown(["stars", "n", *DOMAIN_FLAGS, "any of these"], rows),
                "",
            ]
    return "\n".join(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=rl.DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=rl.SEED, help="training seed (part 1)")
    parser.add_argument("--device", default=None, help="torch device of SPT training")
    parser.add_argument("--max-epochs", type=int, default=None, help="shorten training")
    parser.add_argument("--model", type=Path, default=None, help="part 1: a saved bundle")
    parser.add_argument("--save-model", type=Path, default=None, help="part 1: save the bundle")
    parser.add_argument("--mock-model", type=Path, default=None, help="part 2: a bundle")
    parser.add_argument("--mock-dir", type=Path, default=DEFAULT_MOCK)
    parser.add_argument("--n-samples", type=int, default=None, help="default: the model's")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples of Δ")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-mock", action="store_true")
    args = parser.parse_args()
    if args.model and (args.max_epochs or args.save_model):
        parser.error("--model evaluates a saved bundle: no --max-epochs or --save-model")

    import astro_spt

    start = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    parts = {}
    if not args.skip_real:
        parts["real"] = real_part(args)
    if not args.skip_mock:
        mock = mock_part(args)
        if mock is not None:
            parts["mock"] = mock
    total = time.perf_counter() - start
    package = f"astro_spt {astro_spt.__version__} from {Path(astro_spt.__file__).parent}"
    header = (
        f"# Calibration of uncertainties and flags\n\n{package}; astro_spt.estimate(..., "
        f"seed=0); machine: {rl.machine_description(args.device)}; total {total / 60:.1f} min"
        + (f"; training cut to {args.max_epochs} epochs (smoke run)" if args.max_epochs else "")
    )
    text = render(parts.values(), header)
    (args.output / "results.md").write_text(text + "\n")
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "astro_spt": package,
        "total_s": total,
    } | parts
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print("\n" + text)


if __name__ == "__main__":
    main()
