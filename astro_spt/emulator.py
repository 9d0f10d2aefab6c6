"""Moved: the LAMOST spectrum emulator now lives in `astro_spt.mock.emulator`.

It is part of the default model's training-data machinery (`astro_spt.mock`). This
module keeps ``from astro_spt.emulator import LAMOSTEmulator`` (and the other public
names) working; new code imports from `astro_spt.mock.emulator` or `astro_spt.mock`.
"""

from .mock.emulator import LAMOSTEmulator, lamost_log_grid, normalize_spectra, pseudo_continuum

__all__ = [
    "LAMOSTEmulator",
    "lamost_log_grid",
    "normalize_spectra",
    "pseudo_continuum",
]
