"""Tests of astro_spt.metrics against hand-computed values."""

import astropy.units as u
import numpy as np
import pytest

from astro_spt import metrics


def test_values_by_hand():
    y = np.array([[2.0, 1.0], [4.0, 1.5], [8.0, 2.0]])
    p = np.array([[3.0, 1.1], [3.0, 1.5], [10.0, 1.6]])
    assert metrics.mean_absolute_error(y, p) == pytest.approx([4 / 3, 0.5 / 3])
    assert metrics.mean_absolute_percentage_error(y, p) == pytest.approx(
        [100 * (0.5 + 0.25 + 0.25) / 3, 100 * (0.1 + 0 + 0.2) / 3]
    )
    assert metrics.bias(y, p) == pytest.approx([2 / 3, -0.3 / 3])
    lo, hi = metrics.limits_of_agreement(y, p)
    d = p - y
    assert lo == pytest.approx(d.mean(0) - 1.96 * d.std(0))
    assert hi == pytest.approx(d.mean(0) + 1.96 * d.std(0))


def test_quantities_and_nan_rows():
    y = [1.0, 2.0, np.nan] * u.Gyr
    p = [1000.0, 3000.0, 5000.0] * u.Myr
    assert metrics.mean_absolute_error(y, p) == 0.5 * u.Gyr
    assert metrics.mean_absolute_percentage_error(y, p) == pytest.approx(25.0)


def test_coverage_of_calibrated_gaussian_errors():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=20000)
    sigma = rng.uniform(0.5, 2, size=truth.size)
    pred = truth + rng.normal(size=truth.size) * sigma
    assert metrics.coverage(truth, pred, sigma, 1) == pytest.approx(0.683, abs=0.01)
    assert metrics.coverage(truth, pred, sigma, 2) == pytest.approx(0.954, abs=0.01)


def test_metrics_table_and_errors():
    y = np.ones((5, 2))
    table = metrics.metrics_table(y, y * 1.2, y_err=np.full((5, 2), 0.1), names=["a", "b"])
    assert list(table["label"]) == ["a", "b"]
    assert table["delta_p"] == pytest.approx([20, 20])
    assert list(table["coverage_1sigma"]) == [0, 0]
    with pytest.raises(ValueError, match="same shape"):
        metrics.bias([1.0, 2.0], [1.0])
