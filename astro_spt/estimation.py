"""Ages and masses (or any trained labels) of spectra: `estimate` (SPEC §2, layer 6).

Inputs stream through in batches: read (for files), preprocess, PCA, Monte Carlo dropout,
back to physical units, flag. Memory does not grow with the number of inputs, one bad
spectrum never aborts the run (it gets a NaN row and a flag, unless ``strict=True``), and
a spectrum's result does not depend on the batch it was in (see ``_NETWORK_CHUNK``).
"""

import glob
import os
import warnings
from dataclasses import dataclass

import numpy as np

from . import flags as _flags
from .conf import conf
from .exceptions import AstroSPTError, AstroSPTWarning

__all__ = [
    "estimate",
    "expand_inputs",
    "iter_preprocessed",
    "preprocess_inputs",
    "samples_distribution",
]

# Every PCA projection and network call runs on blocks of exactly this many rows (the
# last block padded). BLAS/oneDNN kernels take different code paths for different
# numbers of rows, which changes results in the last bits; fixed blocks make a
# spectrum's result independent of how the inputs were batched.
_NETWORK_CHUNK = 64

_FITS_PATTERNS = ("*.fits", "*.fits.gz", "*.fit", "*.fit.gz")

# The FITS header keywords (8 characters at most) that hold the meta of estimate()'s
# table, for every writer of FITS tables (the command line, astro_spt.distributed).
_FITS_META_KEYWORDS = {
    "model": "SPTMODEL",
    "model_revision": "SPTREV",
    "astro_spt_version": "SPTVERS",
    "seed": "SPTSEED",
    "n_samples": "SPTNSAMP",
}


@dataclass
class _Item:
    """One input spectrum: an in-memory spectrum or a file to read."""

    source: str
    spectrum: object = None
    path: str | None = None


def _is_spectrum(obj) -> bool:
    return hasattr(obj, "spectral_axis") and hasattr(obj, "flux")


def expand_inputs(spectra) -> list:
    """Flatten the accepted inputs into a list of spectra and file paths, in input order.

    Accepts a `~specutils.Spectrum` (a 2-D flux one counts as one spectrum per row), a
    `~specutils.SpectrumList` or any list of these, file paths, folders (their FITS files,
    sorted) and glob patterns (sorted matches).

    Returns
    -------
    list of (str, object)
        ``(source, spectrum_or_path)`` pairs; ``source`` identifies the input.

    Examples
    --------
    >>> from astro_spt.estimation import expand_inputs
    >>> expand_inputs(["no/such/file.fits"])
    [('no/such/file.fits', 'no/such/file.fits')]
    """
    return [
        (item.source, item.spectrum if item.path is None else item.path)
        for item in _expand(spectra)
    ]


def _expand(spectra, prefix="spectrum") -> list[_Item]:
    if isinstance(spectra, str | os.PathLike):
        text = os.fspath(spectra)
        if os.path.isdir(text):
            paths = sorted(
                {p for pat in _FITS_PATTERNS for p in glob.glob(os.path.join(text, pat))}
            )
            return [_Item(p, path=p) for p in paths]
        if glob.has_magic(text):
            return [_Item(p, path=p) for p in sorted(glob.glob(text, recursive=True))]
        return [_Item(text, path=text)]
    if _is_spectrum(spectra):
        if spectra.flux.ndim == 1:
            return [_Item(_source_of(spectra, prefix), spectrum=spectra)]
        if spectra.flux.ndim == 2:
            return [
                _Item(f"{prefix}[{i}]", spectrum=spectra[i]) for i in range(spectra.flux.shape[0])
            ]
        raise AstroSPTError(f"{prefix}: flux of {spectra.flux.ndim} dimensions; expected 1 or 2")
    if isinstance(spectra, np.ndarray):
        raise TypeError(
            "estimate() takes spectra with units (specutils Spectrum), file paths or folders, "
            "not a bare array: wrap flux and wavelength in a Spectrum"
        )
    try:
        elements = list(spectra)
    except TypeError:
        raise TypeError(
            f"estimate() cannot use an input of type {type(spectra).__name__}: expected a "
            "specutils Spectrum, a SpectrumList or list, file paths, folders or glob patterns"
        ) from None
    items = []
    for i, element in enumerate(elements):
        items.extend(_expand(element, prefix=f"spectrum[{i}]"))
    return items


def _source_of(spectrum, default: str) -> str:
    meta = getattr(spectrum, "meta", None) or {}
    for key in ("filename", "file", "obsid"):
        if meta.get(key) not in (None, ""):
            return str(meta[key])
    return default


def _read(item: _Item, strict: bool):
    """The item's spectrum, or None and a message when it cannot be read."""
    from specutils import Spectrum

    from .exceptions import InvalidSpectrumError, LAMOSTFormatError

    if item.path is None:
        if isinstance(item.spectrum, Spectrum):
            return item.spectrum, None
        # _expand takes anything with flux and spectral_axis; preprocess takes Spectrum
        message = f"{item.source}: a {type(item.spectrum).__name__}, not a specutils Spectrum"
        if strict:
            raise InvalidSpectrumError(message)
        return None, message

    try:
        try:
            # Naming the format skips specutils' ~30 identifiers (6x faster per file);
            # files that are not LAMOST low-resolution spectra go through them after all.
            return Spectrum.read(item.path, format="LAMOST-LRS"), None
        except LAMOSTFormatError:
            return Spectrum.read(item.path), None
    except Exception as err:  # any failure to read is this row's problem only
        if strict:
            raise AstroSPTError(f"cannot read {item.path}: {err}") from err
        return None, f"cannot read {item.path}: {err}"


def _padded_blocks(result, rows):
    """Blocks of exactly ``_NETWORK_CHUNK`` rows of a `PreprocessResult`, the last padded.

    Yields ``(n, flux, ivar, mask)``: the number of real rows, then the block's arrays
    (flux as float64; padding rows are zeros, unmasked).
    """
    for start in range(0, len(rows), _NETWORK_CHUNK):
        block = rows[start : start + _NETWORK_CHUNK]
        pad = ((0, _NETWORK_CHUNK - len(block)), (0, 0))
        yield (
            len(block),
            np.pad(result.flux[block].astype(np.float64), pad),
            np.pad(result.ivar[block], pad),
            np.pad(result.mask[block], pad),
        )


def _resolve_device(device):
    import torch

    if device in (None, "cpu"):
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AstroSPTError(f"device {device} was asked for but CUDA is not available")
    return device


def _predict_block(bundle, result, rows, n_samples, seed, keep_samples, device, sources):
    """Projection, predictive distribution and OOD test of valid preprocessed spectra.

    Runs on blocks of exactly ``_NETWORK_CHUNK`` rows (the last one padded), so that a
    spectrum's result does not depend on its batch.
    """
    outputs = {"mean": [], "std": [], "samples": [], "ood": [], "components": []}
    for n, block_flux, block_ivar, block_mask in _padded_blocks(result, rows):
        projection = bundle.project(block_flux, block_mask)
        labels = bundle.predict(
            block_flux,
            block_ivar,
            n_samples=n_samples,
            seed=seed,
            return_samples=keep_samples,
            device=device,
            sources=sources,
            projection=projection,
        )
        outputs["mean"].append(labels.mean[:n])
        outputs["std"].append(labels.std[:n])
        outputs["components"].append({k: v[:n] for k, v in labels.components.items()})
        if keep_samples:
            outputs["samples"].append(labels.samples[:n])
        if bundle.reference is not None:
            outputs["ood"].append(bundle.out_of_distribution(projection=projection)[:n])
    components = {
        name: np.concatenate([block[name] for block in outputs["components"]])
        for name in outputs["components"][0]
    }
    return (
        np.concatenate(outputs["mean"]),
        np.concatenate(outputs["std"]),
        np.concatenate(outputs["samples"]) if keep_samples else None,
        np.concatenate(outputs["ood"]) if outputs["ood"] else None,
        components,
    )


def estimate(
    spectra,
    model=None,
    *,
    n_samples: int | None = None,
    batch_size: int | None = None,
    device=None,
    seed: int | None = None,
    return_samples: bool = False,
    strict: bool = False,
    progress: bool | None = None,
    redshift=None,
    large_uncertainty: float | None = None,
    error_sources: bool = False,
    sources=None,
):
    """Estimate ages and masses (or the labels of ``model``) of stellar spectra.

    Parameters
    ----------
    spectra : Spectrum, SpectrumList, list, path, folder or glob pattern
        A `~specutils.Spectrum` (a 2-D flux counts as one spectrum per row), a
        `~specutils.SpectrumList` or list of spectra, or FITS files: paths, folders (their
        ``*.fits``/``*.fits.gz`` files) or glob patterns, read with ``Spectrum.read``
        (LAMOST low-resolution files are recognised after ``import astro_spt``).
    model : `~astro_spt.bundle.EstimatorBundle`, str, path or None
        The estimator: a loaded bundle, a bundle directory, a hub repository id, or
        ``None`` for the embedded default model (`astro_spt.load_model`).
    n_samples : int or None
        Monte Carlo dropout passes per spectrum; default the model's.
    batch_size : int or None
        Spectra read and preprocessed at a time; default ``conf.default_batch_size``.
        Results do not depend on it.
    device : str or None
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, or ``"auto"`` (CUDA when there).
    seed : int or None
        Seed of the Monte Carlo dropout. ``None`` means ``0``: repeated runs give the
        same numbers. A spectrum's randomness depends on the seed and the spectrum only,
        so ``estimate(all)`` equals the concatenation of ``estimate(part)`` calls.
    return_samples : bool
        Add ``n_samples`` samples of each label's predictive distribution as 2-D
        `~astropy.units.Quantity` columns ``<label>_samples``, shape (n_rows, T): the
        Monte Carlo dropout passes plus Gaussian draws of the other sources
        (`~astro_spt.nn.predictive_samples`), so that their standard deviation is
        ``<label>_err``, exactly. Plain columns print and are written to ECSV, FITS and
        Parquet; `samples_distribution` turns one into an
        `~astropy.uncertainty.Distribution` for error propagation.
    strict : bool
        Raise on the first unreadable or unusable input instead of flagging it.
    progress : bool or None
        Show a progress bar; ``None`` shows one for more than 10 batches on a terminal.
    redshift : float, array or None
        Redshift(s) to shift the spectra to the rest frame, overriding what the spectra
        carry (see `astro_spt.preprocess.preprocess`).
    large_uncertainty : float or None
        Threshold of the ``large_uncertainty`` flag, as a fraction of the label's
        standard deviation in the training set, in the space the network learns it in
        (log10 for the default model's ages; σ above it sets the flag); default
        ``astro_spt.bundle.LARGE_UNCERTAINTY_FRACTION`` (see
        `~astro_spt.bundle.EstimatorBundle.large_uncertainty`).
    error_sources : bool
        Add, for each label ``X``, the standard deviation each source contributes
        (first order, in quadrature they make up ``X_err``): ``X_err_noise`` (the
        spectrum's noise and masked pixels), ``X_err_aleatoric`` (the labels' scatter
        about the prediction) and ``X_err_epistemic`` (the model's own uncertainty,
        Monte Carlo dropout); for a model following SPT paper Eq. 6, ``X_err_floor``
        and ``X_err_epistemic``.
    sources : sequence of str or None
        The sources of uncertainty to include, among ``"noise"``, ``"aleatoric"`` and
        ``"epistemic"``; default all (see
        `~astro_spt.bundle.EstimatorBundle.predict_scaled`).

    Returns
    -------
    `~astropy.table.QTable`
        One row per input spectrum, in input order: ``source`` (file name or position),
        ``obsid`` (when the spectra carry one), for each label ``X`` the columns ``X`` and
        ``X_err`` with units (``age`` [Gyr], ``mass`` [solMass] for the default model),
        and ``flags`` (see `astro_spt.flags`). Unusable inputs get NaN values and
        flags. ``meta`` records the model, its revision, the seed, ``n_samples`` and the
        package version.

    Examples
    --------
    Ages and masses of the six example LAMOST spectra (five giants and a K dwarf) with
    the embedded default model (a list of paths, ``example_files()``, or the folder
    would do as well):

    >>> import os
    >>> import numpy as np
    >>> import astro_spt
    >>> from astro_spt.flags import decode_flags, has_flag
    >>> from astro_spt.io import example_files
    >>> folder = example_files()[0].parent
    >>> table = astro_spt.estimate(os.path.join(folder, "spec-*.fits.gz"))
    >>> len(table), table.colnames
    (6, ['source', 'age', 'age_err', 'mass', 'mass_err', 'flags'])
    >>> [str(table[name].unit) for name in ("age", "age_err", "mass", "mass_err")]
    ['Gyr', 'Gyr', 'solMass', 'solMass']
    >>> table.meta["seed"], table.meta["n_samples"]
    (0, 100)

    The flags say which results to trust. The K dwarf (``sp06-160``) is no giant: its
    age comes out older than any star of the training set, and is flagged so:

    >>> os.path.basename(table["source"][2])
    'spec-55862-B6212_sp06-160.fits.gz'
    >>> decode_flags(table["flags"][2])
    ['repaired_pixels', 'outside_label_range', 'masked_standard_regions']
    >>> warned = has_flag(table["flags"], "outside_label_range")
    >>> np.flatnonzero(warned).tolist()  # rows to set aside
    [2]
    """
    import astropy.units as u
    from astropy.table import QTable

    from . import __version__
    from .bundle import LARGE_UNCERTAINTY_FRACTION, EstimatorBundle

    bundle = model if isinstance(model, EstimatorBundle) else _load(model)
    n_samples = bundle.n_samples if n_samples is None else int(n_samples)
    batch_size = conf.default_batch_size if batch_size is None else int(batch_size)
    if n_samples < 1 or batch_size < 1:
        raise ValueError("n_samples and batch_size must be positive")
    seed = 0 if seed is None else int(seed)
    device = _resolve_device(device)
    config = bundle.preprocess_settings()
    items = _expand(spectra)

    n, n_labels = len(items), len(bundle.labels)
    values = np.full((n, n_labels), np.nan)
    errors = np.full((n, n_labels), np.nan)
    samples = np.full((n, n_samples, n_labels), np.nan) if return_samples else None
    flags = np.zeros(n, dtype=_flags.FLAG_DTYPE)
    obsids = np.full(n, -1, dtype=np.int64)
    messages = {}
    components = {}
    fraction = LARGE_UNCERTAINTY_FRACTION if large_uncertainty is None else large_uncertainty

    starts = range(0, n, batch_size)
    if progress or (progress is None and len(starts) > 10 and _stderr_is_terminal()):
        starts = _progress(starts)
    for rows_ok, result, batch_obsids, batch_messages in iter_preprocessed(
        items, config, batch_size=batch_size, strict=strict, redshift=redshift, starts=starts
    ):
        messages.update(batch_messages)
        for row, obsid in batch_obsids.items():
            obsids[row] = obsid
        for row in set(batch_messages) - set(rows_ok.tolist()):
            flags[row] |= _flags.UNREADABLE  # the file could not be read
        if result is None:
            continue
        flags[rows_ok] |= result.flags
        usable = np.all(np.isfinite(result.flux), axis=1)
        if not usable.any():
            continue
        rows = rows_ok[usable]
        mean, std, draws, ood, parts = _predict_block(
            bundle, result, np.flatnonzero(usable), n_samples, seed, return_samples, device, sources
        )
        values[rows] = mean
        errors[rows] = std
        for name, part in parts.items():
            components.setdefault(name, np.full((n, n_labels), np.nan))[rows] = part
        if return_samples:
            samples[rows] = draws
        if ood is not None:
            flags[rows[ood]] |= _flags.OUT_OF_DISTRIBUTION
        if bundle.reference is not None:
            flags[rows[bundle.outside_label_range(mean)]] |= _flags.OUTSIDE_LABEL_RANGE
        flags[rows[bundle.large_uncertainty(mean, std, fraction)]] |= _flags.LARGE_UNCERTAINTY

    table = QTable()
    table["source"] = [item.source for item in items]
    if (obsids >= 0).any():
        table["obsid"] = obsids
    for i, label in enumerate(bundle.labels):
        unit = u.Unit(label.unit)
        table[label.name] = values[:, i] * unit
        table[f"{label.name}_err"] = errors[:, i] * unit
        if error_sources:
            for name, part in components.items():
                table[f"{label.name}_err_{name}"] = part[:, i] * unit
        if return_samples:
            table[f"{label.name}_samples"] = samples[:, :, i] * unit
    table["flags"] = flags
    table.meta.update(
        {
            "model": bundle.name or bundle.source or bundle.description,
            "model_revision": bundle.revision,
            "astro_spt_version": __version__,
            "seed": seed,
            "n_samples": n_samples,
            "messages": {table["source"][k]: m for k, m in sorted(messages.items())},
        }
    )
    return table


def samples_distribution(samples):
    """An `~astropy.uncertainty.Distribution` from a ``<label>_samples`` column or row.

    `estimate` stores the samples of the predictive distribution as plain 2-D
    `~astropy.units.Quantity` columns, which tables print and write to any format; this
    turns them into a `~astropy.uncertainty.Distribution` (samples along the last axis)
    for propagating errors with arithmetic.

    Parameters
    ----------
    samples : `~astropy.units.Quantity`, shape (..., T)
        A ``<label>_samples`` column (one distribution per row) or one row's value.

    Returns
    -------
    `~astropy.uncertainty.Distribution`

    Examples
    --------
    >>> import astro_spt
    >>> from astro_spt.io import example_files
    >>> table = astro_spt.estimate(example_files()[:2], n_samples=50, return_samples=True)
    >>> table["age_samples"].shape  # (rows, samples)
    (2, 50)
    >>> age = astro_spt.samples_distribution(table["age_samples"])
    >>> age.shape, age.n_samples
    ((2,), 50)
    >>> bool(abs(age.pdf_std()[0] / table["age_err"][0] - 1) < 1e-6)  # the same spread
    True
    >>> ratio = astro_spt.samples_distribution(table["age_samples"][0]) / table["age"][0]
    >>> round(float(ratio.pdf_std()), 2)  # relative uncertainty of the first age
    0.34
    """
    import astropy.units as u
    from astropy.uncertainty import Distribution

    return Distribution(u.Quantity(samples))


def iter_preprocessed(items, config, *, batch_size, strict=False, redshift=None, starts=None):
    """Read and preprocess inputs batch by batch.

    Yields, per batch, ``(rows, result, obsids, messages)``: the input rows that were
    read, their `~astro_spt.preprocess.PreprocessResult` (or None when no row of the
    batch could be read), the obsid of each row that has one, and why rows failed. A row
    that could not be read is in ``messages`` and not in ``rows``.

    This is the reading and preprocessing loop of `estimate`, for code that needs the
    preprocessed spectra themselves batch by batch; `preprocess_inputs` collects them
    into one result.

    Parameters
    ----------
    items
        Anything `estimate` accepts: spectra, lists of them, file paths, folders, glob
        patterns. Rows are numbered in the order `expand_inputs` lists them.
    config : `~astro_spt.preprocess.PreprocessConfig`
        Preprocessing settings, e.g. a model's
        `~astro_spt.bundle.EstimatorBundle.preprocess_settings`.
    batch_size : int
        Inputs read and preprocessed at a time.
    strict : bool, optional
        Raise on the first unreadable input instead of reporting it in ``messages``.
    redshift : float or array-like, shape (n_inputs,), optional
        Redshift of the inputs (one for all, or one each), overriding what the spectra
        carry.
    starts : iterable of int, optional
        First row of each batch; default ``range(0, n_inputs, batch_size)``.

    Yields
    ------
    rows : `~numpy.ndarray` of int
    result : `~astro_spt.preprocess.PreprocessResult` or None
    obsids : dict
    messages : dict

    Examples
    --------
    The six example spectra and a missing file, in batches of four:

    >>> from astro_spt.estimation import iter_preprocessed
    >>> from astro_spt.io import example_files
    >>> from astro_spt.preprocess import PreprocessConfig
    >>> for rows, result, obsids, messages in iter_preprocessed(
    ...     [*example_files(), "no/such/file.fits"], PreprocessConfig(), batch_size=4
    ... ):
    ...     print(rows.tolist(), result.flux.shape, obsids, sorted(messages))
    [0, 1, 2, 3] (4, 4096) {} []
    [4, 5] (2, 4096) {} [6]
    >>> messages[6].startswith("cannot read no/such/file.fits")
    True
    """
    from .preprocess import preprocess

    if not (isinstance(items, list) and all(isinstance(item, _Item) for item in items)):
        items = _expand(items)
    if redshift is not None:
        redshift = np.broadcast_to(np.asarray(redshift, dtype=float), (len(items),))
    if starts is None:
        starts = range(0, len(items), batch_size)
    for start in starts:
        batch = items[start : start + batch_size]
        spectra_ok, rows_ok, obsids, messages = [], [], {}, {}
        for k, item in enumerate(batch):
            spectrum, message = _read(item, strict)
            if spectrum is None:
                messages[start + k] = message
                continue
            obsid = (getattr(spectrum, "meta", None) or {}).get("obsid")
            if isinstance(obsid, int | np.integer):
                obsids[start + k] = int(obsid)
            spectra_ok.append(spectrum)
            rows_ok.append(start + k)
        if not spectra_ok:
            yield np.asarray(rows_ok, dtype=int), None, obsids, messages
            continue
        rows_ok = np.asarray(rows_ok)
        z = None if redshift is None else redshift[rows_ok]
        with warnings.catch_warnings():
            # the callers report unusable spectra row by row (flags and messages)
            warnings.simplefilter("ignore", AstroSPTWarning)
            result = preprocess(spectra_ok, config, redshift=z, strict=strict)
        for k, message in result.messages.items():
            messages[int(rows_ok[k])] = message
        yield rows_ok, result, obsids, messages


def _load(model):
    from .hub import load_model

    return load_model(model)


def _stderr_is_terminal() -> bool:
    import sys

    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _progress(iterable):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return iterable
    return tqdm(iterable, desc="estimating", unit="batch")


def preprocess_inputs(
    spectra, config=None, *, batch_size: int = 256, strict: bool = False, redshift=None
):
    """Read and preprocess inputs into one `~astro_spt.preprocess.PreprocessResult`.

    Unlike `astro_spt.preprocess.preprocess`, this takes everything `estimate` takes,
    files included, and a file that cannot be read does not stop the others: its row has
    NaN flux, ``mask`` set everywhere and the ``unreadable`` flag, and ``messages`` says
    why. Rows are in input order (the order `expand_inputs` lists them). Use it to build
    a training set (`astro_spt.train` does) or to look at what a model sees.

    Parameters
    ----------
    spectra
        Anything `estimate` accepts: spectra, lists of them, file paths, folders, glob
        patterns.
    config : `~astro_spt.preprocess.PreprocessConfig`, optional
        Preprocessing settings; default ``PreprocessConfig()``.
    batch_size : int, optional
        Inputs read and preprocessed at a time; memory grows with it.
    strict : bool, optional
        Raise on the first input that cannot be read or preprocessed.
    redshift : float or array-like, shape (n_inputs,), optional
        Redshift of the inputs (one for all, or one each), overriding what the spectra
        carry.

    Returns
    -------
    result : `~astro_spt.preprocess.PreprocessResult`

    Examples
    --------
    >>> from astro_spt import flags
    >>> from astro_spt.estimation import preprocess_inputs
    >>> from astro_spt.io import example_files
    >>> result = preprocess_inputs([*example_files()[:2], "no/such/file.fits"])
    >>> result.flux.shape
    (3, 4096)
    >>> for f in result.flags:
    ...     print(flags.decode_flags(f))
    ['repaired_pixels', 'masked_standard_regions']
    ['repaired_pixels', 'masked_standard_regions']
    ['unreadable']
    >>> sorted(result.messages)
    [2]
    """
    import astropy.units as u

    from .preprocess import PreprocessConfig, PreprocessResult, make_wavelength_grid

    config = PreprocessConfig() if config is None else config
    items = _expand(spectra)
    n = len(items)
    wavelength = make_wavelength_grid(config.grid) * u.AA
    n_pixels = len(wavelength)
    arrays = {
        "flux": np.full((n, n_pixels), np.nan, np.float32),
        "flags": np.zeros(n, _flags.FLAG_DTYPE),
        "ivar": np.zeros((n, n_pixels), np.float32),
        "mask": np.ones((n, n_pixels), bool),
        "n_repaired": np.zeros(n, int),
        "snr": np.full(n, np.nan),
        "coverage": np.zeros(n),
        "redshift": np.full(n, np.nan),
    }
    messages = {}
    for rows, result, _, batch_messages in iter_preprocessed(
        items, config, batch_size=batch_size, strict=strict, redshift=redshift
    ):
        messages |= batch_messages
        for row in set(batch_messages) - set(rows.tolist()):
            arrays["flags"][row] |= _flags.UNREADABLE
        if result is not None:
            for name, values in arrays.items():
                values[rows] = getattr(result, name)
    return PreprocessResult(wavelength=wavelength, config=config, messages=messages, **arrays)
