"""Readers of survey spectra files (LAMOST low-resolution FITS), registered with specutils.

The names are loaded on first use: ``import astro_spt`` imports this package to install
the reader registration, and must not pay for `astropy.io.fits` here.
"""

import importlib

__all__ = [
    "LAMOST_LRS_FORMAT",
    "example_files",
    "identify_lamost_lrs",
    "read_lamost_lrs",
    "read_spectrum",
    "register_lamost_readers",
]

_MODULE_OF = {"example_files": ".examples", "read_spectrum": ".reading"} | {
    name: ".lamost" for name in __all__ if name not in ("example_files", "read_spectrum")
}


def __getattr__(name):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'astro_spt.io' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
