"""The table `estimate` returns: its columns' formats and descriptions, the flag names,
the warning about failed inputs, and the Monte Carlo samples as distributions.
"""

import os
import warnings
from collections.abc import Mapping

import numpy as np

from .. import flags as _flags
from ..exceptions import (
    FailedInputWarning,
)
from .inputs import _Item

# The text columns of estimate()'s table that print(table) leaves out.
_HIDDEN_IN_PRINT = ("flag_names", "message", "path")

# The FITS header keywords (8 characters at most) that hold the meta of estimate()'s
# table, for every writer of FITS tables (the command line, astro_spt.distributed).
_FITS_META_KEYWORDS = {
    "model": "SPTMODEL",
    "model_revision": "SPTREV",
    "astro_spt_version": "SPTVERS",
    "seed": "SPTSEED",
    "n_samples": "SPTNSAMP",
}


def flag_names(flags) -> np.ndarray:
    """The ``flag_names`` column of `estimate`: the names of the set bits, comma-separated.

    Examples
    --------
    >>> from astro_spt import flags
    >>> from astro_spt.estimation import flag_names
    >>> flag_names([0, flags.LOW_SNR | flags.OUTLIERS]).tolist()
    ['', 'outliers,low_snr']
    """
    values = np.asarray(flags)
    names = {int(v): ",".join(_flags.decode_flags(int(v))) for v in np.unique(values)}
    return np.array([names[int(v)] for v in values.ravel()], dtype=str)


def _display_name(item: _Item) -> str:
    """The ``source`` of a row: a file's name (its folder is in ``path``), else the input's
    position or identifier."""
    return os.path.basename(item.source) if _path_of(item) else item.source


def _path_of(item: _Item) -> str:
    """The ``path`` of a row: the file as given, or the file an in-memory spectrum says it
    came from (``meta["filename"]``), else empty."""
    if item.path is not None:
        return item.path
    meta = getattr(item.spectrum, "meta", None)
    if isinstance(meta, Mapping) and item.source in (
        str(meta.get("filename")),
        str(meta.get("file")),
    ):
        return item.source
    return ""


# How the values of a label print (info.format), by physical type: ages to 0.01 Gyr,
# masses to 0.01 solMass, temperatures to 1 K, velocities to 0.1 km/s, anything else to
# four significant digits.
_DISPLAY_FORMATS = {"time": ".2f", "mass": ".2f", "dimensionless": ".2f", "temperature": ".0f"}


def _display_format(unit) -> str:
    import astropy.units as u

    unit = u.Unit(unit)
    if isinstance(unit, u.FunctionUnitBase):  # dex: [Fe/H], log g
        return ".2f"
    if unit.physical_type == "speed":
        return ".1f"
    return _DISPLAY_FORMATS.get(str(unit.physical_type), ".4g")


_COLUMN_DESCRIPTIONS = {
    "source": "The input: a file's name (its folder is in 'path'), or an in-memory "
    "spectrum's position in the input",
    "obsid": "LAMOST observation id (-1: none known)",
    "flags": "Quality bit mask (astro_spt.flags)",
    "flag_names": "Names of the quality flags set, comma-separated (astro_spt.flags)",
    "message": "Why the row has no values (empty when it has)",
    "path": "The file as given (empty for an in-memory spectrum without a file name)",
}
_ERROR_DESCRIPTIONS = {
    "err": "total 1-sigma uncertainty",
    "err_noise": "uncertainty from the spectrum's noise and masked pixels",
    "err_aleatoric": "uncertainty from the labels' scatter about the prediction",
    "err_epistemic": "uncertainty of the model itself (Monte Carlo dropout)",
    "err_floor": "variance floor of the model (SPT paper Eq. 6)",
    "samples": "samples of the predictive distribution",
}


def _describe_columns(table, labels) -> None:
    """Display formats and descriptions of `estimate`'s columns (kept by ECSV, FITS,
    Parquet)."""
    for name, description in _COLUMN_DESCRIPTIONS.items():
        if name in table.colnames:
            table[name].info.description = description
    for label in labels:
        fmt = _display_format(label.unit)
        for name in table.colnames:
            if name == label.name:
                table[name].info.description = f"Estimated {label.name}"
            elif name.startswith(f"{label.name}_"):
                kind = name.removeprefix(f"{label.name}_")
                what = _ERROR_DESCRIPTIONS.get(kind, kind.replace("_", " "))
                table[name].info.description = f"{label.name}: {what}"
            else:
                continue
            table[name].info.format = fmt


def _warn_failures(table) -> None:
    """One `FailedInputWarning` for the rows of a table that have no values."""
    failed = np.flatnonzero(np.char.str_len(np.asarray(table["message"], dtype=str)) > 0)
    if failed.size == 0:
        return
    shown = "; ".join(f"{table['source'][k]} ({table['message'][k]})" for k in failed[:3])
    more = f"; and {failed.size - 3} more" if failed.size > 3 else ""
    warnings.warn(
        f"{failed.size} of {len(table)} inputs could not be estimated (NaN values; see the "
        f"'message' and 'flag_names' columns): {shown}{more}",
        FailedInputWarning,
        stacklevel=3,
    )


def samples_distribution(samples):
    """An `~astropy.uncertainty.Distribution` from a ``<label>_samples`` column or row.

    `estimate` stores the samples of the predictive distribution as plain 2-D
    `~astropy.units.Quantity` columns, which tables print and write to any format; this
    turns them into a `~astropy.uncertainty.Distribution` (samples along the last axis)
    for propagating errors with arithmetic.

    Parameters
    ----------
    samples : `~astropy.units.Quantity`, shape (..., T)
        A ``<label>_samples`` column (one distribution per row) or one row's value.

    Returns
    -------
    `~astropy.uncertainty.Distribution`

    Examples
    --------
    >>> import astro_spt
    >>> from astro_spt.io import example_files
    >>> table = astro_spt.estimate(example_files()[:2], n_samples=50, return_samples=True)
    >>> table["age_samples"].shape  # (rows, samples)
    (2, 50)
    >>> age = astro_spt.samples_distribution(table["age_samples"])
    >>> age.shape, age.n_samples
    ((2,), 50)
    >>> bool(abs(age.pdf_std()[0] / table["age_err"][0] - 1) < 1e-6)  # the same spread
    True
    >>> ratio = astro_spt.samples_distribution(table["age_samples"][0]) / table["age"][0]
    >>> round(float(ratio.pdf_std()), 1)  # relative uncertainty of the first age
    0.6
    """
    import astropy.units as u
    from astropy.uncertainty import Distribution

    return Distribution(u.Quantity(samples))
