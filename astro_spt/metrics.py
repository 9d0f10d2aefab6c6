"""Accuracy and calibration metrics of the SPT paper (§2.5, §5.2).

All functions take arrays (or `~astropy.units.Quantity`) of true and predicted values of
shape (N,) or (N, D) and reduce over the first axis. Non-finite pairs are ignored, so a
flagged NaN row does not poison a summary.
"""

import numpy as np

__all__ = [
    "bias",
    "coverage",
    "limits_of_agreement",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "metrics_table",
]


def _pair(y_true, y_pred):
    unit = getattr(y_true, "unit", None)
    if unit is not None:
        y_pred = y_pred.to_value(unit) if hasattr(y_pred, "unit") else y_pred
        y_true = y_true.value
    elif hasattr(y_pred, "unit"):
        y_pred = y_pred.value
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must have the same shape")
    if t.shape[0] == 0:
        raise ValueError("no values given")
    return np.where(np.isfinite(t) & np.isfinite(p), t, np.nan), p, unit


def _with_unit(value, unit):
    return value if unit is None else value * unit


def mean_absolute_error(y_true, y_pred):
    """Δ = mean ``|ŷ − y|`` (SPT paper §2.5), in the units of the labels.

    Examples
    --------
    >>> from astro_spt.metrics import mean_absolute_error
    >>> float(mean_absolute_error([1.0, 2.0, 4.0], [1.5, 2.0, 3.0]))
    0.5
    """
    t, p, unit = _pair(y_true, y_pred)
    return _with_unit(np.nanmean(np.abs(p - t), axis=0), unit)


def mean_absolute_percentage_error(y_true, y_pred):
    """ΔP = mean ``|ŷ − y| / |y|`` × 100 (SPT paper §2.5), in per cent.

    Examples
    --------
    >>> from astro_spt.metrics import mean_absolute_percentage_error
    >>> float(mean_absolute_percentage_error([1.0, 2.0, 4.0], [1.5, 2.0, 3.0]))
    25.0
    """
    t, p, _ = _pair(y_true, y_pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nanmean(np.abs(p - t) / np.abs(t), axis=0) * 100.0


def bias(y_true, y_pred):
    """Mean difference ŷ − y (SPT paper §5.2).

    Examples
    --------
    >>> from astro_spt.metrics import bias
    >>> float(bias([1.0, 2.0], [1.5, 2.5]))
    0.5
    """
    t, p, unit = _pair(y_true, y_pred)
    return _with_unit(np.nanmean(p - t, axis=0), unit)


def limits_of_agreement(y_true, y_pred):
    """95 % limits of agreement, bias ± 1.96 σ of ŷ − y (Bland–Altman; SPT paper §5.2).

    Returns
    -------
    lower, upper
        The two limits.

    Examples
    --------
    >>> from astro_spt.metrics import limits_of_agreement
    >>> lo, hi = limits_of_agreement([0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0])
    >>> float(lo), float(hi)
    (-1.96, 1.96)
    """
    t, p, unit = _pair(y_true, y_pred)
    d = p - t
    centre = np.nanmean(d, axis=0)
    spread = 1.96 * np.nanstd(d, axis=0)
    return _with_unit(centre - spread, unit), _with_unit(centre + spread, unit)


def coverage(y_true, y_pred, y_err, n_sigma=1.0):
    """Fraction of stars whose true value lies within ``n_sigma`` uncertainties.

    A calibrated Gaussian uncertainty gives 0.683 at 1σ and 0.954 at 2σ.

    Examples
    --------
    >>> from astro_spt.metrics import coverage
    >>> float(coverage([0.0, 0.0, 0.0, 0.0], [0.5, 1.5, -0.2, 3.0], [1.0, 1.0, 1.0, 1.0]))
    0.5
    """
    t, p, unit = _pair(y_true, y_pred)
    if unit is not None and hasattr(y_err, "unit"):
        y_err = y_err.to_value(unit)
    e = np.asarray(getattr(y_err, "value", y_err), dtype=float)
    if e.shape != t.shape:
        raise ValueError(f"y_err {e.shape} must have the shape of y_true {t.shape}")
    inside = np.abs(p - t) <= n_sigma * e
    valid = np.isfinite(t) & np.isfinite(e)
    return np.sum(inside & valid, axis=0) / np.sum(valid, axis=0)


def metrics_table(y_true, y_pred, y_err=None, names=None, model=None):
    """Table of Δ, ΔP, bias, limits of agreement (and coverage) per label.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (N, D)
        True and predicted labels, in the same units.
    y_err : array-like, shape (N, D), optional
        Predicted 1σ uncertainties; adds the 1σ and 2σ coverage columns.
    names : list of str, optional
        Label names (default ``label0``, ``label1``, ...).
    model : str, optional
        A ``model`` column with this value (for stacking tables of several models).

    Returns
    -------
    `~astropy.table.Table`
        One row per label.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.metrics import metrics_table
    >>> t = metrics_table(np.ones((4, 2)), np.full((4, 2), 1.1), names=["age", "mass"])
    >>> [round(float(v), 3) for v in t["delta_p"]]
    [10.0, 10.0]
    """
    from astropy.table import Table

    t = np.asarray(y_true, dtype=float).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=float).reshape(t.shape)
    names = names or [f"label{i}" for i in range(t.shape[1])]
    lo, hi = limits_of_agreement(t, p)
    table = Table()
    if model is not None:
        table["model"] = [model] * t.shape[1]
    table["label"] = names
    table["n"] = np.sum(np.isfinite(t) & np.isfinite(p), axis=0)
    table["delta"] = mean_absolute_error(t, p)
    table["delta_p"] = mean_absolute_percentage_error(t, p)
    table["bias"] = bias(t, p)
    table["loa_low"] = lo
    table["loa_high"] = hi
    if y_err is not None:
        e = np.asarray(y_err, dtype=float).reshape(t.shape)
        table["coverage_1sigma"] = coverage(t, p, e, 1.0)
        table["coverage_2sigma"] = coverage(t, p, e, 2.0)
    table["delta_p"].unit = "%"
    return table
