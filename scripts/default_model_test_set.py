"""The shipped default model's estimates on its own test set, for the documentation's figures.

Command (from the repository root, after building the mock sample that the default model
was trained on, ``build/default-model/mock``)::

    python scripts/default_model_test_set.py [--mock-dir DIR] [--output FILE]

The mock sample comes from ``scripts/build_default_model.py`` (or
``astro_spt.mock.build_mock_sample(data, out, seed=build_default_model.SEED)``). The test
split is rebuilt as training made it, by ``benchmarks/calibration.py``'s `rebuild_split`
(the bundle's provenance, the mock files preprocessed with the bundle's settings,
`astro_spt.training.split_training_rows`); the script stops if the split sizes differ from
the provenance's. The test stars are estimated with `astro_spt.estimate` (seed 0, the
model's number of Monte Carlo passes, ``error_sources=True``) and written, one row per
star, to ``docs/_static/default_model_test.ecsv``: the catalogue's true labels and S/N,
the estimates, their uncertainties (total and each source's) and flags. ``meta`` records the model's
weights' sha256 (`model_fingerprint`), so that a stale file is detected
(``tests/test_default_model.py``, and the documentation build stops).
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import calibration  # noqa: E402  (benchmarks/ is no package)

DEFAULT_OUTPUT = ROOT / "docs" / "_static" / "default_model_test.ecsv"


def model_fingerprint(config: dict) -> str:
    """The sha256 of the bundle's weights, PCA basis and embedding density (when it has
    one), as its ``config.json`` records them.

    Edits of the model card (``README.md``) leave it alone; new weights change it.
    """
    files = config["files"]
    names = ("model.safetensors", "pca.safetensors", "reference.safetensors")
    digests = "".join(files[name]["sha256"] for name in names if name in files)
    return hashlib.sha256(digests.encode()).hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mock-dir", type=Path, default=calibration.DEFAULT_MOCK)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    import astropy.units as u
    from astropy.table import QTable

    import astro_spt

    start = time.perf_counter()
    bundle = astro_spt.load_model()
    catalog = QTable.read(args.mock_dir / "mock_catalog.ecsv")
    paths = [str(args.mock_dir / "spectra" / Path(name).name) for name in catalog["file"]]
    names, units = bundle.label_names, bundle.label_units
    y = np.stack(
        [u.Quantity(catalog[n], unit).value for n, unit in zip(names, units, strict=True)], axis=1
    )
    split, mismatch, _ = calibration.rebuild_split(bundle, paths, y)
    if mismatch:
        raise SystemExit(f"not the model's split: {mismatch}")
    i_test = split["test"]
    print(f"split rebuilt in {time.perf_counter() - start:.0f} s: {calibration._sizes(split)}")

    start = time.perf_counter()
    estimates = astro_spt.estimate(
        [paths[i] for i in i_test], model=bundle, seed=0, error_sources=True
    )
    print(f"estimated {len(i_test)} test stars in {time.perf_counter() - start:.0f} s")

    table = QTable()
    table["kic"] = catalog["kic"][i_test]
    table["file"] = [Path(paths[i]).name for i in i_test]
    table["snr"] = np.asarray(catalog["snrg"], float)[i_test]
    table["snr"].description = "S/N in the g band of the spectrum (snrg)"
    for name, unit in zip(names, units, strict=True):
        true = u.Quantity(catalog[name][i_test], unit)
        table[f"{name}_true"] = true.astype(np.float32)
        table[f"{name}_true"].description = f"catalogue {name} (APOKASC-2)"
        sources = [c for c in estimates.colnames if c.startswith(f"{name}_err_")]
        for column in (name, f"{name}_err", *sources):
            table[column] = estimates[column].to(unit).astype(np.float32)
            table[column].info.description = estimates[column].info.description
    table["flags"] = estimates["flags"]
    for name in ("teff", "logg", "feh"):  # the labels the mock spectra were made from
        table[name] = catalog[name][i_test].astype(np.float32)
    table.meta.update(
        description=(
            "The default model's test set: held-out mock stars of "
            "scripts/build_default_model.py, estimated with astro_spt.estimate (seed 0)"
        ),
        model_fingerprint=model_fingerprint(
            json.loads((Path(bundle.source) / "config.json").read_text(encoding="utf-8"))
        ),
        astro_spt_version=astro_spt.__version__,
        n_samples=int(bundle.n_samples),
        split={part: len(rows) for part, rows in split.items()},
        command="python scripts/default_model_test_set.py",
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    table.write(args.output, overwrite=True)
    print(f"wrote {args.output} ({len(table)} rows, {args.output.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
