"""What the inputs are: expanding spectra, files, folders and patterns into items, and
reading each one (`expand_inputs`).
"""

import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..exceptions import (
    AstroSPTError,
    InvalidInputError,
)

_FITS_PATTERNS = ("*.fits", "*.fits.gz", "*.fit", "*.fit.gz")


@dataclass
class _Item:
    """One input spectrum: an in-memory spectrum or a file to read, or why it is neither."""

    source: str
    spectrum: object = None
    path: str | None = None
    error: str | None = None


def _is_spectrum(obj) -> bool:
    try:
        return hasattr(obj, "spectral_axis") and hasattr(obj, "flux")
    except Exception:  # a property that raises: no spectrum
        return False


def expand_inputs(spectra) -> list:
    """Flatten the accepted inputs into a list of spectra and file paths, in input order.

    Accepts a `~specutils.Spectrum` (a 2-D flux one counts as one spectrum per row), a
    `~specutils.SpectrumList` or any list of these, file paths, folders (their FITS files,
    sorted) and glob patterns (sorted matches).

    Returns
    -------
    list of (str, object)
        ``(source, spectrum_or_path)`` pairs; ``source`` identifies the input.

    Examples
    --------
    >>> from astro_spt.estimation import expand_inputs
    >>> expand_inputs(["no/such/file.fits"])
    [('no/such/file.fits', 'no/such/file.fits')]
    """
    return [
        (item.source, item.spectrum if item.path is None else item.path)
        for item in _expand(spectra)
    ]


def _expand(spectra, prefix="spectrum", top=True) -> list[_Item]:
    """The inputs as `_Item` rows. Anything unusable inside a collection becomes one row
    with an ``error`` (raised by `_read` only when strict), so that it cannot abort the
    others; only a top-level input of the wrong type is refused at once."""
    if isinstance(spectra, str | bytes | os.PathLike):
        return _expand_path(spectra, prefix)
    if _is_spectrum(spectra):
        try:
            return _expand_spectrum(spectra, prefix)
        except Exception as err:  # an object that only looks like a spectrum
            return [_Item(prefix, error=f"not a usable spectrum: {_reason(err)}")]
    if isinstance(spectra, np.ndarray):
        message = (
            "estimate() takes spectra with units (specutils Spectrum), file paths or folders, "
            "not a bare array: wrap flux and wavelength in a Spectrum"
        )
    else:
        try:
            elements = list(spectra)
        except Exception:
            elements = None
        if elements is not None:
            items = []
            for i, element in enumerate(elements):
                items.extend(_expand(element, prefix=f"{prefix}[{i}]", top=False))
            return items
        message = (
            f"estimate() cannot use an input of type {type(spectra).__name__}: expected a "
            "specutils Spectrum, a SpectrumList or list, file paths, folders or glob patterns"
        )
    if top:
        raise InvalidInputError(message)
    return [_Item(prefix, error=message)]


def _expand_path(spectra, prefix) -> list[_Item]:
    try:
        text = os.fsdecode(spectra)
    except Exception as err:
        return [_Item(prefix, error=f"not a usable file name: {err}")]
    if os.path.isdir(text):
        folder = glob.escape(text)
        paths = sorted({p for pat in _FITS_PATTERNS for p in glob.glob(os.path.join(folder, pat))})
        return [_Item(p, path=p) for p in paths]
    # A file that exists is that file, whatever characters its name holds ("a[b].fits").
    if glob.has_magic(text) and not os.path.lexists(text):
        return [_Item(p, path=p) for p in sorted(glob.glob(text, recursive=True))]
    return [_Item(text, path=text)]


def _expand_spectrum(spectrum, prefix) -> list[_Item]:
    """One row per spectrum; a 2-D flux is one spectrum per row."""
    source = _source_of(spectrum, prefix)
    flux = spectrum.flux
    ndim = getattr(flux, "ndim", None)
    if ndim != 2:
        if isinstance(ndim, int) and ndim > 2:
            return [_Item(source, error=f"flux of {ndim} dimensions; expected 1 or 2")]
        # 1-D, or not an array at all: _read and preprocess tell which
        return [_Item(source, spectrum=spectrum)]
    n_rows = flux.shape[0]
    if n_rows == 0:
        return [_Item(source, error="a 2-D spectrum with no rows of flux")]
    items = []
    for i in range(n_rows):
        try:
            items.append(_Item(f"{prefix}[{i}]", spectrum=_row_of(spectrum, i, n_rows)))
        except Exception as err:
            items.append(_Item(f"{prefix}[{i}]", error=f"cannot take row {i}: {_reason(err)}"))
    return items


# Keys of a 2-D spectrum's meta that may hold one value per row (preprocess takes them so).
_PER_ROW_META = ("redshift", "z", "radial_velocity", "air", "vacuum", "obsid")


def _row_of(spectrum, i: int, n_rows: int):
    """Row ``i`` of a 2-D spectrum, its meta's per-row values (``meta["redshift"]``, one
    per row) reduced to the row's."""
    row = spectrum[i]
    meta = getattr(spectrum, "meta", None)
    if isinstance(meta, Mapping):
        per_row = {
            key: meta[key][i]
            for key in _PER_ROW_META
            if key in meta and not isinstance(meta[key], str) and np.shape(meta[key]) == (n_rows,)
        }
        if per_row:
            row.meta = {**row.meta, **per_row}
    return row


def _reason(error: Exception) -> str:
    """An exception as one line for a message: the package's own say it all."""
    return str(error) if isinstance(error, AstroSPTError) else f"{type(error).__name__}: {error}"


def _source_of(spectrum, default: str) -> str:
    meta = getattr(spectrum, "meta", None)
    if not isinstance(meta, Mapping):
        return default
    for key in ("filename", "file", "obsid"):
        value = meta.get(key)
        if isinstance(value, str | os.PathLike | int | np.integer) and str(value) != "":
            return str(os.fspath(value) if isinstance(value, os.PathLike) else value)
    return default


def _obsid_of(spectrum) -> int | None:
    """The spectrum's LAMOST obsid when it has one that fits the int64 column."""
    meta = getattr(spectrum, "meta", None)
    obsid = meta.get("obsid") if isinstance(meta, Mapping) else None
    if isinstance(obsid, bool | np.bool_) or not isinstance(obsid, int | np.integer):
        return None
    return int(obsid) if 0 <= obsid <= np.iinfo(np.int64).max else None


def _read(item: _Item, strict: bool):
    """The item's spectrum (a `~astro_spt.preprocess.pipeline.PlainSpectrum` for a LAMOST
    file), or None and a message when it cannot be read."""
    from ..exceptions import InvalidSpectrumError

    def refuse(message):
        if strict:
            raise InvalidSpectrumError(f"{item.source}: {message}")
        return None, message

    if item.error is not None:
        return refuse(item.error)
    if item.path is None:
        from specutils import Spectrum  # imported already: the caller made the spectrum

        spectrum = item.spectrum
        if not isinstance(spectrum, Spectrum):
            # _expand takes anything with flux and spectral_axis; preprocess takes Spectrum
            return refuse(f"a {type(spectrum).__name__} object, not a specutils Spectrum")
    else:
        try:
            # LAMOST files by the fast reader, as bare arrays: a Spectrum would cost half
            # the reading and importing specutils seconds. Others by specutils once known
            # to be sane (regular, bounded, well-formed FITS): no FIFO or damaged file
            # reaches it.
            from ..io.reading import _read_fields

            spectrum = _read_fields(item.path)
        except Exception as err:  # any failure to read is this row's problem only
            if strict:
                raise AstroSPTError(f"cannot read {item.path}: {err}") from err
            return None, _read_failure(item.path, err)
        if isinstance(spectrum, dict):
            from ..preprocess.pipeline import PlainSpectrum

            return PlainSpectrum(**spectrum), None
        from specutils import Spectrum
    if not isinstance(spectrum, Spectrum) or np.ndim(spectrum.flux) != 1:
        # one row per input: a file's 2-D spectrum would give several
        shape = np.shape(getattr(spectrum, "flux", None))
        return refuse(f"a spectrum of flux shape {shape}; expected one 1-D spectrum")
    return spectrum, None


def _read_failure(path: str, error: Exception) -> str:
    """Why a file could not be read, in one line that does not repeat its path (the row
    names the file)."""
    reason = str(error).strip() or type(error).__name__
    for prefix in (f"{path}: ", f"{os.path.basename(path)}: "):
        reason = reason.removeprefix(prefix)
    # specutils' "format could not be identified" goes on with a table of every format
    return f"cannot read: {reason.splitlines()[0].strip()}"
