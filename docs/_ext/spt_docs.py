"""Pages and figures of the astro_spt documentation generated from the code at build time.

``docs/conf.py`` calls `write_generated` when Sphinx starts (``builder-inited``), so that
the flag table, the model card and the figures can never drift from the registry, the
shipped bundle and its test set. The functions only need astro_spt and its dependencies
(no Sphinx, no network), so the doctests of the pages can call them too.
"""

import json
import re
from pathlib import Path

import numpy as np

__all__ = [
    "default_model_figures",
    "flag_figure",
    "flag_table_rst",
    "markdown_to_rst",
    "model_card_rst",
    "preprocessing_figure",
    "uncertainty_sources_figure",
    "write_generated",
]


def flag_table_rst(registry=None) -> str:
    """The flag registry as an RST ``list-table``: bit, value, name, constant, severity.

    Examples
    --------
    >>> from astro_spt.flags import FLAGS
    >>> print(flag_table_rst(FLAGS).splitlines()[0])
    .. list-table::
    """
    if registry is None:
        from astro_spt.flags import FLAGS as registry
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 5 7 24 9 55",
        "",
        "   * - bit",
        "     - value",
        "     - name (constant)",
        "     - severity",
        "     - meaning",
    ]
    for flag in registry:
        lines += [
            f"   * - {flag.bit}",
            f"     - {flag.value}",
            f"     - ``{flag.name}``",
            "",
            f"       ``{flag.name.upper()}``",
            f"     - {flag.severity}",
            f"     - {flag.description}",
        ]
    return "\n".join(lines) + "\n"


_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def _inline(text: str) -> str:
    """Markdown inline markup to RST: code spans, links; ``**bold**`` is the same."""
    parts = []
    # code spans first, so that nothing inside them is touched
    for i, piece in enumerate(re.split(r"(`[^`]+`)", text)):
        if i % 2:
            parts.append(f"``{piece[1:-1]}``")
            continue
        piece = piece.replace("\\", "\\\\").replace("|", "\\|")
        piece = re.sub(r"(?<=\w)_(?=\W|$)", r"\\_", piece)  # no accidental references
        piece = _LINK.sub(lambda m: f"`{m.group(1)} <{m.group(2)}>`__", piece)
        parts.append(piece)
    return "".join(parts)


def _table(rows: list[str]) -> list[str]:
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    header, body = cells[0], [r for r in cells[2:]]
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *body]:
        for k, cell in enumerate(row):
            out.append(f"   {'*' if k == 0 else ' '} - {_inline(cell) or '..'}")
    return [*out, ""]


def markdown_to_rst(text: str, levels: str = "=-~^") -> str:
    """Convert the small Markdown dialect of astro_spt model cards to reStructuredText.

    Handles YAML front matter (moved to the end, as a literal block), ATX headings (``#`` is the
    first of ``levels``), paragraphs, ``-`` lists, pipe tables, fenced and indented code
    blocks, code spans, bold and links: what `astro_spt.model_card` writes.

    Examples
    --------
    >>> print(markdown_to_rst("## Labels\\n\\n| label | unit |\\n|---|---|\\n| age | Gyr |"))
    Labels
    ------
    <BLANKLINE>
    .. list-table::
       :header-rows: 1
    <BLANKLINE>
       * - label
         - unit
       * - age
         - Gyr
    <BLANKLINE>
    """
    lines = text.splitlines()
    out: list[str] = []
    front: list[str] = []
    i = 0
    if lines and lines[0].strip() == "---":
        end = lines.index("---", 1)
        front = ["The card's YAML front matter (the hub's metadata):", ""]
        front += [".. code-block:: yaml", ""] + [f"   {line}" for line in lines[1:end]] + [""]
        i = end + 1
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            depth = len(line) - len(line.lstrip("#"))
            title = _inline(line[depth:].strip())
            out += [title, levels[depth - 1] * len(title), ""]
            i += 1
        elif line.startswith("```"):
            language = line[3:].strip() or "text"
            j = lines.index("```", i + 1)
            out += [f".. code-block:: {language}", ""]
            out += [f"   {code}" if code else "" for code in lines[i + 1 : j]] + [""]
            i = j + 1
        elif line.startswith("    "):
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1]:
                block.pop()
            out += [".. code-block:: text", ""] + [f"   {b}" if b else "" for b in block] + [""]
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out += _table(rows)
        elif line.startswith("- "):
            while i < len(lines) and lines[i].strip():
                if lines[i].startswith("- "):
                    out.append("- " + _inline(lines[i][2:].strip()))
                else:
                    out.append("  " + _inline(lines[i].strip()))
                i += 1
            out.append("")
        else:
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "- ")):
                out.append(_inline(lines[i].strip()))
                i += 1
            out.append("")
    return "\n".join(out + front)


def _bundle_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("astro_spt") / "data" / "default_model"))


def model_card_rst(bundle_dir=None) -> str:
    """The shipped model's card (``README.md``) in RST, its first heading at the ``-``
    level, followed by the ``config.json`` settings and file checksums of the bundle.

    Examples
    --------
    >>> text = model_card_rst()
    >>> "astro_spt estimator" in text and "model.safetensors" in text
    True
    """
    bundle_dir = Path(bundle_dir) if bundle_dir is not None else _bundle_dir()
    card = (bundle_dir / "README.md").read_text(encoding="utf-8")
    config = json.loads((bundle_dir / "config.json").read_text(encoding="utf-8"))
    out = [markdown_to_rst(card, levels="-~^"), "Settings from ``config.json``", "~" * 29, ""]
    out += [
        "The network's hyperparameters, the preprocessing settings and the label scaling"
        " exactly as the bundle stores them (bundle schema version"
        f" {config['schema_version']}):",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 25 75",
        "",
        "   * - setting",
        "     - value",
    ]
    rows = [
        (f"label ``{label['name']}``", ", ".join(f"{k} = {v}" for k, v in label.items()))
        for label in config["labels"]
    ]
    rows += [(f"network ``{k}``", v) for k, v in config["network"]["hparams"].items()]
    rows += [
        (f"preprocessing ``{section}``", ", ".join(f"{k} = {v}" for k, v in values.items()))
        for section, values in config["preprocess_config"].items()
    ]
    rows += [(f"Monte Carlo dropout ``{k}``", v) for k, v in config["mc_dropout"].items()]
    rows += [
        (f"``{name}``", f"{meta['size']:,} bytes, sha256 ``{meta['sha256']}``")
        for name, meta in config["files"].items()
    ]
    for key, value in rows:
        out += [f"   * - {key}", f"     - {_inline(str(value))}"]
    return "\n".join(out) + "\n"


def _write_if_changed(path: Path, text: str) -> None:
    # an unchanged file keeps its time stamp, so Sphinx does not rebuild its pages
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


#: The shipped model's test set, written by ``scripts/default_model_test_set.py``.
TEST_SET = Path(__file__).resolve().parents[1] / "_static" / "default_model_test.ecsv"
#: Display text of the default model's label units on the figures' axes.
_UNIT_TEXT = {"Gyr": "Gyr", "solMass": "M☉"}


def default_model_figures(folder, test_set=TEST_SET, bundle_dir=None) -> list[Path]:
    """The paper's evaluation figures of the shipped model, as PNG files in ``folder``.

    From its test set (``docs/_static/default_model_test.ecsv``, held-out mock stars):
    per label, predicted against true with the ΔP panel, uncertainty against label and
    the Bland–Altman agreement; from its provenance, the learning curve. Files newer
    than the test set and the bundle are kept.

    Raises
    ------
    RuntimeError
        When the test set was made with other weights than the shipped model's (its
        ``model_fingerprint``): rerun ``scripts/default_model_test_set.py``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     names = sorted(p.name for p in default_model_figures(folder))
    >>> names[:3]
    ['bland_altman_age.png', 'bland_altman_mass.png', 'learning_curve.png']
    """
    import hashlib

    import astropy.units as u
    from astropy.table import QTable

    from astro_spt.plots import (
        plot_bland_altman,
        plot_learning_curve,
        plot_predicted_vs_true,
        plot_uncertainty,
        save_figures,
    )

    folder = Path(folder)
    bundle_dir = Path(bundle_dir) if bundle_dir is not None else _bundle_dir()
    config_path = bundle_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    names = [label["name"] for label in config["labels"]]
    expected = [
        f"{kind}_{name}.png"
        for name in names
        for kind in ("predicted_vs_true", "uncertainty", "bland_altman")
    ]
    expected.append("learning_curve.png")
    newest_input = max(Path(test_set).stat().st_mtime, config_path.stat().st_mtime)
    paths = [folder / name for name in expected]
    if all(p.exists() and p.stat().st_mtime > newest_input for p in paths):
        return paths

    table = QTable.read(test_set)
    files = config["files"]
    names = ("model.safetensors", "pca.safetensors", "reference.safetensors")
    weights = "".join(files[name]["sha256"] for name in names if name in files)
    # as scripts/default_model_test_set.py's model_fingerprint
    if table.meta.get("model_fingerprint") != hashlib.sha256(weights.encode()).hexdigest():
        raise RuntimeError(
            f"{test_set} was made with another model than the shipped one: run "
            "python scripts/default_model_test_set.py"
        )
    n = len(table)
    figures = {}
    for label in config["labels"]:
        name, unit = label["name"], u.Unit(label["unit"])
        text = _UNIT_TEXT.get(label["unit"], unit.to_string("unicode"))
        true, pred = table[f"{name}_true"].to(unit).value, table[name].to(unit).value
        err = table[f"{name}_err"].to(unit).value
        figures[f"predicted_vs_true_{name}"] = plot_predicted_vs_true(
            true, pred, name, text, model_name=f"Default model, {n} test stars (mock)"
        )
        figures[f"uncertainty_{name}"] = plot_uncertainty(true, err, name, text)
        figures[f"bland_altman_{name}"] = plot_bland_altman(
            true, pred, name, text, names=("SPT", "APOKASC-2")
        )
    figures["learning_curve"] = plot_learning_curve(config["provenance"]["history"])
    folder.mkdir(parents=True, exist_ok=True)
    return save_figures(figures, folder, fmt="png", dpi=110)


def _save_if_changed(fig, path: Path) -> Path:
    # as _write_if_changed: an unchanged image keeps its time stamp
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    if not path.exists() or path.read_bytes() != buffer.getvalue():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
    return path


#: The example spectrum of the preprocessing page: a red giant of median S/N 28 per pixel.
PREPROCESS_EXAMPLE = "spec-55862-B6212_sp06-023.fits.gz"


def preprocessing_figure(folder, bundle_dir=None) -> Path:
    """``preprocessing.png`` in ``folder``: an example LAMOST spectrum as read, and each
    step of the default model's preprocessing (`EstimatorBundle.preprocess`), with the
    masked and repaired pixels marked.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     preprocessing_figure(folder).name
    'preprocessing.png'
    """
    import dataclasses

    from matplotlib.figure import Figure

    from astro_spt.bundle import EstimatorBundle
    from astro_spt.io import example_files
    from astro_spt.io.reading import read_spectrum
    from astro_spt.preprocess import DenoiseConfig, NormalizeConfig, preprocess

    bundle_dir = Path(bundle_dir) if bundle_dir is not None else _bundle_dir()
    model = EstimatorBundle.from_pretrained(bundle_dir)
    path = next(p for p in example_files() if p.name == PREPROCESS_EXAMPLE)
    spectrum = read_spectrum(path)
    seen = model.preprocess(spectrum).spectra  # the network's input, as estimate makes it
    settings = model.preprocess_settings()
    unscaled = dataclasses.replace(settings, normalize=NormalizeConfig(method="none"))
    repaired = preprocess(spectrum, dataclasses.replace(unscaled, denoise=DenoiseConfig(False)))
    continuum = preprocess(spectrum, unscaled).flux[0] / seen.flux[0]  # what was divided by
    grid = seen.wavelength.to_value("AA")
    observed = spectrum.spectral_axis.to_value("AA")
    flux = spectrum.flux.value
    masked = np.asarray(spectrum.mask, dtype=bool)
    not_measured = seen.mask[0]
    windows = settings.anomalies.standard_mask_windows_aa

    fig = Figure(figsize=(9, 11), layout="constrained")
    grid_spec = fig.add_gridspec(4, 2, height_ratios=(1, 1, 1, 1.1))
    read_ax = fig.add_subplot(grid_spec[0, :])
    steps_ax = fig.add_subplot(grid_spec[1, :], sharex=read_ax)
    input_ax = fig.add_subplot(grid_spec[2, :], sharex=read_ax)
    gap_ax, lines_ax = fig.add_subplot(grid_spec[3, 0]), fig.add_subplot(grid_spec[3, 1])
    for ax in (read_ax, steps_ax, input_ax, gap_ax):
        for low, high in windows:
            ax.axvspan(low, high, color="0.9", zorder=0)
    read_ax.axvspan(0, 0, color="0.9", label="standard mask windows")

    read_ax.plot(observed, flux, color="k", lw=0.4)
    read_ax.plot(
        observed[masked], flux[masked], "|", color="tab:red", ms=5, label="masked (ivar 0)"
    )
    read_ax.set_xlim(observed[0] - 10, observed[-1] + 10)
    read_ax.set_ylabel("flux\n(relative calibration)")
    read_ax.set_title(f"As read: {PREPROCESS_EXAMPLE}, observed vacuum wavelength", loc="left")
    read_ax.legend(loc="upper right", fontsize=8, ncols=2)

    steps_ax.plot(grid, repaired.flux[0], color="k", lw=0.4, label="on the grid, repaired")
    steps_ax.plot(
        grid[not_measured],
        repaired.flux[0][not_measured],
        ".",
        color="tab:orange",
        ms=2,
        label=f"repaired or not measured ({not_measured.sum()} of {grid.size:,} pixels)",
    )
    steps_ax.plot(grid, continuum, color="tab:blue", lw=1.2, label="pseudo-continuum (step 5)")
    steps_ax.set_ylim(top=steps_ax.get_ylim()[1] * 1.2)  # room for the legend
    steps_ax.set_ylabel("flux\n(relative calibration)")
    spacing = (grid[-1] - grid[0]) / (grid.size - 1)
    steps_ax.set_title(
        f"Steps 1–3: rest frame, {grid.size:,} pixels of {spacing:.2f} Å on "
        f"{grid[0]:,.0f}–{grid[-1]:,.0f} Å, gaps repaired",
        loc="left",
    )
    steps_ax.legend(loc="upper right", fontsize=8, ncols=2)

    input_ax.plot(grid, seen.flux[0], color="k", lw=0.4)
    input_ax.axhline(1, color="tab:blue", lw=0.8)
    input_ax.set_ylabel("flux / continuum")
    level = settings.denoise.level
    input_ax.set_title(
        f"Steps 4–5, the model's input: denoised (Haar MODWT, J = {level}), "
        "divided by the continuum",
        loc="left",
    )
    input_ax.set_xlabel(
        f"vacuum wavelength (Å), in the rest frame (z = {seen.redshift[0]:.1e}) from step 1"
    )

    rest = observed / (1 + seen.redshift[0])
    zoom, near = (grid > 7450) & (grid < 7800), (rest > 7450) & (rest < 7800)
    gap_ax.plot(rest[near], flux[near], color="0.6", lw=0.8, label="as read")
    gap_ax.plot(rest[near & masked], flux[near & masked], "|", color="tab:red", ms=5)
    gap_ax.plot(grid[zoom], repaired.flux[0][zoom], color="k", lw=1, label="repaired")
    gap_ax.set_xlim(7450, 7800)
    gap_ax.set_xlabel("rest-frame wavelength (Å)")
    gap_ax.set_ylabel("flux (relative calibration)")
    gap_ax.set_title("Zoom: the telluric A band, masked by DR1", loc="left", fontsize=10)
    gap_ax.plot([], [], "|", color="tab:red", label="masked (ivar 0)")
    gap_ax.legend(loc="lower left", fontsize=8)

    zoom = (grid > 5140) & (grid < 5220)
    lines_ax.plot(
        grid[zoom],
        repaired.flux[0][zoom] / continuum[zoom],
        color="0.6",
        lw=0.8,
        label="not denoised",
    )
    lines_ax.plot(grid[zoom], seen.flux[0][zoom], color="k", lw=1, label="model's input")
    lines_ax.set_xlim(5140, 5220)
    lines_ax.set_xlabel("rest-frame wavelength (Å)")
    lines_ax.set_ylabel("flux / continuum")
    lines_ax.set_title("Zoom: the Mg b triplet, denoised", loc="left", fontsize=10)
    lines_ax.legend(loc="lower left", fontsize=8)
    for ax in (read_ax, steps_ax):
        ax.tick_params(labelbottom=False)
    return _save_if_changed(fig, Path(folder) / "preprocessing.png")


def flag_figure(folder, test_set=TEST_SET) -> Path:
    """``flags.png`` in ``folder``: how often each flag is set on the default model's
    test stars, and how far the flagged stars' ages are off.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     flag_figure(folder).name
    'flags.png'
    """
    from astropy.table import QTable
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    from astro_spt.flags import FLAGS

    table = QTable.read(test_set)
    flags = np.asarray(table["flags"])
    n = len(table)
    colours = {"info": "tab:blue", "warning": "tab:orange", "bad": "tab:red"}

    fig = Figure(figsize=(8, 9), layout="constrained")
    rate_ax, error_ax = fig.subplots(2, 1, height_ratios=(1.2, 1))
    rates = [100 * np.mean((flags & flag.value) != 0) for flag in FLAGS]
    rows = np.arange(len(FLAGS))
    rate_ax.barh(rows, rates, color=[colours[flag.severity] for flag in FLAGS])
    for row, rate in zip(rows, rates, strict=True):
        rate_ax.text(rate + 0.5, row, f"{rate:.1f} %" if rate else "0", va="center", fontsize=8)
    rate_ax.set_yticks(rows, [flag.name for flag in FLAGS], fontsize=9)
    rate_ax.invert_yaxis()
    rate_ax.set_xlim(0, max(rates) * 1.15 + 1)
    rate_ax.set_xlabel(f"per cent of the {n} test stars")
    rate_ax.set_title(
        f"Flags set on the default model's {n} held-out test stars (mock spectra)", loc="left"
    )
    for severity, colour in colours.items():
        rate_ax.bar(0, 0, color=colour, label=severity)
    rate_ax.legend(title="severity", loc="lower right", fontsize=8)

    ratio = (table["age"] / table["age_true"]).to_value("")
    snr = np.asarray(table["snr"])
    cautious = FLAGS.mask_of("warning") | FLAGS.mask_of("bad")
    flagged = (flags & cautious) != 0
    error_ax.scatter(
        snr[~flagged],
        ratio[~flagged],
        s=6,
        color="0.6",
        lw=0,
        label=f"no warning flag ({np.sum(~flagged)})",
    )
    styles = iter(
        zip(
            "o^sDvP",
            ("tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:green", "tab:pink"),
            strict=False,
        )
    )
    for flag in FLAGS:
        has = (flags & flag.value) != 0
        if flag.value & cautious and has.any():
            marker, colour = next(styles)
            error_ax.scatter(
                snr[has],
                ratio[has],
                s=36,
                marker=marker,
                facecolor="none",
                edgecolor=colour,
                label=f"{flag.name} ({np.sum(has)})",
            )
    error_ax.set_xscale("log")
    error_ax.set_yscale("log")
    for axis, ticks in (
        (error_ax.xaxis, (10, 20, 50, 100, 200, 500)),
        (error_ax.yaxis, (0.3, 0.5, 1, 2, 4)),
    ):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())
    error_ax.axhline(1, color="k", lw=0.8)
    error = np.abs(ratio - 1)
    error_ax.set_title(
        f"Age estimates: median error {100 * np.median(error[~flagged]):.0f} % without a "
        f"warning flag, {100 * np.median(error[flagged]):.0f} % with one",
        loc="left",
    )
    error_ax.set_xlabel("S/N of the spectrum (g band)")
    error_ax.set_ylabel("estimated / true age")
    error_ax.legend(loc="upper right", fontsize=8)
    return _save_if_changed(fig, Path(folder) / "flags.png")


def uncertainty_sources_figure(folder, test_set=TEST_SET, n_bins=6) -> Path:
    """``uncertainty_sources.png`` in ``folder``: each source of the default model's
    uncertainty against S/N, and the errors it should match, on its test stars.

    Per label, in ``n_bins`` S/N bins of equal numbers of test stars: the median σ of
    each source (``error_sources=True``) and of the total, and the 68.3rd percentile of
    ``|estimate - true|``, which a calibrated total σ equals.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     uncertainty_sources_figure(folder).name
    'uncertainty_sources.png'
    """
    from astropy.table import QTable
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    table = QTable.read(test_set)
    snr = np.asarray(table["snr"], float)
    edges = np.quantile(snr, np.linspace(0, 1, n_bins + 1))
    bins = np.clip(np.searchsorted(edges, snr, side="right") - 1, 0, n_bins - 1)
    centres = np.array([np.median(snr[bins == b]) for b in range(n_bins)])
    styles = {
        "total": ("black", "-", "o"),
        "aleatoric": ("tab:orange", "--", "s"),
        "noise": ("tab:blue", "--", "^"),
        "epistemic": ("tab:green", "--", "v"),
    }
    fig = Figure(figsize=(9, 4), layout="constrained")
    for ax, name in zip(fig.subplots(1, 2), ("age", "mass"), strict=True):
        unit = table[name].unit
        for source, (colour, line, marker) in styles.items():
            column = f"{name}_err" if source == "total" else f"{name}_err_{source}"
            sigma = table[column].to_value(unit)
            medians = [np.median(sigma[bins == b]) for b in range(n_bins)]
            ax.plot(centres, medians, line, color=colour, marker=marker, label=f"σ {source}")
        error = np.abs((table[name] - table[f"{name}_true"]).to_value(unit))
        observed = [np.percentile(error[bins == b], 68.27) for b in range(n_bins)]
        ax.plot(
            centres,
            observed,
            "x",
            color="tab:red",
            markersize=9,
            mew=2,
            label="68.3 % of |estimate − true|",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [t for t in (5, 10, 20, 50, 100, 200, 500) if snr.min() <= t <= snr.max()]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("S/N (g band)")
        ax.set_ylabel(f"{name} uncertainty ({unit.to_string('unicode')})")
        ax.set_title(f"{name}: median σ per S/N bin ({len(table) // n_bins} stars each)")
    ax.legend(fontsize=8, loc="lower left")
    return _save_if_changed(fig, Path(folder) / "uncertainty_sources.png")


def write_generated(folder) -> None:
    """Write ``flag_table.rst``, ``model_card.rst``, the default model's figures
    (``figures/``, `default_model_figures`) and those of the preprocessing, flags and
    uncertainties pages (`preprocessing_figure`, `flag_figure`,
    `uncertainty_sources_figure`) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_if_changed(folder / "flag_table.rst", flag_table_rst())
    _write_if_changed(folder / "model_card.rst", model_card_rst())
    default_model_figures(folder / "figures")
    preprocessing_figure(folder / "figures")
    flag_figure(folder / "figures")
    uncertainty_sources_figure(folder / "figures")
