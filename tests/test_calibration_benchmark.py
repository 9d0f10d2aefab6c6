"""The statistics `benchmarks/calibration.py` judges the uncertainties by (issue 14)."""

import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import calibration


@pytest.mark.parametrize("k", [1, 2])
def test_a_gaussian_coverage_is_zero_standard_deviations_away(k):
    assert calibration.coverage_z(calibration.GAUSSIAN_COVERAGE[k], 131, k) == pytest.approx(0)


@given(
    n=st.integers(10, 10_000),
    value=st.floats(0, 100),
    k=st.sampled_from([1, 2]),
)
def test_coverage_z_is_the_binomial_distance(n, value, k):
    p = calibration.GAUSSIAN_COVERAGE[k] / 100
    z = calibration.coverage_z(value, n, k)
    assert z == pytest.approx((value / 100 - p) / np.sqrt(p * (1 - p) / n))
    assert np.sign(z) == np.sign(value / 100 - p) or z == pytest.approx(0)


def test_pass_probability_of_a_calibrated_model_grows_with_the_test_set():
    """Few stars: noise alone fails the ±4 % tolerance; many: a calibrated model passes."""
    small = calibration.calibrated_pass_probability({"a": [30, 30, 30]}, n_sim=4000)
    real = calibration.calibrated_pass_probability({"a": [131, 131, 132]}, n_sim=4000)
    large = calibration.calibrated_pass_probability({"a": [5000, 5000, 5000]}, n_sim=400)
    assert small < real < large
    assert small < 0.2
    assert large > 0.99
    three = calibration.calibrated_pass_probability(
        {"a": [131, 131, 132], "b": [131, 131, 132], "c": [131, 131, 132]}, n_sim=4000
    )
    assert three < real  # every label must pass


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_coverage_by_class_counts_each_group(seed):
    """Hand-made estimates: the hot stars' errors are 3σ, the others' 0.5σ."""
    rng = np.random.default_rng(seed)
    n = 40
    subclass = rng.choice(["A1", "B5", "O9", "F5", "G2", "K3", "M0"], size=n)
    hot = np.array([c[0] in "OBA" for c in subclass])
    truth = rng.normal(5000, 500, size=(n, 1))
    err = rng.uniform(50, 200, size=n)
    value = truth[:, 0] + np.where(hot, 3.0, 0.5) * err * rng.choice([-1, 1], size=n)
    table = QTable(
        {
            "teff": value * u.K,
            "teff_err": err * u.K,
            "teff_samples": rng.normal(value[:, None], err[:, None], size=(n, 8)) * u.K,
        }
    )
    result = calibration.coverage_by_class(table, truth, subclass, ["teff"])
    hot_group, other_group = result.values()
    assert result[next(iter(result))]["teff"]["n"] == hot.sum()
    assert other_group["teff"]["n"] == (~hot).sum()
    if hot.any():
        assert hot_group["teff"][1] == 0 and hot_group["teff"][2] == 0
    if (~hot).any():
        assert other_group["teff"][1] == 100 and other_group["teff"][2] == 100
