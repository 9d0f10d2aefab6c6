"""The evaluation figures of the SPT paper (Figs. 8–11).

* `plot_learning_curve` — training and validation loss per epoch (Fig. 8);
* `plot_predicted_vs_true` — density of predicted versus true labels with the 1:1 line,
  and the per-star percentage errors with their distribution (Fig. 9);
* `plot_uncertainty` — predicted uncertainty versus label with a running median and a
  95 % band (Fig. 10);
* `plot_bland_altman` — differences versus means with the bias and the 95 % limits of
  agreement (the residual panels of Fig. 11);
* `evaluation_figures` makes all of them for every label, `save_figures` writes them.

Every function returns a `matplotlib.figure.Figure` built with the object-oriented API,
never through ``pyplot``: no global figure state, no GUI backend, so they work headless,
in tests and in worker processes; ``fig.savefig`` picks a renderer from the file type.
matplotlib is imported inside the functions. Inputs are arrays or
`~astropy.units.Quantity`; rows with a non-finite value are left out.
"""

from pathlib import Path

import numpy as np

__all__ = [
    "evaluation_figures",
    "plot_bland_altman",
    "plot_learning_curve",
    "plot_predicted_vs_true",
    "plot_uncertainty",
    "save_figures",
]

# Colours follow the paper: black training / red validation curves (Fig. 8), red trend
# lines (Fig. 10), a red bias line and grey limits of agreement (Fig. 11).
_RED = "tab:red"
_GREY = "0.45"


def _prepare(unit, *arrays):
    """Plain float arrays in ``unit`` (Quantities converted) and the unit's display text."""
    from astropy import units as u

    ref = next((a.unit for a in arrays if isinstance(a, u.Quantity)), None)
    target = ref
    if unit is not None:
        try:
            target = u.Unit(unit)
        except (ValueError, TypeError):  # a display-only string that astropy cannot parse
            target = ref
    values = []
    for a in arrays:
        if isinstance(a, u.Quantity):
            a = a.to_value(target) if target is not None else a.value
        values.append(np.asarray(a, dtype=float).ravel())
    if len({v.shape for v in values}) > 1:
        raise ValueError(f"arrays of different lengths: {[v.size for v in values]}")
    if isinstance(unit, str):
        text = unit
    elif target is not None:
        text = target.to_string("unicode")
    else:
        text = ""
    return values, text


def _finite(*values):
    keep = np.logical_and.reduce([np.isfinite(v) for v in values])
    if not keep.any():
        raise ValueError("no rows with finite values to plot")
    return [v[keep] for v in values]


def _axis_label(text: str, unit: str) -> str:
    return f"{text} ({unit})" if unit else text


def _number(value: float) -> str:
    # The typographic minus, as on matplotlib's tick labels.
    return f"{value:.3g}".replace("-", "\N{MINUS SIGN}")


def _with_unit(value: float, unit: str) -> str:
    return f"{_number(value)} {unit}".rstrip()


def _new_figure(figsize):
    from matplotlib.figure import Figure

    # Constrained layout, not tight_layout: it handles shared axes and never warns.
    return Figure(figsize=figsize, layout="constrained")


def plot_learning_curve(history, *, loss_name: str = "Mahalanobis loss", logy: bool = False):
    """Training and validation loss per epoch (SPT paper Fig. 8).

    The best epoch (lowest validation loss) is marked by a dashed vertical line and the
    epochs whose weights were averaged into the final model (§2.6) by a shaded span.

    Parameters
    ----------
    history : `~astro_spt.training.TrainingHistory` or dict
        Anything with ``train_loss`` and ``val_loss`` (per epoch), and optionally
        ``best_epoch`` and ``averaged_epochs`` (0-based epoch indices), as attributes or
        keys.
    loss_name : str, optional
        Label of the y axis.
    logy : bool, optional
        Logarithmic loss axis.

    Returns
    -------
    `~matplotlib.figure.Figure`

    Examples
    --------
    >>> from astro_spt.plots import plot_learning_curve
    >>> history = {"train_loss": [3.0, 2.0, 1.5, 1.4], "val_loss": [3.1, 2.2, 1.9, 2.0],
    ...            "best_epoch": 2, "averaged_epochs": [2, 3]}
    >>> fig = plot_learning_curve(history)
    >>> [line.get_label() for line in fig.axes[0].get_lines()][:2]
    ['training', 'validation']
    """

    def get(name, default=None):
        if isinstance(history, dict):
            return history.get(name, default)
        return getattr(history, name, default)

    train = np.asarray(get("train_loss", []), dtype=float)
    val = np.asarray(get("val_loss", []), dtype=float)
    if train.size == 0 and val.size == 0:
        raise ValueError("the history has no losses to plot")
    best = get("best_epoch", -1)
    averaged = list(get("averaged_epochs", []) or [])

    fig = _new_figure((6.4, 4.2))
    ax = fig.subplots()
    # Epochs are 0-based, the indices of TrainingHistory.best_epoch / averaged_epochs.
    if train.size:
        ax.plot(np.arange(train.size), train, color="black", label="training")
    if val.size:
        ax.plot(np.arange(val.size), val, color=_RED, label="validation")
    if averaged:
        ax.axvspan(
            min(averaged) - 0.5,
            max(averaged) + 0.5,
            color="tab:blue",
            alpha=0.15,
            lw=0,
            label=f"averaged epochs {min(averaged)}–{max(averaged)}",
        )
    if best is not None and 0 <= best < max(train.size, val.size):
        ax.axvline(best, color=_GREY, ls="--", lw=1, label=f"best epoch {best}")
        if best < val.size:
            ax.plot([best], [val[best]], "o", color=_RED, ms=5)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("Epoch")
    ax.set_ylabel(loss_name)
    ax.legend(frameon=False)
    return fig


def _density(x, y, bins: int = 100):
    """Gaussian KDE of the points on a grid and its value at each point.

    A histogram smoothed with the kernel is a KDE evaluated on the grid, in O(N) rather
    than O(N²). The bandwidth is Silverman's robust rule per axis (min(σ, IQR/1.34)
    · N^(-1/6) in two dimensions), and the grid extends three bandwidths beyond the data
    so that the contours close instead of ending at the edge.
    """
    from scipy.ndimage import gaussian_filter

    grid, sigma = [], []
    for v in (x, y):
        q75, q25 = np.percentile(v, [75, 25])
        spread = min(np.std(v), (q75 - q25) / 1.34) or np.std(v) or 1.0
        h = spread * v.size ** (-1 / 6)
        edges = np.linspace(v.min() - 3 * h, v.max() + 3 * h, bins + 1)
        grid.append(edges)
        sigma.append(h / (edges[1] - edges[0]))
    hist, xe, ye = np.histogram2d(x, y, bins=grid)
    hist = gaussian_filter(hist, sigma, mode="constant")
    ix = np.clip(np.searchsorted(xe, x, side="right") - 1, 0, bins - 1)
    iy = np.clip(np.searchsorted(ye, y, side="right") - 1, 0, bins - 1)
    return hist[ix, iy], hist, xe, ye


def _enclosing_levels(hist, fractions=(0.9, 0.7, 0.45, 0.2)):
    """Density levels whose contours enclose the given fractions of the stars."""
    flat = np.sort(hist.ravel())[::-1]
    cumulative = np.cumsum(flat) / flat.sum()
    levels = [flat[min(np.searchsorted(cumulative, f), flat.size - 1)] for f in fractions]
    return np.unique(np.asarray(levels)[np.asarray(levels) > 0])


def plot_predicted_vs_true(
    y_true,
    y_pred,
    label: str = "age",
    unit=None,
    *,
    model_name: str | None = None,
    cmap: str = "viridis",
):
    """Predicted versus true labels and the distribution of percentage errors (Fig. 9).

    Top: every star coloured by the local density of stars relative to the densest point
    (yellow is dense; colour bar on the right), contours enclosing 20, 45, 70 and 90 % of
    the stars, the dashed 1:1 line, and Δ and ΔP in the
    legend. Bottom left: the per-star percentage error ``100 |ŷ − y| / |y|`` against the
    true label with its mean (ΔP) dashed; bottom right: its distribution, a histogram
    with a smoothed density (red). The ΔP axis stops at the 99th percentile; stars beyond
    are counted in a note.

    Parameters
    ----------
    y_true, y_pred : array-like or `~astropy.units.Quantity`, shape (N,)
        True and predicted values of one label.
    label : str, optional
        Name of the label (axis labels).
    unit : str or `~astropy.units.Unit`, optional
        Unit shown on the axes; Quantities are converted to it when astropy can parse it.
        Defaults to the unit of a Quantity input.
    model_name : str, optional
        Shown as the panel title.
    cmap : str, optional
        Colour map of the density.

    Returns
    -------
    `~matplotlib.figure.Figure`
        Three axes: the density panel, the ΔP scatter and the ΔP distribution.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.plots import plot_predicted_vs_true
    >>> rng = np.random.default_rng(0)
    >>> age = rng.uniform(1, 12, 300)
    >>> fig = plot_predicted_vs_true(age, age + rng.normal(0, 1, 300), "age", "Gyr")
    >>> len(fig.axes), fig.axes[0].get_xlabel()
    (3, 'True age (Gyr)')
    """
    from astro_spt.metrics import mean_absolute_error, mean_absolute_percentage_error

    (t, p), unit_text = _prepare(unit, y_true, y_pred)
    t, p = _finite(t, p)
    dens, hist, xe, ye = _density(t, p)
    order = np.argsort(dens, kind="stable")  # densest stars drawn last, on top
    lo = min(t.min(), p.min())
    hi = max(t.max(), p.max())
    pad = 0.03 * (hi - lo if hi > lo else 1.0)
    lo, hi = lo - pad, hi + pad

    fig = _new_figure((5.6, 7.0))
    axes = fig.subplot_mosaic(
        [["main", "."], ["err", "dist"]],
        width_ratios=[4, 1],
        height_ratios=[3, 1.5],
    )
    ax, ax_err, ax_dist = axes["main"], axes["err"], axes["dist"]
    ax_err.sharex(ax)
    ax_dist.sharey(ax_err)

    # Relative to the densest point, so the colour bar reads the same for any sample size.
    dens = dens / dens.max() if dens.max() > 0 else dens
    points = ax.scatter(
        t[order], p[order], c=dens[order], s=6, cmap=cmap, vmin=0, vmax=1, lw=0, rasterized=True
    )
    # In the free corner above the distribution panel, so both panels keep their widths.
    cax = ax.inset_axes([1.04, 0.0, 0.05, 1.0])
    fig.colorbar(points, cax=cax, label="Density of stars (relative to the peak)")
    if t.size >= 100:  # contours of a few dozen stars are noise
        levels = _enclosing_levels(hist)
        if levels.size:
            xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
            ax.contour(xc, yc, hist.T, levels=levels, colors="black", linewidths=0.6)
    ax.plot([lo, hi], [lo, hi], ls="--", color=_RED, lw=1.2, label="1:1")
    delta = float(mean_absolute_error(t, p))
    delta_p = float(mean_absolute_percentage_error(t, p))
    # Empty handles put the summary numbers into the legend, as in the paper's panels.
    ax.plot([], [], " ", label=f"Δ = {_with_unit(delta, unit_text)}")
    ax.plot([], [], " ", label=f"ΔP = {delta_p:.2f} %")
    ax.legend(loc="upper left", frameon=False)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_ylabel(_axis_label(f"Predicted {label}", unit_text))
    ax.set_xlabel(_axis_label(f"True {label}", unit_text))
    # The x axis is shared with the ΔP panel below, which shows its ticks and label.
    ax.tick_params(labelbottom=False)
    ax.xaxis.label.set_visible(False)
    if model_name:
        ax.set_title(model_name)

    with np.errstate(divide="ignore", invalid="ignore"):
        ape = 100.0 * np.abs(p - t) / np.abs(t)
    ok = np.isfinite(ape)
    ape_t, ape, ape_d = t[ok], ape[ok], dens[ok]
    top = 1.1 * np.percentile(ape, 99) if ape.size else 1.0
    top = top if top > 0 else 1.0
    order = np.argsort(ape_d, kind="stable")
    ax_err.scatter(
        ape_t[order],
        ape[order],
        c=ape_d[order],
        s=5,
        cmap=cmap,
        vmin=0,
        vmax=1,
        lw=0,
        rasterized=True,
    )
    ax_err.axhline(delta_p, ls="--", color="black", lw=1, label=f"mean ΔP = {delta_p:.2f} %")
    ax_err.set_ylim(0, top)
    ax_err.set_xlabel(_axis_label(f"True {label}", unit_text))
    ax_err.set_ylabel("ΔP (%)")
    above = int(np.sum(ape > top))
    if above:
        ax_err.text(
            0.99,
            0.95,
            f"{above} off scale",
            transform=ax_err.transAxes,
            ha="right",
            va="top",
            fontsize="small",
        )

    _plot_distribution(ax_dist, ape, top)
    ax_dist.set_xlabel("Density")
    ax_dist.tick_params(labelleft=False)
    return fig


def _plot_distribution(ax, values, top: float, bins: int = 40):
    """Horizontal histogram and smoothed density of ``values`` on [0, top]."""
    from scipy.ndimage import gaussian_filter1d

    if values.size == 0:
        return
    inside = values[values <= top]
    width = top / bins
    # Normalised to all stars, so that the off-scale ones are missing, not redistributed.
    weights = np.full(inside.size, 1.0 / (values.size * width))
    ax.hist(
        inside,
        bins=bins,
        range=(0, top),
        weights=weights,
        orientation="horizontal",
        color="0.75",
        edgecolor="none",
    )
    fine = 5 * bins
    counts, edges = np.histogram(inside, bins=fine, range=(0, top))
    # A Gaussian KDE on the fine grid, Silverman's bandwidth 0.9 min(σ, IQR/1.34) N^(-1/5).
    q75, q25 = np.percentile(values, [75, 25])
    h = 0.9 * (min(np.std(values), (q75 - q25) / 1.34) or np.std(values)) * values.size**-0.2
    if h > 0:
        # Reflected at zero, where percentage errors stop, so the density does not sag there.
        padded = np.concatenate([counts[::-1], counts, np.zeros(fine)]).astype(float)
        counts = gaussian_filter1d(padded, h / (top / fine), mode="constant")[fine : 2 * fine]
    ax.plot(counts / (values.size * top / fine), 0.5 * (edges[1:] + edges[:-1]), color=_RED)


def plot_uncertainty(
    y_true,
    y_err,
    label: str = "age",
    unit=None,
    *,
    n_bins: int = 15,
):
    """Predicted uncertainty versus label with a running median and 95 % band (Fig. 10).

    The stars are sorted by label and cut into ``n_bins`` bins of equal numbers of stars
    (at least ten each); at each bin's median label the red line is the median
    uncertainty and the band spans its 2.5th to 97.5th percentiles. Equal-count bins let
    the trend reach the sparse ends of the label range, where the paper finds the
    uncertainties growing (§4.2). With 100 stars or more, the y axis stops at 1.1 times
    the 99th percentile; stars beyond are counted in a note.

    Parameters
    ----------
    y_true : array-like or `~astropy.units.Quantity`, shape (N,)
        Label values on the x axis (the true labels, as in the paper).
    y_err : array-like or `~astropy.units.Quantity`, shape (N,)
        Predicted 1σ uncertainties.
    label : str, optional
        Name of the label.
    unit : str or `~astropy.units.Unit`, optional
        Unit of both axes.
    n_bins : int, optional
        Number of bins of the trend.

    Returns
    -------
    `~matplotlib.figure.Figure`

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.plots import plot_uncertainty
    >>> rng = np.random.default_rng(0)
    >>> mass = rng.uniform(0.8, 2.0, 500)
    >>> fig = plot_uncertainty(mass, 0.05 + 0.1 * np.abs(mass - 1.2), "mass", "M☉")
    >>> fig.axes[0].get_ylabel()
    'Uncertainty of mass (M☉)'
    """
    (t, e), unit_text = _prepare(unit, y_true, y_err)
    t, e = _finite(t, e)

    fig = _new_figure((6.4, 4.2))
    ax = fig.subplots()
    ax.scatter(t, e, s=4, color="0.6", alpha=0.5, lw=0, rasterized=True, label="stars")
    n_bins = min(n_bins, t.size // 10)
    if n_bins >= 2:
        order = np.argsort(t, kind="stable")
        groups = np.array_split(order, n_bins)
        centre = np.array([np.median(t[g]) for g in groups])
        low, median, high = np.array([np.percentile(e[g], [2.5, 50, 97.5]) for g in groups]).T
        ax.fill_between(centre, low, high, color=_RED, alpha=0.2, lw=0, label="95 % interval")
        ax.plot(centre, median, color=_RED, lw=2, label="median")
    ax.set_xlabel(_axis_label(f"True {label}", unit_text))
    ax.set_ylabel(_axis_label(f"Uncertainty of {label}", unit_text))
    # A few huge uncertainties (stars the model cannot place) would flatten the trend.
    top = 1.1 * np.percentile(e, 99) if e.size >= 100 else np.inf
    above = int(np.sum(e > top))
    if above and top > 0:
        ax.set_ylim(0, top)
        note = f"{above} off scale (up to {_with_unit(float(e.max()), unit_text)})"
        ax.text(0.01, 0.97, note, transform=ax.transAxes, va="top", fontsize="small")
    else:
        ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    return fig


def plot_bland_altman(
    y_true,
    y_pred,
    label: str = "age",
    unit=None,
    *,
    names: tuple[str, str] = ("predicted", "true"),
):
    """Bland–Altman plot: difference versus mean of two estimates (SPT paper §5.2, Fig. 11).

    Grey points are the stars; the solid black line is zero difference, the red dashed
    line the bias (mean of ŷ − y) and the grey dashed lines the 95 % limits of agreement,
    bias ± 1.96 σ (`astro_spt.metrics.limits_of_agreement`).

    Parameters
    ----------
    y_true, y_pred : array-like or `~astropy.units.Quantity`, shape (N,)
        Reference and compared values of one label; the difference is ``y_pred − y_true``.
    label : str, optional
        Name of the label.
    unit : str or `~astropy.units.Unit`, optional
        Unit of both axes.
    names : (str, str), optional
        Names of the compared and the reference estimates, e.g. ``("SPT", "Miglio+21")``.

    Returns
    -------
    `~matplotlib.figure.Figure`

    Examples
    --------
    >>> from astro_spt.plots import plot_bland_altman
    >>> fig = plot_bland_altman([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5], "age", "Gyr")
    >>> float(fig.axes[0].get_lines()[1].get_ydata()[0])  # the bias line
    0.5
    """
    from astro_spt.metrics import bias, limits_of_agreement

    (t, p), unit_text = _prepare(unit, y_true, y_pred)
    t, p = _finite(t, p)
    mean = 0.5 * (t + p)
    diff = p - t
    b = float(bias(t, p))
    lo, hi = (float(v) for v in limits_of_agreement(t, p))

    fig = _new_figure((6.4, 4.2))
    ax = fig.subplots()
    ax.scatter(mean, diff, s=5, color="0.5", alpha=0.6, lw=0, rasterized=True)
    ax.axhline(0.0, color="black", lw=1)
    ax.axhline(b, color=_RED, ls="--", lw=1.5, label=f"bias = {_with_unit(b, unit_text)}")
    ax.axhline(
        lo,
        color=_GREY,
        ls="--",
        lw=1.2,
        label=f"95 % limits of agreement: {_number(lo)}, {_number(hi)}",
    )
    ax.axhline(hi, color=_GREY, ls="--", lw=1.2)
    ax.set_xlabel(_axis_label(f"Mean of {names[0]} and {names[1]} {label}", unit_text))
    first = names[0][:1].upper() + names[0][1:]
    ax.set_ylabel(_axis_label(f"{first} − {names[1]} {label}", unit_text))
    # Above the panel: inside, the legend hid the outliers it is meant to summarise.
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2)
    return fig


def evaluation_figures(
    y_true,
    y_pred,
    y_err=None,
    history=None,
    label_names=("age", "mass"),
    label_units=None,
) -> dict:
    """All evaluation figures of a model, per label.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (N, n_labels)
        True and predicted labels.
    y_err : array-like, shape (N, n_labels), optional
        Predicted uncertainties (adds the uncertainty figures).
    history : `~astro_spt.training.TrainingHistory`, optional
        Adds the learning curve.
    label_names : sequence of str, optional
        Names of the label columns.
    label_units : sequence, optional
        Unit of each label (default Gyr and M☉ for age and mass).

    Returns
    -------
    dict
        Name → `~matplotlib.figure.Figure`: ``learning_curve``,
        ``predicted_vs_true_<label>``, ``uncertainty_<label>``, ``bland_altman_<label>``;
        ready for `save_figures`.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.plots import evaluation_figures
    >>> y = np.column_stack([np.linspace(1, 10, 50), np.linspace(0.8, 2, 50)])
    >>> sorted(evaluation_figures(y, y * 1.05))
    ['bland_altman_age', 'bland_altman_mass', 'predicted_vs_true_age', 'predicted_vs_true_mass']
    """
    defaults = {"age": "Gyr", "mass": "M☉"}
    t = np.asarray(getattr(y_true, "value", y_true), dtype=float)
    t = t.reshape(len(t), -1)
    p = np.asarray(getattr(y_pred, "value", y_pred), dtype=float).reshape(t.shape)
    e = None if y_err is None else np.asarray(getattr(y_err, "value", y_err), float)
    names = list(label_names)[: t.shape[1]]
    units = list(label_units) if label_units is not None else [defaults.get(n) for n in names]
    figures = {}
    if history is not None:
        figures["learning_curve"] = plot_learning_curve(history)
    for j, (name, unit) in enumerate(zip(names, units, strict=True)):
        figures[f"predicted_vs_true_{name}"] = plot_predicted_vs_true(t[:, j], p[:, j], name, unit)
        if e is not None:
            figures[f"uncertainty_{name}"] = plot_uncertainty(
                t[:, j], e.reshape(t.shape)[:, j], name, unit
            )
        figures[f"bland_altman_{name}"] = plot_bland_altman(t[:, j], p[:, j], name, unit)
    return figures


def save_figures(figures: dict, directory, fmt: str = "png", dpi: int = 150) -> list[Path]:
    """Write figures to ``directory/<name>.<fmt>``.

    Parameters
    ----------
    figures : dict
        Name → `~matplotlib.figure.Figure` (e.g. from `evaluation_figures`).
    directory : str or `~pathlib.Path`
        Output folder, created if needed.
    fmt : str, optional
        Any format matplotlib writes: ``"png"``, ``"pdf"``, ``"svg"``...
    dpi : int, optional
        Resolution of raster formats.

    Returns
    -------
    list of `~pathlib.Path`
        The files written.

    Examples
    --------
    >>> import tempfile
    >>> from astro_spt.plots import plot_bland_altman, save_figures
    >>> fig = plot_bland_altman([1.0, 2.0, 3.0], [1.1, 2.0, 2.8])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     [p.name for p in save_figures({"residuals": fig}, tmp)]
    ['residuals.png']
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        # Figure names become file names: keep them to one path component.
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
        path = directory / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=dpi)
        paths.append(path)
    return paths
