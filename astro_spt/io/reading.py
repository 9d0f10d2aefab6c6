"""Read one spectrum file of any survey, quickly and within bounded resources.

`read_spectrum` is what `astro_spt.estimate` calls for each input path: a LAMOST
low-resolution file goes through the fast reader of `astro_spt.io.lamost`; any other file
goes to specutils' reader chain (``Spectrum.read(path)``), unchanged, but only once it is
known to be a regular file within `~astro_spt.io._fits.MAX_FILE_BYTES` and, if it is
named or looks like FITS, a well-formed FITS file. A damaged file otherwise costs
specutils' thirty-odd readers minutes and gigabytes, and a FIFO never returns.
"""

import os

from . import _fits
from .lamost import (
    _error,
    _load_bytes,
    _plain_fields,
    _primary_is_lamost,
    _read_source,
    _spectrum,
    _text,
)

__all__ = ["read_spectrum"]

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


def read_spectrum(path: str | os.PathLike):
    """Read a spectrum file: LAMOST low-resolution files directly, others via specutils.

    Parameters
    ----------
    path : str or os.PathLike
        The file, gzipped or not.

    Returns
    -------
    `~specutils.Spectrum`
        For a LAMOST low-resolution file the same spectrum as ``Spectrum.read(path)``
        (see `~astro_spt.io.read_lamost_lrs`); otherwise what ``Spectrum.read(path)``
        returns.

    Raises
    ------
    astro_spt.exceptions.LAMOSTFormatError
        At once, without trying specutils' readers, for a path that is not a regular
        file, a file that holds more than ``MAX_FILE_BYTES`` once gunzipped, a damaged
        gzip stream, a LAMOST file that cannot be read (truncated, damaged,
        medium-resolution), and a FITS file (or a file named ``*.fits``) whose
        structure is damaged. The message names the file.
    Exception
        Whatever specutils raises for another file it cannot read.

    Examples
    --------
    >>> from astro_spt.io import example_files
    >>> from astro_spt.io.reading import read_spectrum
    >>> spec = read_spectrum(example_files()[0])
    >>> spec.meta["layout"], spec.flux.shape
    ('image-log-linear', (3904,))
    """
    name = os.fspath(path)
    loaded = _load_lamost(path, name)
    if loaded is not None:
        arrays, values, header = loaded
        return _spectrum(arrays, values, name, header)
    from specutils import Spectrum

    return Spectrum.read(path)


def _read_fields(path: str | os.PathLike):
    """`read_spectrum` for estimation: a LAMOST file as the dict of `_plain_fields`
    (without building a `~specutils.Spectrum` or importing specutils), any other file as
    ``Spectrum.read(path)``; the same refusals."""
    loaded = _load_lamost(path, os.fspath(path))
    if loaded is not None:
        return _plain_fields(*loaded[:2])
    from specutils import Spectrum

    return Spectrum.read(path)


def _load_lamost(path, name):
    """`_load_bytes` of a LAMOST file; `None` for a sane file of another kind."""
    buf = _read_source(path, name)
    try:
        hdus = _fits.parse_hdus(buf)
    except _fits.FITSStructureError as exc:
        if _primary_is_lamost(buf):
            _load_bytes(buf, name)  # raises, saying why
        if buf.startswith(b"SIMPLE  =") or name.lower().endswith(_FITS_SUFFIXES):
            reason = f"not a LAMOST file, and not a readable FITS file ({exc})"
            raise _error(name, reason) from None
        return None
    if _text(hdus[0].header, "TELESCOP") == "LAMOST":
        return _load_bytes(buf, name, hdus)
    return None
