"""The mock sample in one call: `build_mock_sample` and what it returns, `MockSample`.

This module owns the recipe that makes the default model's training data: read the
labelled LAMOST spectra (`astro_spt.mock.catalogs`), fit the emulator to them with a
seeded fraction of the giants held out (`astro_spt.mock.emulator`), measure its
residuals (`summarize_residuals`), match the catalogues and write the mock spectra
(`astro_spt.mock.spectra`), all from `DEFAULT_SEED` unless told otherwise.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import QTable

from .catalogs import mock_catalog, read_labelled_lamost
from .emulator import LAMOSTEmulator, lamost_log_grid, normalize_spectra
from .spectra import select_templates, spectra_arrays, write_mock_spectra

__all__ = [
    "DEFAULT_SEED",
    "MockSample",
    "build_mock_sample",
    "summarize_residuals",
]

DEFAULT_SEED = 240104900
"""Seed of the default mock sample (the SPT paper's arXiv number, 2401.04900)."""


@dataclass
class MockSample:
    """What `build_mock_sample` made.

    Attributes
    ----------
    emulator : `~astro_spt.mock.LAMOSTEmulator`
        Fitted on the real spectra of the training set.
    catalog : `~astropy.table.QTable`
        `mock_catalog` with, when spectra were written, ``file``, ``snrg``,
        ``redshift`` and ``template``.
    residuals : `~astropy.table.QTable`
        One row per real spectrum: ``file``, ``obsid``, ``set`` (``"train"`` or
        ``"holdout"``), ``giant``, the labels, ``snrg`` and the statistics of
        `~astro_spt.mock.LAMOSTEmulator.residual_statistics`.
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
    >>> from astro_spt.mock.emulator import LAMOSTEmulator
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
    Four spectra's statistics (as `~astro_spt.mock.LAMOSTEmulator.residual_statistics`
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
       the emulator (`~astro_spt.mock.LAMOSTEmulator` of degree ``order``) is
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
