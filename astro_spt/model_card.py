"""Model cards of estimator bundles: the README.md shown on the hub, and ``astro-spt info``.

A bundle's ``README.md`` is a Hugging Face model card: YAML front matter (library name,
tags, licence) that the hub indexes, then what the estimator predicts, what it was trained
on, its measured accuracy and how to load it. Both the card and the plain-text summary of
``astro-spt info`` are rendered from the bundle's ``config.json`` dict alone.
"""

import json
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["card_metadata", "format_summary", "render_model_card"]

LIBRARY_NAME = "astro-spt"
DEFAULT_LICENSE = "bsd-3-clause"
TAGS = ("astronomy", "spectroscopy", "lamost", "red-giants", "pytorch")
PAPER = "Zhang et al. 2024, A&A, arXiv:2401.04900"

# Column headers of the metric names written by astro_spt.metrics.metrics_table.
_METRIC_HEADERS = {
    "model": "model",
    "label": "label",
    "n": "N",
    "delta": "Δ (mean abs. error)",
    "delta_p": "ΔP (%)",
    "bias": "bias",
    "loa_low": "95 % LoA low",
    "loa_high": "95 % LoA high",
    "coverage_1sigma": "within 1σ",
    "coverage_2sigma": "within 2σ",
}
# Provenance keys shown in their own places; the others are listed as they are.
_SHOWN_KEYS = ("data", "n_train", "n_test", "split", "seed", "metrics", "license", "tags")
# Kept in config.json for tools (astro-spt evaluate plots the learning curve), too long
# to be worth reading in a card or a summary.
_UNLISTED_KEYS = ("history",)


def card_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML front matter of a bundle's model card.

    Parameters
    ----------
    config : dict
        The bundle's ``config.json`` contents (`~astro_spt.bundle.EstimatorBundle.to_config`).

    Returns
    -------
    dict
        ``library_name``, ``license`` (``provenance["license"]``, default BSD-3-Clause)
        and ``tags`` (the package's tags plus ``provenance["tags"]``).

    Examples
    --------
    >>> from astro_spt.model_card import card_metadata
    >>> card_metadata({"provenance": {"tags": ["mock-data"]}})["tags"][-2:]
    ['pytorch', 'mock-data']
    """
    provenance = config.get("provenance") or {}
    tags = list(TAGS) + [t for t in provenance.get("tags", []) if t not in TAGS]
    return {
        "library_name": LIBRARY_NAME,
        "license": provenance.get("license", DEFAULT_LICENSE),
        "tags": tags,
    }


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _metric_rows(config: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the accuracy table, from ``provenance["metrics"]``."""
    metrics = (config.get("provenance") or {}).get("metrics")
    if not metrics:
        return [], []
    if isinstance(metrics, Mapping):
        rows = [{"label": name, **values} for name, values in metrics.items()]
    else:
        rows = [dict(row) for row in metrics]
    units = {label["name"]: label.get("unit", "") for label in config.get("labels", [])}
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    columns.sort(key=lambda c: list(_METRIC_HEADERS).index(c) if c in _METRIC_HEADERS else 99)
    header = [_METRIC_HEADERS.get(c, c) for c in columns]
    table = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if column == "label" and units.get(value):
                cells.append(f"{value} [{units[value]}]")
            else:
                cells.append(_format_value(value))
        table.append(cells)
    return header, table


def _network_line(config: Mapping[str, Any]) -> str:
    network = config.get("network", {})
    hp = network.get("hparams", {})
    return (
        f"{network.get('class', '?')}: {hp.get('n_inputs')} inputs, d_model "
        f"{hp.get('d_model')}, {hp.get('n_blocks')} SPT block(s) of {hp.get('n_heads')} heads, "
        f"dropout {hp.get('dropout')} ({hp.get('dropout_position')}), weights stored as "
        f"{network.get('dtype', 'float32')} (computed in float32)"
    )


def _pca_line(config: Mapping[str, Any]) -> str:
    pca = config.get("pca", {})
    ratio = pca.get("explained_variance_ratio_total")
    share = f" ({100 * ratio:.2f} % of the training variance)" if ratio is not None else ""
    return f"{pca.get('n_components')} components of {pca.get('n_features')} pixels{share}"


def _mc_line(config: Mapping[str, Any]) -> str:
    mc = config.get("mc_dropout") or {}
    tau = mc.get("tau")
    floor = f", model precision τ = {tau:.4g}" if tau is not None else ", no variance floor"
    return f"{mc.get('n_samples')} Monte Carlo dropout passes{floor}"


def _labels_line(config: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{label['name']} [{label.get('unit') or 'dimensionless'}] ({label.get('scaling')})"
        for label in config.get("labels", [])
    )


def render_model_card(config: Mapping[str, Any], *, repo_id: str | None = None) -> str:
    """Render the README.md (Hugging Face model card) of a bundle.

    Parameters
    ----------
    config : dict
        The bundle's ``config.json`` contents.
    repo_id : str or None, optional
        Hub repository, for the usage snippet.

    Returns
    -------
    str
        Markdown with YAML front matter.

    Examples
    --------
    >>> from astro_spt.model_card import render_model_card
    >>> config = {"description": "A test.", "labels": [
    ...     {"name": "age", "unit": "Gyr", "scaling": "log10"}],
    ...     "provenance": {"metrics": {"age": {"delta": 0.91, "delta_p": 17.64}}}}
    >>> card = render_model_card(config)
    >>> print(card.splitlines()[1])
    library_name: astro-spt
    >>> "| age [Gyr] | 0.91 | 17.64 |" in card
    True
    """
    provenance = config.get("provenance") or {}
    front = yaml.safe_dump(card_metadata(config), sort_keys=False, allow_unicode=True)
    title = repo_id or "astro_spt estimator"
    lines = [f"---\n{front}---", "", f"# {title}", ""]
    if config.get("description"):
        lines += [config["description"], ""]
    lines += [
        "An estimator bundle of [astro_spt](https://github.com/astro-spt/astro_spt): the "
        f"Spectral Transformer (SPT; {PAPER}) with its PCA basis, label scaling and "
        "training-set reference statistics. It estimates stellar labels, with Monte Carlo "
        "dropout uncertainties and quality flags, from low-resolution optical spectra.",
        "",
        "## Labels",
        "",
        "| label | unit | scaling |",
        "|---|---|---|",
    ]
    for label in config.get("labels", []):
        lines.append(f"| {label['name']} | {label.get('unit', '')} | {label.get('scaling')} |")
    lines += ["", "## Usage", "", "```python", "import astro_spt", ""]
    if repo_id:
        lines.append(f'model = astro_spt.load_model("{repo_id}", revision="<commit>")')
    else:
        lines.append('model = astro_spt.load_model("path/to/bundle")')
    lines += ["table = model.estimate(spectra)  # QTable with values, _err columns, flags", "```"]
    lines += ["", "## Training data", ""]
    lines.append(provenance.get("data", "Not recorded."))
    facts = [(k, provenance[k]) for k in ("n_train", "n_test", "split", "seed") if k in provenance]
    if facts:
        lines += [""] + [f"- {key}: {_format_value(value)}" for key, value in facts]
    lines += ["", "## Accuracy", ""]
    header, rows = _metric_rows(config)
    if rows:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        lines.append("No accuracy measurement was recorded with this bundle.")
    lines += [
        "",
        "## Model",
        "",
        f"- Network: {_network_line(config)}",
        f"- PCA: {_pca_line(config)}",
        f"- Uncertainties: {_mc_line(config)}",
        "- Preprocessing settings, label scaling and reference statistics: `config.json`",
        "",
        "## Limitations",
        "",
        "Estimates are only as good as the training set. Spectra unlike the training "
        "spectra (PCA reconstruction error, latent distance or distance of the network's "
        "embedding beyond their percentiles on held-out training-distribution spectra) and "
        "predictions outside the training label ranges are flagged.",
    ]
    other = {k: v for k, v in provenance.items() if k not in _SHOWN_KEYS + _UNLISTED_KEYS}
    if other:
        lines += ["", "## Provenance", ""]
        lines += [f"- {key}: {_format_value(value)}" for key, value in other.items()]
    lines += [
        "",
        "## Files",
        "",
        f"Written by astro_spt {config.get('astro_spt_version', '?')} (bundle schema "
        f"version {config.get('schema_version', '?')}). `config.json` records the sha256 of "
        "every other file; astro_spt checks them when loading.",
        "",
    ]
    return "\n".join(lines)


def _readable(value, indent: str = "") -> str:
    """A provenance value as text: numbers to four digits, a dict one key a line."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return ", ".join(_readable(v) for v in value)
    if isinstance(value, Mapping) and value:
        return "\n".join(
            f"{indent}{key}: {_readable(v, indent + '  ')}"
            if not isinstance(v, Mapping) or not v
            else f"{indent}{key}:\n{_readable(v, indent + '  ')}"
            for key, v in value.items()
        )
    if isinstance(value, Mapping | list):
        return json.dumps(value)
    return str(value)


def _baseline_rows(config: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows comparing the baselines of ``provenance["baselines"]`` (Δ and ΔP
    of each label) with the model's own accuracy."""
    provenance = config.get("provenance") or {}
    baselines = provenance.get("baselines")
    if not isinstance(baselines, Mapping) or not baselines:
        return [], []
    names = [label["name"] for label in config.get("labels", [])]
    units = {label["name"]: label.get("unit", "") for label in config.get("labels", [])}
    header = ["model"]
    for name in names:
        header += [f"{name} Δ ({units[name]})", f"{name} ΔP (%)"]
    metrics = provenance.get("metrics")
    if isinstance(metrics, list):
        metrics = {row.get("label"): row for row in metrics}
    models = {**baselines, "SPT (this model)": metrics or {}}
    rows = []
    for model, scores in models.items():
        row = [model.replace("_", " ")]
        for name in names:
            score = (scores or {}).get(name) or {}
            row += [
                f"{score[key]:.2f}" if isinstance(score.get(key), int | float) else "-"
                for key in ("delta", "delta_p")
            ]
        rows.append(row)
    return header, rows


def _train_command(config: Mapping[str, Any]) -> str:
    """The ``astro-spt train`` command for a model with these labels."""
    parts = ["astro-spt train --spectra 'lamost/*.fits.gz' --labels labels.ecsv"]
    for label in config.get("labels", []):
        unit = label.get("unit")
        parts.append(f"--label {label['name']}:{unit}" if unit else f"--label {label['name']}")
    for label in config.get("labels", []):
        if label.get("scaling") not in (None, "linear"):
            parts.append(f"--scaling {label['name']}:{label['scaling']}")
    return " ".join(parts) + " -o my-model"


def _text_table(header: list[str], rows: list[list[str]], indent: str) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def format_summary(config: Mapping[str, Any], source: str | None = None) -> str:
    """Plain-text summary of a bundle, as printed by ``astro-spt info``.

    Parameters
    ----------
    config : dict
        The bundle's ``config.json`` contents.
    source : str or None, optional
        Where the bundle was loaded from.

    Returns
    -------
    str

    Examples
    --------
    >>> from astro_spt.model_card import format_summary
    >>> print(format_summary({"labels": [{"name": "mass", "unit": "solMass",
    ...     "scaling": "linear"}]}).splitlines()[1])
    labels:         mass [solMass] (linear)
    """
    provenance = config.get("provenance") or {}
    lines = [f"astro_spt estimator bundle{f' from {source}' if source else ''}"]
    rows = [("labels", _labels_line(config))]
    if config.get("description"):
        rows.insert(0, ("description", config["description"]))
    if "network" in config:
        rows += [("network", _network_line(config)), ("PCA", _pca_line(config))]
    if "mc_dropout" in config:
        rows.append(("uncertainties", _mc_line(config)))
    rows.append(("training data", provenance.get("data", "not recorded")))
    rows += [
        (key, _format_value(provenance[key]))
        for key in ("n_train", "n_test", "split", "seed")
        if key in provenance
    ]
    rows += [
        (k, _readable(v))
        for k, v in provenance.items()
        if k not in _SHOWN_KEYS + _UNLISTED_KEYS + ("baselines",)
    ]
    if "astro_spt_version" in config:
        rows.append(
            (
                "written by",
                f"astro_spt {config['astro_spt_version']} (schema {config.get('schema_version')})",
            )
        )
    for key, value in rows:
        first, *rest = str(value).split("\n")
        lines.append(f"{key + ':':<15} {first}")
        lines += [f"{'':<15} {line}" for line in rest]
    header, table = _metric_rows(config)
    lines.append("accuracy:" if table else "accuracy:       not recorded")
    if table:
        lines += _text_table(header, table, "  ")
    header, table = _baseline_rows(config)
    if table:
        lines.append("comparison with classical baselines (same PCA inputs, same split):")
        lines += _text_table(header, table, "  ")
    lines.append("train a model like it from your own spectra and labels:")
    lines.append("  " + _train_command(config))
    files = config.get("files") or {}
    if files:
        lines.append("files:")
        lines += _text_table(
            ["name", "bytes", "sha256"],
            [[name, str(e.get("size", "?")), e.get("sha256", "?")] for name, e in files.items()],
            "  ",
        )
    return "\n".join(lines)
