"""Mock LAMOST spectra: emulated flux on a real spectrum's grid, continuum and noise, as files.

This module owns the step from the emulator's normalised flux to files that
``Spectrum.read`` opens like real LAMOST DR10 spectra:

* `select_templates`: the real giants (clean, S/N ≥ 20) that lend their wavelength
  grids, flux continua (`template_continuum`), masks and noise patterns;
* `simulate_spectrum`: one emulated spectrum made observed-like on a template;
* `write_lamost_coadd`: a spectrum written in the DR10 ``COADD`` layout;
* `write_mock_spectra`: a spectrum for every star of a `~astro_spt.mock.mock_catalog`;
* `spectra_arrays`: real spectra as the arrays `~astro_spt.mock.normalize_spectra`
  takes.
"""

import gzip
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import QTable

from .emulator import LAMOSTEmulator, pseudo_continuum

__all__ = [
    "select_templates",
    "simulate_spectrum",
    "spectra_arrays",
    "template_continuum",
    "write_lamost_coadd",
    "write_mock_spectra",
]

# Template continua come from giants with clean spectra: at S/N < 20 the noise of the
# 50 Å running mean and of the ivar pattern shows in the mock spectra.
_TEMPLATE_MIN_SNR = 20.0
_TEMPLATE_MIN_GOOD_FRACTION = 0.95


def _spectrum_arrays(spectrum):
    """Wavelength, flux and ivar (0 at masked pixels) of a Spectrum as float64 arrays."""
    ivar = np.asarray(spectrum.uncertainty.array, dtype=np.float64)
    if spectrum.mask is not None:
        ivar = np.where(spectrum.mask, 0.0, ivar)
    return (
        np.asarray(spectrum.spectral_axis.to_value(u.AA), dtype=np.float64),
        np.asarray(spectrum.flux.value, dtype=np.float64),
        ivar,
    )


def spectra_arrays(spectra) -> tuple[list, list, list]:
    """Wavelengths, fluxes and ivars (0 where masked) of spectra, for `normalize_spectra`.

    Parameters
    ----------
    spectra : sequence of `~specutils.Spectrum`
        With an `~astropy.nddata.InverseVariance` uncertainty, as
        `astro_spt.io.read_lamost_lrs` returns them.

    Returns
    -------
    wavelengths, fluxes, ivars : list of `~numpy.ndarray`
        One float64 array per spectrum: wavelength in Å, flux, and inverse variance
        set to 0 at masked pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.mock.emulator import normalize_spectra
    >>> from astro_spt.io import example_files, read_lamost_lrs
    >>> from astro_spt.mock import spectra_arrays
    >>> spectra = [read_lamost_lrs(path) for path in example_files()]
    >>> wavelengths, fluxes, ivars = spectra_arrays(spectra)
    >>> len(fluxes), fluxes[0].shape
    (6, (3904,))
    >>> round(float(wavelengths[0][0]), 2), round(float(wavelengths[0][-1]), 2)  # Å
    (3699.99, 9088.66)
    >>> bool(np.all(ivars[0][spectra[0].mask] == 0))
    True

    The three lists are what `normalize_spectra` takes:

    >>> redshifts = [spectrum.meta["redshift"] for spectrum in spectra]
    >>> flux, ivar = normalize_spectra(wavelengths, fluxes, ivars, redshifts)
    >>> flux.shape
    (6, 3909)
    """
    arrays = [_spectrum_arrays(s) for s in spectra]
    return [a[0] for a in arrays], [a[1] for a in arrays], [a[2] for a in arrays]


def template_continuum(template, sigma_aa: float = 50.0) -> np.ndarray:
    """The pseudo-continuum of a real spectrum on its own pixels, defined everywhere.

    Parameters
    ----------
    template : `~specutils.Spectrum`
    sigma_aa : float, optional
        Width of the Gaussian kernel of `~astro_spt.mock.pseudo_continuum`.

    Returns
    -------
    `~numpy.ndarray`, shape (n_pixels,)

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.io import example_files, read_lamost_lrs
    >>> from astro_spt.mock import template_continuum
    >>> template = read_lamost_lrs(example_files()[4])  # a red giant, S/N 30 in g
    >>> continuum = template_continuum(template)
    >>> continuum.shape, bool(np.all(continuum > 0))
    ((3904,), True)

    The flux divided by it scatters about 1:

    >>> round(float(np.median(template.flux.value / continuum)), 2)
    1.0
    """
    wavelength, flux, ivar = _spectrum_arrays(template)
    continuum = pseudo_continuum(wavelength, flux, ivar, sigma_aa)
    good = np.isfinite(continuum) & (continuum > 0)
    # Edges without data take the nearest defined value: those pixels are masked anyway.
    return np.interp(wavelength, wavelength[good], continuum[good])


def simulate_spectrum(
    emulator: LAMOSTEmulator,
    normalized_flux,
    template,
    snr_g: float,
    redshift: float,
    rng: np.random.Generator,
    *,
    sigma_aa: float = 50.0,
    continuum=None,
) -> dict[str, np.ndarray]:
    """Turn an emulated normalised spectrum into a LAMOST-like observed spectrum.

    The template, a real LAMOST spectrum, lends its wavelength grid, its flux continuum
    (`~astro_spt.mock.pseudo_continuum`), its masks and the wavelength dependence of
    its noise. The emulated flux, shifted by ``redshift``, is multiplied by that
    continuum; the template's inverse variance is scaled so that the g-band S/N becomes
    ``snr_g``, and Gaussian noise of that variance is added. Pixels the template masks
    (ivar = 0) keep ivar = 0 and the noiseless flux; pixels where the template's flux is
    exactly 0 (LAMOST's fill value at the red end) stay 0.

    Parameters
    ----------
    emulator : `~astro_spt.mock.LAMOSTEmulator`
        Only its rest-frame wavelength grid is used here.
    normalized_flux : array-like, shape (n_pixels,)
        The emulator's prediction for the star.
    template : `~specutils.Spectrum`
        A real LAMOST spectrum read by `astro_spt.io.read_lamost_lrs`.
    snr_g : float
        Target signal-to-noise ratio in the g band (LAMOST's ``SNRG``).
    redshift : float
        Redshift z to put the star at.
    rng : `numpy.random.Generator`
    sigma_aa : float, optional
        Width of the template's continuum kernel (the emulator's normalisation width).
    continuum : array-like, optional
        The template's continuum, if already computed (`template_continuum`).

    Returns
    -------
    dict of `~numpy.ndarray`
        ``wavelength`` (the template's), ``flux``, ``ivar``, ``andmask``, ``ormask``,
        ``normalization`` (flux over the template's LAMOST pipeline continuum, 1 where
        the template's is 1), and ``snr`` (the five band S/N values u, g, r, i, z:
        the template's, scaled).

    Examples
    --------
    A linear emulator fitted to the five giants among the package's example spectra
    (with their LASP labels), and one of them as the template:

    >>> import numpy as np
    >>> from astro_spt.mock.emulator import LAMOSTEmulator, lamost_log_grid, normalize_spectra
    >>> from astro_spt.io import example_files, read_lamost_lrs
    >>> from astro_spt.mock import simulate_spectrum, spectra_arrays
    >>> giants = [read_lamost_lrs(path) for path in example_files() if "-160." not in path.name]
    >>> labels = [  # Teff, logg, [Fe/H]
    ...     [4916, 2.91, -0.40], [5014, 3.18, -0.23], [4748, 2.03, -1.62],
    ...     [4813, 2.67, -0.39], [4876, 3.62, 0.18],
    ... ]
    >>> redshifts = [giant.meta["redshift"] for giant in giants]
    >>> flux, ivar = normalize_spectra(*spectra_arrays(giants), redshifts)
    >>> emulator = LAMOSTEmulator(order=1).fit(lamost_log_grid(), flux, ivar, labels)
    >>> template = giants[3]
    >>> template.meta["snr"]["g"]
    30.18

    The spectrum of a star with Teff = 4,850 K, logg = 2.6 and [Fe/H] = -0.2 at twice
    the template's S/N:

    >>> normalized = emulator.predict([4850.0, 2.6, -0.2])
    >>> rng = np.random.default_rng(42)
    >>> arrays = simulate_spectrum(emulator, normalized, template, 60.36, 1e-4, rng)
    >>> sorted(arrays)
    ['andmask', 'flux', 'ivar', 'normalization', 'ormask', 'snr', 'wavelength']
    >>> arrays["flux"].shape, [round(float(snr), 2) for snr in arrays["snr"]]
    ((3904,), [3.02, 60.36, 135.82, 198.0, 182.86])
    >>> good = arrays["ivar"] > 0
    >>> bool(np.allclose(arrays["ivar"][good], 4 * template.uncertainty.array[good]))
    True
    """
    wavelength, template_flux, template_ivar = _spectrum_arrays(template)
    if continuum is None:
        continuum = template_continuum(template, sigma_aa)
    rest = wavelength / (1 + redshift)
    model = continuum * np.interp(rest, emulator.wavelength, normalized_flux)
    header_snr = template.meta["snr"]
    scale = snr_g / header_snr["g"]
    raw_ivar = np.asarray(template.uncertainty.array, dtype=np.float64)
    ivar = np.where(template_ivar > 0, raw_ivar * scale**2, 0.0)
    sigma = np.divide(1.0, np.sqrt(ivar), out=np.zeros_like(ivar), where=ivar > 0)
    flux = model + sigma * rng.standard_normal(model.size)
    fill = template_flux == 0
    flux[fill] = 0.0
    # Filled pixels keep their scaled ivar, as LAMOST writes them (ivar > 0, flux 0).
    ivar[fill] = raw_ivar[fill] * scale**2

    normalization = np.ones_like(flux)
    template_norm = np.asarray(template.meta.get("normalization", normalization), np.float64)
    pipeline = np.divide(
        template_flux,
        template_norm,
        out=np.zeros_like(flux),
        where=(template_norm != 1) & (template_norm != 0) & np.isfinite(template_norm),
    )
    usable = np.isfinite(pipeline) & (pipeline > 0)
    np.divide(flux, pipeline, out=normalization, where=usable)
    return {
        "wavelength": wavelength,
        "flux": flux,
        "ivar": ivar,
        "andmask": np.asarray(template.meta["andmask"]),
        "ormask": np.asarray(template.meta["ormask"]),
        "normalization": normalization,
        "snr": np.array([header_snr[b] * scale for b in "ugriz"]),
    }


def write_lamost_coadd(path, arrays: dict, header: fits.Header, *, compresslevel: int = 6):
    """Write a spectrum as a LAMOST DR9+ low-resolution file (``COADD`` binary table).

    The layout of the DR10 files: a header-only primary HDU and a one-row ``COADD``
    binary table with float32 array columns FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK and
    NORMALIZATION, without units (the real files carry none). A name ending in ``.gz``
    is gzipped with a zero time stamp, so the same input gives the same bytes.

    Parameters
    ----------
    path : str or `~pathlib.Path`
    arrays : dict of array-like
        ``wavelength``, ``flux``, ``ivar``, ``andmask``, ``ormask``, ``normalization``,
        all of one length.
    header : `~astropy.io.fits.Header`
        Primary header; it must carry ``TELESCOP = 'LAMOST'`` for the readers to claim
        the file. Structural keywords are replaced.
    compresslevel : int, optional
        gzip level for ``.gz`` names.

    Returns
    -------
    `~pathlib.Path`

    Examples
    --------
    One of the package's example DR1 spectra, rewritten in the DR10 layout and read
    back by `specutils.Spectrum.read` (importing `astro_spt` registers the readers):

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from specutils import Spectrum
    >>> from astro_spt.io import example_files, read_lamost_lrs
    >>> from astro_spt.mock import write_lamost_coadd
    >>> spectrum = read_lamost_lrs(example_files()[4])
    >>> arrays = {
    ...     "wavelength": spectrum.spectral_axis.to_value("AA"),
    ...     "flux": spectrum.flux.value,
    ...     "ivar": spectrum.uncertainty.array,
    ...     "andmask": spectrum.meta["andmask"],
    ...     "ormask": spectrum.meta["ormask"],
    ...     "normalization": np.ones(spectrum.flux.size),
    ... }
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_lamost_coadd(Path(tmp) / "copy.fits.gz", arrays, spectrum.meta["header"])
    ...     again = write_lamost_coadd(Path(tmp) / "again.fits.gz", arrays, spectrum.meta["header"])
    ...     same_bytes = path.read_bytes() == again.read_bytes()
    ...     copy = Spectrum.read(path)
    >>> path.name, same_bytes, copy.meta["layout"]
    ('copy.fits.gz', True, 'coadd-table')
    >>> bool(np.allclose(copy.flux.value, spectrum.flux.value, rtol=1e-6))
    True
    """
    path = Path(path)
    n = np.asarray(arrays["flux"]).size
    primary_header = header.copy()
    for key in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"):
        primary_header.remove(key, ignore_missing=True, remove_all=True)
    columns = [
        fits.Column(
            name=name.upper(),
            format=f"{n}E",
            array=np.asarray(arrays[name], dtype=np.float32).reshape(1, n),
        )
        for name in ("flux", "ivar", "wavelength", "andmask", "ormask", "normalization")
    ]
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=primary_header),
            fits.BinTableHDU.from_columns(columns, name="COADD"),
        ]
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Real LAMOST headers carry non-standard cards that astropy would "fix" noisily.
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        hdul.writeto(buffer, output_verify="silentfix")
    data = buffer.getvalue()
    if path.suffix == ".gz":
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0
            ) as out,
        ):
            out.write(data)
    else:
        path.write_bytes(data)
    return path


def _mock_header(template, star, arrays, redshift, name) -> fits.Header:
    header = template.meta["header"].copy()
    kic = int(star["kic"])
    ra = float(u.Quantity(star["ra"]).to_value(u.deg))
    dec = float(u.Quantity(star["dec"]).to_value(u.deg))
    updates = {
        "FILENAME": (name.removesuffix(".gz"), "Mock spectrum (astro_spt.mock)"),
        "OBSID": (kic, "Mock: the KIC number of the star"),
        "DATA_V": ("LAMOST DR10 MOCK", "Emulated spectrum in the DR10 layout"),
        "DESIG": (f"MOCK KIC {kic}", "Designation of the mock target"),
        "OBJNAME": (f"KIC {kic}", "Name of object"),
        "TSOURCE": ("MOCK", "Mock LAMOST x APOKASC-2 sample"),
        "RA": (ra, "[deg] Right ascension of object"),
        "DEC": (dec, "[deg] Declination of object"),
        "RA_OBS": (ra, "[deg] Right ascension during observing"),
        "DEC_OBS": (dec, "[deg] Declination during observing"),
        "CLASS": ("STAR", "Class of object"),
        "Z": (float(redshift), "Redshift of object (mock)"),
    }
    for band, snr in zip("UGRIZ", arrays["snr"], strict=True):
        updates[f"SNR{band}"] = (round(float(snr), 2), f"SNR of {band.lower()} filter")
    for key, (value, comment) in updates.items():
        header[key] = (value, comment)
    header["MOCK"] = (True, "Emulated spectrum, not an observation")
    header["KIC"] = (kic, "Kepler Input Catalog number")
    header["MOCKTEFF"] = (round(float(u.Quantity(star["teff"]).to_value(u.K)), 1), "[K] Teff")
    header["MOCKLOGG"] = (round(float(star["logg"]), 4), "logg (cgs) from mass, radius")
    header["MOCKFEH"] = (round(float(star["feh"]), 4), "[Fe/H] (Miglio et al. 2021)")
    header["MOCKMASS"] = (
        round(float(u.Quantity(star["mass"]).to_value(u.solMass)), 4),
        "[solMass] APOKASC-2 mass",
    )
    header["MOCKAGE"] = (
        round(float(u.Quantity(star["age"]).to_value(u.Gyr)), 4),
        "[Gyr] APOKASC-2 age",
    )
    header["TEMPLATE"] = (
        str(template.meta["header"].get("FILENAME", "")),
        "Real spectrum lending grid, continuum, noise",
    )
    return header


def write_mock_spectra(
    catalog: QTable,
    emulator: LAMOSTEmulator,
    templates: Sequence,
    snr_pool,
    redshift_pool,
    directory,
    *,
    seed: int = 0,
    n_nearest: int = 5,
    snr_jitter_dex: float = 0.05,
    compress: bool = True,
    batch_size: int = 512,
) -> QTable:
    """Write an emulated LAMOST spectrum for every star of a mock catalogue.

    For each star, with a generator seeded by ``(seed, kic)`` so that a star's
    spectrum does not depend on the rest of the catalogue: the emulator predicts the
    normalised flux for its (Teff, logg, [Fe/H]); a template is drawn among the
    ``n_nearest`` templates closest in Teff; a g-band S/N is drawn from ``snr_pool``
    (with a log-normal jitter of ``snr_jitter_dex``) and a redshift from
    ``redshift_pool``; `simulate_spectrum` makes the observed spectrum and
    `write_lamost_coadd` writes it as ``mock-kic<KIC>.fits.gz``.

    Parameters
    ----------
    catalog : `~astropy.table.QTable`
        From `mock_catalog`: needs ``kic``, ``teff``, ``logg``, ``feh``, ``mass``,
        ``age``, ``ra``, ``dec``.
    emulator : `~astro_spt.mock.LAMOSTEmulator`
        Fitted with labels ``("teff", "logg", "feh")``.
    templates : sequence of `~specutils.Spectrum`
        Real LAMOST giant spectra with their LASP Teff in ``meta["teff"]``, as
        `select_templates` returns them.
    snr_pool, redshift_pool : array-like
        The real g-band S/N values and redshifts of LAMOST giants to draw from.
    directory : str or `~pathlib.Path`
        Created if needed.
    seed : int, optional
    n_nearest : int, optional
    snr_jitter_dex : float, optional
    compress : bool, optional
        Write ``.fits.gz`` (default) or ``.fits``.
    batch_size : int, optional
        Stars per emulator call (bounds the memory).

    Returns
    -------
    `~astropy.table.QTable`
        A copy of ``catalog`` with ``file`` (name inside ``directory``), ``snrg``,
        ``redshift`` and ``template`` (the template's file name) added.

    Examples
    --------
    A linear emulator fitted to the five giants among the package's example spectra,
    which also serve as templates (with their LASP Teff):

    >>> import tempfile
    >>> from pathlib import Path
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from specutils import Spectrum
    >>> from astro_spt.mock.emulator import LAMOSTEmulator, lamost_log_grid, normalize_spectra
    >>> from astro_spt.io import example_files, read_lamost_lrs
    >>> from astro_spt.mock import spectra_arrays, write_mock_spectra
    >>> giants = [read_lamost_lrs(path) for path in example_files() if "-160." not in path.name]
    >>> labels = [  # Teff, logg, [Fe/H]
    ...     [4916, 2.91, -0.40], [5014, 3.18, -0.23], [4748, 2.03, -1.62],
    ...     [4813, 2.67, -0.39], [4876, 3.62, 0.18],
    ... ]
    >>> redshifts = [giant.meta["redshift"] for giant in giants]
    >>> flux, ivar = normalize_spectra(*spectra_arrays(giants), redshifts)
    >>> emulator = LAMOSTEmulator(order=1).fit(lamost_log_grid(), flux, ivar, labels)
    >>> for giant, label in zip(giants, labels):
    ...     giant.meta["teff"] = label[0]

    Two stars of a `mock_catalog`-like table, written with S/N and redshifts drawn from
    the templates' own:

    >>> catalog = QTable(
    ...     {
    ...         "kic": [1160789, 1569842],
    ...         "ra": [290.8867, 290.6217] * u.deg,
    ...         "dec": [36.8724, 37.1746] * u.deg,
    ...         "teff": [4773.0, 4650.0] * u.K,
    ...         "logg": [2.31, 3.07],
    ...         "feh": [-0.28, -0.12],
    ...         "mass": [0.875, 1.00] * u.solMass,
    ...         "age": [7.74, 9.8] * u.Gyr,
    ...     }
    ... )
    >>> snr_pool = [giant.meta["snr"]["g"] for giant in giants]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     written = write_mock_spectra(
    ...         catalog, emulator, giants, snr_pool, redshifts, tmp, seed=1
    ...     )
    ...     mock = Spectrum.read(Path(tmp) / written["file"][0])
    >>> written["file"].tolist()
    ['mock-kic1160789.fits.gz', 'mock-kic1569842.fits.gz']
    >>> written.colnames[-4:]
    ['file', 'snrg', 'redshift', 'template']
    >>> mock.meta["obsid"], mock.meta["data_release"], mock.meta["header"]["MOCKTEFF"]
    (1160789, 'DR10 MOCK', 4773.0)
    """
    if len(templates) == 0 or len(snr_pool) == 0 or len(redshift_pool) == 0:
        raise ValueError(
            "write_mock_spectra needs at least one template, S/N and redshift; got "
            f"{len(templates)} templates, {len(snr_pool)} S/N values and "
            f"{len(redshift_pool)} redshifts (select_templates keeps giants with S/N >= 20 "
            "and at least 95 % of pixels unmasked)"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    template_teff = np.array([float(t.meta["teff"]) for t in templates])
    continua = {}  # computed on first use: a short catalogue needs few templates
    snr_pool = np.asarray(snr_pool, dtype=np.float64)
    redshift_pool = np.asarray(redshift_pool, dtype=np.float64)
    labels = np.column_stack(
        [
            u.Quantity(catalog["teff"]).to_value(u.K),
            np.asarray(catalog["logg"], dtype=np.float64),
            np.asarray(catalog["feh"], dtype=np.float64),
        ]
    )
    n_nearest = min(n_nearest, len(templates))
    suffix = ".fits.gz" if compress else ".fits"
    files, snrs, redshifts, template_names = [], [], [], []
    for start in range(0, len(catalog), batch_size):
        stop = min(start + batch_size, len(catalog))
        normalized = emulator.predict(labels[start:stop])
        for i in range(start, stop):
            star = catalog[i]
            rng = np.random.default_rng([seed, int(star["kic"])])
            nearest = np.argsort(np.abs(template_teff - labels[i, 0]), kind="stable")
            chosen = int(nearest[rng.integers(n_nearest)])
            template = templates[chosen]
            if chosen not in continua:
                continua[chosen] = template_continuum(template)
            snr = rng.choice(snr_pool) * 10 ** (snr_jitter_dex * rng.standard_normal())
            redshift = rng.choice(redshift_pool)
            arrays = simulate_spectrum(
                emulator,
                normalized[i - start],
                template,
                snr,
                redshift,
                rng,
                continuum=continua[chosen],
            )
            name = f"mock-kic{int(star['kic'])}{suffix}"
            write_lamost_coadd(
                directory / name, arrays, _mock_header(template, star, arrays, redshift, name)
            )
            files.append(name)
            snrs.append(float(arrays["snr"][1]))
            redshifts.append(float(redshift))
            template_names.append(str(template.meta["header"].get("FILENAME", "")))
    result = catalog.copy()
    result["file"] = files
    result["snrg"] = snrs
    result["redshift"] = redshifts
    result["template"] = template_names
    return result


def select_templates(labels: QTable, spectra: Sequence) -> list:
    """Pick the giants whose spectra can lend a continuum and noise to mock spectra.

    Giants (``labels["giant"]``) with a g-band S/N of at least 20 and at least 95 % of
    pixels unmasked. Their LASP Teff is stored in each template's ``meta["teff"]``.

    Parameters
    ----------
    labels : `~astropy.table.QTable`
        From `read_labelled_lamost`.
    spectra : sequence of `~specutils.Spectrum`
        The matching spectra.

    Returns
    -------
    list of `~specutils.Spectrum`

    Examples
    --------
    With the real spectra:

    >>> from astro_spt.mock import read_labelled_lamost, select_templates
    >>> labels, spectra = read_labelled_lamost("shared/data", giants_only=True)  # doctest: +SKIP
    >>> len(select_templates(labels, spectra))  # doctest: +SKIP
    144

    The criteria, on four small spectra: a clean giant, a giant with 20 % of its
    pixels masked, a giant at S/N 10 and a clean dwarf. Only the first qualifies:

    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astropy.nddata import InverseVariance
    >>> from astropy.table import QTable
    >>> from specutils import Spectrum
    >>> def spectrum(snr_g, n_masked):
    ...     return Spectrum(
    ...         flux=np.ones(100) * u.one,
    ...         spectral_axis=np.linspace(4000.0, 5000.0, 100) * u.AA,
    ...         uncertainty=InverseVariance(np.full(100, snr_g**2)),
    ...         mask=np.arange(100) < n_masked,
    ...         meta={"snr": {"g": snr_g}},
    ...     )
    >>> spectra = [spectrum(40.0, 0), spectrum(40.0, 20), spectrum(10.0, 0), spectrum(60.0, 0)]
    >>> labels = QTable(
    ...     {
    ...         "teff": [4800.0, 4700.0, 4900.0, 5800.0] * u.K,
    ...         "snrg": [40.0, 40.0, 10.0, 60.0],
    ...         "giant": [True, True, True, False],
    ...     }
    ... )
    >>> templates = select_templates(labels, spectra)
    >>> len(templates), templates[0] is spectra[0], templates[0].meta["teff"]
    (1, True, 4800.0)
    """
    templates = []
    for row, spectrum in zip(labels, spectra, strict=True):
        good_fraction = 1 - np.mean(spectrum.mask) if spectrum.mask is not None else 1.0
        if (
            row["giant"]
            and row["snrg"] >= _TEMPLATE_MIN_SNR
            and good_fraction >= _TEMPLATE_MIN_GOOD_FRACTION
            and np.isfinite(spectrum.meta["snr"]["g"])
            and spectrum.meta["snr"]["g"] > 0
        ):
            spectrum.meta["teff"] = float(u.Quantity(row["teff"]).to_value(u.K))
            templates.append(spectrum)
    return templates
