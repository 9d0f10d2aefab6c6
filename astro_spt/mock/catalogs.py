"""The labels of the mock sample and the real spectra it is made from.

This module owns the inputs of the default model's mock LAMOST × APOKASC-2 sample:

* `read_apokasc2` and `read_miglio2021`: APOKASC-2 (Pinsonneault et al. 2018) and
  Miglio et al. (2021), the two catalogues of Kepler giants;
* `mock_catalog`: every giant in both, with the APOKASC-2 mass, age, radius and ν_max,
  the APOGEE [Fe/H] of Miglio et al., and Teff and logg from the asteroseismic scaling
  relations (`teff_from_numax`, `logg_from_mass_radius`, with the solar reference
  values `NUMAX_SUN`, `TEFF_SUN` and `LOGG_SUN`) from the files named `APOKASC2_FILE`
  and `MIGLIO2021_FILE` in a catalogue folder;
* `read_labelled_lamost`: the real LAMOST spectra with LASP labels that the emulator
  (`astro_spt.mock.emulator`) is fitted to and whose giants lend their grids, continua,
  masks and noise to the mock spectra (`astro_spt.mock.spectra`).
"""

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import QTable, Table

__all__ = [
    "APOKASC2_FILE",
    "LOGG_SUN",
    "MIGLIO2021_FILE",
    "NUMAX_SUN",
    "TEFF_SUN",
    "logg_from_mass_radius",
    "mock_catalog",
    "read_apokasc2",
    "read_labelled_lamost",
    "read_miglio2021",
    "teff_from_numax",
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
    from ..io.lamost import read_lamost_lrs

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
