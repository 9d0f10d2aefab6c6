"""Read LAMOST low-resolution (LRS) spectra into `specutils.Spectrum` objects.

LAMOST has published its low-resolution spectra in three FITS layouts:

======================  ===========================================================
``meta["layout"]``      layout
======================  ===========================================================
``"image-log-linear"``  DR1: primary image 5×N with rows flux, inverse variance,
                        sub-continuum, andmask, ormask; no wavelength row, the
                        wavelength is ``10**(COEFF0 + COEFF1 * i)``.
``"image"``             DR6, DR7, DR8: primary image 5×N with rows flux, inverse
                        variance, wavelength, andmask, ormask.
``"coadd-table"``       DR10: header-only primary HDU and a
                        ``COADD`` binary table with FLUX, IVAR, WAVELENGTH, ANDMASK,
                        ORMASK and NORMALIZATION.
======================  ===========================================================

`register_lamost_readers` registers `read_lamost_lrs` with specutils under the format
name ``"LAMOST-LRS"``, so that ``Spectrum.read(path)`` identifies these files, gzipped
or not. It is called by ``import astro_spt`` (at once if specutils is imported, or as
soon as it is). Medium-resolution (MRS) files, truncated files and other FITS files are
refused with `~astro_spt.exceptions.LAMOSTFormatError`.

This module never imports specutils at import time.
"""

import contextlib
import io
import os
import re
import warnings
import weakref
from typing import IO, TYPE_CHECKING

import numpy as np
from astropy import constants
from astropy import units as u
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from ..exceptions import LAMOSTFormatError
from . import _fits

if TYPE_CHECKING:
    from specutils import Spectrum

__all__ = [
    "LAMOST_LRS_FORMAT",
    "identify_lamost_lrs",
    "read_lamost_lrs",
    "register_lamost_readers",
]

LAMOST_LRS_FORMAT = "LAMOST-LRS"
"""Format name of the LAMOST low-resolution reader in the specutils registry."""

# Claims LAMOST files that LAMOST-LRS refuses (MRS, truncated) only to say why: without
# it specutils' generic ``tabular-fits`` reader claims an MRS file and fails with
# "Could not identify column containing the wavelength". Priority 7 beats the generic
# readers (tabular-fits 6, wcs1d-fits 5) but loses to any dedicated reader (10).
_UNSUPPORTED_FORMAT = "LAMOST-unsupported"

# The official LAMOST description of the 1D files: "flux density given in relative
# unit". No file carries BUNIT, so the flux is relative F_lambda without a scale.
_FLUX_UNIT = u.dimensionless_unscaled

# LAMOST headers write -9999 for a value the pipeline could not measure.
_MISSING = -9999

_BANDS = "ugriz"

_IMAGE_ROWS = 5


def _error(name, reason):
    return LAMOSTFormatError(f"{name}: {reason}")


def _source_name(source):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, fits.HDUList):
        return source.filename() or "<HDUList>"
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<file object>"


_TRUNCATION_WARNING = "File may have been truncated"


@contextlib.contextmanager
def _open_hdulist(source, name, **kwargs):
    """Open a path, a file object or an HDUList; leave a file object open and rewound.

    Yields the HDUList and astropy's truncation warning about it, or `None`.
    """
    if isinstance(source, fits.HDUList):
        yield source, None
        return
    kwargs.setdefault("memmap", False)
    with contextlib.ExitStack() as stack:
        owned = isinstance(source, (str, os.PathLike))
        if owned:
            # Our own handle: astropy leaves its handle open when fits.open fails.
            try:
                source = stack.enter_context(open(source, "rb"))
            except OSError as exc:
                raise _error(name, f"cannot be opened ({exc})") from None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                hdul = fits.open(source, **kwargs)
        except (OSError, EOFError, ValueError, TypeError) as exc:
            reason = f"cannot be opened as a FITS file; not FITS, or truncated ({exc})"
            raise _error(name, reason) from None
        truncation = None
        for warning in caught:
            if str(warning.message).startswith(_TRUNCATION_WARNING):
                truncation = str(warning.message)
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        try:
            yield hdul, truncation
        finally:
            if owned:
                hdul.close()
            else:
                # Closing the HDUList would close the caller's file object (astropy's
                # registry tries the next identifier on it, then the reader).
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    source.seek(0)


def _number(header, key):
    """A header value as float; NaN when absent or the -9999 sentinel."""
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return np.nan
    value = float(value)
    return np.nan if value == _MISSING else value


def _text(header, key):
    value = header.get(key)
    if value is None or value == _MISSING:
        return None
    return str(value).strip()


def _has_image(header):
    return header.get("NAXIS") == 2 and header.get("NAXIS2") == _IMAGE_ROWS


def _is_mrs(hdul):
    if str(hdul[0].header.get("FILENAME", "")).startswith("med-"):
        return True
    try:
        second = hdul[1]
    except IndexError:
        return False
    return second.name.upper().startswith(("COADD_B", "COADD_R"))


_MRS_REASON = (
    "a LAMOST medium-resolution (MRS) file (COADD_B/COADD_R extensions); "
    "only low-resolution (LRS) spectra can be read"
)
_NO_LAYOUT_REASON = (
    "no 5×N spectrum image in the primary HDU and no COADD table "
    "(not a LAMOST low-resolution spectrum, or a truncated file)"
)


def _image_row_names(header):
    names = re.split(r"[,\s]+", str(header.get("EXTEN0", "")).strip().lower())
    return names if len(names) == _IMAGE_ROWS else None


def _float_array(values):
    # float64, not the file's float32: a 0-d float32 dimensionless Quantity compares
    # unequal to every Python number under numpy 2 (``spec.flux[0] == 0`` is False).
    return np.asarray(values, dtype=np.float64)


def _bit_array(values):
    # The bit masks are stored as float32 in every layout.
    values = np.asarray(values)
    finite = np.isfinite(values)
    # A value beyond int32 is damage: every bit set, so that the pixel is masked.
    fits_int32 = finite & (np.abs(values) < 2**31)
    return np.where(fits_int32, values, np.where(finite, -1, 0)).astype(np.int32)


@contextlib.contextmanager
def _truncation_as_error():
    """Make astropy's warning about a cut file, when it reads past the end, an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=_TRUNCATION_WARNING)
        yield


@_truncation_as_error()
def _load(hdul, name, truncation=None):
    """Check the layout and read the arrays; raise LAMOSTFormatError saying why not.

    ``truncation`` is astropy's warning on opening a cut file, if any.

    Returns a dict with ``layout``, ``flux``, ``ivar``, ``wavelength``, ``andmask``,
    ``ormask`` and, depending on the layout, ``subcontinuum`` or ``normalization``.
    """
    header = hdul[0].header
    telescope = _text(header, "TELESCOP")
    if telescope != "LAMOST":
        raise _error(name, f"not a LAMOST file (TELESCOP = {telescope!r})")
    if truncation is not None:
        raise _error(name, f"the file is truncated ({truncation})")
    try:
        if _has_image(header):
            arrays = _load_image(header, hdul[0].data, name)
        elif _is_mrs(hdul):
            raise _error(name, _MRS_REASON)
        elif _has_coadd(hdul):
            arrays = _load_coadd(hdul["COADD"], name)
        else:
            raise _error(name, _NO_LAYOUT_REASON)
    except LAMOSTFormatError:
        raise
    except (
        OSError,
        EOFError,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        UserWarning,
        VerifyError,
    ) as exc:
        # A cut file: astropy warns (an error here), gzip finds no end of stream or numpy
        # finds the buffer too small.
        reason = f"the data cannot be read; the file is truncated or corrupt ({exc})"
        raise _error(name, reason) from exc

    return _checked(arrays, name)


def _checked(arrays, name):
    n_pixels = arrays["flux"].size
    for key in ("ivar", "wavelength", "andmask", "ormask"):
        if arrays[key].shape != (n_pixels,):
            raise _error(name, f"the {key} array does not match the flux array in length")
    wavelength = arrays["wavelength"]
    if n_pixels < 2 or not (np.all(np.isfinite(wavelength)) and np.all(np.diff(wavelength) > 0)):
        raise _error(name, "the wavelengths are not finite and strictly increasing")
    return arrays


def _has_coadd(hdul):
    try:
        hdul.index_of("COADD")
    except KeyError:
        return False
    return True


def _load_image(header, data, name):
    if data is None or data.shape[0] != _IMAGE_ROWS:
        raise _error(name, "the primary image is not 5×N")
    rows = _image_row_names(header)
    if rows is not None:
        has_wavelength = rows[2] == "wavelength"
    else:
        # No EXTEN0 row names: take row 2 as wavelengths when it looks like them.
        has_wavelength = bool(
            np.all(np.diff(data[2]) > 0) and 3000 < data[2, 0] < data[2, -1] < 11000
        )
    arrays = {
        "flux": _float_array(data[0]),
        "ivar": _float_array(data[1]),
        "andmask": _bit_array(data[3]),
        "ormask": _bit_array(data[4]),
    }
    if has_wavelength:
        arrays["layout"] = "image"
        arrays["wavelength"] = np.asarray(data[2], dtype=np.float64)
    else:
        coeff0, coeff1 = _number(header, "COEFF0"), _number(header, "COEFF1")
        if not (np.isfinite(coeff0) and np.isfinite(coeff1)):
            raise _error(name, "no wavelength row and no COEFF0/COEFF1 keywords")
        arrays["layout"] = "image-log-linear"
        with np.errstate(over="ignore", invalid="ignore"):
            # A damaged COEFF overflows: _checked refuses the non-finite wavelengths.
            arrays["wavelength"] = 10 ** (coeff0 + coeff1 * np.arange(data.shape[1]))
        arrays["subcontinuum"] = _float_array(data[2])
    return arrays


_COADD_COLUMNS = ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK")
_COADD_READ = (*_COADD_COLUMNS, "NORMALIZATION")


def _load_coadd(hdu, name):
    names = hdu.columns.names if isinstance(hdu, fits.BinTableHDU) else []
    columns = [c.upper() for c in names if isinstance(c, str)]  # None for a damaged TTYPE
    _check_coadd_columns(columns, name)
    if hdu.data is None or len(hdu.data) != 1:
        raise _error(name, "the COADD table does not have exactly one row")
    row = hdu.data[0]
    return _coadd_arrays({c: row[c] for c in columns if c in _COADD_READ})


def _check_coadd_columns(columns, name):
    missing = [c for c in _COADD_COLUMNS if c not in columns]
    if missing:
        raise _error(name, f"the COADD table lacks the column(s) {', '.join(missing)}")


def _coadd_arrays(row):
    arrays = {
        "layout": "coadd-table",
        "flux": _float_array(row["FLUX"]),
        "ivar": _float_array(row["IVAR"]),
        "wavelength": np.asarray(row["WAVELENGTH"], dtype=np.float64),
        "andmask": _bit_array(row["ANDMASK"]),
        "ormask": _bit_array(row["ORMASK"]),
    }
    if "NORMALIZATION" in row:
        arrays["normalization"] = _float_array(row["NORMALIZATION"])
    return arrays


# --- the fast path: the file's bytes, parsed by _fits, arrays by numpy.frombuffer --------

# Bytes per element of a binary-table column (FITS standard, Table 18); "X" is bits.
_TFORM_BYTES = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16}
_TFORM = re.compile(r"\s*(\d*)([LXBIJKAEDCMPQ])")
_FLOAT_TYPES = {"E": ">f4", "D": ">f8"}


class _UseAstropy(Exception):
    """A valid encoding the fast path does not decode (scaled data, unusual columns)."""


def _read_source(source, name):
    """The bytes of a path or file object, within `_fits.MAX_FILE_BYTES`, gunzipped."""
    if not isinstance(source, (str, os.PathLike)):
        # The registry's identifiers share one file object and leave it anywhere.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            source.seek(0)
    try:
        return _fits.read_bytes(source)
    except _fits.FITSStructureError as exc:
        raise _error(name, str(exc)) from None
    except OSError as exc:
        raise _error(name, f"cannot be opened ({exc})") from None
    finally:
        if not isinstance(source, (str, os.PathLike)):
            # The registry hands the same file object to the next identifier or reader.
            with contextlib.suppress(AttributeError, OSError, ValueError):
                source.seek(0)


def _parse(buf, name):
    try:
        return _fits.parse_hdus(buf)
    except _fits.FITSStructureError as exc:
        raise _error(
            name, f"cannot be opened as a FITS file; not FITS, truncated or damaged ({exc})"
        ) from None


def _lamost_header(hdus, name):
    header = hdus[0].header
    telescope = _text(header, "TELESCOP")
    if telescope != "LAMOST":
        raise _error(name, f"not a LAMOST file (TELESCOP = {telescope!r})")
    return header


def _load_hdus(buf, hdus, name):
    """`_load` on parsed bytes: the same checks and arrays, without astropy objects."""
    header = _lamost_header(hdus, name)
    if _has_image(header):
        arrays = _load_image(header, _image_data(buf, hdus[0]), name)
    elif str(header.get("FILENAME", "")).startswith("med-") or (
        len(hdus) > 1 and hdus[1].name.startswith(("COADD_B", "COADD_R"))
    ):
        raise _error(name, _MRS_REASON)
    else:
        coadd = next((hdu for hdu in hdus[1:] if hdu.name == "COADD"), None)
        if coadd is None:
            raise _error(name, _NO_LAYOUT_REASON)
        arrays = _coadd_arrays(_coadd_row(buf, coadd, name))
    return _checked(arrays, name)


def _image_data(buf, hdu):
    header = hdu.header
    dtype = _FLOAT_TYPES.get({-32: "E", -64: "D"}.get(header.get("BITPIX")))
    if dtype is None or header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0:
        raise _UseAstropy
    shape = (header.get("NAXIS2"), header.get("NAXIS1"))
    return np.frombuffer(
        buf, dtype=dtype, count=shape[0] * shape[1], offset=hdu.data_offset
    ).reshape(shape)


def _coadd_row(buf, hdu, name):
    header = hdu.header
    if header.get("XTENSION") != "BINTABLE":
        raise _error(name, f"the COADD table lacks the column(s) {', '.join(_COADD_COLUMNS)}")
    n_fields = header.get("TFIELDS")
    if not isinstance(n_fields, int) or not 0 <= n_fields <= 999:
        raise _UseAstropy
    columns, start = {}, 0
    for i in range(1, n_fields + 1):
        ttype, tform = header.get(f"TTYPE{i}"), header.get(f"TFORM{i}")
        match = _TFORM.match(tform) if isinstance(tform, str) else None
        if match is None or match[2] in "XPQ" or not isinstance(ttype, str):
            raise _UseAstropy
        repeat = int(match[1] or 1)
        key = ttype.upper()
        if key in columns:  # astropy refuses ambiguous names; let it say so
            raise _UseAstropy
        columns[key] = (i, match[2], repeat, start)
        start += repeat * _TFORM_BYTES[match[2]]
    _check_coadd_columns(list(columns), name)
    if header.get("NAXIS1") != start or header.get("NAXIS") != 2:
        raise _UseAstropy
    if header.get("NAXIS2") != 1:
        raise _error(name, "the COADD table does not have exactly one row")
    row = {}
    for key in _COADD_READ:
        if key not in columns:
            continue
        i, code, repeat, offset = columns[key]
        if (
            code not in _FLOAT_TYPES
            or repeat < 2
            or any(f"{k}{i}" in header for k in ("TSCAL", "TZERO", "TDIM"))
        ):
            raise _UseAstropy
        row[key] = np.frombuffer(
            buf, dtype=_FLOAT_TYPES[code], count=repeat, offset=hdu.data_offset + offset
        )
    return row


def _load_bytes(buf, name, hdus=None):
    """Arrays, header values and the `~astropy.io.fits.Header` of a file's bytes."""
    if hdus is None:
        hdus = _parse(buf, name)
    try:
        arrays = _load_hdus(buf, hdus, name)
    except LAMOSTFormatError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        # Header values of the wrong type or size, as _load catches them from astropy.
        reason = f"the data cannot be read; the file is truncated or corrupt ({exc!r})"
        raise _error(name, reason) from None
    except _UseAstropy:
        with warnings.catch_warnings():
            # Only files the fast path cannot decode come here, often damaged ones:
            # astropy's warnings about them add nothing to the error or the arrays.
            warnings.simplefilter("ignore")
            with _open_hdulist(io.BytesIO(buf), name) as (hdul, truncation):
                arrays = _load(hdul, name, truncation)
    header = hdus[0].header
    return arrays, header, _LazyHeader(text=header.text.decode("ascii"))


class _LazyHeader(fits.Header):
    """A `~astropy.io.fits.Header` that parses its cards when first used.

    Building the primary header costs 0.7 ms, a quarter of reading a file, and
    `astro_spt.estimate` never looks at it. Any use (``header["X"]``, ``len``, iteration,
    copying, pickling) parses it once, and it is then an ordinary Header.
    """

    def __init__(self, cards=(), copy=False, *, text=None):
        if text is None:
            super().__init__(cards, copy)
        else:
            self.__dict__["_text"] = text

    def __getattr__(self, name):
        # Only reached for the attributes fits.Header.__init__ would have set.
        text = self.__dict__.pop("_text", None)
        if text is None:
            raise AttributeError(name)
        with warnings.catch_warnings():
            # astropy's warnings about a malformed card we never use; they come again
            # when that card is looked at.
            warnings.simplefilter("ignore")
            self.__dict__.update(fits.Header.fromstring(text).__dict__)
        return getattr(self, name)

    def __reduce__(self):
        return fits.Header.fromstring, (self.tostring(),)


def _meta(header, arrays, filename, fits_header=None):
    z = _number(header, "Z")
    data_release = _text(header, "DATA_V")
    if data_release is not None:
        data_release = data_release.removeprefix("LAMOST").strip()
    meta = {
        "obsid": int(header["OBSID"]) if isinstance(header.get("OBSID"), int) else None,
        "designation": _text(header, "DESIG"),
        "ra": _number(header, "RA") * u.deg,
        "dec": _number(header, "DEC") * u.deg,
        "snr": {
            band: _number(header, f"SNR{band.upper()}")
            if f"SNR{band.upper()}" in header
            else _number(header, f"SN_{band.upper()}")
            for band in _BANDS
        },
        "redshift": z,
        "redshift_err": _number(header, "Z_ERR"),
        # LAMOST's catalogues define rv = c·z (checked against the DR1 LASP rv column).
        "radial_velocity": (z * constants.c).to(u.km / u.s),
        "class": _text(header, "CLASS"),
        "subclass": _text(header, "SUBCLASS"),
        "data_release": data_release,
        # Every LAMOST LRS release writes VACUUM = T; a missing keyword means the same.
        "vacuum": bool(header.get("VACUUM", True)),
        "heliocentric": bool(header.get("HELIO", False)),
        "flux_calibration": "relative",
        "layout": arrays["layout"],
        "filename": filename,
        "andmask": arrays["andmask"],
        "ormask": arrays["ormask"],
        "header": header if fits_header is None else fits_header,
    }
    for key in ("subcontinuum", "normalization"):
        if key in arrays:
            meta[key] = arrays[key]
    return meta


def _plain_fields(arrays, header):
    """What estimation needs of a file, without a `~specutils.Spectrum`: the arrays and
    values `_spectrum` and `_meta` give it, as the fields of a
    `~astro_spt.preprocess.pipeline.PlainSpectrum` (``meta`` holds the ``obsid``)."""
    return {
        "wavelength": arrays["wavelength"],
        "flux": arrays["flux"],
        "ivar": arrays["ivar"],
        "mask": _bad_pixels(arrays),
        "redshift": _number(header, "Z"),
        "air": not bool(header.get("VACUUM", True)),
        "meta": {"obsid": int(header["OBSID"]) if isinstance(header.get("OBSID"), int) else None},
    }


def _bad_pixels(arrays):
    flux, ivar = arrays["flux"], arrays["ivar"]
    # ORMASK (bad in at least one exposure) is left out as in SDSS: the coadd of the
    # other exposures can be good. In every file we have, LAMOST sets ivar = 0 wherever
    # ANDMASK or ORMASK is non-zero, so the choice only matters for other data.
    # Exact-zero flux with ivar > 0 is the pipeline's fill value: at the red end of 53 %
    # of the DR10 and 71 % of the DR8 files we have (median 7, up to 33 pixels), and as
    # single-pixel dropouts inside 74 spectra (e.g. 944, 964, 0, 993).
    return (
        ~np.isfinite(flux)
        | ~np.isfinite(ivar)
        | (ivar <= 0)
        | (arrays["andmask"] != 0)
        | (flux == 0)
    )


# The registry runs every identifier on the same file object in turn: remember the last
# verdict so that the two LAMOST identifiers open and check each file once.
_last_verdict = (lambda: None, None)


def _verdict(args):
    """``"lrs"``, ``"lamost"`` (a LAMOST file that cannot be read) or `None` (not LAMOST).

    ``args`` are the identifier arguments after ``origin``: ``path, fileobj, ...`` from
    the registry, or one path, file object or HDUList.
    """
    global _last_verdict
    key = args[1] if len(args) > 1 and args[1] is not None else args[0]
    remembered, verdict = _last_verdict
    if remembered() is key:
        return verdict
    # Read a path ourselves: an identifier before ours may have closed the registry's file.
    source = args[0] if isinstance(args[0], (str, os.PathLike)) else key
    name = _source_name(source)
    verdict = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(source, fits.HDUList):
                with _open_hdulist(source, name) as (hdul, truncation):
                    if _text(hdul[0].header, "TELESCOP") == "LAMOST":
                        verdict = "lamost"
                        _load(hdul, name, truncation)
            else:
                buf = _read_source(source, name)
                if _primary_is_lamost(buf):
                    verdict = "lamost"
                    _load_bytes(buf, name)
            verdict = "lrs" if verdict == "lamost" else None
    except Exception:  # an identifier answers, it never raises
        pass
    if not isinstance(key, (str, os.PathLike, fits.HDUList)):
        with contextlib.suppress(TypeError):
            _last_verdict = (weakref.ref(key), verdict)
    return verdict


def _primary_is_lamost(buf):
    """Whether the first header (even of a cut or damaged file) says TELESCOP = 'LAMOST'."""
    if not buf.startswith(b"SIMPLE  ="):
        return False
    try:
        header, _ = _fits.read_header(buf, 0)
    except _fits.FITSStructureError:
        return False
    return _text(header, "TELESCOP") == "LAMOST"


def identify_lamost_lrs(origin: str, *args, **kwargs) -> bool:
    """Tell whether a file is a LAMOST low-resolution spectrum that can be read.

    The identifier of the ``"LAMOST-LRS"`` format in the astropy/specutils I/O registry.
    It opens the FITS file (gzipped or not), checks ``TELESCOP = 'LAMOST'`` and one of
    the three low-resolution layouts, and reads the arrays, so that a truncated file
    is not claimed. Medium-resolution (MRS) files are not claimed.

    Parameters
    ----------
    origin : str
        ``"read"`` or ``"write"`` (the registry's argument); only ``"read"`` can match.
    *args
        As the registry passes them: ``path, fileobj, ...``; or just a path, a file
        object or an `~astropy.io.fits.HDUList`.
    **kwargs
        Ignored.

    Returns
    -------
    bool
        `True` when `read_lamost_lrs` can read the file.

    Examples
    --------
    >>> from astro_spt.io import example_files
    >>> from astro_spt.io.lamost import identify_lamost_lrs
    >>> identify_lamost_lrs("read", example_files()[0])
    True
    >>> identify_lamost_lrs("read", "not-a-file.fits")
    False
    """
    return origin == "read" and bool(args) and _verdict(args) == "lrs"


def read_lamost_lrs(file_obj: str | os.PathLike | IO[bytes] | fits.HDUList, **kwargs) -> "Spectrum":
    """Read a LAMOST low-resolution spectrum file into a `~specutils.Spectrum`.

    Reads every LAMOST LRS layout (the DR1 image without a wavelength row, the DR6–DR8
    image with one, the DR10 ``COADD`` table), gzipped or not. Registered with specutils as the
    ``"LAMOST-LRS"`` format, so ``Spectrum.read(path)`` calls it.

    Parameters
    ----------
    file_obj : str, os.PathLike, file-like or `~astropy.io.fits.HDUList`
        The file.
    **kwargs
        Passed to `astropy.io.fits.open` (``memmap=False`` by default).

    Returns
    -------
    `~specutils.Spectrum`
        ``flux``: relative flux density per unit wavelength, dimensionless (LAMOST
        calibrates the flux only relatively and the files carry no ``BUNIT``);
        ``spectral_axis``: vacuum, heliocentric wavelengths in Å; ``uncertainty``:
        `~astropy.nddata.InverseVariance` from the file's inverse variance; ``mask``:
        `True` for bad pixels: ivar ≤ 0, non-finite flux or ivar, ANDMASK ≠ 0, or
        flux exactly 0 (the pipeline's fill value). ``meta`` holds ``obsid``,
        ``designation``, ``ra``, ``dec`` (Quantity, deg), ``snr`` (dict over
        ``"u"``…``"z"``), ``redshift``, ``redshift_err``, ``radial_velocity``
        (c·z, Quantity km/s), ``class``, ``subclass``, ``data_release`` (e.g.
        ``"DR8"``; `None` for DR1 files, which do not say), ``vacuum``,
        ``heliocentric``, ``flux_calibration`` (``"relative"``), ``layout``,
        ``filename``, ``andmask``, ``ormask`` (int32 arrays), ``header`` (the
        primary header) and, by layout, ``subcontinuum`` or ``normalization``.
        Values the pipeline left unmeasured (-9999) or absent are NaN, or `None`
        for ``obsid``, ``designation``, ``class``, ``subclass``, ``data_release``.

    Raises
    ------
    astro_spt.exceptions.LAMOSTFormatError
        If the file is not a LAMOST file, is a medium-resolution (MRS) file, has an
        unknown layout, or is truncated or corrupt. The message names the file.

    Examples
    --------
    ``import astro_spt`` (here through `astro_spt.io`) registers the reader, so
    ``Spectrum.read`` recognises a LAMOST file by itself:

    >>> from specutils import Spectrum
    >>> from astro_spt.io import example_files, read_lamost_lrs
    >>> path = example_files()[0]
    >>> path.name
    'spec-55862-B6212_sp06-023.fits.gz'
    >>> spec = Spectrum.read(path)
    >>> spec.meta["layout"], spec.meta["designation"]
    ('image-log-linear', 'LAMOST J063733.55+271135.0')
    >>> print(spec.meta["obsid"])  # DR1 headers carry no OBSID (the catalogue's is 906023)
    None
    >>> spec.meta["snr"]
    {'u': 2.58, 'g': 17.07, 'r': 28.96, 'i': 41.17, 'z': 32.49}
    >>> spec.flux.shape, spec.spectral_axis.unit, spec.uncertainty.uncertainty_type
    ((3904,), Unit("Angstrom"), 'ivar')
    >>> int(spec.mask.sum())  # bad pixels (ivar = 0, ANDMASK set or flux = 0)
    325

    Naming the format skips the identification; the reader can also be called directly:

    >>> spec = Spectrum.read(path, format="LAMOST-LRS")
    >>> spec = read_lamost_lrs(path)
    >>> spec.meta["class"], spec.meta["subclass"], spec.meta["data_release"]
    ('STAR', 'G5', None)
    """
    name = _source_name(file_obj)
    if isinstance(file_obj, fits.HDUList) or kwargs:
        with _open_hdulist(file_obj, name, **kwargs) as (hdul, truncation):
            arrays = _load(hdul, name, truncation)
            header = hdul[0].header.copy()
        return _spectrum(arrays, header, name)
    arrays, values, header = _load_bytes(_read_source(file_obj, name), name)
    return _spectrum(arrays, values, name, header)


def _spectrum(arrays, values, name, fits_header=None):
    # Imported here: astropy.nddata pulls in astropy.wcs and coordinates (0.3 s), and
    # ``import astro_spt`` must stay light.
    from astropy.nddata import InverseVariance
    from specutils import Spectrum

    return Spectrum(
        flux=arrays["flux"] * _FLUX_UNIT,
        spectral_axis=arrays["wavelength"] * u.AA,
        uncertainty=InverseVariance(arrays["ivar"]),
        mask=_bad_pixels(arrays),
        meta=_meta(values, arrays, name, fits_header),
    )


def _identify_unsupported_lamost(origin, *args, **kwargs):
    return origin == "read" and bool(args) and _verdict(args) == "lamost"


def _refuse_unsupported_lamost(file_obj, **kwargs):
    read_lamost_lrs(file_obj, **kwargs)
    name = _source_name(file_obj)
    raise _error(name, "not a readable LAMOST low-resolution spectrum")  # pragma: no cover


def register_lamost_readers() -> None:
    """Register the LAMOST readers with specutils' I/O registry.

    Registers `read_lamost_lrs` for `~specutils.Spectrum` and
    `~specutils.SpectrumList` under the format name ``"LAMOST-LRS"``, with
    `identify_lamost_lrs` as identifier, and a refusal for other LAMOST files (format
    ``"LAMOST-unsupported"``) that raises `~astro_spt.exceptions.LAMOSTFormatError`
    saying why, instead of letting specutils' generic FITS readers fail obscurely.
    ``import astro_spt`` calls this when specutils is imported; calling it again does
    nothing.

    Examples
    --------
    >>> from astropy.io import registry
    >>> from specutils import Spectrum
    >>> from astro_spt.io.lamost import register_lamost_readers
    >>> register_lamost_readers()
    >>> "LAMOST-LRS" in registry.get_formats(Spectrum)["Format"]
    True
    """
    from astropy.io import registry
    from specutils import Spectrum
    from specutils.io.registers import data_loader

    try:
        registry.get_reader(LAMOST_LRS_FORMAT, Spectrum)
    except registry.IORegistryError:
        pass
    else:
        return
    data_loader(
        LAMOST_LRS_FORMAT,
        identifier=identify_lamost_lrs,
        dtype=Spectrum,
        extensions=["fits", "fits.gz"],
        priority=10,
    )(read_lamost_lrs)
    data_loader(
        _UNSUPPORTED_FORMAT,
        identifier=_identify_unsupported_lamost,
        dtype=Spectrum,
        extensions=["fits", "fits.gz"],
        priority=7,
    )(_refuse_unsupported_lamost)
