"""Warnings and errors raised by `astro_spt`."""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = ["AstroSPTError", "AstroSPTWarning", "LAMOSTFormatError"]


class AstroSPTWarning(AstropyUserWarning):
    """Base class of the warnings issued by `astro_spt`.

    Examples
    --------
    >>> import warnings
    >>> from astro_spt.exceptions import AstroSPTWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", AstroSPTWarning)  # silence astro_spt only
    """


class AstroSPTError(Exception):
    """Base class of the errors raised by `astro_spt`.

    Examples
    --------
    >>> from astro_spt.exceptions import AstroSPTError, HubError, LAMOSTFormatError
    >>> issubclass(LAMOSTFormatError, AstroSPTError), issubclass(HubError, AstroSPTError)
    (True, True)
    """


class LAMOSTFormatError(AstroSPTError, ValueError):
    """A file is not a readable LAMOST low-resolution spectrum.

    The message names the file and the reason: not a LAMOST file, a medium-resolution
    (MRS) file, an unknown layout, or a truncated or corrupt file.

    Examples
    --------
    >>> import io
    >>> from astro_spt.exceptions import LAMOSTFormatError
    >>> from astro_spt.io import read_lamost_lrs
    >>> try:
    ...     read_lamost_lrs(io.BytesIO(b"not a FITS file"))
    ... except LAMOSTFormatError:
    ...     print("refused")
    refused
    """


# Estimator bundles (astro_spt.bundle) and the model hub (astro_spt.hub).
__all__ += [
    "BundleError",
    "BundleIntegrityError",
    "HubConnectionError",
    "HubEntryNotFoundError",
    "HubError",
    "HubIntegrityError",
    "HubRepositoryNotFoundError",
    "HubRevisionNotFoundError",
    "ModelNotFoundError",
    "OfflineCacheMissError",
    "UnsupportedSchemaError",
]


class ModelNotFoundError(AstroSPTError):
    """No estimator bundle where one was asked for: no such directory, or no embedded model."""


class BundleError(AstroSPTError):
    """A directory is not a valid estimator bundle (missing or malformed ``config.json``)."""


class BundleIntegrityError(BundleError):
    """A file of a bundle is missing or differs from the sha256 recorded in ``config.json``.

    ``filename`` is the name of the offending file, ``path`` its full path.
    """

    def __init__(self, message: str, filename: str | None = None, path=None):
        super().__init__(message)
        self.filename = filename
        self.path = path


class UnsupportedSchemaError(BundleError):
    """A bundle was written by a newer `astro_spt` with a schema version this one cannot read."""


class HubError(AstroSPTError):
    """A model could not be fetched from (or published to) the Hugging Face Hub."""


class HubConnectionError(HubError):
    """The hub could not be reached, timed out or answered with a server error."""


class HubRepositoryNotFoundError(HubError):
    """The repository does not exist on the hub, or is private and no valid token was given."""


class HubRevisionNotFoundError(HubError):
    """The repository exists but the requested branch, tag or commit does not."""


class HubEntryNotFoundError(HubError):
    """A file the bundle needs is missing from the repository at the requested revision."""


class OfflineCacheMissError(HubError):
    """Network access is disabled and the model is not in the local cache."""


class HubIntegrityError(HubError, BundleIntegrityError):
    """A downloaded file does not match its recorded sha256; it was removed from the cache."""


# Preprocessing (astro_spt.preprocess).
__all__ += ["InvalidConfigError", "InvalidSpectrumError"]


class InvalidSpectrumError(AstroSPTError, ValueError):
    """A spectrum cannot be preprocessed.

    Raised for malformed input (no spectral unit, unsorted or duplicate wavelengths, flux
    and uncertainty of different shapes, no data on the model grid), and for spectra that
    would be flagged ``unreadable`` when ``strict=True`` is asked for. The message names the
    spectrum (its index in the batch) and the reason.
    """


class InvalidConfigError(AstroSPTError, ValueError):
    """A preprocessing (or model) configuration has an unknown key or an invalid value."""
