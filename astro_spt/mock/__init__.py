"""The default model's training-data machinery: the mock LAMOST × APOKASC-2 sample.

No public set of LAMOST spectra with asteroseismic masses and ages is available (SPEC §3).
The embedded default model is therefore trained on a stand-in built from real
ingredients, and this sub-package builds it. It is not needed to estimate labels: only
to remake the default model's training set (``scripts/build_mock_sample.py``,
``scripts/build_default_model.py``). Its modules:

* `astro_spt.mock.catalogs`: `mock_catalog`, every Kepler giant in both APOKASC-2
  (Pinsonneault et al. 2018) and Miglio et al. (2021), with the APOKASC-2 mass, age,
  radius and ν_max (the labels the SPT paper trained on), the APOGEE [Fe/H] of Miglio
  et al., and Teff and logg from the asteroseismic scaling relations
  (`teff_from_numax`, `logg_from_mass_radius`); `read_labelled_lamost`, the real LAMOST
  spectra with LASP labels;
* `astro_spt.mock.emulator`: `LAMOSTEmulator`, a data-driven model of the normalised
  LAMOST flux as a function of (Teff, logg, [Fe/H]), fitted to those real spectra;
* `astro_spt.mock.spectra`: `simulate_spectrum` and `write_mock_spectra`, emulated
  spectra of the catalogue's stars on real giants' grids, continua, masks and noise
  (`select_templates`), written as LAMOST DR10 ``COADD`` files that ``Spectrum.read``
  opens like real ones (`write_lamost_coadd`);
* `astro_spt.mock.sample`: `build_mock_sample`, all of it in one call, seeded by
  `DEFAULT_SEED`, returning a `MockSample`.

Every public name is importable from ``astro_spt.mock``. A model trained on these
spectra learns age and mass only through what the emulator puts into a spectrum: Teff,
logg and [Fe/H] (``docs/mock.rst``).
"""

from .catalogs import (
    APOKASC2_FILE,
    LOGG_SUN,
    MIGLIO2021_FILE,
    NUMAX_SUN,
    TEFF_SUN,
    logg_from_mass_radius,
    mock_catalog,
    read_apokasc2,
    read_labelled_lamost,
    read_miglio2021,
    teff_from_numax,
)
from .emulator import LAMOSTEmulator, lamost_log_grid, normalize_spectra, pseudo_continuum
from .sample import DEFAULT_SEED, MockSample, build_mock_sample, summarize_residuals
from .spectra import (
    select_templates,
    simulate_spectrum,
    spectra_arrays,
    template_continuum,
    write_lamost_coadd,
    write_mock_spectra,
)

__all__ = [
    "APOKASC2_FILE",
    "DEFAULT_SEED",
    "LOGG_SUN",
    "MIGLIO2021_FILE",
    "NUMAX_SUN",
    "TEFF_SUN",
    "LAMOSTEmulator",
    "MockSample",
    "build_mock_sample",
    "lamost_log_grid",
    "logg_from_mass_radius",
    "mock_catalog",
    "normalize_spectra",
    "pseudo_continuum",
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
