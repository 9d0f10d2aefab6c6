"""Property tests of the LAMOST reader on damaged real files (Hypothesis).

Real LAMOST files of every layout are cut, have bits flipped (anywhere, or in the
header) or header values rewritten. Whatever the damage, reading either gives the
arrays that astropy.io.fits reads from the same bytes, or raises the package's
`LAMOSTFormatError`, within a bounded time.
"""

import gzip
import io
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import astro_spt  # noqa: F401 - registers the readers
from astro_spt.exceptions import LAMOSTFormatError
from astro_spt.io import read_lamost_lrs

FIXTURES = Path(__file__).parent / "data" / "lamost"
# One file per layout: DR1 image without wavelength row, DR7 image, DR6 image (gzipped).
ORIGINALS = {
    path.name: gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    for path in (
        FIXTURES / "spec-55862-B6212_sp06-023.fits",
        FIXTURES / "spec-58397-EG014118N254444M01_sp03-031.fits",
        FIXTURES / "spec-57287-KP193637N444141V03_sp10-161.fits.gz",
    )
}
_SECONDS = 1.0  # per read; a whole file takes ~3 ms
read_lamost_lrs(FIXTURES / "spec-55862-B6212_sp06-023.fits")  # imports, outside the timing


def _coadd_file():
    """A DR10-layout file (COADD table) built from the DR7 fixture's arrays."""
    with fits.open(io.BytesIO(ORIGINALS["spec-58397-EG014118N254444M01_sp03-031.fits"])) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data.copy()
    primary = fits.PrimaryHDU(header=header)
    del primary.header["EXTEN0"]
    names = ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK")
    columns = [
        fits.Column(name=n, format=f"{data.shape[1]}E", array=data[i][None])
        for i, n in enumerate(names)
    ]
    table = fits.BinTableHDU.from_columns(columns, name="COADD")
    out = io.BytesIO()
    fits.HDUList([primary, table]).writeto(out)
    return out.getvalue()


ORIGINALS["coadd.fits"] = _coadd_file()


def _header_end(data):
    return data.index(b"END" + b" " * 77) + 80


class Damage:
    """A damaged copy of one original; its repr (what Hypothesis prints) is the recipe."""

    def __init__(self, name, edits, packed):
        self.name, self.edits, self.packed = name, edits, packed

    def __repr__(self):
        return f"Damage({self.name!r}, {self.edits!r}, packed={self.packed})"

    def data(self):
        data = bytearray(ORIGINALS[self.name])
        for edit in self.edits:
            if edit[0] == "cut":
                del data[edit[1] :]
            elif edit[0] == "flip":
                data[edit[1]] ^= 1 << edit[2]
            else:  # "value": rewrite the value field (columns 11-30) of one header card
                data[edit[1] * 80 + 10 : edit[1] * 80 + 30] = edit[2].rjust(20)
        return gzip.compress(bytes(data), 1) if self.packed else bytes(data)


@st.composite
def damaged_files(draw):
    name = draw(st.sampled_from(sorted(ORIGINALS)))
    size, header_size = len(ORIGINALS[name]), _header_end(ORIGINALS[name])
    kind = draw(st.sampled_from(["cut", "flip", "flip-header", "edit-header", "several"]))
    if kind == "cut":
        edits = [("cut", draw(st.integers(0, size - 1)))]
    elif kind == "edit-header":
        card = draw(st.integers(0, header_size // 80 - 1))
        value = draw(st.sampled_from([b"0", b"-1", b"99999999999", b"'LAMOST'", b"T", b"1E300"]))
        edits = [("value", card, value)]
    else:
        end = header_size if kind == "flip-header" else size
        edits = [
            ("flip", draw(st.integers(0, end - 1)), draw(st.integers(0, 7)))
            for _ in range(draw(st.integers(1, 8 if kind == "several" else 1)))
        ]
    return Damage(name, edits, packed=draw(st.booleans()))


def _arrays(spec):
    return (
        spec.flux.value,
        spec.spectral_axis.value,
        spec.uncertainty.array,
        np.asarray(spec.mask),
    )


def _astropy_reading(data):
    """What astropy.io.fits reads from the bytes (the reference), or None if it cannot."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(data)) as hdul:
                return _arrays(read_lamost_lrs(hdul))
    except Exception:  # the reference's own failures are not under test
        return None


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(damaged_files())
def test_damaged_files_give_the_right_arrays_or_a_package_error(tmp_path_factory, damage):
    data, packed = damage.data(), damage.packed
    path = tmp_path_factory.mktemp("fuzz") / ("spec.fits.gz" if packed else "spec.fits")
    path.write_bytes(data)
    start = time.process_time()
    try:
        spec = read_lamost_lrs(path)
    except LAMOSTFormatError as err:
        assert str(path) in str(err)
        spec = None
    assert time.process_time() - start < _SECONDS
    if spec is None:
        return
    reference = _astropy_reading(gzip.decompress(data) if packed else data)
    if reference is not None:
        for ours, theirs in zip(_arrays(spec), reference, strict=True):
            np.testing.assert_array_equal(ours, theirs, strict=True)


@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_undamaged_originals_read(name, tmp_path):
    path = tmp_path / "spec.fits"
    path.write_bytes(ORIGINALS[name])
    assert read_lamost_lrs(path).flux.size > 3000
