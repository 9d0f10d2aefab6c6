"""The ``astro-spt`` command line (SPEC §2, layer 8).

Each subcommand is a pair of functions: ``add_<name>_parser(subparsers)`` declares its
arguments and sets ``func``; ``run_<name>(args) -> int`` does the work. Adding a command
means writing the pair and listing the first in `SUBCOMMANDS`.

Exit codes:

==  ==================================================================================
0   success
1   user or input error (no such model, invalid or corrupt bundle, bad input files)
2   usage error (unknown command or option; from argparse)
3   network or hub error (hub unreachable, repository or revision not found, offline
    with an empty cache, download failing verification)
==  ==================================================================================
"""

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

__all__ = [
    "EXIT_HUB_ERROR",
    "EXIT_OK",
    "EXIT_USAGE_ERROR",
    "EXIT_USER_ERROR",
    "SUBCOMMANDS",
    "build_parser",
    "flag_summary",
    "main",
    "write_table",
]

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE_ERROR = 2
EXIT_HUB_ERROR = 3

_EPILOG = """\
exit codes: 0 success; 1 user or input error; 2 usage error; 3 network or hub error.
Defaults (hub repository, revision, endpoint, cache) come from the [astro_spt] section of
astro_spt.cfg (astro_spt.conf); HF_HUB_OFFLINE=1 forbids network access and HF_TOKEN
gives a token for private repositories."""


def _add_hub_options(parser: argparse.ArgumentParser, *, offline: bool) -> None:
    parser.add_argument(
        "--revision", "-r", help="branch, tag or commit hash (default: main); pin a commit hash"
    )
    parser.add_argument(
        "--cache-dir", help="download cache (default: astro_spt.conf.cache_dir, then HF_HUB_CACHE)"
    )
    parser.add_argument(
        "--endpoint", help="hub URL (default: astro_spt.conf.hub_endpoint, then HF_ENDPOINT)"
    )
    if offline:
        parser.add_argument(
            "--offline", action="store_true", help="use only the local cache, never the network"
        )


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
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
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

    path = resolve_model(
        args.model,
        revision=args.revision,
        cache_dir=args.cache_dir,
        endpoint=args.endpoint,
        local_files_only=True if args.offline else None,
    )
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


_FITS_KEYS = {
    "model": "SPTMODEL",
    "model_revision": "SPTREV",
    "astro_spt_version": "SPTVERS",
    "seed": "SPTSEED",
    "n_samples": "SPTNSAMP",
}


def _table_format(path: str) -> str:
    for suffix, fmt in _TABLE_FORMATS.items():
        if path.lower().endswith(suffix) or path.lower().endswith(suffix + ".gz"):
            return fmt
    raise ValueError(f"cannot tell the table format of {path}: use .ecsv, .fits or .csv")


def write_table(table, path: str, overwrite: bool = False) -> None:
    """Write an estimate table as ECSV, FITS or CSV, chosen by the file extension."""
    fmt = _table_format(path)
    table = table.copy(copy_data=False)
    if fmt != "ascii.ecsv":
        # FITS headers and CSV hold flat key/value metadata only, FITS with short keys.
        flat = {k: v for k, v in table.meta.items() if isinstance(v, str | int | float)}
        if fmt == "fits":
            flat = {_FITS_KEYS.get(k, k[:8].upper()): v for k, v in flat.items()}
        table.meta = flat
    table.write(path, format=fmt, overwrite=overwrite)


def flag_summary(table) -> str:
    """One line: how many rows are flagged, and with what."""
    from . import flags as _flags

    values = np.asarray(table["flags"])
    counts = {flag.name: int(np.count_nonzero(values & flag.value)) for flag in _flags.FLAGS}
    parts = [f"{n} {name}" for name, n in counts.items() if n]
    flagged = int(np.count_nonzero(values))
    return f"{len(table)} spectra, {flagged} flagged" + (f" ({', '.join(parts)})" if parts else "")


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
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo seed (default 0)")
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first unusable input (exit code 1)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_estimate)
    return parser


def run_estimate(args: argparse.Namespace) -> int:
    """Run ``astro-spt estimate``."""
    from .estimation import estimate
    from .hub import load_model

    if args.output:
        _table_format(args.output)  # fail before the work, not after it
        if os.path.exists(args.output) and not args.overwrite:
            raise ValueError(f"{args.output} exists; pass --overwrite to replace it")
    model = load_model(
        args.model,
        revision=args.revision,
        cache_dir=args.cache_dir,
        endpoint=args.endpoint,
        local_files_only=True if args.offline else None,
    )
    table = estimate(
        args.files,
        model,
        n_samples=args.samples,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        strict=args.strict,
        progress=False if args.no_progress else None,
    )
    if len(table) == 0:
        raise ValueError(f"no input files found in {' '.join(args.files)}")
    if args.output:
        write_table(table, args.output, overwrite=args.overwrite)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        columns = [c for c in table.colnames if not c.endswith("_samples")]
        table[columns].pprint_all()
    print(flag_summary(table), file=sys.stderr)
    return EXIT_OK


SUBCOMMANDS = (add_estimate_parser, add_download_parser, add_info_parser)
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        print(f"astro-spt {args.command}: error: {err}", file=sys.stderr)
        return EXIT_HUB_ERROR
    except (AstroSPTError, ValueError, OSError) as err:
        print(f"astro-spt {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
