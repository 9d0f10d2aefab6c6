"""Readers of survey spectra files (LAMOST low-resolution FITS), registered with specutils."""
