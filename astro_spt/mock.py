"""The mock LAMOST × APOKASC-2 sample that the embedded default model is trained on.

No public set of LAMOST spectra with asteroseismic masses and ages is available (SPEC §3).
This module builds a stand-in from real ingredients:

* `mock_catalog`: every Kepler giant in both APOKASC-2 (Pinsonneault et al. 2018) and
  Miglio et al. (2021), with the APOKASC-2 mass, age, radius and ν_max (the labels the
  SPT paper trained on), the APOGEE [Fe/H] of Miglio et al., and Teff and logg from the
  asteroseismic scaling relations (`teff_from_numax`, `logg_from_mass_radius`);
* `read_labelled_lamost`: the real LAMOST spectra with LASP labels that a
  `~astro_spt.emulator.LAMOSTEmulator` is fitted to, and whose giants lend their
  wavelength grids, flux continua, masks and noise patterns to the mock spectra;
* `simulate_spectrum` and `write_mock_spectra`: emulated spectra of the catalogue's stars,
  written as LAMOST DR10 ``COADD`` files that ``Spectrum.read`` opens like real ones.

A model trained on these spectra learns age and mass only through what the emulator
puts into a spectrum: Teff, logg and [Fe/H] (``docs/mock.rst``).
"""

import gzip
import io
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import QTable, Table

from .emulator import LAMOSTEmulator, lamost_log_grid, normalize_spectra, pseudo_continuum

__all__ = [
    "DEFAULT_SEED",
    "LOGG_SUN",
    "NUMAX_SUN",
    "TEFF_SUN",
    "MockSample",
    "build_mock_sample",
    "logg_from_mass_radius",
    "mock_catalog",
    "read_apokasc2",
    "read_labelled_lamost",
    "read_miglio2021",
    "select_templates",
    "simulate_spectrum",
    "spectra_arrays",
    "summarize_residuals",
    "teff_from_numax",
    "template_continuum",
    "write_lamost_coadd",
    "write_mock_spectra",
]

NUMAX_SUN = 3090.0 * u.uHz
"""Solar frequency of maximum oscillation power (Huber et al. 2011, ApJ 743, 143)."""

TEFF_SUN = 5772.0 * u.K
"""Solar effective temperature (IAU 2015 Resolution B3)."""

LOGG_SUN = 4.438
"""Solar surface gravity, log10(g / cm s⁻²) (IAU 2015 Resolution B3: GM/R² = 274 m s⁻²)."""

APOKASC2_FILE = "APOKASC2_astroNN_ages.h5"
"""File name of APOKASC-2 in the shared catalogue folder (astroNN_ages' copy)."""

MIGLIO2021_FILE = "kepler_apogee_miglio2021.fit"
"""File name of Miglio et al. (2021, A&A 645, A85; VizieR J/A+A/645/A85)."""

_LOGG_LABEL = "log10(g / cm s-2)"

# pytest-doctestplus: the example of read_apokasc2 writes an HDF5 file.
__doctest_requires__ = {("read_apokasc2",): ["h5py"]}

# Template continua come from giants with clean spectra: at S/N < 20 the noise of the
# 50 Å running mean and of the ivar pattern shows in the mock spectra.
_TEMPLATE_MIN_SNR = 20.0
_TEMPLATE_MIN_GOOD_FRACTION = 0.95


def logg_from_mass_radius(mass, radius) -> np.ndarray:
    """Surface gravity from mass and radius: logg = 4.438 + log10 M - 2 log10 R (solar units).

    Parameters
    ----------
    mass, radius : `~astropy.units.Quantity`
        Mass and radius (any mass and length units).

    Returns
    -------
    logg : `~numpy.ndarray`
        log10(g / cm s⁻²).

    Examples
    --------
    >>> import astropy.units as u
    >>> from astro_spt.mock import logg_from_mass_radius
    >>> float(logg_from_mass_radius(1 * u.solMass, 1 * u.solRad))
    4.438
    >>> round(float(logg_from_mass_radius(1.2 * u.solMass, 10 * u.solRad)), 3)
    2.517
    """
    m = u.Quantity(mass).to_value(u.solMass)
    r = u.Quantity(radius).to_value(u.solRad)
    return LOGG_SUN + np.log10(m) - 2 * np.log10(r)


def teff_from_numax(numax, mass, radius, *, numax_sun=NUMAX_SUN, teff_sun=TEFF_SUN) -> u.Quantity:
    """Effective temperature from the ν_max scaling relation.

    ν_max / ν_max,☉ = (M / M☉) (R / R☉)⁻² (Teff / Teff,☉)^(-1/2) (Brown et al. 1991;
    Kjeldsen & Bedding 1995), solved for Teff:
    ``Teff = Teff,☉ · [(M / M☉) (R / R☉)⁻² ν_max,☉ / ν_max]²``.

    Parameters
    ----------
    numax : `~astropy.units.Quantity`
        Frequency of maximum oscillation power.
    mass, radius : `~astropy.units.Quantity`
    numax_sun, teff_sun : `~astropy.units.Quantity`, optional
        Solar reference values; default `NUMAX_SUN` (3,090 µHz) and `TEFF_SUN` (5,772 K).

    Returns
    -------
    teff : `~astropy.units.Quantity` [K]

    Examples
    --------
    >>> import astropy.units as u
    >>> from astro_spt.mock import teff_from_numax
    >>> teff_from_numax(3090 * u.uHz, 1 * u.solMass, 1 * u.solRad)
    <Quantity 5772. K>
    """
    ratio = (
        u.Quantity(mass).to_value(u.solMass)
        / u.Quantity(radius).to_value(u.solRad) ** 2
        * (u.Quantity(numax_sun) / u.Quantity(numax)).to_value(u.dimensionless_unscaled)
    )
    return u.Quantity(teff_sun).to(u.K) * ratio**2


def read_apokasc2(path) -> QTable:
    """Read APOKASC-2 (Pinsonneault et al. 2018, ApJS 239, 32) from astroNN_ages' HDF5 copy.

    Needs h5py. The file (``APOKASC2_astroNN_ages.h5``, Leung et al. 2023) holds one
    dataset per column for 6,355 Kepler giants.

    Parameters
    ----------
    path : str or `~pathlib.Path`

    Returns
    -------
    `~astropy.table.QTable`
        ``kic``, ``mass``, ``mass_err`` [solMass], ``age``, ``age_err`` [Gyr],
        ``radius``, ``radius_err`` [solRad], ``numax``, ``numax_err``, ``deltanu`` [µHz],
        ``evstate`` (1 red-giant branch, 2 core-helium burning, -1 unknown).

    Examples
    --------
    The real file, in the project's ``shared/data/catalogs``:

    >>> from astro_spt.mock import read_apokasc2
    >>> apokasc = read_apokasc2("shared/data/catalogs/APOKASC2_astroNN_ages.h5")  # doctest: +SKIP
    >>> len(apokasc)  # doctest: +SKIP
    6355

    The datasets it reads, in a two-star file written with h5py (the real file holds
    more, which are ignored):

    >>> import tempfile
    >>> from pathlib import Path
    >>> import h5py
    >>> columns = {
    ...     "KIC": [1027337, 1160789],
    ...     "Mass": [1.227, 0.875],
    ...     "Mass_err": [0.090, 0.147],
    ...     "Age": [6.28, 7.74],
    ...     "Age_err": [1.61, 2.78],
    ...     "R": [7.544, 10.86],
    ...     "R_err": [0.243, 0.817],
    ...     "Numax": [73.975, 25.209],
    ...     "Numax_err": [0.009, 0.015],
    ...     "Deltanu": [6.991, 3.545],
    ...     "ES": [1, 2],
    ... }
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "APOKASC2_astroNN_ages.h5"
    ...     with h5py.File(path, "w") as f:
    ...         for name, values in columns.items():
    ...             f[name] = values
    ...     apokasc = read_apokasc2(path)
    >>> apokasc["kic"].tolist(), apokasc["evstate"].tolist()
    ([1027337, 1160789], [1, 2])
    >>> apokasc["mass"], apokasc["age"]
    (<Quantity [1.227, 0.875] solMass>, <Quantity [6.28, 7.74] Gyr>)
    """
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading APOKASC-2 from its HDF5 file needs h5py") from exc
    with h5py.File(path, "r") as f:
        columns = {name: f[name][()] for name in f}
    table = QTable()
    table["kic"] = columns["KIC"].astype(np.int64)
    table["mass"] = columns["Mass"] * u.solMass
    table["mass_err"] = columns["Mass_err"] * u.solMass
    table["age"] = columns["Age"] * u.Gyr
    table["age_err"] = columns["Age_err"] * u.Gyr
    table["radius"] = columns["R"] * u.solRad
    table["radius_err"] = columns["R_err"] * u.solRad
    table["numax"] = columns["Numax"] * u.uHz
    table["numax_err"] = columns["Numax_err"] * u.uHz
    table["deltanu"] = columns["Deltanu"] * u.uHz
    table["evstate"] = columns["ES"].astype(np.int16)
    table.meta["source"] = "APOKASC-2 (Pinsonneault et al. 2018), astroNN_ages copy"
    return table


def read_miglio2021(path) -> QTable:
    """Read Miglio et al. (2021, A&A 645, A85), Kepler × APOGEE red giants.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The VizieR table J/A+A/645/A85 as FITS (``kepler_apogee_miglio2021.fit``).

    Returns
    -------
    `~astropy.table.QTable`
        ``kic``, ``apogee_id``, ``ra``, ``dec`` [deg], ``feh``, ``alpha_m`` (APOGEE
        [Fe/H] and [α/M], dex), ``mass`` [solMass], ``age`` [Gyr; NaN where the table
        gives none], ``radius`` [solRad], ``evstate`` (1 red-giant branch, 2
        core-helium burning).

    Examples
    --------
    The real table, in the project's ``shared/data/catalogs``:

    >>> from astro_spt.mock import read_miglio2021
    >>> path = "shared/data/catalogs/kepler_apogee_miglio2021.fit"
    >>> miglio = read_miglio2021(path)  # doctest: +SKIP
    >>> len(miglio)  # doctest: +SKIP
    3315

    The VizieR columns it reads, in a two-star FITS table whose second age is missing
    (masked):

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from astropy.table import Table
    >>> vizier = Table(
    ...     {
    ...         "KIC": [1569842, 1726291],
    ...         "APOGEE": ["2M19222920+3710285", "2M19300513+3717470"],
    ...         "RAdeg": [290.6217, 292.5214],
    ...         "DEdeg": [37.1746, 37.2964],
    ...         "__Fe_H_": [-0.12, 0.05],
    ...         "__alpha_M_": [0.03, 0.01],
    ...         "Mass": [1.00, 0.98],
    ...         "Age": np.ma.masked_array([9.8, 0.0], mask=[False, True]),
    ...         "Rad": [4.98, 4.68],
    ...         "evstate": [1, 2],
    ...     }
    ... )
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     vizier.write(Path(tmp) / "miglio2021.fits")
    ...     miglio = read_miglio2021(Path(tmp) / "miglio2021.fits")
    >>> miglio["apogee_id"].tolist(), miglio["feh"].tolist()
    (['2M19222920+3710285', '2M19300513+3717470'], [-0.12, 0.05])
    >>> miglio["age"]
    <Quantity [9.8, nan] Gyr>
    """
    raw = Table.read(path)
    table = QTable()
    table["kic"] = np.asarray(raw["KIC"], dtype=np.int64)
    table["apogee_id"] = np.char.strip(np.asarray(raw["APOGEE"]).astype(str))
    table["ra"] = _filled(raw["RAdeg"]) * u.deg
    table["dec"] = _filled(raw["DEdeg"]) * u.deg
    table["feh"] = _filled(raw["__Fe_H_"])
    table["alpha_m"] = _filled(raw["__alpha_M_"])
    table["mass"] = _filled(raw["Mass"]) * u.solMass
    table["age"] = _filled(raw["Age"]) * u.Gyr
    table["radius"] = _filled(raw["Rad"]) * u.solRad
    table["evstate"] = np.asarray(raw["evstate"], dtype=np.int16)
    table.meta["source"] = "Miglio et al. 2021, A&A 645, A85 (VizieR J/A+A/645/A85)"
    return table


def _filled(column) -> np.ndarray:
    """A (masked) table column as float64 with NaN for masked entries."""
    return np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)


def mock_catalog(
    catalog_dir=None,
    *,
    apokasc2=None,
    miglio2021=None,
    numax_sun=NUMAX_SUN,
    teff_sun=TEFF_SUN,
) -> QTable:
    """The labels of the mock sample: APOKASC-2 ∩ Miglio et al. (2021), matched on KIC.

    Mass, age, radius and ν_max come from APOKASC-2, the catalogue whose labels the SPT
    paper learned (§3.1); [Fe/H], [α/M], coordinates and evolutionary state from
    Miglio et al. (2021), whose own PARAM masses and ages are kept as
    ``mass_miglio2021`` and ``age_miglio2021`` for comparison (SPT paper §5.2).
    logg = 4.438 + log10 M - 2 log10 R and Teff from the ν_max scaling relation
    (`teff_from_numax`). With APOKASC-2's own M, R and ν_max the relation returns the
    temperature the APOKASC-2 radii and masses were computed with, up to its solar
    reference values.

    Parameters
    ----------
    catalog_dir : str or `~pathlib.Path`, optional
        Folder holding ``APOKASC2_astroNN_ages.h5`` and ``kepler_apogee_miglio2021.fit``
        (the project's ``shared/data/catalogs``).
    apokasc2, miglio2021 : str, `~pathlib.Path` or `~astropy.table.QTable`, optional
        The catalogues (a path, or a table from `read_apokasc2` / `read_miglio2021`);
        override ``catalog_dir``.
    numax_sun, teff_sun : `~astropy.units.Quantity`, optional
        Solar reference values of the ν_max scaling relation.

    Returns
    -------
    `~astropy.table.QTable`
        One row per star, sorted by KIC: ``kic``, ``apogee_id``, ``ra``, ``dec``,
        ``mass``, ``mass_err`` [solMass], ``age``, ``age_err`` [Gyr], ``radius``
        [solRad], ``numax`` [µHz], ``feh``, ``alpha_m`` [dex], ``teff`` [K], ``logg``
        [log10(g / cm s⁻²)], ``evstate``, ``mass_miglio2021``, ``age_miglio2021``.
        ``meta`` records the sources, the numbers of stars in each catalogue and in the
        match, and the solar reference values.

    Raises
    ------
    ValueError
        If neither ``catalog_dir`` nor both catalogues are given.

    Examples
    --------
    The mock sample's catalogue, from the real files:

    >>> from astro_spt.mock import mock_catalog
    >>> catalog = mock_catalog("shared/data/catalogs")  # doctest: +SKIP
    >>> catalog.meta["n_apokasc2"], catalog.meta["n_miglio2021"], len(catalog)  # doctest: +SKIP
    (6355, 3315, 3305)

    The match, on two small catalogues given as tables with the columns that
    `read_apokasc2` and `read_miglio2021` return (KIC 1160789 is in both):

    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> apokasc = QTable(
    ...     {
    ...         "kic": [1027337, 1160789],
    ...         "mass": [1.227, 0.875] * u.solMass,
    ...         "mass_err": [0.090, 0.147] * u.solMass,
    ...         "age": [6.28, 7.74] * u.Gyr,
    ...         "age_err": [1.61, 2.78] * u.Gyr,
    ...         "radius": [7.544, 10.86] * u.solRad,
    ...         "numax": [73.975, 25.209] * u.uHz,
    ...     }
    ... )
    >>> miglio = QTable(
    ...     {
    ...         "kic": [1160789, 1569842],
    ...         "apogee_id": ["2M19233280+3652207", "2M19222920+3710285"],
    ...         "ra": [290.8867, 290.6217] * u.deg,
    ...         "dec": [36.8724, 37.1746] * u.deg,
    ...         "feh": [-0.28, -0.12],
    ...         "alpha_m": [0.05, 0.03],
    ...         "mass": [0.91, 1.00] * u.solMass,
    ...         "age": [7.1, 9.8] * u.Gyr,
    ...         "evstate": [2, 1],
    ...     }
    ... )
    >>> catalog = mock_catalog(apokasc2=apokasc, miglio2021=miglio)
    >>> catalog["kic"].tolist(), catalog.meta["n_matched"]
    ([1160789], 1)

    Mass and age from APOKASC-2, [Fe/H] from Miglio et al., Teff and logg from the
    scaling relations:

    >>> star = catalog[0]
    >>> star["mass"], star["age"], float(star["feh"])
    (<Quantity 0.875 solMass>, <Quantity 7.74 Gyr>, -0.28)
    >>> round(float(star["teff"].to_value(u.K))), round(float(star["logg"]), 3)
    (4773, 2.308)
    """
    if apokasc2 is None or miglio2021 is None:
        if catalog_dir is None:
            raise ValueError("give catalog_dir, or both apokasc2 and miglio2021")
        catalog_dir = Path(catalog_dir)
    if apokasc2 is None:
        apokasc2 = catalog_dir / APOKASC2_FILE
    if miglio2021 is None:
        miglio2021 = catalog_dir / MIGLIO2021_FILE
    apokasc = apokasc2 if isinstance(apokasc2, Table) else read_apokasc2(apokasc2)
    miglio = miglio2021 if isinstance(miglio2021, Table) else read_miglio2021(miglio2021)

    common, ia, im = np.intersect1d(apokasc["kic"], miglio["kic"], return_indices=True)
    a, m = apokasc[ia], miglio[im]
    table = QTable()
    table["kic"] = common
    table["apogee_id"] = m["apogee_id"]
    table["ra"], table["dec"] = m["ra"], m["dec"]
    for name in ("mass", "mass_err", "age", "age_err", "radius", "numax"):
        table[name] = a[name]
    table["feh"], table["alpha_m"] = m["feh"], m["alpha_m"]
    table["teff"] = teff_from_numax(
        a["numax"], a["mass"], a["radius"], numax_sun=numax_sun, teff_sun=teff_sun
    )
    table["logg"] = logg_from_mass_radius(a["mass"], a["radius"])
    table["evstate"] = m["evstate"]
    table["mass_miglio2021"] = m["mass"]
    table["age_miglio2021"] = m["age"]
    table["logg"].description = _LOGG_LABEL
    table["feh"].description = "[Fe/H] (APOGEE, Miglio et al. 2021), dex"
    table["alpha_m"].description = "[alpha/M] (APOGEE, Miglio et al. 2021), dex"
    table["teff"].description = "from numax, mass and radius by the numax scaling relation"
    table.meta.update(
        {
            "labels": "mass, age, radius, numax: APOKASC-2; feh, alpha_m, ra, dec, "
            "evstate: Miglio et al. 2021",
            "apokasc2": apokasc.meta.get("source", "APOKASC-2"),
            "miglio2021": miglio.meta.get("source", "Miglio et al. 2021"),
            "n_apokasc2": len(apokasc),
            "n_miglio2021": len(miglio),
            "n_matched": len(table),
            "numax_sun_uhz": float(u.Quantity(numax_sun).to_value(u.uHz)),
            "teff_sun_k": float(u.Quantity(teff_sun).to_value(u.K)),
            "logg_sun": LOGG_SUN,
        }
    )
    return table


def read_labelled_lamost(data_dir, *, teff_max: float | None = None, giants_only: bool = False):
    """Read the real LAMOST spectra that carry LASP labels (DR10 and DR1).

    Parameters
    ----------
    data_dir : str or `~pathlib.Path`
        The project's ``shared/data`` folder (with ``lamost-lrs/dr10`` and
        ``lamost-lrs/dr1``).
    teff_max : float, optional
        Read only stars with a LASP Teff below this (K).
    giants_only : bool, optional
        Read only the giants.

    Returns
    -------
    labels : `~astropy.table.QTable`
        One row per spectrum: ``file``, ``release``, ``obsid``, ``teff`` [K], ``logg``,
        ``feh``, ``redshift``, ``snrg`` and ``giant`` (logg < 3.8 and Teff < 5,600 K,
        the DR10 folder's giant-candidate rule, applied to DR1 too).
    spectra : list of `~specutils.Spectrum`
        The spectra, read with `astro_spt.io.read_lamost_lrs`.

    Examples
    --------
    The giants of the project's data folder:

    >>> from astro_spt.mock import read_labelled_lamost
    >>> labels, spectra = read_labelled_lamost("shared/data", giants_only=True)  # doctest: +SKIP
    >>> len(spectra), sorted(set(labels["release"]))  # doctest: +SKIP
    (190, ['DR1', 'DR10'])

    The layout it expects, in a folder holding two of the package's example DR1
    spectra (a giant and a dwarf) and an empty DR10 label file. The label files
    give the columns below (DR1's ``rv`` in km/s, DR10's redshift ``z``):

    >>> import shutil
    >>> import tempfile
    >>> from pathlib import Path
    >>> from astro_spt.io import example_files
    >>> giant, dwarf = example_files()[0], example_files()[2]
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = Path(tmp.name) / "lamost-lrs"
    >>> for release in ("dr10", "dr1"):
    ...     (root / release / "spectra").mkdir(parents=True)
    >>> _ = (root / "dr10" / "labels.csv").write_text("file,obsid,teff,logg,feh,z,snrg\\n")
    >>> _ = (root / "dr1" / "labels.csv").write_text(
    ...     "filename,obsid,teff,logg,feh,rv,snrg\\n"
    ...     f"{giant.name},906023,4915.72,2.91,-0.398,13.33,17.07\\n"
    ...     f"{dwarf.name},906160,4658.38,4.516,-0.021,15.37,9.92\\n"
    ... )
    >>> for path in (giant, dwarf):
    ...     _ = shutil.copy(path, root / "dr1" / "spectra")
    >>> labels, spectra = read_labelled_lamost(tmp.name)
    >>> labels["obsid"].tolist(), labels["giant"].tolist()
    ([906023, 906160], [True, False])
    >>> labels["teff"].unit, spectra[0].flux.shape
    (Unit("K"), (3904,))
    >>> labels, spectra = read_labelled_lamost(tmp.name, giants_only=True)
    >>> labels["obsid"].tolist()
    [906023]
    >>> tmp.cleanup()
    """
    from .io.lamost import read_lamost_lrs

    root = Path(data_dir) / "lamost-lrs"
    dr10 = Table.read(root / "dr10" / "labels.csv", format="ascii.csv")
    dr1 = Table.read(root / "dr1" / "labels.csv", format="ascii.csv")
    rows = {
        "file": [str(root / "dr10" / "spectra" / f) for f in dr10["file"]]
        + [str(root / "dr1" / "spectra" / f) for f in dr1["filename"]],
        "release": ["DR10"] * len(dr10) + ["DR1"] * len(dr1),
        "obsid": np.concatenate([dr10["obsid"], dr1["obsid"]]).astype(np.int64),
        "teff": np.concatenate([dr10["teff"], dr1["teff"]]).astype(np.float64),
        "logg": np.concatenate([dr10["logg"], dr1["logg"]]).astype(np.float64),
        "feh": np.concatenate([dr10["feh"], dr1["feh"]]).astype(np.float64),
        # DR1's labels give rv = c·z in km/s rather than z.
        "redshift": np.concatenate(
            [dr10["z"], np.asarray(dr1["rv"], dtype=np.float64) / 299_792.458]
        ),
        "snrg": np.concatenate([dr10["snrg"], dr1["snrg"]]).astype(np.float64),
    }
    labels = QTable(rows)
    labels["teff"].unit = u.K
    labels["giant"] = (labels["logg"] < 3.8) & (labels["teff"].value < 5600)
    keep = np.ones(len(labels), dtype=bool) if teff_max is None else labels["teff"].value < teff_max
    if giants_only:
        keep &= labels["giant"]
    labels = labels[keep]
    spectra = [read_lamost_lrs(path) for path in labels["file"]]
    return labels, spectra


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
    >>> from astro_spt.emulator import normalize_spectra
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
        Width of the Gaussian kernel of `~astro_spt.emulator.pseudo_continuum`.

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
    (`~astro_spt.emulator.pseudo_continuum`), its masks and the wavelength dependence of
    its noise. The emulated flux, shifted by ``redshift``, is multiplied by that
    continuum; the template's inverse variance is scaled so that the g-band S/N becomes
    ``snr_g``, and Gaussian noise of that variance is added. Pixels the template masks
    (ivar = 0) keep ivar = 0 and the noiseless flux; pixels where the template's flux is
    exactly 0 (LAMOST's fill value at the red end) stay 0.

    Parameters
    ----------
    emulator : `~astro_spt.emulator.LAMOSTEmulator`
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
    >>> from astro_spt.emulator import LAMOSTEmulator, lamost_log_grid, normalize_spectra
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
    emulator : `~astro_spt.emulator.LAMOSTEmulator`
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
    >>> from astro_spt.emulator import LAMOSTEmulator, lamost_log_grid, normalize_spectra
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


DEFAULT_SEED = 240104900
"""Seed of the default mock sample (the SPT paper's arXiv number, 2401.04900)."""


@dataclass
class MockSample:
    """What `build_mock_sample` made.

    Attributes
    ----------
    emulator : `~astro_spt.emulator.LAMOSTEmulator`
        Fitted on the real spectra of the training set.
    catalog : `~astropy.table.QTable`
        `mock_catalog` with, when spectra were written, ``file``, ``snrg``,
        ``redshift`` and ``template``.
    residuals : `~astropy.table.QTable`
        One row per real spectrum: ``file``, ``obsid``, ``set`` (``"train"`` or
        ``"holdout"``), ``giant``, the labels, ``snrg`` and the statistics of
        `~astro_spt.emulator.LAMOSTEmulator.residual_statistics`.
    summary : `~astropy.table.QTable`
        `summarize_residuals` of ``residuals``.
    timings : dict of float
        Seconds per step.
    paths : dict of `~pathlib.Path`
        Files written: ``emulator``, ``catalog``, ``residuals``, ``spectra`` (folder).

    Examples
    --------
    `build_mock_sample` returns one (about half a minute on the project's data):

    >>> from astro_spt.mock import MockSample, build_mock_sample
    >>> sample = build_mock_sample("shared/data", "mock", limit=3)  # doctest: +SKIP
    >>> sample.emulator  # doctest: +SKIP
    <LAMOSTEmulator order=2 labels=['teff', 'logg', 'feh'] (3909 pixels)>
    >>> len(sample.catalog), len(sample.residuals), sorted(sample.paths)  # doctest: +SKIP
    (3, 1263, ['catalog', 'emulator', 'residuals', 'spectra'])

    A plain dataclass, which can also be made by hand:

    >>> from astropy.table import QTable
    >>> from astro_spt.emulator import LAMOSTEmulator
    >>> sample = MockSample(
    ...     emulator=LAMOSTEmulator(),
    ...     catalog=QTable({"kic": [1160789, 1569842]}),
    ...     residuals=QTable(),
    ...     summary=QTable(),
    ... )
    >>> sample.emulator
    <LAMOSTEmulator order=2 labels=['teff', 'logg', 'feh'] (unfitted)>
    >>> len(sample.catalog), sample.timings, sample.paths
    (2, {}, {})
    """

    emulator: LAMOSTEmulator
    catalog: QTable
    residuals: QTable
    summary: QTable
    timings: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)


def summarize_residuals(residuals: QTable) -> QTable:
    """Summarise emulator residuals of real spectra per set (training or held-out) and type.

    Parameters
    ----------
    residuals : `~astropy.table.QTable`
        With columns ``set``, ``giant``, ``chi2_per_pixel``, ``chi2_per_pixel_scatter``,
        ``median_abs_z`` and ``rms_residual``, as in `MockSample.residuals`.

    Returns
    -------
    `~astropy.table.QTable`
        One row per group (``"holdout giants"``, ``"train giants"``, the same with a
        g-band S/N of at least 50, and ``"train other"``, the cool dwarfs):
        ``n``, the median and mean χ²/pixel against the noise alone, the median
        χ²/pixel against noise and intrinsic scatter, the median of
        ``|residual| / σ`` (0.674 for residuals that are pure Gaussian noise) and the
        median rms residual in normalised flux.

    Examples
    --------
    Four spectra's statistics (as `~astro_spt.emulator.LAMOSTEmulator.residual_statistics`
    gives them): three giants, one of them held out, and a dwarf:

    >>> from astropy.table import QTable
    >>> from astro_spt.mock import summarize_residuals
    >>> residuals = QTable(
    ...     {
    ...         "set": ["train", "train", "holdout", "train"],
    ...         "giant": [True, True, True, False],
    ...         "snrg": [30.0, 80.0, 60.0, 40.0],
    ...         "chi2_per_pixel": [1.2, 2.0, 1.5, 1.1],
    ...         "chi2_per_pixel_scatter": [1.0, 1.1, 1.2, 1.0],
    ...         "median_abs_z": [0.70, 0.80, 0.75, 0.68],
    ...         "rms_residual": [0.040, 0.020, 0.030, 0.030],
    ...     }
    ... )
    >>> summary = summarize_residuals(residuals)
    >>> for row in summary:
    ...     print(row["group"], row["n"], round(row["chi2_median"], 2))
    holdout giants 1 1.5
    train giants 2 1.6
    holdout giants S/N>=50 1 1.5
    train giants S/N>=50 1 2.0
    train other 1 1.1
    """
    holdout = (residuals["set"] == "holdout") & residuals["giant"]
    train = (residuals["set"] == "train") & residuals["giant"]
    # At high S/N the residuals show the model's own errors rather than the noise.
    bright = np.asarray(residuals["snrg"]) >= 50
    groups = {
        "holdout giants": holdout,
        "train giants": train,
        "holdout giants S/N>=50": holdout & bright,
        "train giants S/N>=50": train & bright,
        "train other": (residuals["set"] == "train") & ~residuals["giant"],
    }
    rows = []
    for name, selected in groups.items():
        chosen = residuals[selected]
        if len(chosen) == 0:
            continue
        rows.append(
            {
                "group": name,
                "n": len(chosen),
                "chi2_median": float(np.median(chosen["chi2_per_pixel"])),
                "chi2_mean": float(np.mean(chosen["chi2_per_pixel"])),
                "chi2_scatter_median": float(np.median(chosen["chi2_per_pixel_scatter"])),
                "median_abs_z": float(np.median(chosen["median_abs_z"])),
                "rms_median": float(np.median(chosen["rms_residual"])),
            }
        )
    return QTable(rows=rows)


def build_mock_sample(
    data_dir,
    output_dir,
    *,
    seed: int = DEFAULT_SEED,
    teff_max: float = 6500.0,
    order: int = 2,
    holdout_fraction: float = 0.2,
    limit: int | None = None,
    write_spectra: bool = True,
    log=None,
) -> MockSample:
    """Fit the emulator to the real LAMOST spectra and write the mock sample.

    1. `read_labelled_lamost`: the DR10 and DR1 spectra with LASP Teff < ``teff_max``.
       The fit takes giants and dwarfs together: the dwarfs help pin down the
       temperature and metallicity terms. A 5-fold cross-validation on the training
       giants of the default split preferred the quadratic model to the cubic one at
       every limit, and 6,500 K (narrowly) to 5,600, 6,000 and 7,000 K
       (``docs/mock.rst``).
    2. A fraction ``holdout_fraction`` of the giants, drawn with ``seed``, is held out;
       the emulator (`~astro_spt.emulator.LAMOSTEmulator` of degree ``order``) is
       fitted to the rest and its residuals measured on both.
    3. `mock_catalog` from ``data_dir/catalogs``; `select_templates` among all the
       giants; `write_mock_spectra` into ``output_dir/spectra``.

    Writes ``lamost_emulator.npz``, ``emulator_residuals.ecsv`` and
    ``mock_catalog.ecsv`` into ``output_dir``.

    Parameters
    ----------
    data_dir : str or `~pathlib.Path`
        The project's ``shared/data`` folder.
    output_dir : str or `~pathlib.Path`
        Created if needed.
    seed : int, optional
        Seed of the held-out split and of the mock spectra.
    teff_max : float, optional
        LASP Teff limit of the emulator's training spectra (K).
    order : int, optional
        Degree of the emulator polynomial.
    holdout_fraction : float, optional
    limit : int, optional
        Write spectra for only the first ``limit`` stars of the catalogue (for a quick
        look); the catalogue keeps all stars only when ``limit`` is None.
    write_spectra : bool, optional
        Write the mock spectra (else only the emulator and the catalogue).
    log : callable, optional
        Called with progress messages (e.g. `print`).

    Returns
    -------
    `MockSample`

    Examples
    --------
    It needs the project's ``shared/data`` folder and takes about half a minute
    (reading 1,263 spectra and fitting the emulator), so it is not run here. With
    ``limit=3``, spectra are written for the first three stars of the catalogue only:

    >>> from astro_spt.mock import DEFAULT_SEED, build_mock_sample
    >>> DEFAULT_SEED
    240104900
    >>> sample = build_mock_sample("shared/data", "mock", limit=3)  # doctest: +SKIP
    >>> sample.catalog.meta["n_matched"], len(sample.catalog)  # doctest: +SKIP
    (3305, 3)
    >>> sample.catalog["file"].tolist()  # doctest: +SKIP
    ['mock-kic1027337.fits.gz', 'mock-kic1161447.fits.gz', 'mock-kic1163621.fits.gz']
    >>> sample.paths["catalog"].name, sample.paths["emulator"].name  # doctest: +SKIP
    ('mock_catalog.ecsv', 'lamost_emulator.npz')

    The emulator's residuals on the real spectra, per group (``sample.summary``):

    >>> for row in sample.summary:  # doctest: +SKIP
    ...     print(row["group"], row["n"], round(row["median_abs_z"], 2))
    holdout giants 38 0.76
    train giants 152 0.76
    holdout giants S/N>=50 20 1.03
    train giants S/N>=50 77 0.94
    train other 1073 0.67
    """
    log = log or (lambda message: None)
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timings, paths = {}, {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now
        log(f"  {name}: {timings[name]:.1f} s")

    labels, spectra = read_labelled_lamost(data_dir, teff_max=teff_max)
    log(f"read {len(spectra)} labelled LAMOST spectra with Teff < {teff_max:g} K")
    lap("read spectra")

    wavelength, flux, ivar = spectra_arrays(spectra)
    grid = lamost_log_grid()
    flux, ivar = normalize_spectra(wavelength, flux, ivar, labels["redshift"], grid)
    lap("normalise")

    rng = np.random.default_rng(seed)
    giants = np.flatnonzero(labels["giant"])
    holdout = rng.permutation(giants)[: round(holdout_fraction * giants.size)]
    is_train = np.ones(len(labels), dtype=bool)
    is_train[holdout] = False
    emulator = LAMOSTEmulator(order=order).fit(
        grid, flux[is_train], ivar[is_train], labels[is_train]
    )
    log(f"fitted {emulator!r} to {is_train.sum()} spectra; {holdout.size} giants held out")
    lap("fit emulator")

    stats = emulator.residual_statistics(flux, ivar, labels)
    residuals = QTable(
        {
            "file": [Path(f).name for f in labels["file"]],
            "obsid": labels["obsid"],
            "set": np.where(is_train, "train", "holdout"),
            "giant": labels["giant"],
            "teff": labels["teff"],
            "logg": labels["logg"],
            "feh": labels["feh"],
            "snrg": labels["snrg"],
            **stats,
        }
    )
    summary = summarize_residuals(residuals)
    paths["emulator"] = emulator.save(output_dir / "lamost_emulator.npz")
    paths["residuals"] = output_dir / "emulator_residuals.ecsv"
    residuals.write(paths["residuals"], overwrite=True)
    lap("evaluate")

    catalog = mock_catalog(data_dir / "catalogs")
    log(
        f"APOKASC-2: {catalog.meta['n_apokasc2']} stars, Miglio et al. 2021: "
        f"{catalog.meta['n_miglio2021']}, matched on KIC: {catalog.meta['n_matched']}"
    )
    inside = emulator.in_training_range(
        np.column_stack([catalog["teff"].to_value(u.K), catalog["logg"], catalog["feh"]])
    )
    catalog.meta["n_inside_emulator_range"] = int(inside.sum())
    lap("catalogue")

    if write_spectra:
        templates = select_templates(labels, spectra)
        giant = np.asarray(labels["giant"])
        chosen = catalog if limit is None else catalog[:limit]
        paths["spectra"] = output_dir / "spectra"
        chosen = write_mock_spectra(
            chosen,
            emulator,
            templates,
            labels["snrg"][giant],
            labels["redshift"][giant],
            paths["spectra"],
            seed=seed,
        )
        catalog = chosen
        log(f"wrote {len(chosen)} mock spectra from {len(templates)} templates")
        lap("write spectra")
    catalog.meta["seed"] = seed
    catalog.meta["emulator"] = paths["emulator"].name
    paths["catalog"] = output_dir / "mock_catalog.ecsv"
    catalog.write(paths["catalog"], overwrite=True)
    return MockSample(emulator, catalog, residuals, summary, timings, paths)
