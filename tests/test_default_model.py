"""Tests of the embedded default age/mass model (trained on the mock LAMOST sample)."""

import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest

import astro_spt
from astro_spt import flags
from astro_spt.hub import EMBEDDED_MODEL
from astro_spt.io import example_files

EXAMPLES = example_files()[0].parent
GIANTS = ["023", "080", "214"]  # LASP: Teff 4,800-5,000 K, log g 2.7-3.2
DWARF = "160"  # LASP log g 4.5


@pytest.fixture(scope="module")
def default_model():
    return astro_spt.load_model()


def example(number):
    return str(EXAMPLES / f"spec-55862-B6212_sp06-{number}.fits.gz")


def test_loads_offline_and_says_what_it_is(default_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = astro_spt.load_model()
    assert model.label_names == ("age", "mass")
    assert model.label_units == ("Gyr", "solMass")
    assert "mock" in model.description.lower()
    card = model.model_card
    for text in (
        "What this model is",
        "Random forest",
        "CatBoost",
        "SPT",
        "Guoshoujing",
        "scripts/build_default_model.py",
        "astro-spt train",
    ):
        assert text in card
    assert model.provenance["n_test"] > 500
    # calibrated on validation data: a weight per label for every source of uncertainty
    # (bundles following SPT paper Eq. 6 carry an uncertainty_scale instead)
    weights = model.uncertainty["weights"]
    assert sorted(weights) == ["aleatoric", "epistemic", "noise"]
    assert all(len(w) == 2 and min(w) > 0 for w in weights.values())
    assert model.provenance["estimator_config"]["calibrate"]


def test_shipped_size_is_small():
    import importlib.resources

    folder = importlib.resources.files("astro_spt").joinpath(*EMBEDDED_MODEL)
    size = sum(p.stat().st_size for p in Path(str(folder)).iterdir())
    assert size < 25 * 2**20


def test_estimates_for_real_giants(default_model):
    table = astro_spt.estimate([example(n) for n in GIANTS], default_model)
    assert table["age"].unit == u.Gyr and table["mass"].unit == u.solMass
    assert np.isfinite(table["age"].value).all() and np.isfinite(table["mass_err"].value).all()
    ranges = default_model.reference.label_ranges
    low, high = ranges["age"]
    assert ((table["age"].value >= low) & (table["age"].value <= high)).all()
    low, high = ranges["mass"]
    assert ((table["mass"].value >= low) & (table["mass"].value <= high)).all()
    assert not (table["flags"] & (flags.UNREADABLE | flags.OUTSIDE_LABEL_RANGE)).any()


def test_a_dwarf_is_flagged(default_model):
    table = astro_spt.estimate([example(DWARF)], default_model)
    suspicious = flags.OUT_OF_DISTRIBUTION | flags.OUTSIDE_LABEL_RANGE | flags.LARGE_UNCERTAINTY
    assert table["flags"][0] & suspicious


def test_real_dwarfs_are_out_of_its_distribution(shared_data, default_model):
    # a model of giants: on real DR10 spectra it never saw, out_of_distribution fires on
    # dwarfs far more often than on giants (all 1,979: 54 % of the dwarfs, 6.6 % of the
    # giants with log g < 3.5; benchmarks/calibration.py, part 2)
    from astropy.table import Table

    folder = shared_data / "lamost-lrs" / "dr10"
    labels = Table.read(folder / "labels.csv")
    rates = {}
    for name, rows in (("dwarfs", labels["logg"] >= 3.8), ("giants", labels["logg"] < 3.5)):
        files = [str(folder / "spectra" / f) for f in labels["file"][rows][:150]]
        table = astro_spt.estimate(files, default_model, n_samples=10)
        rates[name] = np.mean(table["flags"] & flags.OUT_OF_DISTRIBUTION != 0)
    assert rates["dwarfs"] >= 0.3 and rates["dwarfs"] >= 4 * rates["giants"], rates


def test_real_dr10_giants(shared_data, default_model):
    from astropy.table import Table

    folder = shared_data / "lamost-lrs" / "dr10"
    labels = Table.read(folder / "labels.csv")
    giants = labels[(labels["logg"] > 2.0) & (labels["logg"] < 3.3) & (labels["teff"] < 5300)]
    files = [str(folder / "spectra" / name) for name in giants["file"]]
    table = astro_spt.estimate(files, default_model)
    usable = (table["flags"] & flags.UNREADABLE) == 0
    assert usable.mean() > 0.95
    assert np.isfinite(table["age"].value[usable]).all()
    inside = (table["flags"][usable] & flags.OUTSIDE_LABEL_RANGE) == 0
    assert inside.mean() > 0.8, inside.mean()


def test_readme_command_runs(tmp_path):
    files = [str(p) for p in example_files()]
    out = subprocess.run(
        [sys.executable, "-m", "astro_spt.cli", "estimate", *files, "--no-progress"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "age" in out.stdout and "Gyr" in out.stdout
    assert "6 spectra" in out.stderr


def test_documentation_test_set_is_the_shipped_model_s():
    """docs/_static/default_model_test.ecsv (the docs' figures) belongs to the shipped
    weights, and reproduces the test accuracy the model card quotes."""
    import hashlib
    import json

    from astropy.table import QTable

    path = Path(__file__).resolve().parents[1] / "docs" / "_static" / "default_model_test.ecsv"
    if not path.is_file():
        pytest.skip("not a source checkout")
    table = QTable.read(path)
    bundle = Path(astro_spt.__file__).parent.joinpath(*EMBEDDED_MODEL)
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    names = ("model.safetensors", "pca.safetensors", "reference.safetensors")
    weights = "".join(config["files"][n]["sha256"] for n in names if n in config["files"])
    assert table.meta["model_fingerprint"] == hashlib.sha256(weights.encode()).hexdigest(), (
        "rerun python scripts/default_model_test_set.py"
    )
    metrics = config["provenance"]["metrics"]
    assert len(table) == config["provenance"]["n_test"]
    for name in ("age", "mass"):
        delta = np.mean(np.abs((table[name] - table[f"{name}_true"]).value))
        assert delta == pytest.approx(metrics[name]["delta"], rel=0.01)
