"""The ``astro-spt`` command line (SPEC §2, layer 8).

Each subcommand is a pair of functions: ``add_<name>_parser(subparsers)`` declares its
arguments and sets ``func``; ``run_<name>(args) -> int`` does the work. Adding a command
means writing the pair and listing the first in `SUBCOMMANDS`.

Exit codes:

===  =================================================================================
0    success
1    user or input error (no such model, invalid or corrupt bundle, bad input files,
     an output that cannot be written), reported in one line, checked before the work;
     also ``estimate`` when not one input could be estimated (one line per input)
2    usage error (unknown command or option; from argparse)
3    network or hub error (hub unreachable, repository or revision not found, offline
     with an empty cache, download failing verification)
4    internal error: a bug, reported in one line (``ASTRO_SPT_TRACEBACK=1`` shows where)
130  interrupted (Ctrl-C)
===  =================================================================================
"""

import argparse
import dataclasses
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._files import write_atomically

__all__ = [
    "EXIT_HUB_ERROR",
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE_ERROR",
    "EXIT_USER_ERROR",
    "SUBCOMMANDS",
    "build_parser",
    "explain_flags",
    "flag_summary",
    "main",
    "write_table",
]

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE_ERROR = 2
EXIT_HUB_ERROR = 3
EXIT_INTERNAL_ERROR = 4
EXIT_INTERRUPTED = 130

_EPILOG = """\
exit codes: 0 success; 1 user or input error; 2 usage error; 3 network or hub error;
4 internal error (a bug: please report it); 130 interrupted. 'estimate' exits with 1
when not one input could be estimated.

Defaults (hub_repo, hub_revision, hub_endpoint, cache_dir) come from the top of
astro_spt.cfg in astropy's config directory (see astro_spt.Conf); HF_HUB_OFFLINE=1
forbids network access and HF_TOKEN gives a token for private repositories."""


class _HelpFormatter(argparse.HelpFormatter):
    """Descriptions and epilogs wrapped to the terminal, paragraph by paragraph (blank
    lines apart); argparse's own would run the paragraphs together, its raw formatter
    leave a paragraph on one long line."""

    def _fill_text(self, text, width, indent):
        import textwrap

        return "\n\n".join(
            textwrap.fill(
                " ".join(part.split()), width, initial_indent=indent, subsequent_indent=indent
            )
            for part in text.split("\n\n")
            if part.strip()
        )


def _add_hub_options(parser: argparse.ArgumentParser, *, offline: bool) -> None:
    parser.add_argument(
        "--revision", "-r", help="branch, tag or commit hash (default: main); pin a commit hash"
    )
    parser.add_argument(
        "--cache-dir",
        help="download cache (default: cache_dir of astro_spt.cfg, then HF_HUB_CACHE)",
    )
    parser.add_argument(
        "--endpoint", help="hub URL (default: hub_endpoint of astro_spt.cfg, then HF_ENDPOINT)"
    )
    if offline:
        parser.add_argument(
            "--offline", action="store_true", help="use only the local cache, never the network"
        )


def _hub_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `~astro_spt.load_model` given by `_add_hub_options`."""
    return {
        "revision": args.revision,
        "cache_dir": args.cache_dir,
        "endpoint": args.endpoint,
        "local_files_only": True if getattr(args, "offline", False) else None,
    }


# -- download ------------------------------------------------------------------------


def add_download_parser(subparsers) -> argparse.ArgumentParser:
    """Declare ``astro-spt download``."""
    parser = subparsers.add_parser(
        "download",
        help="fetch a model from the hub into the local cache",
        description=(
            "Download an estimator bundle from the Hugging Face Hub into the local cache and "
            "verify it, so that it later loads offline (HF_HUB_OFFLINE=1). Prints the "
            "directory of the cached bundle."
        ),
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("repo", metavar="REPO", help="hub repository id, namespace/name")
    _add_hub_options(parser, offline=False)
    parser.set_defaults(func=run_download)
    return parser


def run_download(args: argparse.Namespace) -> int:
    """Run ``astro-spt download``."""
    from .hub import download_model

    path = download_model(
        args.repo, revision=args.revision, cache_dir=args.cache_dir, endpoint=args.endpoint
    )
    print(
        f"{args.repo} at revision {args.revision or 'main'} (commit {path.name}) is cached "
        "and verified in:",
        file=sys.stderr,
    )
    print(path)
    return EXIT_OK


# -- info ----------------------------------------------------------------------------


def add_info_parser(subparsers) -> argparse.ArgumentParser:
    """Declare ``astro-spt info``."""
    parser = subparsers.add_parser(
        "info",
        help="describe a model: labels, training data, accuracy, provenance",
        description=(
            "Print the summary of an estimator bundle: labels and units, network, PCA, "
            "training data, measured accuracy, provenance and file checksums (checked)."
        ),
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="bundle directory or hub repository id (default: the default model)",
    )
    _add_hub_options(parser, offline=True)
    parser.set_defaults(func=run_info)
    return parser


def run_info(args: argparse.Namespace) -> int:
    """Run ``astro-spt info``."""
    from .bundle import find_corrupt_files, read_bundle_config
    from .exceptions import BundleIntegrityError
    from .hub import resolve_model
    from .model_card import format_summary

    path = resolve_model(args.model, **_hub_options(args))
    config = read_bundle_config(path)
    problems = find_corrupt_files(path, config)
    if problems:
        name = next(iter(problems))
        raise BundleIntegrityError(
            f"bundle file {name} in {path} is {problems[name]} "
            "(its sha256 does not match config.json)",
            filename=name,
            path=path / name,
        )
    print(format_summary(config, source=args.model or str(path)))
    return EXIT_OK


# -- estimate ------------------------------------------------------------------------

_TABLE_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits", ".csv": "ascii.csv"}


def _table_format(path: str) -> str:
    for suffix, fmt in _TABLE_FORMATS.items():
        if path.lower().endswith(suffix) or path.lower().endswith(suffix + ".gz"):
            return fmt
    raise ValueError(f"cannot tell the table format of {path}: use .ecsv, .fits or .csv")


def write_table(table, path: str, overwrite: bool = False) -> None:
    """Write an estimate table as ECSV, FITS or CSV, chosen by the file extension.

    The table goes to a temporary file in the same folder, which then replaces ``path``
    (`os.replace`): a full disk or an interrupted run leaves the old file or none, never
    a truncated one. FITS holds ASCII text only, so text with other characters (a file
    name, a message) is written with Python's backslash escapes (``\\xe9`` for é).
    """
    fmt = _table_format(path)
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite to replace it")
    table = table.copy(copy_data=False)
    if fmt != "ascii.ecsv":
        # FITS headers and CSV hold flat key/value metadata only, FITS with short keys.
        flat = {k: v for k, v in table.meta.items() if isinstance(v, str | int | float)}
        if fmt == "fits":
            from .estimation.table import _FITS_META_KEYWORDS

            flat = {_FITS_META_KEYWORDS.get(k, k[:8].upper()): _ascii(v) for k, v in flat.items()}
            for name in table.colnames:
                if table[name].dtype.kind in "UO":
                    info = table[name].info
                    description, format_ = info.description, info.format
                    table[name] = [_ascii(v) for v in table[name]]
                    table[name].info.description = description
                    table[name].info.format = format_
        table.meta = flat
    write_atomically(path, lambda tmp: table.write(tmp, format=fmt))


def _ascii(value):
    return (
        value.encode("ascii", "backslashreplace").decode("ascii")
        if isinstance(value, str)
        else value
    )


def _check_output(path: str, *, overwrite: bool) -> None:
    """Fail now, not after the work, if the table ``path`` cannot be written."""
    _table_format(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a table file")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite to replace it")
    _check_folder(os.path.dirname(os.path.abspath(path)), create=False)


def _check_folder(folder: str, *, create: bool) -> None:
    """Fail now if files cannot be written in ``folder`` (made with its parents if
    ``create``)."""
    existing = os.path.abspath(folder)
    while create and not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"cannot write in {folder}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"cannot write in {folder}: {err.strerror or err}") from err


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d{1,3})?)")


def _check_device(device: str | None) -> None:
    if device is not None and not _DEVICE.fullmatch(device):
        raise ValueError(f"invalid --device {device!r}: use cpu, cuda, cuda:N, mps or auto")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def flag_summary(table) -> str:
    """One line: how many rows are bad, warned of or only noted, and by which flags.

    A row counts under its most severe flag (``bad`` before ``warning`` before ``info``):
    an informational note (a routine mask repaired) says nothing against the estimate.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from astro_spt import flags
    >>> table = Table({"flags": [
    ...     0,
    ...     flags.REPAIRED_PIXELS,
    ...     flags.REPAIRED_PIXELS | flags.OUT_OF_DISTRIBUTION,
    ...     flags.UNREADABLE,
    ... ]})
    >>> print(flag_summary(table))  # doctest: +NORMALIZE_WHITESPACE
    4 spectra: 1 bad, 1 with warnings, 1 with notes only, 1 unflagged (bad: 1 unreadable;
    warnings: 1 out_of_distribution; notes: 2 repaired_pixels)
    """
    from . import flags as _flags

    values = np.asarray(table["flags"])
    by_severity = {}
    for flag in _flags.FLAGS:
        n = int(np.count_nonzero(values & flag.value))
        if n:
            by_severity.setdefault(flag.severity, []).append(f"{n} {flag.name}")
    bad = (values & _flags.FLAGS.mask_of("bad")) != 0
    warned = ~bad & ((values & _flags.FLAGS.mask_of("warning")) != 0)
    noted = ~bad & ~warned & (values != 0)
    counts = (
        f"{len(table)} spectra: {int(bad.sum())} bad, {int(warned.sum())} with warnings, "
        f"{int(noted.sum())} with notes only, {int(np.count_nonzero(values == 0))} unflagged"
    )
    titles = {"bad": "bad", "warning": "warnings", "info": "notes"}  # worst first
    parts = [
        f"{title}: {', '.join(by_severity[severity])}"
        for severity, title in titles.items()
        if severity in by_severity
    ]
    return counts + (f" ({'; '.join(parts)})" if parts else "")


def add_estimate_parser(subparsers) -> argparse.ArgumentParser:
    """Declare ``astro-spt estimate``."""
    parser = subparsers.add_parser(
        "estimate",
        help="ages and masses (or the model's labels) of spectra files",
        description=(
            "Estimate the labels of each input spectrum (FITS files, folders or glob "
            "patterns; LAMOST low-resolution files in every layout) and write one row per "
            "input, in input order: value, uncertainty and quality flags. Unreadable or "
            "unusable inputs get NaN values and flags (or, with --strict, stop the run)."
        ),
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("files", metavar="FILES", nargs="+", help="files, folders or globs")
    parser.add_argument(
        "-o", "--output", help="output table: .ecsv, .fits or .csv (default: print the table)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--model", "-m", help="bundle directory or hub repository id (default: embedded model)"
    )
    _add_hub_options(parser, offline=True)
    parser.add_argument("--samples", type=int, help="Monte Carlo dropout passes per spectrum")
    parser.add_argument("--batch-size", type=int, help="spectra processed at a time")
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        help="processes that estimate the files (default: one per core; same results)",
    )
    parser.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo seed (default 0)")
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first unusable input (exit code 1)"
    )
    medium = parser.add_mutually_exclusive_group()
    medium.add_argument(
        "--air",
        dest="air",
        action="store_const",
        const=True,
        help="the wavelengths are in air (default: what each file says; LAMOST: vacuum)",
    )
    medium.add_argument(
        "--vacuum", dest="air", action="store_const", const=False, help="they are in vacuum"
    )
    parser.add_argument(
        "--explain-flags",
        action="store_true",
        help="after the table, describe each quality flag that is set in it",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_estimate)
    return parser


def run_estimate(args: argparse.Namespace) -> int:
    """Run ``astro-spt estimate``."""
    from .estimation import estimate
    from .exceptions import AstroSPTWarning, FailedInputWarning
    from .hub import load_model

    # Everything that can be checked is checked before the work, not after it.
    _check_device(args.device)
    _check_positive(samples=args.samples, batch_size=args.batch_size, jobs=args.jobs)
    if args.output:
        _check_output(args.output, overwrite=args.overwrite)
    model = load_model(args.model, **_hub_options(args))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstroSPTWarning)
        table = estimate(
            args.files,
            model,
            n_samples=args.samples,
            batch_size=args.batch_size,
            n_jobs=args.jobs,
            device=args.device,
            seed=args.seed,
            strict=args.strict,
            progress=False if args.no_progress else None,
            air=args.air,
        )
    for warning in caught:
        if issubclass(warning.category, FailedInputWarning):
            continue  # one line per input below says it better
        if issubclass(warning.category, AstroSPTWarning):
            print(f"astro-spt estimate: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if len(table) == 0:
        raise ValueError(f"no input files found in {' '.join(args.files)}")
    if args.output:
        write_table(table, args.output, overwrite=args.overwrite)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        # the messages go to standard error, one line each; the paths are in the files
        columns = [c for c in table.colnames if c not in ("message", "path")]
        shown = table[[c for c in columns if not c.endswith("_samples")]]
        shown.pprint_exclude_names.set([])
        shown.pprint_all()
    failed = [k for k, message in enumerate(table["message"]) if message]
    for k in failed:
        where = table["path"][k] or table["source"][k]
        print(f"astro-spt estimate: {where}: {table['message'][k]}", file=sys.stderr)
    print(flag_summary(table), file=sys.stderr)
    if args.explain_flags:
        print(explain_flags(table["flags"]), file=sys.stderr)
    return EXIT_USER_ERROR if len(failed) == len(table) else EXIT_OK


def explain_flags(values) -> str:
    """What each flag set in ``values`` means, as `~astro_spt.flags.flag_table` prints it.

    Examples
    --------
    >>> from astro_spt.cli import explain_flags
    >>> print(explain_flags([64, 0, 64]))  # doctest: +NORMALIZE_WHITESPACE
    bit value name            severity
    --- ----- --------------- --------
      6    64 repaired_pixels info
              More than a small fraction (``min_repaired_fraction``, 1 % by default) of
              the grid was interpolated over or clipped; the exact count is in
              ``n_repaired``.
    """
    from .flags import flag_table

    table = flag_table()
    present = int(np.bitwise_or.reduce(np.asarray(values, dtype=np.int64), initial=0))
    if not present:
        return "no quality flag is set"
    return str(table[(table["value"] & present) != 0])


# -- flags ---------------------------------------------------------------------------


def add_flags_parser(subparsers) -> argparse.ArgumentParser:
    """Declare ``astro-spt flags``."""
    parser = subparsers.add_parser(
        "flags",
        help="list the quality flags: bit, name, severity, meaning",
        description=(
            "List the quality flags of the 'flags' column of estimate's tables: bit, "
            "value, name, severity (info: usable; warning: may be biased; bad: do not use) "
            "and meaning. A row's flag value is the sum of the values of its flags."
        ),
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.set_defaults(func=run_flags)
    return parser


def run_flags(args: argparse.Namespace) -> int:
    """Run ``astro-spt flags``."""
    from .flags import flag_table

    print(flag_table())
    return EXIT_OK


# -- train and evaluate --------------------------------------------------------------


def _parse_pairs(values, what):
    pairs = {}
    for value in values or []:
        name, _, extra = value.partition(":")
        if not name:
            raise ValueError(f"invalid {what} {value!r}: expected NAME or NAME:VALUE")
        pairs[name] = extra or None
    return pairs


def _matched_labels(files, table_path, label_units):
    """The label table's rows for the given spectra files, in their order."""
    from astropy import units as u
    from astropy.table import QTable

    from .estimation import expand_inputs

    sources = [source for source, _ in expand_inputs(files)]
    if not sources:
        raise ValueError(f"no spectra found in {' '.join(files)}")
    table = _read_user_table(table_path, QTable)
    key = next((c for c in ("file", "filename", "source", "path") if c in table.colnames), None)
    if key is not None:
        index = {os.path.basename(str(v)): i for i, v in enumerate(table[key])}
        missing = [s for s in sources if os.path.basename(s) not in index]
        if missing:
            raise ValueError(
                f"{len(missing)} spectra have no row in {table_path} (column {key!r}), "
                f"e.g. {missing[0]}"
            )
        table = table[[index[os.path.basename(s)] for s in sources]]
    elif len(table) != len(sources):
        raise ValueError(
            f"{table_path} has {len(table)} rows for {len(sources)} spectra and no 'file' "
            "column to match them by"
        )
    labels = QTable()
    for name, unit in label_units.items():
        if name not in table.colnames:
            raise ValueError(f"label column {name!r} is not in {table_path}: {table.colnames}")
        column = table[name]
        if unit is not None:
            column = (
                column.to(unit)
                if hasattr(column, "unit") and column.unit
                else column * u.Unit(unit)
            )
        labels[name] = column
    return sources, labels


def _read_user_table(path: str, cls):
    """A table file given on the command line; any failure to read it is a user error."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file")
    try:
        return cls.read(path)
    except Exception as err:  # astropy's readers raise anything on a file that is no table
        # astropy's "format could not be identified" goes on with a table of every format
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read {path} as a table: {reason}") from err


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Declare ``astro-spt train``."""
    parser = subparsers.add_parser(
        "train",
        help="train an estimator from spectra and a label table",
        description=(
            "Train an SPT estimator with the paper's recipe and save it as a bundle. The "
            "label table (any format astropy reads, e.g. ECSV) has one row per spectrum, "
            "matched by a 'file' column (basename) or else by order."
        ),
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--spectra", nargs="+", required=True, help="files, folders or globs")
    parser.add_argument("--labels", required=True, help="label table, one row per spectrum")
    parser.add_argument(
        "--label",
        action="append",
        required=True,
        metavar="NAME[:UNIT]",
        help="a label column to learn, with its unit (repeat: --label age:Gyr --label mass:Msun)",
    )
    parser.add_argument(
        "--scaling", action="append", metavar="NAME:log10", help="label scaling (default linear)"
    )
    parser.add_argument("-o", "--output", required=True, help="bundle directory to write")
    parser.add_argument("--config", help="JSON file of EstimatorConfig settings")
    parser.add_argument(
        "--size",
        choices=["auto", "small", "medium", "paper"],
        default="auto",
        help=(
            "network size and PCA components (astro_spt.training.SIZES): small 0.1 M "
            "parameters, 32 components; medium 4.8 M, 143; paper 19 M, 143 (SPT paper); "
            "auto (default): small below 1,000 spectra, medium below 10,000, else paper. "
            "--config settings win over it"
        ),
    )
    parser.add_argument(
        "--n-components",
        type=int,
        help="PCA components (default: the size's); at most the training spectra",
    )
    parser.add_argument("--epochs", type=int, help="maximum number of epochs")
    parser.add_argument("--seed", type=int, help="seed of the split, initialisation and batches")
    parser.add_argument("--device", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--float16", action="store_true", help="store float16 weights")
    parser.add_argument("--split", help="write the train/validation/test assignment here (ECSV)")
    parser.add_argument("--description", default="", help="one line for the model card")
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    """Run ``astro-spt train``."""
    import json

    from astropy.table import Table

    from ._progress import stderr_is_terminal as _stderr_is_terminal
    from .training import EstimatorConfig, size_for, train

    _check_device(args.device)
    _check_positive(epochs=args.epochs, n_components=args.n_components)
    # save_pretrained writes a temporary folder beside the output, then renames it.
    _check_folder(os.path.dirname(os.path.abspath(args.output)), create=True)
    if args.split:
        _check_output(args.split, overwrite=True)
    labels_units = _parse_pairs(args.label, "--label")
    settings = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            settings = json.load(f)
        if not isinstance(settings, dict):
            raise ValueError(f"--config {args.config} must hold a JSON object")
    sources, labels = _matched_labels(args.spectra, args.labels, labels_units)
    size = size_for(len(sources)) if args.size == "auto" else args.size
    if args.n_components is not None:
        settings["n_components"] = args.n_components
    try:
        config = EstimatorConfig.for_size(size, **settings)
    except (TypeError, KeyError) as err:
        raise ValueError(f"invalid settings in --config {args.config}: {err}") from err
    overrides = {"max_epochs": args.epochs, "seed": args.seed}
    config = dataclasses.replace(
        config,
        training=dataclasses.replace(
            config.training, **{k: v for k, v in overrides.items() if v is not None}
        ),
        label_scaling={**config.label_scaling, **_parse_pairs(args.scaling, "--scaling")},
    )
    bundle, history = train(
        sources,
        labels,
        config=config,
        device=args.device,
        progress=_stderr_is_terminal(),
        data_description=f"{len(sources)} spectra with labels from {os.path.basename(args.labels)}",
        description=args.description,
    )
    path = bundle.save_pretrained(args.output, dtype="float16" if args.float16 else "float32")
    if args.split:
        assignment = np.full(len(sources), "unused", dtype="U10")
        for part, rows in history.split.items():
            assignment[rows] = part
        split = Table({"file": sources, "set": assignment})
        write_atomically(args.split, lambda tmp: split.write(tmp, format=_table_format(args.split)))
    print(f"wrote {path} ({history.n_epochs} epochs)", file=sys.stderr)
    if history.test_metrics is not None:
        history.test_metrics.pprint_all()
    return EXIT_OK


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Declare ``astro-spt evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy of a model on labelled spectra: metrics table and figures",
        description=(
            "Estimate the labels of labelled spectra and write metrics.ecsv (Δ, ΔP, bias, "
            "95 % limits of agreement, 1σ/2σ coverage), metrics.md and the paper's "
            "figures (learning curve, predicted vs true, uncertainty, Bland–Altman)."
        ),
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="bundle directory or hub repository id")
    parser.add_argument("--spectra", nargs="+", required=True, help="files, folders or globs")
    parser.add_argument("--labels", required=True, help="label table, one row per spectrum")
    parser.add_argument(
        "--split", help="a --split table from 'astro-spt train': evaluate its test rows only"
    )
    parser.add_argument("-o", "--output", required=True, help="folder for tables and figures")
    parser.add_argument("--samples", type=int, help="Monte Carlo dropout passes per spectrum")
    parser.add_argument("--device", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--format", default="png", help="figure format (png, pdf, svg)")
    _add_hub_options(parser, offline=True)
    parser.set_defaults(func=run_evaluate)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``astro-spt evaluate``."""
    from astropy.table import Table

    from .baselines import format_table, paper_table
    from .estimation import estimate
    from .hub import load_model
    from .metrics import metrics_table
    from .plots import evaluation_figures, save_figures

    _check_device(args.device)
    _check_positive(samples=args.samples)
    _check_folder(args.output, create=True)
    model = load_model(args.model, **_hub_options(args))
    names, units = model.label_names, model.label_units
    sources, labels = _matched_labels(
        args.spectra, args.labels, {n: (u or None) for n, u in zip(names, units, strict=True)}
    )
    if args.split:
        split = _read_user_table(args.split, Table)
        if not {"file", "set"} <= set(split.colnames):
            raise ValueError(f"--split {args.split} has no 'file' and 'set' columns")
        test = {os.path.basename(f) for f in split["file"][split["set"] == "test"]}
        keep = np.array([os.path.basename(s) in test for s in sources])
        sources, labels = [s for s, k in zip(sources, keep, strict=True) if k], labels[keep]
    table = estimate(sources, model, n_samples=args.samples, device=args.device)
    y_true = np.stack([np.asarray(getattr(labels[n], "value", labels[n])) for n in names], 1)
    y_pred = np.stack([table[n].value for n in names], 1)
    y_err = np.stack([table[f"{n}_err"].value for n in names], 1)
    metrics = metrics_table(y_true, y_pred, y_err, names=list(names), model="SPT")
    os.makedirs(args.output, exist_ok=True)
    write_table(metrics, os.path.join(args.output, "metrics.ecsv"), overwrite=True)
    write_table(table, os.path.join(args.output, "estimates.ecsv"), overwrite=True)
    pretty = paper_table(metrics, label_units=dict(zip(names, units, strict=True)))
    markdown = format_table(pretty, fmt="markdown") + "\n"
    write_atomically(
        os.path.join(args.output, "metrics.md"),
        lambda tmp: Path(tmp).write_text(markdown, encoding="utf-8"),
    )
    history = (model.provenance or {}).get("history")
    figures = evaluation_figures(
        y_true, y_pred, y_err, history=history, label_names=list(names), label_units=list(units)
    )
    written = save_figures(figures, args.output, fmt=args.format)
    metrics.pprint_all()
    print(f"wrote metrics and {len(written)} figures to {args.output}", file=sys.stderr)
    print(flag_summary(table), file=sys.stderr)
    return EXIT_OK


SUBCOMMANDS = (
    add_estimate_parser,
    add_train_parser,
    add_evaluate_parser,
    add_download_parser,
    add_info_parser,
    add_flags_parser,
)
"""Functions that declare the subcommands, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``astro-spt`` with every subcommand.

    Examples
    --------
    >>> from astro_spt.cli import build_parser
    >>> build_parser().parse_args(["download", "org/model", "-r", "v1"]).revision
    'v1'
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="astro-spt",
        description="Ages and masses of red giant stars from their spectra (astro_spt).",
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(metavar="COMMAND", dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (see the module docstring).

    Parameters
    ----------
    argv : sequence of str or None, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Examples
    --------
    >>> from astro_spt.cli import main
    >>> main(["info", "/no/such/bundle"])
    1
    """
    from .exceptions import AstroSPTError, HubError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version (0) and usage errors (2)
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE_ERROR
    try:
        return args.func(args)
    except HubError as err:
        print(f"astro-spt {args.command}: error: {_cli_words(_one_line(err))}", file=sys.stderr)
        return EXIT_HUB_ERROR
    except (AstroSPTError, ValueError, OSError) as err:
        if isinstance(err, BrokenPipeError):  # the reader of stdout went away (| head)
            sys.stderr.close()
            return EXIT_OK
        print(f"astro-spt {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"astro-spt {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        # A bug, not a user error: one line, and the traceback only when asked for.
        if os.environ.get("ASTRO_SPT_TRACEBACK"):
            raise
        print(
            f"astro-spt {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
            "(set ASTRO_SPT_TRACEBACK=1 to see where; please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


# The hub's messages name the Python arguments; on the command line, the options.
_CLI_WORDS = (
    ("(local_files_only=True)", "(--offline)"),
    ("pass cache_dir= (astro_spt.conf.cache_dir) pointing at", "pass --cache-dir with"),
    ("pass token= or log in", "set HF_TOKEN or log in"),
)


def _cli_words(message: str) -> str:
    for python, option in _CLI_WORDS:
        message = message.replace(python, option)
    return message


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
