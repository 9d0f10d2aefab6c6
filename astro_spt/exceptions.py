"""Warnings and errors raised by `astro_spt`."""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = ["AstroSPTError", "AstroSPTWarning"]


class AstroSPTWarning(AstropyUserWarning):
    """Base class of the warnings issued by `astro_spt`."""


class AstroSPTError(Exception):
    """Base class of the errors raised by `astro_spt`."""
