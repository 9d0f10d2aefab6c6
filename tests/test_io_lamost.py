"""Tests of astro_spt.io.lamost: the LAMOST low-resolution readers for specutils."""

import gzip
import io
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from astropy import constants
from astropy import units as u
from astropy.io import fits, registry
from astropy.nddata import InverseVariance
from specutils import Spectrum, SpectrumList

import astro_spt  # noqa: F401 - registers the readers
from astro_spt.exceptions import AstroSPTError, LAMOSTFormatError
from astro_spt.io import (
    LAMOST_LRS_FORMAT,
    identify_lamost_lrs,
    read_lamost_lrs,
    register_lamost_readers,
)

FIXTURES = Path(__file__).parent / "data" / "lamost"
DR1 = FIXTURES / "spec-55862-B6212_sp06-023.fits"
DR6_GZ = FIXTURES / "spec-57287-KP193637N444141V03_sp10-161.fits.gz"
DR7 = FIXTURES / "spec-58397-EG014118N254444M01_sp03-031.fits"
DR8_GZ = FIXTURES / "spec-55859-F5902_sp03-232.fits.gz"
DR8_3700_GZ = FIXTURES / "spec-55859-F5907_sp12-016.fits.gz"
IMAGE_FIXTURES = {"DR1": DR1, "DR6": DR6_GZ, "DR7": DR7, "DR8": DR8_GZ, "DR8-3700": DR8_3700_GZ}

META_KEYS = {
    "obsid",
    "designation",
    "ra",
    "dec",
    "snr",
    "redshift",
    "redshift_err",
    "radial_velocity",
    "class",
    "subclass",
    "data_release",
    "vacuum",
    "heliocentric",
    "flux_calibration",
    "layout",
    "filename",
    "andmask",
    "ormask",
    "header",
}


def _raw_image(path):
    with fits.open(path) as hdul:
        return hdul[0].header.copy(), np.array(hdul[0].data, dtype=np.float64)


def _check_against_header(spec, header, flux, ivar, andmask, ormask):
    """Units, uncertainty, mask and meta of ``spec`` against the file's raw values."""
    assert spec.flux.unit == u.dimensionless_unscaled
    assert spec.spectral_axis.unit == u.AA
    np.testing.assert_array_equal(spec.flux.value, flux)
    assert isinstance(spec.uncertainty, InverseVariance)
    np.testing.assert_array_equal(spec.uncertainty.array, ivar)
    expected_mask = (ivar <= 0) | (andmask != 0) | (flux == 0) | ~np.isfinite(flux)
    np.testing.assert_array_equal(spec.mask, expected_mask)
    assert spec.mask.dtype == bool

    meta = spec.meta
    assert META_KEYS <= set(meta)
    np.testing.assert_array_equal(meta["andmask"], andmask)
    np.testing.assert_array_equal(meta["ormask"], ormask)
    assert meta["andmask"].dtype == np.int32
    assert meta["designation"] == header["DESIG"]
    assert meta["ra"] == header["RA"] * u.deg
    assert meta["dec"] == header["DEC"] * u.deg
    snr_keys = {b: f"SNR{b.upper()}" if "SNRG" in header else f"SN_{b.upper()}" for b in "ugriz"}
    assert meta["snr"] == {b: header[k] for b, k in snr_keys.items()}
    assert meta["redshift"] == header["Z"]
    assert meta["redshift_err"] == header["Z_ERR"]
    assert u.isclose(meta["radial_velocity"], header["Z"] * constants.c)
    assert meta["radial_velocity"].unit == u.km / u.s
    assert meta["class"] == header["CLASS"]
    assert meta["subclass"] == header["SUBCLASS"]
    assert meta["vacuum"] is True and header["VACUUM"] is True
    assert meta["heliocentric"] is True
    assert meta["flux_calibration"] == "relative"
    assert meta["header"]["FILENAME"] == header["FILENAME"]
    if "OBSID" in header:
        assert meta["obsid"] == header["OBSID"]
        assert meta["data_release"] == header["DATA_V"].removeprefix("LAMOST ")
    else:
        assert meta["obsid"] is None
        assert meta["data_release"] is None


# --- registration -----------------------------------------------------------------------


def test_format_registered_for_spectrum_and_list():
    formats = registry.get_formats(Spectrum)
    row = formats[formats["Format"] == LAMOST_LRS_FORMAT][0]
    assert row["Read"] == "Yes" and row["Auto-identify"] == "Yes"
    assert LAMOST_LRS_FORMAT in registry.get_formats(SpectrumList)["Format"]


def test_register_is_idempotent():
    before = len(registry.get_formats(Spectrum))
    register_lamost_readers()
    register_lamost_readers()
    assert len(registry.get_formats(Spectrum)) == before


def test_exception_hierarchy():
    assert issubclass(LAMOSTFormatError, AstroSPTError)
    assert issubclass(LAMOSTFormatError, ValueError)


# --- the image layouts, from the committed fixtures ---------------------------------------


def test_dr1_wavelength_is_log_linear():
    header, data = _raw_image(DR1)
    assert "Subcontinuum" in header["EXTEN0"]
    spec = Spectrum.read(DR1)
    pixel = np.arange(header["NAXIS1"])
    expected = 10 ** (header["COEFF0"] + header["COEFF1"] * pixel)
    np.testing.assert_allclose(spec.spectral_axis.to_value(u.AA), expected, rtol=1e-12)
    assert spec.meta["layout"] == "image-log-linear"
    np.testing.assert_array_equal(spec.meta["subcontinuum"], data[2])


@pytest.mark.parametrize("release", list(IMAGE_FIXTURES))
def test_image_layouts_against_header(release):
    path = IMAGE_FIXTURES[release]
    header, data = _raw_image(path)
    spec = Spectrum.read(path)
    assert spec.meta["filename"] == str(path)
    _check_against_header(spec, header, *data[[0, 1]], *data[[3, 4]].astype(np.int32))
    if release != "DR1":
        assert spec.meta["layout"] == "image"
        np.testing.assert_array_equal(spec.spectral_axis.to_value(u.AA), data[2])
    assert np.all(np.diff(spec.spectral_axis.value) > 0)


def test_dr8_file_starting_at_3700_uses_its_wavelength_row():
    # WFITTYPE = -9999 and a grid from exactly 3700 Å: COEFF0 = 3.5682 is 4e-6 off.
    header, data = _raw_image(DR8_3700_GZ)
    assert header["WFITTYPE"] == -9999
    spec = Spectrum.read(DR8_3700_GZ)
    assert spec.spectral_axis[0] == 3700 * u.AA
    np.testing.assert_array_equal(spec.spectral_axis.value, data[2])


def test_explicit_format_and_spectrum_list():
    spec = Spectrum.read(DR7, format=LAMOST_LRS_FORMAT)
    assert spec.meta["obsid"] == 677503031
    spectra = SpectrumList.read(DR6_GZ, format=LAMOST_LRS_FORMAT)
    assert len(spectra) == 1 and spectra[0].meta["data_release"] == "DR6"
    spectra = SpectrumList.read(DR6_GZ)
    assert len(spectra) == 1 and spectra[0].meta["layout"] == "image"


def test_zero_fill_at_red_end_is_masked():
    # The last 31 pixels of this DR8 file: flux exactly 0 (the pipeline's fill value)
    # with a positive inverse variance and no mask bit.
    _, data = _raw_image(DR8_GZ)
    fill = (data[0] == 0) & (data[1] > 0)
    assert fill.sum() == 31 and fill[-31:].all() and not data[3:, fill].any()
    spec = Spectrum.read(DR8_GZ)
    assert spec.mask[fill].all()
    assert not spec.mask[-40:-31].any()


@pytest.mark.parametrize("source", [DR7, DR8_GZ])
def test_gzipped_and_plain_copies_read_the_same(source, tmp_path):
    if source.suffix == ".gz":
        other = tmp_path / source.stem
        other.write_bytes(gzip.decompress(source.read_bytes()))
    else:
        other = tmp_path / (source.name + ".gz")
        other.write_bytes(gzip.compress(source.read_bytes()))
    a, b = Spectrum.read(source), Spectrum.read(other)
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.spectral_axis, b.spectral_axis)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.uncertainty.array, b.uncertainty.array)
    assert b.meta["filename"] == str(other)
    assert a.meta["obsid"] == b.meta["obsid"]


def test_file_object_and_hdulist_inputs():
    with open(DR7, "rb") as handle:
        from_handle = read_lamost_lrs(handle)
        assert handle.tell() == 0
    assert from_handle.meta["filename"] == str(DR7)
    with fits.open(DR7) as hdul:
        from_hdulist = read_lamost_lrs(hdul)
    from_bytes = read_lamost_lrs(io.BytesIO(DR7.read_bytes()))
    assert from_bytes.meta["filename"] == "<file object>"
    for spec in (from_hdulist, from_bytes):
        np.testing.assert_array_equal(spec.flux, from_handle.flux)


def test_coadd_table_layout(tmp_path):
    # A DR10-style file (header-only primary, COADD table) built from a DR8 fixture, so
    # that the layout is tested without the DR10 files in ../shared.
    header, data = _raw_image(DR8_GZ)
    header["DATA_V"] = "LAMOST DR10"
    primary = fits.PrimaryHDU(header=header)
    names = ["FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK", "NORMALIZATION"]
    rows = [*data, data[0] / np.median(data[0])]
    n = data.shape[1]
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name=c, format=f"{n}E", array=r[np.newaxis])
            for c, r in zip(names, rows, strict=True)
        ],
        name="COADD",
    )
    path = tmp_path / "spec-coadd.fits.gz"
    fits.HDUList([primary, table]).writeto(path)
    assert identify_lamost_lrs("read", str(path))
    spec = Spectrum.read(path)
    assert spec.meta["layout"] == "coadd-table"
    assert spec.meta["data_release"] == "DR10"
    np.testing.assert_allclose(spec.spectral_axis.value, data[2], rtol=1e-7)
    np.testing.assert_allclose(spec.meta["normalization"], rows[-1], rtol=1e-6)
    _check_against_header(spec, header, *data[[0, 1]], *data[[3, 4]].astype(np.int32))


# --- refusals ---------------------------------------------------------------------------


def _cut(name):
    plain = DR7.read_bytes()
    return {
        "half-data.fits": plain[: len(plain) // 2],
        "half-data.fits.gz": gzip.compress(plain[: len(plain) // 2]),
        "padding-cut.fits": plain[:-100],
        "cut-in-header.fits": plain[:1000],
        "gzip-stream-cut.fits.gz": DR8_GZ.read_bytes()[:20000],
    }[name]


@pytest.mark.parametrize(
    ("name", "header_readable"),
    [
        ("half-data.fits", True),
        ("half-data.fits.gz", True),
        ("padding-cut.fits", True),
        ("cut-in-header.fits", False),
        ("gzip-stream-cut.fits.gz", False),
    ],
)
def test_truncated_file_is_refused(name, header_readable, tmp_path):
    path = tmp_path / name
    path.write_bytes(_cut(name))
    assert not identify_lamost_lrs("read", str(path))
    with pytest.raises(LAMOSTFormatError, match=rf"{re.escape(str(path))}: .*truncated"):
        Spectrum.read(path, format=LAMOST_LRS_FORMAT)
    if header_readable:
        # The LAMOST header is intact, so "LAMOST-unsupported" claims the file and says why.
        with pytest.raises(LAMOSTFormatError, match=rf"{re.escape(str(path))}: .*truncated"):
            Spectrum.read(path)
    else:
        with pytest.raises(registry.IORegistryError, match="could not be identified"):
            Spectrum.read(path)


def _mrs_like(path):
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "LAMOST"
    primary.header["FILENAME"] = "med-58408-TD230151N343645T01_sp01-015.fits"
    columns = [fits.Column(name=c, format="E", array=np.ones(4)) for c in ("FLUX", "LOGLAM")]
    hdus = [fits.BinTableHDU.from_columns(columns, name=n) for n in ("COADD_B", "COADD_R")]
    fits.HDUList([primary, *hdus]).writeto(path)


def test_medium_resolution_file_is_refused(tmp_path):
    path = tmp_path / "mrs-like.fits"
    _mrs_like(path)
    assert not identify_lamost_lrs("read", str(path))
    for fmt in (LAMOST_LRS_FORMAT, None):
        with pytest.raises(
            LAMOSTFormatError, match=rf"{re.escape(str(path))}: .*medium-resolution"
        ):
            Spectrum.read(path, format=fmt)


def test_real_medium_resolution_file_is_refused(shared_data):
    (path,) = (shared_data / "lamost-lrs" / "misc").glob("med-*.fits")
    assert not identify_lamost_lrs("read", str(path))
    for fmt in (LAMOST_LRS_FORMAT, None):
        with pytest.raises(
            LAMOSTFormatError, match=rf"{re.escape(path.name)}: .*medium-resolution"
        ):
            Spectrum.read(path, format=fmt)


def test_other_fits_and_non_fits_files_are_refused(tmp_path):
    other = tmp_path / "sdss-like.fits"
    primary = fits.PrimaryHDU(np.ones((5, 100), dtype=np.float32))
    primary.header["TELESCOP"] = "SDSS 2.5-M"
    primary.writeto(other)
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n")
    lamost_no_data = tmp_path / "lamost-header-only.fits"
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "LAMOST"
    primary.writeto(lamost_no_data)
    reasons = {
        other: "not a LAMOST file",
        text: "cannot be opened as a FITS file",
        lamost_no_data: "no 5×N spectrum image",
    }
    for path, reason in reasons.items():
        assert not identify_lamost_lrs("read", str(path))
        with pytest.raises(LAMOSTFormatError, match=rf"{re.escape(str(path))}: {reason}"):
            Spectrum.read(path, format=LAMOST_LRS_FORMAT)
    with pytest.raises(LAMOSTFormatError, match="No such file"):
        read_lamost_lrs(tmp_path / "missing.fits")


# --- registration order, in fresh interpreters -------------------------------------------

_READ_IN_SUBPROCESS = """
import sys
{first}
{second}
from specutils import Spectrum
spec = Spectrum.read({path!r})
assert spec.meta["layout"] == "image-log-linear", spec.meta["layout"]
print("ok", len(spec.flux))
"""


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # astro_spt first: the import hook registers the readers when specutils arrives.
        ("import astro_spt; assert 'specutils' not in sys.modules", "import specutils"),
        ("import specutils", "import astro_spt"),
    ],
    ids=["astro_spt-first", "specutils-first"],
)
def test_read_after_either_import_order(first, second):
    code = _READ_IN_SUBPROCESS.format(first=first, second=second, path=str(DR1))
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 3904"


# --- every real file in ../shared/data/lamost-lrs ----------------------------------------


def _read_one(path):
    """Read one file by auto-identification in a worker; return a summary or the error."""
    warnings.simplefilter("error")
    try:
        spec = Spectrum.read(path)
    except Exception as exc:  # reported by the test, with the file name
        return path, f"{type(exc).__name__}: {exc}"
    wavelength = spec.spectral_axis.to_value(u.AA)
    return path, (
        spec.meta["layout"],
        spec.meta["data_release"],
        len(wavelength),
        float(wavelength[0]),
        float(wavelength[-1]),
        float(spec.mask.mean()),
    )


@pytest.mark.slow
def test_every_shared_low_resolution_file_reads(shared_data):
    # The acceptance check: every low-resolution file, by auto-identification. About
    # 40 ms a file, 30 of them in specutils' other identifiers: ~45 s on two free cores.
    files = sorted(
        str(p)
        for p in (shared_data / "lamost-lrs").rglob("*.fits*")
        if not p.name.startswith("med-")
    )
    assert len(files) > 2000
    workers = min(4, len(os.sched_getaffinity(0)))
    # fork: the workers inherit the registered readers and need no re-import.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        results = dict(pool.map(_read_one, files, chunksize=32))
    failures = {p: r for p, r in results.items() if isinstance(r, str)}
    assert not failures, f"{len(failures)} files failed, e.g. {next(iter(failures.items()))}"

    layouts = {}
    for path, (layout, release, n, first, last, bad_fraction) in results.items():
        folder = Path(path).relative_to(shared_data / "lamost-lrs").parts[0]
        layouts.setdefault((folder, layout, release), 0)
        layouts[(folder, layout, release)] += 1
        assert 3690 < first < 3850 and 8900 < last < 9110, path
        assert 3700 < n <= 3909, path
        assert bad_fraction < 0.5, path
    assert layouts == {
        ("dr1", "image-log-linear", None): 10,
        ("dr8", "image", "DR8"): 220,
        ("dr10", "coadd-table", "DR10"): 1979,
        ("misc", "image", "DR6"): 1,
        ("misc", "image", "DR7"): 1,
    }


def test_real_dr10_file_against_header(shared_data):
    path = sorted((shared_data / "lamost-lrs" / "dr10" / "spectra").glob("*.fits.gz"))[0]
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        row = hdul["COADD"].data[0]
        raw = {c: np.array(row[c], dtype=np.float64) for c in hdul["COADD"].columns.names}
    spec = Spectrum.read(path)
    assert spec.meta["layout"] == "coadd-table"
    np.testing.assert_array_equal(spec.spectral_axis.value, raw["WAVELENGTH"])
    np.testing.assert_array_equal(spec.meta["normalization"], raw["NORMALIZATION"])
    _check_against_header(
        spec,
        header,
        raw["FLUX"],
        raw["IVAR"],
        raw["ANDMASK"].astype(np.int32),
        raw["ORMASK"].astype(np.int32),
    )


def test_missing_value_sentinel_becomes_nan(shared_data):
    # 21 DR10 headers have an SNR of -9999 (not measured) in some band.
    for path in sorted((shared_data / "lamost-lrs" / "dr10" / "spectra").glob("*.fits.gz")):
        header = fits.getheader(path)
        missing = [band for band in "ugriz" if header[f"SNR{band.upper()}"] == -9999]
        if missing:
            break
    else:
        pytest.fail("no DR10 file with an SNR of -9999")
    spec = Spectrum.read(path)
    for band, snr in spec.meta["snr"].items():
        assert np.isnan(snr) == (band in missing)


def test_labels_rv_is_c_times_z(shared_data):
    # LAMOST's DR1 catalogue rv equals c·Z from the file header: radial_velocity = c·z.
    from astropy.table import Table

    labels = Table.read(shared_data / "lamost-lrs" / "dr1" / "labels.csv")
    for label in labels[:3]:
        spec = Spectrum.read(shared_data / "lamost-lrs" / "dr1" / "spectra" / label["filename"])
        assert abs(spec.meta["radial_velocity"].to_value(u.km / u.s) - label["rv"]) < 0.01


def test_shared_fixtures_are_copies(shared_data):
    for path in FIXTURES.glob("spec-*"):
        (original,) = (shared_data / "lamost-lrs").rglob(path.name)
        assert original.read_bytes() == path.read_bytes()


# --- the fast reading path against astropy.io.fits ----------------------------------------


def _layout_files(shared_data=None):
    """One or more files of every layout: the fixtures, and the shared data when present."""
    files = sorted(FIXTURES.glob("*.fits*"))
    if shared_data is not None:
        lrs = shared_data / "lamost-lrs"
        files += sorted((lrs / "dr1" / "spectra").glob("*.fits"))[:3]
        files += sorted((lrs / "dr8" / "spectra").glob("*.fits*"))[:5]
        files += sorted((lrs / "dr10" / "spectra").glob("*.fits*"))[:10]
        files += sorted((lrs / "misc").glob("spec-*.fits*"))
    return files


def test_fast_path_gives_bit_identical_preprocessing(shared_data):
    """read_lamost_lrs(path) (bytes + numpy.frombuffer) and the astropy.io.fits path
    (an HDUList) give the same spectra and the same preprocessing, bit for bit."""
    from astro_spt.io import read_spectrum
    from astro_spt.preprocess import preprocess

    files = _layout_files(shared_data)
    assert {read_lamost_lrs(p).meta["layout"] for p in files} == {
        "image-log-linear",
        "image",
        "coadd-table",
    }
    fast, slow = [], []
    for path in files:
        with fits.open(path) as hdul:
            reference = read_lamost_lrs(hdul)
        for spec in (read_lamost_lrs(path), read_spectrum(path), Spectrum.read(path)):
            for attr in ("flux", "spectral_axis"):
                a, b = getattr(spec, attr), getattr(reference, attr)
                assert a.unit == b.unit and a.dtype == b.dtype
                np.testing.assert_array_equal(a.value, b.value, strict=True)
            np.testing.assert_array_equal(spec.uncertainty.array, reference.uncertainty.array)
            np.testing.assert_array_equal(spec.mask, reference.mask, strict=True)
            assert spec.meta.keys() == reference.meta.keys()
            for key, value in reference.meta.items():
                if key == "header":
                    assert list(spec.meta[key].items()) == list(value.items())
                elif isinstance(value, np.ndarray):
                    np.testing.assert_array_equal(spec.meta[key], value, strict=True)
                elif isinstance(value, float) and np.isnan(value):
                    assert np.isnan(spec.meta[key])
                else:
                    assert (
                        u.allclose(spec.meta[key], value, rtol=0, equal_nan=True)
                        if isinstance(value, u.Quantity)
                        else spec.meta[key] == value
                    ), key
        fast.append(read_lamost_lrs(path))
        slow.append(reference)
    a, b = preprocess(fast), preprocess(slow)
    for field in ("flux", "ivar", "mask", "flags", "snr", "coverage", "n_repaired"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), strict=True)


# --- resource limits ----------------------------------------------------------------------


def _run_briefly(function, seconds=10):
    """function() in a thread; fail (instead of hanging the suite) if it has not returned."""
    import threading

    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_or_device_named_fits_is_refused_at_once(tmp_path):
    from astro_spt.io import read_spectrum

    fifo = tmp_path / "spec-fifo.fits"
    os.mkfifo(fifo)
    for source in (fifo, "/dev/zero", tmp_path):
        for reader in (read_lamost_lrs, read_spectrum):
            outcome = _run_briefly(lambda r=reader, s=source: r(s))
            assert isinstance(outcome.get("error"), LAMOSTFormatError), outcome
            assert "not a regular file" in str(outcome["error"])
        assert not identify_lamost_lrs("read", str(source))


def _gzip_bomb(path, inflated_bytes):
    """A gzipped file that starts like a LAMOST file and inflates to ``inflated_bytes``."""
    head = DR7.read_bytes()[:2880]
    compressor = __import__("zlib").compressobj(9, wbits=31)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(head)]
    parts += [compressor.compress(chunk) for _ in range(inflated_bytes >> 20)]
    path.write_bytes(b"".join([*parts, compressor.flush()]))


def test_gzip_bomb_is_refused_quickly_in_bounded_memory(tmp_path):
    import time
    import tracemalloc

    from astro_spt.io import _fits, read_spectrum

    bomb = tmp_path / "spec-bomb.fits.gz"
    _gzip_bomb(bomb, 256 << 20)  # 256 kB on disk
    assert bomb.stat().st_size < 1 << 20
    for reader in (read_lamost_lrs, read_spectrum):
        tracemalloc.start()
        start = time.process_time()
        with pytest.raises(LAMOSTFormatError, match="inflates to more than"):
            reader(bomb)
        elapsed = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 2, elapsed
        assert peak < 4 * _fits.MAX_FILE_BYTES, peak
    assert not identify_lamost_lrs("read", str(bomb))


def test_size_limit_is_a_module_constant(tmp_path, monkeypatch):
    from astro_spt.io import _fits

    assert _fits.MAX_FILE_BYTES == 16 * 2**20
    read_lamost_lrs(DR8_GZ)
    limit = DR8_GZ.stat().st_size + 1000  # between its gzipped and its inflated size
    monkeypatch.setattr(_fits, "MAX_FILE_BYTES", limit)
    with pytest.raises(LAMOSTFormatError, match=f"inflates to more than {limit} bytes"):
        read_lamost_lrs(DR8_GZ)
    with pytest.raises(LAMOSTFormatError, match=f"larger than {limit} bytes"):
        read_lamost_lrs(DR7)


def _flip(data, index, bit=0):
    data = bytearray(data)
    data[index] ^= 1 << bit
    return bytes(data)


def test_damaged_files_never_reach_specutils(tmp_path, monkeypatch):
    """A damaged LAMOST file, or a damaged FITS file, is refused by the package at once:
    specutils' reader chain (minutes and gigabytes on such a file) is never tried."""
    from astro_spt.io import read_spectrum

    def no_chain(*args, **kwargs):
        raise AssertionError("specutils' reader chain was tried")

    plain = DR7.read_bytes()
    naxis1 = plain.index(b"NAXIS1  =") + 29  # the last digit of NAXIS1's value
    telescope = plain.index(b"TELESCOP=") + 11  # a letter of 'LAMOST'
    damaged = {
        "naxis1-bit.fits": _flip(plain, naxis1 - 3, 3),
        "telescop-and-naxis1.fits": _flip(_flip(plain, naxis1 - 3, 3), telescope),
        "cut.fits": plain[:30000],
        "gzip-bit.fits.gz": _flip(gzip.compress(plain), 5000),
        "not-fits.fits": b"no FITS here\n" * 100,
        "empty.fits": b"",
    }
    monkeypatch.setattr(Spectrum, "read", no_chain)
    for name, content in damaged.items():
        path = tmp_path / name
        path.write_bytes(content)
        outcome = _run_briefly(lambda p=path: read_spectrum(p), seconds=5)
        assert isinstance(outcome.get("error"), LAMOSTFormatError), (name, outcome)
        assert str(path) in str(outcome["error"])


def test_other_surveys_still_go_through_specutils(tmp_path):
    from astro_spt.io import read_spectrum

    path = tmp_path / "wcs1d.fits"
    primary = fits.PrimaryHDU(np.linspace(1, 2, 100).astype(np.float32))
    primary.header.update(CRVAL1=4000.0, CDELT1=1.0, CRPIX1=1, CUNIT1="Angstrom", CTYPE1="WAVE")
    primary.header["BUNIT"] = "erg / (Angstrom cm2 s)"
    primary.writeto(path)
    spec = read_spectrum(path)
    expected = Spectrum.read(path)
    np.testing.assert_array_equal(spec.flux, expected.flux)
    np.testing.assert_array_equal(spec.spectral_axis, expected.spectral_axis)


def test_estimation_reads_arrays_bit_identical_to_spectra(shared_data):
    """estimate() reads LAMOST files into bare arrays (no Spectrum): its preprocessing is
    the Spectrum path's, bit for bit, on every layout."""
    from astro_spt.estimation import preprocess_inputs
    from astro_spt.io import read_spectrum

    files = [str(path) for path in _layout_files(shared_data)]
    plain = preprocess_inputs(files)
    spectra = preprocess_inputs([read_spectrum(path) for path in files])
    for field in ("flux", "ivar", "mask", "flags", "snr", "coverage", "n_repaired", "redshift"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(spectra, field), strict=True)
    assert plain.messages == spectra.messages == {}


def test_estimating_files_does_not_import_specutils():
    import subprocess
    import sys

    code = (
        "import sys, astro_spt\n"
        "from astro_spt.io import example_files\n"
        "table = astro_spt.estimate(example_files()[:2], n_samples=2)\n"
        "assert len(table) == 2 and not table['message'].any(), table\n"
        "print(sorted(m for m in ('specutils', 'gwcs', 'ndcube', 'matplotlib', 'dask') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
