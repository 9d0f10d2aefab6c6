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
    """No estimator bundle where one was asked for: no such directory, or no embedded model.

    Raised by `astro_spt.load_model` for a name that is neither an existing directory nor
    a hub repository id, and for ``load_model()`` when no default model is installed.

    Examples
    --------
    >>> import astro_spt
    >>> from astro_spt.exceptions import ModelNotFoundError
    >>> try:
    ...     astro_spt.load_model("./my-model")  # a directory that does not exist
    ... except ModelNotFoundError as err:
    ...     print(err)
    ./my-model is neither a bundle directory nor a hub repository id ('namespace/name')
    """


class BundleError(AstroSPTError):
    """A directory is not a valid estimator bundle (missing or malformed ``config.json``).

    Raised when loading a bundle (`astro_spt.load_model`,
    `astro_spt.bundle.EstimatorBundle.from_pretrained`); `BundleIntegrityError` and
    `UnsupportedSchemaError` are its subclasses.

    Examples
    --------
    >>> import tempfile
    >>> import astro_spt
    >>> from astro_spt.exceptions import BundleError
    >>> with tempfile.TemporaryDirectory() as empty:
    ...     try:
    ...         astro_spt.load_model(empty)
    ...     except BundleError as err:
    ...         print(str(err).replace(empty, "<empty>"))
    <empty> is not an estimator bundle: no config.json
    """


class BundleIntegrityError(BundleError):
    """A file of a bundle is missing or differs from the sha256 recorded in ``config.json``.

    ``filename`` is the name of the offending file, ``path`` its full path.

    Examples
    --------
    A bundle whose weights were changed after saving does not load:

    >>> import tempfile
    >>> import numpy as np
    >>> import astro_spt
    >>> from astro_spt.bundle import EstimatorBundle, LabelSpec
    >>> from astro_spt.exceptions import BundleIntegrityError
    >>> from astro_spt.nn import SpectralTransformer
    >>> from astro_spt.pca import PCABasis
    >>> bundle = EstimatorBundle(  # a tiny untrained bundle
    ...     SpectralTransformer(n_inputs=4, d_model=16, n_heads=2, n_blocks=1),
    ...     PCABasis.fit(np.random.default_rng(0).normal(size=(20, 32)), n_components=4),
    ...     [LabelSpec("age", "Gyr"), LabelSpec("mass", "solMass")],
    ... )
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = bundle.save_pretrained(tmp + "/my-model")
    ...     with open(path / "model.safetensors", "ab") as f:
    ...         _ = f.write(b"tampered")
    ...     try:
    ...         astro_spt.load_model(path)
    ...     except BundleIntegrityError as err:
    ...         print(err.filename)
    model.safetensors
    """

    def __init__(self, message: str, filename: str | None = None, path=None):
        super().__init__(message)
        self.filename = filename
        self.path = path


class UnsupportedSchemaError(BundleError):
    """A bundle was written by a newer `astro_spt` with a schema version this one cannot read.

    The message says which version of `astro_spt` to install.

    Examples
    --------
    >>> import json
    >>> import tempfile
    >>> from pathlib import Path
    >>> import astro_spt
    >>> from astro_spt.exceptions import UnsupportedSchemaError
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     config = {"schema_version": 99, "astro_spt_version": "9.0"}  # from the future
    ...     _ = (Path(tmp) / "config.json").write_text(json.dumps(config))
    ...     try:
    ...         astro_spt.load_model(tmp)
    ...     except UnsupportedSchemaError as err:
    ...         print(str(err).split(". ")[-1])
    Upgrade astro_spt to load it: pip install --upgrade 'astro-spt>=9.0'
    """


class HubError(AstroSPTError):
    """A model could not be fetched from (or published to) the Hugging Face Hub.

    The base class of the hub errors: catch it to handle any of them, or a subclass to
    handle one reason.

    Examples
    --------
    >>> import tempfile
    >>> import astro_spt
    >>> from astro_spt.exceptions import HubError, OfflineCacheMissError
    >>> issubclass(OfflineCacheMissError, HubError)
    True
    >>> with tempfile.TemporaryDirectory() as cache:  # an empty cache, no network
    ...     try:
    ...         astro_spt.load_model("astro-spt/example", cache_dir=cache, local_files_only=True)
    ...     except HubError as err:
    ...         print(type(err).__name__)
    OfflineCacheMissError
    """


class HubConnectionError(HubError):
    """The hub could not be reached, timed out or answered with a server error.

    Raised by `astro_spt.load_model` and `astro_spt.hub.download_model` when a download
    fails, and by `astro_spt.hub.push_bundle` when publishing does, for example because
    network access is disabled.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> import numpy as np
    >>> from astro_spt.bundle import EstimatorBundle, LabelSpec
    >>> from astro_spt.exceptions import HubConnectionError
    >>> from astro_spt.nn import SpectralTransformer
    >>> from astro_spt.pca import PCABasis
    >>> bundle = EstimatorBundle(  # a tiny untrained bundle
    ...     SpectralTransformer(n_inputs=4, d_model=16, n_heads=2, n_blocks=1),
    ...     PCABasis.fit(np.random.default_rng(0).normal(size=(20, 32)), n_components=4),
    ...     [LabelSpec("age", "Gyr"), LabelSpec("mass", "solMass")],
    ... )
    >>> with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}):  # network disabled
    ...     try:
    ...         bundle.push_to_hub("me/my-model")
    ...     except HubConnectionError as err:
    ...         print(err)
    cannot publish me/my-model: network access is disabled (HF_HUB_OFFLINE is set)
    """


class HubRepositoryNotFoundError(HubError):
    """The repository does not exist on the hub, or is private and no valid token was given.

    Examples
    --------
    The hub is asked (the call is skipped here: it needs the network):

    >>> import astro_spt
    >>> from astro_spt.exceptions import HubError, HubRepositoryNotFoundError
    >>> issubclass(HubRepositoryNotFoundError, HubError)
    True
    >>> try:  # doctest: +SKIP
    ...     astro_spt.load_model("astro-spt/no-such-model")
    ... except HubRepositoryNotFoundError as err:
    ...     print(err)
    repository astro-spt/no-such-model was not found at https://huggingface.co (and there is
    no local directory of that name). Check the name; for a private or gated repository
    pass token= or log in with `hf auth login`
    """


class HubRevisionNotFoundError(HubError):
    """The repository exists but the requested branch, tag or commit does not.

    Examples
    --------
    The hub is asked (the call is skipped here: it needs the network):

    >>> import astro_spt
    >>> from astro_spt.exceptions import HubError, HubRevisionNotFoundError
    >>> issubclass(HubRevisionNotFoundError, HubError)
    True
    >>> try:  # doctest: +SKIP
    ...     astro_spt.load_model("astro-spt/example", revision="v99")
    ... except HubRevisionNotFoundError as err:
    ...     print(err)
    revision 'v99' of astro-spt/example does not exist at https://huggingface.co: check the
    branch, tag or commit name
    """


class HubEntryNotFoundError(HubError):
    """A file the bundle needs is missing from the repository at the requested revision.

    Typically the repository is not an `astro_spt` estimator bundle (no ``config.json``).

    Examples
    --------
    The hub is asked (the call is skipped here: it needs the network):

    >>> import astro_spt
    >>> from astro_spt.exceptions import HubEntryNotFoundError, HubError
    >>> issubclass(HubEntryNotFoundError, HubError)
    True
    >>> try:  # doctest: +SKIP
    ...     astro_spt.load_model("openai-community/gpt2")
    ... except HubEntryNotFoundError as err:
    ...     print(err)
    config.json is missing from openai-community/gpt2 at revision 'main'
    (https://huggingface.co): is it an astro_spt estimator bundle?
    """


class OfflineCacheMissError(HubError):
    """Network access is disabled and the model is not in the local cache.

    Raised with ``local_files_only=True`` or the ``HF_HUB_OFFLINE`` environment variable
    set; the message gives the ``astro-spt download`` command that fills the cache while
    online.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import astro_spt
    >>> from astro_spt.exceptions import OfflineCacheMissError
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cache = str(Path(tmp).resolve())  # an empty cache
    ...     try:
    ...         astro_spt.load_model("astro-spt/example", cache_dir=cache, local_files_only=True)
    ...     except OfflineCacheMissError as err:
    ...         print(str(err).replace(cache, "<cache>"))  # doctest: +NORMALIZE_WHITESPACE
    astro-spt/example at revision 'main' is not in the cache <cache> and network access is
    disabled (local_files_only=True). While online, run `astro-spt download astro-spt/example
    --revision main --cache-dir <cache>` to pre-download it, or pass cache_dir=
    (astro_spt.conf.cache_dir) pointing at a cache that holds it
    """


class HubIntegrityError(HubError, BundleIntegrityError):
    """A downloaded file does not match its recorded sha256; it was removed from the cache.

    It is both a `HubError` and a `BundleIntegrityError`, so ``except
    BundleIntegrityError`` catches a corrupt file whether it was downloaded or local.
    Trying again downloads the file anew.

    Examples
    --------
    >>> from astro_spt.exceptions import BundleIntegrityError, HubError, HubIntegrityError
    >>> issubclass(HubIntegrityError, HubError), issubclass(HubIntegrityError, BundleIntegrityError)
    (True, True)

    Downloading is skipped here (it needs the network):

    >>> import astro_spt
    >>> try:  # doctest: +SKIP
    ...     model = astro_spt.load_model("astro-spt/example", revision="v1")
    ... except HubIntegrityError as err:
    ...     print(f"{err.filename} was corrupt and has been removed: try again")
    """


# Preprocessing (astro_spt.preprocess).
__all__ += ["InvalidConfigError", "InvalidSpectrumError"]


class InvalidSpectrumError(AstroSPTError, ValueError):
    """A spectrum cannot be preprocessed.

    Raised for malformed input (no spectral unit, unsorted or duplicate wavelengths, flux
    and uncertainty of different shapes, no data on the model grid), and for spectra that
    would be flagged ``unreadable`` when ``strict=True`` is asked for. The message names the
    spectrum (its index in the batch) and the reason.

    Examples
    --------
    A spectrum that does not overlap the model's wavelength grid:

    >>> import numpy as np
    >>> import astropy.units as u
    >>> from specutils import Spectrum
    >>> from astro_spt.exceptions import InvalidSpectrumError
    >>> from astro_spt.preprocess import preprocess
    >>> infrared = Spectrum(flux=np.ones(100) * u.Jy,
    ...                     spectral_axis=np.linspace(1.0, 1.2, 100) * u.um)
    >>> try:
    ...     preprocess(infrared, redshift=0.0, strict=True)
    ... except InvalidSpectrumError as err:
    ...     print(err)  # doctest: +NORMALIZE_WHITESPACE
    row 0: too little usable data on the model grid (3800-9100 Angstrom): fewer than 50% of
    its pixels valid, or a non-positive flux level (flagged 'unreadable')

    Without ``strict=True`` the spectrum is flagged ``unreadable`` instead, and its row of
    the result is NaN.
    """


class InvalidConfigError(AstroSPTError, ValueError):
    """A preprocessing (or model) configuration has an unknown key or an invalid value.

    Examples
    --------
    >>> from astro_spt.exceptions import InvalidConfigError
    >>> from astro_spt.preprocess import DenoiseConfig
    >>> try:
    ...     DenoiseConfig(level=20)
    ... except InvalidConfigError as err:
    ...     print(err)
    denoise: level must be an integer in [1, 12], got 20
    """


# Estimation (astro_spt.estimate).
__all__ += ["FailedInputWarning", "InvalidInputError"]


class FailedInputWarning(AstroSPTWarning):
    """Some inputs of `astro_spt.estimate` could not be estimated.

    Issued once per call, naming how many inputs failed and the first few with their
    reasons; each failed row has NaN values, a flag (``unreadable``, ``featureless`` or
    ``unphysical_value``) and its reason in the ``message`` column.

    Examples
    --------
    >>> import warnings
    >>> import astro_spt
    >>> from astro_spt.exceptions import FailedInputWarning
    >>> from astro_spt.io import example_files
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always", FailedInputWarning)
    ...     table = astro_spt.estimate([example_files()[0], "no/such/file.fits"], n_samples=5)
    >>> print(caught[0].message)  # doctest: +ELLIPSIS
    1 of 2 inputs could not be estimated (...): file.fits (cannot read: cannot be opened ...)
    >>> print(table["message"][1])  # doctest: +ELLIPSIS
    cannot read: cannot be opened ([Errno 2] No such file or directory: ...)
    """


class InvalidInputError(AstroSPTError, TypeError):
    """`astro_spt.estimate` was given something that is no spectrum, file or list of them.

    Only the input as a whole is refused so; an unusable element of a list gets a NaN row,
    a flag and a message instead (or `InvalidSpectrumError` with ``strict=True``).

    Examples
    --------
    >>> import numpy as np
    >>> import astro_spt
    >>> from astro_spt.exceptions import InvalidInputError
    >>> try:
    ...     astro_spt.estimate(np.ones((2, 3000)))
    ... except InvalidInputError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    estimate() takes spectra with units (specutils Spectrum), ... not a bare array: ...
    """


# Scale-out (astro_spt.distributed).
__all__ += ["DamagedPartitionWarning"]


class DamagedPartitionWarning(AstroSPTWarning):
    """A partition file of an `~astro_spt.distributed.estimate_files` run is damaged.

    A resumed run found a file it had written complete (it is written atomically) but can
    no longer read, or that does not hold the rows of its manifest entry: a disk error, a
    copy cut short, an edit. The file is deleted and its partition computed again.

    Examples
    --------
    >>> import warnings
    >>> from astro_spt.exceptions import DamagedPartitionWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", DamagedPartitionWarning)  # stop instead
    """
