"""Ablations of the choices the SPT paper leaves open, on validation data only.

Command (from the repository root)::

    python benchmarks/ablations.py [--only NAME,...] [--output DIR]

The split is the one of ``benchmarks/real_lamost.py`` (1,979 LAMOST DR10 spectra with
LASP labels, seeded and stratified 8:2). Its test part is never read here. Inside the
training part (train + validation of the benchmark) `astro_spt.train` makes a second,
inner seeded split: 72 % to fit, 8 % for early stopping and the uncertainty calibration,
and 20 % — the *selection set* — on which every variant is scored. A variant changes one
setting of the reference configuration (`real_lamost.spt_config`); the variants are
compared on the same inner split and seed:

- attention weights: enhanced softmax (paper) or softmax;
- loss: Mahalanobis (paper), squared Mahalanobis, mean squared error;
- MODWT denoising: off, level J, threshold rule, threshold mode;
- normalisation: pseudo-continuum, median, per-spectrum standardisation;
- PCA size; dropout rate and position; Monte Carlo passes T; label scaling; batch size;
  network size and learning rate;
- the paper's network size (19 M parameters) only when named with ``--only``, as it
  takes many minutes on two cores;
- and, for scale, the four baselines fitted on the same inner split and the reference
  configuration with other seeds (which also moves the inner split): differences smaller
  than that seed scatter are ties.

Per variant it prints Δ per label, ΔP of Teff and log g, the 1σ and 2σ coverage of the
calibrated uncertainties (and the 1σ coverage before calibration), the epochs and the
training time, and a single score: the mean over the labels of Δ divided by the label's
standard deviation in the training part (lower is better). Results are appended to
``ablations.jsonl`` in the output folder (a rerun skips the variants already there) and
the table is written to ``ablations.md`` and ``ablations.rst``.

The variants use the benchmark's network; ``docs/benchmarks.rst`` discusses the numbers.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import real_lamost as rl

DEFAULT_OUTPUT = rl.ROOT / "benchmarks" / "results" / "ablations"


#: The reference of the single-setting rows: the package defaults before this benchmark
#: (pseudo-continuum normalisation, MODWT level 4, 143 PCA components, batch 64, linear
#: labels) with the benchmark's network (`real_lamost.spt_config`).
REFERENCE_PREPROCESS = rl.CONTINUUM_PREPROCESS
REFERENCE = {"n_components": 143, "label_scaling": {}, "training": {"batch_size": 64}}


def _merge(base, changes):
    out = dict(base)
    for key, value in changes.items():
        out[key] = out.get(key, {}) | value if isinstance(value, dict) and value else value
    return out


def variants():
    """Name → (group, preprocessing sections, `real_lamost.spt_config` overrides)."""
    out = {}

    def add(group, name, pre=None, **changes):
        out[name] = (group, _merge(REFERENCE_PREPROCESS, pre or {}), _merge(REFERENCE, changes))

    add("reference", "reference")
    add("attention", "softmax attention", network={"attention_activation": "softmax"})
    add("loss", "loss: squared Mahalanobis", training={"loss": "mahalanobis_squared"})
    add("loss", "loss: MSE", training={"loss": "mse"})
    add("denoise", "denoise off", {"denoise": {"enabled": False}})
    add("denoise", "denoise J=2", {"denoise": {"level": 2}})
    add("denoise", "denoise J=6", {"denoise": {"level": 6}})
    add("denoise", "denoise threshold per level", {"denoise": {"threshold": "level"}})
    add("denoise", "denoise hard threshold", {"denoise": {"mode": "hard"}})
    add("normalise", "normalise: median", {"normalize": {"method": "median"}})
    add("normalise", "normalise: standardise", {"normalize": {"method": "standardize"}})
    add("PCA", "PCA 64", n_components=64)
    add("PCA", "PCA 256", n_components=256)
    add("dropout", "dropout 0.05", network={"dropout": 0.05})
    add("dropout", "dropout 0.2", network={"dropout": 0.2})
    add("dropout", "dropout 0.3", network={"dropout": 0.3})
    add("dropout", "dropout in every block", network={"dropout_position": "all"})
    add("T", "T = 10", n_samples=10)
    add("T", "T = 30", n_samples=30)
    add("T", "T = 300", n_samples=300)
    add("labels", "Teff in log10", label_scaling={"teff": "log10"})
    add("batch", "batch 32", training={"batch_size": 32})
    add("batch", "batch 128", training={"batch_size": 128})
    add("optimiser", "learning rate 1e-4 (paper)", training={"learning_rate": 1e-4})
    add("optimiser", "learning rate 3e-4", training={"learning_rate": 3e-4})
    add("optimiser", "learning rate 3e-3", training={"learning_rate": 3e-3})
    add("size", "d_model 256, 4 blocks", network={"d_model": 256, "n_blocks": 4})
    add("size", "d_model 64, 1 block", network={"d_model": 64, "n_blocks": 1})
    # the paper's 19 M parameters: many minutes per run on two cores, run on request only
    add("size", "d_model 512, 6 blocks (paper)", network={"d_model": 512, "n_blocks": 6})
    add("seed", "reference (seed +1)", training={"seed": rl.SEED + 1})
    add("seed", "reference (seed +2)", training={"seed": rl.SEED + 2})
    # the winners of the single-setting rows together (standardise, J=2, PCA 256, batch
    # 128, log Teff) = the benchmark configuration, on two seeds (two inner splits)
    for name, seed in (("combined", rl.SEED), ("combined (seed +1)", rl.SEED + 1)):
        out[name] = ("combined", rl.BENCHMARK_PREPROCESS, {"training": {"seed": seed}})
    return out


def score(metrics, scale):
    return float(np.mean(np.asarray(metrics["delta"]) / scale))


def run_variant(result, labels, scale, overrides, seed):
    import astro_spt
    from astro_spt.metrics import metrics_table

    overrides = dict(overrides)
    config = rl.spt_config(seed, test_fraction=0.2, val_fraction=0.1, **overrides)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", astro_spt.exceptions.AstroSPTWarning)
        bundle, history = astro_spt.train(
            result, labels, label_names=list(rl.LABELS), config=config
        )
    seconds = time.perf_counter() - start
    metrics = history.test_metrics
    sel = history.split["test"]
    y = rl.label_array(labels)
    raw, _ = rl.predict(bundle, result, sel, seed, sources=["epistemic"])
    before = metrics_table(y[sel], raw.mean, raw.std, names=list(rl.LABELS))
    return {
        "n_selection": len(sel),
        "score": score(metrics, scale),
        "delta": [float(v) for v in metrics["delta"]],
        "delta_p": [float(v) for v in metrics["delta_p"]],
        "coverage_1sigma": [float(v) for v in metrics["coverage_1sigma"]],
        "coverage_2sigma": [float(v) for v in metrics["coverage_2sigma"]],
        "coverage_1sigma_uncalibrated": [float(v) for v in before["coverage_1sigma"]],
        "epochs": history.n_epochs,
        "best_val_loss": float(min(history.val_loss)),
        "seconds": seconds,
    }


def run_inner_baselines(result, labels, scale, seed, jobs):
    """The four baselines on the inner split and PCA inputs of the reference."""
    from astro_spt.baselines import run_baselines
    from astro_spt.pca import PCABasis
    from astro_spt.training import split_training_rows

    config = rl.spt_config(seed, test_fraction=0.2, val_fraction=0.1, **REFERENCE)
    y = rl.label_array(labels)
    inner = split_training_rows(result, y, config)
    fit = np.concatenate([inner["train"], inner["validation"]])
    pca = PCABasis.fit(result.flux[fit], n_components=config.n_components)
    table, _, times = run_baselines(
        pca.transform(result.flux[fit]),
        y[fit],
        pca.transform(result.flux[inner["test"]]),
        y[inner["test"]],
        label_names=list(rl.LABELS),
        seed=seed,
        n_jobs=jobs,
    )
    out = {}
    for name in times:
        m = table[table["model"] == name]
        out[f"baseline: {name}"] = {
            "group": "baselines",
            "n_selection": int(m["n"][0]),
            "score": score(m, scale),
            "delta": [float(v) for v in m["delta"]],
            "delta_p": [float(v) for v in m["delta_p"]],
            "seconds": times[name]["fit"],
        }
    return out


def render(records, fmt):
    from astropy.table import Table

    from astro_spt.baselines import format_table

    t = Table()
    t["variant"] = list(records)
    t["group"] = [r["group"] for r in records.values()]
    t["score"] = [r["score"] for r in records.values()]
    for i, label in enumerate(rl.LABELS):
        t[f"{label} Δ"] = [r["delta"][i] for r in records.values()]
    for i, label in enumerate(rl.LABELS[:2]):
        t[f"{label} ΔP (%)"] = [r["delta_p"][i] for r in records.values()]
    nan3 = [np.nan] * 3
    t["1σ cov. raw (%)"] = [
        100 * np.mean(r.get("coverage_1sigma_uncalibrated", nan3)) for r in records.values()
    ]
    t["1σ cov. (%)"] = [100 * np.mean(r.get("coverage_1sigma", nan3)) for r in records.values()]
    t["2σ cov. (%)"] = [100 * np.mean(r.get("coverage_2sigma", nan3)) for r in records.values()]
    t["epochs"] = [float(r.get("epochs", np.nan)) for r in records.values()]
    t["fit (s)"] = [r["seconds"] for r in records.values()]
    formats = {"score": ".4f", "logg Δ": ".4f", "feh Δ": ".4f", "epochs": ".0f", "fit (s)": ".0f"}
    for name in t.colnames[1:]:
        if t[name].dtype.kind == "f":
            t[name].format = formats.get(name, ".2f" if "ΔP" in name else ".1f")
    return format_table(t, fmt)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=rl.DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=rl.SEED)
    parser.add_argument(
        "--only", default=None, help="comma-separated variant names ('baselines' for those)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="threads per baseline model")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()

    from astro_spt.training import split_training_rows

    args.output.mkdir(parents=True, exist_ok=True)
    store = args.output / "ablations.jsonl"
    done = {}
    if store.is_file():
        for line in store.read_text().splitlines():
            record = json.loads(line)
            done[record.pop("variant")] = record
    todo = variants()
    if args.only:
        todo = {k: v for k, v in todo.items() if k in args.only.split(",")}
    else:
        todo.pop("d_model 512, 6 blocks (paper)")
    todo = {k: v for k, v in todo.items() if k not in done}

    table, paths = rl.load_sample(args.data)
    labels = rl.label_table(table)
    y = rl.label_array(labels)
    cache = {}

    def preprocessed(changes):
        from astro_spt.estimation import preprocess_inputs

        key = json.dumps(changes, sort_keys=True)
        if key not in cache:
            cache[key] = preprocess_inputs(paths, rl.preprocess_config(changes))
            rl.log(f"preprocessed with {changes}")
        return cache[key]

    # the benchmark's split, from the benchmark's preprocessing
    outer = split_training_rows(preprocessed(rl.BENCHMARK_PREPROCESS), y, rl.spt_config(args.seed))
    fit = np.sort(np.concatenate([outer["train"], outer["validation"]]))
    scale = y[fit].std(axis=0)
    rl.log(f"{len(fit)} spectra in the training part; label std {scale}")

    def save(name, record):
        done[name] = record
        with store.open("a") as f:
            f.write(json.dumps({"variant": name} | record) + "\n")

    wanted = not args.only or "baselines" in args.only.split(",")
    if wanted and not args.no_baselines and not any(k.startswith("baseline:") for k in done):
        for name, record in run_inner_baselines(
            rl.take(preprocessed(REFERENCE_PREPROCESS), fit),
            labels[fit],
            scale,
            args.seed,
            args.jobs,
        ).items():
            save(name, record)
            rl.log(f"{name}: score {record['score']:.4f}")
    # one preprocessing variant at a time, so that at most two are in memory
    order = sorted(todo.items(), key=lambda kv: json.dumps(kv[1][1], sort_keys=True))
    for name, (group, pre, overrides) in order:
        result = rl.take(preprocessed(pre), fit)
        seed = overrides.get("training", {}).get("seed", args.seed)
        record = {"group": group} | run_variant(result, labels[fit], scale, overrides, seed)
        save(name, record)
        rl.log(f"{name}: score {record['score']:.4f}, {record['epochs']} epochs")
        for key in [k for k in cache if k != json.dumps(pre, sort_keys=True)]:
            del cache[key]

    order = [k for k in variants() if k in done] + [k for k in done if k not in variants()]
    records = {k: done[k] for k in order}
    for fmt, suffix in (("markdown", "md"), ("rst", "rst")):
        (args.output / f"ablations.{suffix}").write_text(render(records, fmt) + "\n")
    print("\n" + render(records, "markdown"))


if __name__ == "__main__":
    main()
