"""Tests of astro_spt.plots: structure of the paper's figures and writing them to disk."""

import subprocess
import sys

import astropy.units as u
import numpy as np
import pytest
from matplotlib.figure import Figure

from astro_spt import metrics
from astro_spt.plots import (
    evaluation_figures,
    plot_bland_altman,
    plot_learning_curve,
    plot_predicted_vs_true,
    plot_uncertainty,
    save_figures,
)
from astro_spt.training.loop import TrainingHistory

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stars():
    rng = np.random.default_rng(5)
    age = rng.uniform(1.0, 12.0, 400)
    pred = age + rng.normal(0.3, 0.8, 400)
    err = 0.1 * age + 0.2
    age[:3] = np.nan  # flagged rows must be ignored, not poison the figure
    return age, pred, err


@pytest.fixture
def history():
    train = list(np.linspace(2.0, 0.5, 30))
    val = list(np.linspace(2.1, 0.7, 20)) + [0.72 + 0.01 * i for i in range(10)]
    return TrainingHistory(
        train_loss=train, val_loss=val, best_epoch=19, averaged_epochs=list(range(20, 30))
    )


def _horizontal_lines(ax):
    return [
        line
        for line in ax.get_lines()
        if len(line.get_ydata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1]
    ]


def test_learning_curve(history):
    fig = plot_learning_curve(history)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["training"].get_ydata(), history.train_loss)
    np.testing.assert_array_equal(lines["validation"].get_ydata(), history.val_loss)
    assert lines["training"].get_color() == "black"
    best = lines["best epoch 19"]
    assert list(best.get_xdata()) == [19, 19]
    (span,) = ax.patches
    x0, x1 = span.get_x(), span.get_x() + span.get_width()
    assert (x0, x1) == (19.5, 29.5)
    assert ax.get_xlabel() == "Epoch"
    assert ax.get_ylabel() == "Mahalanobis loss"


def test_learning_curve_from_a_dict():
    fig = plot_learning_curve({"train_loss": [1.0, 0.5], "val_loss": [1.2, 0.9]}, logy=True)
    assert fig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="no losses"):
        plot_learning_curve({"train_loss": [], "val_loss": []})


def test_predicted_vs_true(stars):
    age, pred, _ = stars
    fig = plot_predicted_vs_true(age, pred, "age", "Gyr")
    assert len(fig.axes) == 3
    main, err, dist = fig.axes
    identity = [
        line
        for line in main.get_lines()
        if line.get_linestyle() == "--" and np.array_equal(line.get_xdata(), line.get_ydata())
    ]
    assert len(identity) == 1
    lo, hi = identity[0].get_xdata()
    assert lo <= np.nanmin(age) and hi >= np.nanmax(pred)
    assert main.get_ylabel() == "Predicted age (Gyr)"
    assert err.get_xlabel() == "True age (Gyr)"
    assert err.get_ylabel() == "ΔP (%)"
    legend = [t.get_text() for t in main.get_legend().get_texts()]
    delta = float(metrics.mean_absolute_error(age, pred))
    delta_p = float(metrics.mean_absolute_percentage_error(age, pred))
    assert f"Δ = {delta:.3g} Gyr" in legend
    assert f"ΔP = {delta_p:.2f} %" in legend
    (mean_line,) = _horizontal_lines(err)
    assert mean_line.get_ydata()[0] == pytest.approx(delta_p)
    assert len(main.collections) >= 2  # the density scatter and the contours
    assert dist.get_lines()  # the smoothed density


def test_predicted_vs_true_quantities(stars):
    age, pred, _ = stars
    fig = plot_predicted_vs_true(age * u.Gyr, (pred * u.Gyr).to(u.Myr), "age", model_name="SPT")
    main = fig.axes[0]
    assert main.get_ylabel() == "Predicted age (Gyr)"
    assert main.get_title() == "SPT"
    identity = next(line for line in main.get_lines() if line.get_label() == "1:1")
    assert identity.get_xdata()[1] < 20  # converted to Gyr, not plotted in Myr
    fig = plot_predicted_vs_true([1.0, 1.2, 0.9], [1.1, 1.1, 1.0], "mass", u.Msun)
    assert fig.axes[0].get_ylabel() == "Predicted mass (M☉)"


def test_predicted_vs_true_rejects_all_nan():
    with pytest.raises(ValueError, match="finite"):
        plot_predicted_vs_true([np.nan, np.nan], [1.0, 2.0])


def test_uncertainty(stars):
    age, _, err = stars
    fig = plot_uncertainty(age, err, "age", "Gyr")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    median = lines["median"]
    # err is 0.1 age + 0.2 exactly, so the running median follows it at the bin medians.
    np.testing.assert_allclose(median.get_ydata(), 0.1 * median.get_xdata() + 0.2, rtol=0.02)
    assert len(median.get_xdata()) == 15
    assert any(c.get_label() == "95 % interval" for c in ax.collections)
    assert ax.get_xlabel() == "True age (Gyr)"
    assert ax.get_ylabel() == "Uncertainty of age (Gyr)"


def test_uncertainty_few_stars_has_no_trend():
    fig = plot_uncertainty([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], "mass", "M☉")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == []


def test_bland_altman(stars):
    age, pred, _ = stars
    fig = plot_bland_altman(age, pred, "age", "Gyr", names=("SPT", "Miglio+21"))
    (ax,) = fig.axes
    levels = sorted(line.get_ydata()[0] for line in _horizontal_lines(ax))
    lo, hi = metrics.limits_of_agreement(age, pred)
    expected = sorted([0.0, float(metrics.bias(age, pred)), float(lo), float(hi)])
    np.testing.assert_allclose(levels, expected)
    bias_line = next(line for line in ax.get_lines() if line.get_label().startswith("bias"))
    assert bias_line.get_linestyle() == "--"
    assert "Gyr" in bias_line.get_label()
    assert ax.get_ylabel() == "SPT − Miglio+21 age (Gyr)"
    assert ax.get_xlabel() == "Mean of SPT and Miglio+21 age (Gyr)"
    (points,) = ax.collections
    assert len(points.get_offsets()) == 397  # the three NaN rows left out


def test_evaluation_figures(stars, history):
    age, pred, err = stars
    y = np.column_stack([age, age / 10])
    p = np.column_stack([pred, pred / 10])
    e = np.column_stack([err, err / 10])
    figures = evaluation_figures(y, p, e, history=history)
    assert list(figures) == [
        "learning_curve",
        "predicted_vs_true_age",
        "uncertainty_age",
        "bland_altman_age",
        "predicted_vs_true_mass",
        "uncertainty_mass",
        "bland_altman_mass",
    ]
    assert figures["bland_altman_mass"].axes[0].get_ylabel().endswith("(M☉)")


def test_save_figures(tmp_path, stars):
    age, pred, _ = stars
    figures = {
        "bland altman/age": plot_bland_altman(age, pred, "age", "Gyr"),
        "pred": plot_predicted_vs_true(age, pred, "age", "Gyr"),
    }
    paths = save_figures(figures, tmp_path / "figs")
    assert [p.name for p in paths] == ["bland_altman_age.png", "pred.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
    (pdf,) = save_figures({"pred": figures["pred"]}, tmp_path, fmt="pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_no_pyplot_and_lazy_imports():
    """The modules import nothing heavy, and the figures never touch pyplot."""
    code = (
        "import sys\n"
        "import astro_spt.baselines, astro_spt.plots\n"
        "heavy = ('matplotlib', 'sklearn', 'xgboost', 'lightgbm', 'catboost')\n"
        "assert not [m for m in heavy if m in sys.modules], sys.modules.keys()\n"
        "astro_spt.plots.plot_bland_altman([1.0, 2.0, 3.0], [1.1, 2.2, 2.9])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_density_has_a_colour_bar():
    rng = np.random.default_rng(1)
    age = rng.uniform(1, 12, 300)
    fig = plot_predicted_vs_true(age, age + rng.normal(0, 1, 300), "age", "Gyr")
    (cax,) = fig.axes[0].child_axes  # beside the panel, not one of the three panels
    assert cax.get_ylabel() == "Density of stars (relative to the peak)"
    assert cax.get_ylim() == (0.0, 1.0)
