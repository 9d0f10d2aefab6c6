"""Tests of astro_spt.baselines: the four classical regressors and the Table 1 layout."""

import sys

import numpy as np
import pytest
from astropy.table import Table

from astro_spt import baselines
from astro_spt.baselines import (
    BASELINES,
    fit_baseline,
    format_table,
    paper_results,
    paper_table,
    predict_baseline,
    run_baselines,
)
from astro_spt.exceptions import AstroSPTWarning
from astro_spt.metrics import metrics_table

# Fewer trees than the defaults keep the suite fast; the defaults are checked separately.
# One thread: on a busy 2-core runner OpenMP threads waiting at barriers for a descheduled
# sibling made a 40-tree LightGBM fit take 26 s instead of 0.1 s.
N_JOBS = 1
FAST = {
    "random_forest": {"n_estimators": 100},
    "xgboost": {"n_estimators": 150},
    "lightgbm": {"n_estimators": 150},
    "catboost": {"iterations": 300},
}


@pytest.fixture(scope="module")
def regression():
    """400 stars, 10 features, two nonlinear labels on age-like and mass-like scales."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 10))
    age = 6 + 2 * np.sin(1.5 * x[:, 0]) + x[:, 1] ** 2 + 0.2 * rng.normal(size=400)
    mass = 1.2 + 0.15 * np.tanh(x[:, 2]) + 0.05 * x[:, 3] ** 2 + 0.01 * rng.normal(size=400)
    y = np.column_stack([age, mass])
    return x[:320], y[:320], x[320:], y[320:]


@pytest.fixture(scope="module")
def results(regression):
    return run_baselines(*regression, label_names=["age", "mass"], params=FAST, n_jobs=N_JOBS)


def test_every_baseline_beats_the_training_mean(regression, results):
    _, y_train, _, y_test = regression
    table, predictions, timings = results
    assert set(predictions) == set(timings) == set(BASELINES)
    mean_error = np.mean(np.abs(y_test - y_train.mean(axis=0)), axis=0)
    for name in BASELINES:
        assert predictions[name].shape == y_test.shape
        rows = table[table["model"] == name]
        assert list(rows["label"]) == ["age", "mass"]
        # Each model removes at least 40 % of the error of the constant predictor, per label.
        assert np.all(rows["delta"] < 0.6 * mean_error), (name, rows["delta"], mean_error)
        assert timings[name]["fit"] > 0 and timings[name]["predict"] > 0


def test_metrics_rows_are_metrics_table(regression, results):
    _, _, _, y_test = regression
    table, predictions, _ = results
    expected = metrics_table(y_test, predictions["xgboost"], names=["age", "mass"])
    rows = table[table["model"] == "xgboost"]
    for column in ("delta", "delta_p", "bias", "loa_low", "loa_high"):
        np.testing.assert_allclose(rows[column], expected[column])


@pytest.mark.parametrize("name", BASELINES)
def test_same_seed_same_model(regression, name):
    x_train, y_train, x_test, _ = regression
    small = {"iterations": 40} if name == "catboost" else {"n_estimators": 40}
    first = fit_baseline(name, x_train, y_train, seed=7, n_jobs=N_JOBS, **small)
    second = fit_baseline(name, x_train, y_train, seed=7, n_jobs=N_JOBS, **small)
    np.testing.assert_array_equal(first.predict(x_test), second.predict(x_test))


def test_seed_is_used(regression):
    x_train, y_train, x_test, _ = regression
    a = fit_baseline("random_forest", x_train, y_train, seed=0, n_estimators=20, n_jobs=N_JOBS)
    b = fit_baseline("random_forest", x_train, y_train, seed=1, n_estimators=20, n_jobs=N_JOBS)
    assert not np.array_equal(a.predict(x_test), b.predict(x_test))


def test_defaults_and_overrides():
    x = np.arange(60.0).reshape(30, 2)
    model = fit_baseline("random_forest", x, x[:, 0], n_estimators=5, n_jobs=1)
    assert model.params["n_estimators"] == 5
    assert model.params["max_features"] == baselines.DEFAULT_PARAMS["random_forest"]["max_features"]
    assert model.estimators[0].max_features == model.params["max_features"]
    assert baselines.DEFAULT_PARAMS["xgboost"]["n_estimators"] == 500


def test_lightgbm_one_model_per_label(regression):
    x_train, y_train, x_test, _ = regression
    model = fit_baseline("lightgbm", x_train, y_train, n_estimators=20, n_jobs=N_JOBS)
    assert len(model.estimators) == 2
    assert predict_baseline(model, x_test).shape == (80, 2)


def test_one_label_and_nan_labels(regression):
    x_train, y_train, x_test, _ = regression
    y = y_train[:, 0].copy()
    y[:10] = np.nan  # rows without a label are left out of the fit
    for name in ("random_forest", "catboost"):
        params = {"iterations": 30} if name == "catboost" else {"n_estimators": 20}
        pred = fit_baseline(name, x_train, y, n_jobs=N_JOBS, **params).predict(x_test)
        assert pred.shape == (80, 1)
        assert np.all(np.isfinite(pred))


def test_labels_are_standardised_and_restored():
    x = np.linspace(0, 1, 50)[:, None]
    y = np.column_stack([1000 + 100 * x[:, 0], np.full(50, 2.0)])  # the second is constant
    model = fit_baseline("random_forest", x, y, n_estimators=10, n_jobs=1)
    np.testing.assert_allclose(model.y_scale[1], 1.0)
    pred = model.predict(x)
    np.testing.assert_allclose(pred[:, 1], 2.0)
    assert np.abs(pred[:, 0] - y[:, 0]).max() < 15  # leaves of five of 50 steps of 2


def test_catboost_writes_nothing_to_the_working_directory(tmp_path, monkeypatch, regression):
    monkeypatch.chdir(tmp_path)
    x_train, y_train, _, _ = regression
    fit_baseline("catboost", x_train, y_train, iterations=10, n_jobs=N_JOBS)
    assert list(tmp_path.iterdir()) == []


def test_bad_input(regression):
    x_train, y_train, _, _ = regression
    with pytest.raises(ValueError, match="unknown baseline"):
        fit_baseline("svm", x_train, y_train)
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baselines(x_train, y_train, x_train, y_train, names=["svm"])
    with pytest.raises(ValueError, match="rows"):
        fit_baseline("random_forest", x_train, y_train[:10])
    with pytest.raises(ValueError, match="2-D"):
        fit_baseline("random_forest", x_train[:, 0], y_train)


def test_missing_library(monkeypatch, regression):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # makes ``import xgboost`` fail
    x_train, y_train, x_test, y_test = regression
    with pytest.raises(ImportError, match=r'pip install "astro-spt\[baselines\]"'):
        fit_baseline("xgboost", x_train, y_train)
    with pytest.warns(AstroSPTWarning, match="skipping the xgboost baseline"):
        table, predictions, _ = run_baselines(
            x_train,
            y_train,
            x_test,
            y_test,
            names=["random_forest", "xgboost"],
            params={"random_forest": {"n_estimators": 10}},
            n_jobs=N_JOBS,
        )
    assert set(table["model"]) == {"random_forest"}
    assert list(predictions) == ["random_forest"]
    with pytest.warns(AstroSPTWarning), pytest.raises(ImportError, match="no baseline"):
        run_baselines(x_train, y_train, x_test, y_test, names=["xgboost"])


def _rows():
    y = np.array([[4.0, 1.0], [8.0, 2.0]])
    return [
        metrics_table(y, y * 1.5, names=["age", "mass"], model="random_forest"),
        metrics_table(y, y * 1.1, names=["age", "mass"], model="catboost"),
        metrics_table(y, y * 1.01, names=["age", "mass"], model="SPT"),
    ]


def test_paper_table_layout():
    table = paper_table(_rows())
    assert table.colnames == ["model", "age Δ (Gyr)", "age ΔP (%)", "mass Δ (M☉)", "mass ΔP (%)"]
    assert list(table["model"]) == ["Random forest", "CatBoost", "SPT"]
    np.testing.assert_allclose(table["age ΔP (%)"], [50.0, 10.0, 1.0])
    np.testing.assert_allclose(table["age Δ (Gyr)"], [3.0, 0.6, 0.06])
    np.testing.assert_allclose(table["mass Δ (M☉)"], [0.75, 0.15, 0.015])


def test_paper_table_generalises_to_other_labels():
    y = np.array([[4500.0, 2.5, -0.2], [5000.0, 3.0, 0.1]])
    rows = metrics_table(y, y + 0.1, names=["teff", "logg", "feh"], model="lightgbm")
    table = paper_table(rows, label_units={"teff": "K", "logg": "dex"})
    assert table.colnames[1:] == [
        "teff Δ (K)",
        "teff ΔP (%)",
        "logg Δ (dex)",
        "logg ΔP (%)",
        "feh Δ",
        "feh ΔP (%)",
    ]
    with pytest.raises(ValueError, match="model"):
        paper_table(metrics_table(y, y, names=["a", "b", "c"]))


def test_paper_table_missing_entry_is_nan():
    y = np.ones((3, 1)) * 2
    rows = [
        metrics_table(np.ones((3, 2)), np.ones((3, 2)), names=["age", "mass"], model="xgboost"),
        metrics_table(y, y, names=["age"], model="SPT"),
    ]
    table = paper_table(rows)
    assert np.isnan(table["mass Δ (M☉)"][1])
    assert "| SPT | 0.00 | 0.00 | — | — |" in format_table(table)


def test_format_table_markdown_and_rst():
    table = paper_table(_rows())
    markdown = format_table(table).splitlines()
    assert markdown[0] == "| model | age Δ (Gyr) | age ΔP (%) | mass Δ (M☉) | mass ΔP (%) |"
    assert markdown[1] == "| --- | ---: | ---: | ---: | ---: |"
    # Δ gets enough decimals for two significant figures of the smallest value.
    assert markdown[-1] == "| SPT | 0.060 | 1.00 | 0.015 | 1.00 |"
    rst = format_table(table, fmt="rst").splitlines()
    assert rst[0] == rst[2] == rst[-1]
    assert set(rst[0]) == {"=", " "}
    assert rst[3].split() == ["Random", "forest", "3.000", "50.00", "0.750", "50.00"]
    # Every cell ends in its column: numbers right-aligned under the rule.
    assert len(rst[3]) == len(rst[0])
    with pytest.raises(ValueError, match="fmt"):
        format_table(table, fmt="latex")


def test_paper_results_are_table_1():
    table = paper_results()
    assert isinstance(table, Table)
    assert list(table["model"]) == ["Random forest", "XGBoost", "LightGBM", "CatBoost", "SPT"]
    np.testing.assert_allclose(table["age ΔP (%)"], [36.03, 28.31, 27.77, 25.10, 17.64])
    np.testing.assert_allclose(table["mass Δ (M☉)"], [0.14, 0.12, 0.11, 0.11, 0.08])
    assert table.colnames == paper_table(_rows()).colnames
