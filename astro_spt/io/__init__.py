"""Readers of survey spectra files (LAMOST low-resolution FITS), registered with specutils."""

from .examples import example_files
from .lamost import LAMOST_LRS_FORMAT, identify_lamost_lrs, read_lamost_lrs, register_lamost_readers

__all__ = [
    "LAMOST_LRS_FORMAT",
    "example_files",
    "identify_lamost_lrs",
    "read_lamost_lrs",
    "register_lamost_readers",
]
