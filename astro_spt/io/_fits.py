"""A minimal, bounded FITS reader: the bytes of a file and the layout of its HDUs.

`astropy.io.fits` builds header, column and HDU objects that the LAMOST reader does not
need: reading a DR10 file through it costs 10–20 ms of CPU, of which the arrays are a
few per cent. This module reads a file once, inflates it if gzipped, and locates each
HDU's header cards and data, so that the arrays can be taken with `numpy.frombuffer`.

It also enforces the limits that protect a batch from one hostile file: only regular
files are opened (a FIFO or a device named ``*.fits`` would block or never end), a file
may hold at most `MAX_FILE_BYTES` once inflated (a 1 MB gzip bomb is stopped after
inflating that much), and every HDU's declared data must lie inside the file (a flipped
bit in ``NAXIS2`` makes a truncated file, not a request for gigabytes).

Nothing here imports astropy.
"""

import os
import re
import stat
import zlib

__all__ = ["HDU", "MAX_FILE_BYTES", "FITSStructureError", "parse_hdus", "read_bytes"]

MAX_FILE_BYTES = 16 * 2**20
"""Most bytes a spectrum file may hold, after gunzip (a LAMOST LRS file has < 1 MB).

A module constant: assign ``astro_spt.io._fits.MAX_FILE_BYTES`` to change it."""

_BLOCK = 2880
_CARD = 80
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
# Far beyond any spectrum file; bounds the work on a file of empty headers.
_MAX_HDUS = 1000


class FITSStructureError(ValueError):
    """The bytes are not a well-formed FITS file (the callers add the file's name)."""


def _limit(max_bytes):
    return MAX_FILE_BYTES if max_bytes is None else max_bytes


def read_bytes(source, max_bytes: int | None = None) -> bytes:
    """The contents of a path or binary file object, gunzipped, at most ``max_bytes``.

    Raises `FITSStructureError` for a path that is not a regular file, a file (or its
    inflated contents) over the limit, and a damaged or cut gzip stream; `OSError` when
    the path cannot be opened.
    """
    limit = _limit(max_bytes)
    if isinstance(source, (str, os.PathLike)):
        # O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer.
        fd = os.open(source, _OPEN_FLAGS)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FITSStructureError("not a regular file (a FIFO, device or directory)")
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as file:
            raw = file.read(limit + 1)
    else:
        raw = source.read(limit + 1)
        if not isinstance(raw, bytes):
            raise FITSStructureError("the file object is not opened in binary mode")
    if len(raw) > limit:
        raise FITSStructureError(f"larger than {limit} bytes (MAX_FILE_BYTES)")
    if raw[:2] == _GZIP_MAGIC:
        return _gunzip(raw, limit)
    return raw


def _gunzip(raw: bytes, limit: int) -> bytes:
    """Inflate every gzip member of ``raw``, stopping as soon as ``limit`` is passed."""
    out = bytearray()
    rest = raw
    while rest[:2] == _GZIP_MAGIC:
        inflater = zlib.decompressobj(wbits=31)
        pending = rest
        try:
            while pending and not inflater.eof:
                # max_length bounds the memory of a bomb: a 1 MB member that inflates to
                # 1 GB stops after limit + 1 bytes.
                out += inflater.decompress(pending, min(_CHUNK, limit + 1 - len(out)))
                if len(out) > limit:
                    raise FITSStructureError(
                        f"inflates to more than {limit} bytes (MAX_FILE_BYTES)"
                    )
                pending = inflater.unconsumed_tail
        except zlib.error as exc:
            raise FITSStructureError(f"the gzip stream is corrupt ({exc})") from None
        if not inflater.eof:
            raise FITSStructureError("the gzip stream is cut short (a truncated file)")
        rest = inflater.unused_data
    # Like gzip itself, ignore zero padding after the last member; anything else is damage.
    if rest.strip(b"\0"):
        raise FITSStructureError("unexpected bytes after the gzip stream")
    return bytes(out)


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def card_value(text: str):
    """The value of a ``KEY = value / comment`` card's value field, as astropy reads it.

    `bool` for ``T``/``F``, `int`, `float`, `str` (without the quotes or trailing
    blanks), or `None` for an empty or unparsable value.
    """
    text = text.lstrip()
    if text.startswith("'"):
        end = 1
        while True:
            end = text.find("'", end)
            if end < 0:
                return None
            if text[end + 1 : end + 2] == "'":
                end += 2
                continue
            return text[1:end].replace("''", "'").rstrip()
    value = text.split("/", 1)[0].strip()
    if value == "T":
        return True
    if value == "F":
        return False
    if _INTEGER.fullmatch(value):
        return int(value)
    if _NUMBER.fullmatch(value):
        return float(value.replace("D", "E").replace("d", "e"))
    return None


class Header:
    """The value cards of one HDU header; values are parsed when first asked for."""

    __slots__ = ("_parsed", "_raw", "text")

    def __init__(self, raw: dict, text: bytes):
        self._raw = raw
        self._parsed = {}
        self.text = text
        """The header's bytes, cards and END, without the block padding."""

    def __contains__(self, key):
        return key in self._raw

    def get(self, key, default=None):
        if key in self._parsed:
            return self._parsed[key]
        raw = self._raw.get(key)
        if raw is None:
            return default
        value = self._parsed[key] = card_value(raw)
        return value

    def __getitem__(self, key):
        if key not in self._raw:
            raise KeyError(key)
        return self.get(key)


class HDU:
    """One HDU of a parsed file: its `Header` and where its data lie in the buffer."""

    __slots__ = ("data_offset", "data_size", "header")

    def __init__(self, header: Header, data_offset: int, data_size: int):
        self.header = header
        self.data_offset = data_offset
        self.data_size = data_size

    @property
    def name(self) -> str:
        """``EXTNAME`` in upper case without blanks, as `astropy.io.fits` names HDUs."""
        value = self.header.get("EXTNAME")
        return value.strip().upper() if isinstance(value, str) else ""


def read_header(buf: bytes, offset: int) -> tuple[Header, int]:
    """The header starting at ``offset`` and the offset of its data."""
    end = offset
    while True:
        end = buf.find(b"END     ", end)
        if end < 0 or end + _CARD > len(buf):
            raise FITSStructureError("a header has no END card (a truncated file)")
        if (end - offset) % _CARD == 0:
            break
        end += 1
    try:
        text = buf[offset:end].decode("ascii")
    except UnicodeDecodeError:
        raise FITSStructureError("a header card is not ASCII (a damaged header)") from None
    # Backwards, so that the first of repeated keywords wins, as in astropy's Header.get.
    raw = {
        text[i : i + 8].rstrip(): text[i + 10 : i + _CARD]
        for i in range(len(text) - _CARD, -1, -_CARD)
        if text[i + 8 : i + 10] == "= "
    }
    position = end + _CARD
    header = Header(raw, buf[offset:position])
    return header, offset + -(-(position - offset) // _BLOCK) * _BLOCK


def _data_size(header: Header, primary: bool) -> int:
    bitpix = header.get("BITPIX")
    naxis = header.get("NAXIS")
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise FITSStructureError(f"BITPIX = {bitpix!r} is not a FITS value")
    if not isinstance(naxis, int) or isinstance(naxis, bool) or not 0 <= naxis <= 999:
        raise FITSStructureError(f"NAXIS = {naxis!r} is not a FITS value")
    if naxis == 0:
        return 0
    size = 1
    for axis in range(1, naxis + 1):
        length = header.get(f"NAXIS{axis}")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise FITSStructureError(f"NAXIS{axis} = {length!r} is not a FITS value")
        size *= length
    if primary:
        return abs(bitpix) // 8 * size
    pcount, gcount = header.get("PCOUNT", 0), header.get("GCOUNT", 1)
    if not (isinstance(pcount, int) and isinstance(gcount, int) and pcount >= 0 and gcount >= 0):
        raise FITSStructureError("PCOUNT or GCOUNT is not a FITS value")
    return abs(bitpix) // 8 * gcount * (pcount + size)


def parse_hdus(buf: bytes) -> list[HDU]:
    """The HDUs of a FITS file's bytes: each header and the place of its data.

    Checks the structure only: a primary header starting ``SIMPLE  =``, valid
    ``BITPIX``/``NAXISn`` in every header, and every HDU's data, padded to whole
    2880-byte blocks, inside the buffer. Bytes after
    the last HDU that do not start an extension are ignored, as astropy ignores them.

    Raises `FITSStructureError` saying why not.
    """
    if not buf.startswith(b"SIMPLE  ="):
        raise FITSStructureError("not a FITS file (no SIMPLE keyword at the start)")
    hdus = []
    offset = 0
    while offset < len(buf) and len(hdus) < _MAX_HDUS:
        if hdus and buf[offset : offset + 9] != b"XTENSION=":
            break
        header, data_offset = read_header(buf, offset)
        size = _data_size(header, primary=not hdus)
        # The padding too: astropy calls a file without it truncated.
        if data_offset + -(-size // _BLOCK) * _BLOCK > len(buf):
            raise FITSStructureError(
                f"HDU {len(hdus)} declares {size} bytes of data but the file ends before "
                "(a truncated file, or a damaged header)"
            )
        hdus.append(HDU(header, data_offset, size))
        offset = data_offset + -(-size // _BLOCK) * _BLOCK
    return hdus
