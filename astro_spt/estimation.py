"""Ages and masses (or any trained labels) of spectra: `estimate` (SPEC §2, layer 6).

Inputs stream through in batches: read (for files), preprocess, PCA, Monte Carlo dropout,
back to physical units, flag. Memory does not grow with the number of inputs, one bad
spectrum never aborts the run (it gets a NaN row and a flag, unless ``strict=True``), and
a spectrum's result does not depend on the batch it was in (see ``_NETWORK_CHUNK``).
"""

import atexit
import contextlib
import glob
import os
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import flags as _flags
from ._progress import progress_bar
from ._progress import stderr_is_terminal as _stderr_is_terminal  # noqa: F401 (cli, distributed)
from .conf import conf
from .exceptions import (
    AstroSPTError,
    AstroSPTWarning,
    FailedInputWarning,
    InvalidInputError,
    InvalidSpectrumError,
)

__all__ = [
    "ModelInput",
    "estimate",
    "expand_inputs",
    "flag_names",
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

# The text columns of estimate()'s table that print(table) leaves out.
_HIDDEN_IN_PRINT = ("flag_names", "message", "path")

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
    """One input spectrum: an in-memory spectrum or a file to read, or why it is neither."""

    source: str
    spectrum: object = None
    path: str | None = None
    error: str | None = None


def _is_spectrum(obj) -> bool:
    try:
        return hasattr(obj, "spectral_axis") and hasattr(obj, "flux")
    except Exception:  # a property that raises: no spectrum
        return False


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


def _expand(spectra, prefix="spectrum", top=True) -> list[_Item]:
    """The inputs as `_Item` rows. Anything unusable inside a collection becomes one row
    with an ``error`` (raised by `_read` only when strict), so that it cannot abort the
    others; only a top-level input of the wrong type is refused at once."""
    if isinstance(spectra, str | bytes | os.PathLike):
        return _expand_path(spectra, prefix)
    if _is_spectrum(spectra):
        try:
            return _expand_spectrum(spectra, prefix)
        except Exception as err:  # an object that only looks like a spectrum
            return [_Item(prefix, error=f"not a usable spectrum: {_reason(err)}")]
    if isinstance(spectra, np.ndarray):
        message = (
            "estimate() takes spectra with units (specutils Spectrum), file paths or folders, "
            "not a bare array: wrap flux and wavelength in a Spectrum"
        )
    else:
        try:
            elements = list(spectra)
        except Exception:
            elements = None
        if elements is not None:
            items = []
            for i, element in enumerate(elements):
                items.extend(_expand(element, prefix=f"{prefix}[{i}]", top=False))
            return items
        message = (
            f"estimate() cannot use an input of type {type(spectra).__name__}: expected a "
            "specutils Spectrum, a SpectrumList or list, file paths, folders or glob patterns"
        )
    if top:
        raise InvalidInputError(message)
    return [_Item(prefix, error=message)]


def _expand_path(spectra, prefix) -> list[_Item]:
    try:
        text = os.fsdecode(spectra)
    except Exception as err:
        return [_Item(prefix, error=f"not a usable file name: {err}")]
    if os.path.isdir(text):
        folder = glob.escape(text)
        paths = sorted({p for pat in _FITS_PATTERNS for p in glob.glob(os.path.join(folder, pat))})
        return [_Item(p, path=p) for p in paths]
    # A file that exists is that file, whatever characters its name holds ("a[b].fits").
    if glob.has_magic(text) and not os.path.lexists(text):
        return [_Item(p, path=p) for p in sorted(glob.glob(text, recursive=True))]
    return [_Item(text, path=text)]


def _expand_spectrum(spectrum, prefix) -> list[_Item]:
    """One row per spectrum; a 2-D flux is one spectrum per row."""
    source = _source_of(spectrum, prefix)
    flux = spectrum.flux
    ndim = getattr(flux, "ndim", None)
    if ndim != 2:
        if isinstance(ndim, int) and ndim > 2:
            return [_Item(source, error=f"flux of {ndim} dimensions; expected 1 or 2")]
        # 1-D, or not an array at all: _read and preprocess tell which
        return [_Item(source, spectrum=spectrum)]
    n_rows = flux.shape[0]
    if n_rows == 0:
        return [_Item(source, error="a 2-D spectrum with no rows of flux")]
    items = []
    for i in range(n_rows):
        try:
            items.append(_Item(f"{prefix}[{i}]", spectrum=_row_of(spectrum, i, n_rows)))
        except Exception as err:
            items.append(_Item(f"{prefix}[{i}]", error=f"cannot take row {i}: {_reason(err)}"))
    return items


# Keys of a 2-D spectrum's meta that may hold one value per row (preprocess takes them so).
_PER_ROW_META = ("redshift", "z", "radial_velocity", "air", "vacuum", "obsid")


def _row_of(spectrum, i: int, n_rows: int):
    """Row ``i`` of a 2-D spectrum, its meta's per-row values (``meta["redshift"]``, one
    per row) reduced to the row's."""
    row = spectrum[i]
    meta = getattr(spectrum, "meta", None)
    if isinstance(meta, Mapping):
        per_row = {
            key: meta[key][i]
            for key in _PER_ROW_META
            if key in meta and not isinstance(meta[key], str) and np.shape(meta[key]) == (n_rows,)
        }
        if per_row:
            row.meta = {**row.meta, **per_row}
    return row


def _reason(error: Exception) -> str:
    """An exception as one line for a message: the package's own say it all."""
    return str(error) if isinstance(error, AstroSPTError) else f"{type(error).__name__}: {error}"


def _source_of(spectrum, default: str) -> str:
    meta = getattr(spectrum, "meta", None)
    if not isinstance(meta, Mapping):
        return default
    for key in ("filename", "file", "obsid"):
        value = meta.get(key)
        if isinstance(value, str | os.PathLike | int | np.integer) and str(value) != "":
            return str(os.fspath(value) if isinstance(value, os.PathLike) else value)
    return default


def _obsid_of(spectrum) -> int | None:
    """The spectrum's LAMOST obsid when it has one that fits the int64 column."""
    meta = getattr(spectrum, "meta", None)
    obsid = meta.get("obsid") if isinstance(meta, Mapping) else None
    if isinstance(obsid, bool | np.bool_) or not isinstance(obsid, int | np.integer):
        return None
    return int(obsid) if 0 <= obsid <= np.iinfo(np.int64).max else None


def _read(item: _Item, strict: bool):
    """The item's spectrum (a `~astro_spt.preprocess.pipeline.PlainSpectrum` for a LAMOST
    file), or None and a message when it cannot be read."""
    from .exceptions import InvalidSpectrumError

    def refuse(message):
        if strict:
            raise InvalidSpectrumError(f"{item.source}: {message}")
        return None, message

    if item.error is not None:
        return refuse(item.error)
    if item.path is None:
        from specutils import Spectrum  # imported already: the caller made the spectrum

        spectrum = item.spectrum
        if not isinstance(spectrum, Spectrum):
            # _expand takes anything with flux and spectral_axis; preprocess takes Spectrum
            return refuse(f"a {type(spectrum).__name__} object, not a specutils Spectrum")
    else:
        try:
            # LAMOST files by the fast reader, as bare arrays: a Spectrum would cost half
            # the reading and importing specutils seconds. Others by specutils once known
            # to be sane (regular, bounded, well-formed FITS): no FIFO or damaged file
            # reaches it.
            from .io.reading import _read_fields

            spectrum = _read_fields(item.path)
        except Exception as err:  # any failure to read is this row's problem only
            if strict:
                raise AstroSPTError(f"cannot read {item.path}: {err}") from err
            return None, _read_failure(item.path, err)
        if isinstance(spectrum, dict):
            from .preprocess.pipeline import PlainSpectrum

            return PlainSpectrum(**spectrum), None
        from specutils import Spectrum
    if not isinstance(spectrum, Spectrum) or np.ndim(spectrum.flux) != 1:
        # one row per input: a file's 2-D spectrum would give several
        shape = np.shape(getattr(spectrum, "flux", None))
        return refuse(f"a spectrum of flux shape {shape}; expected one 1-D spectrum")
    return spectrum, None


def _read_failure(path: str, error: Exception) -> str:
    """Why a file could not be read, in one line that does not repeat its path (the row
    names the file)."""
    reason = str(error).strip() or type(error).__name__
    for prefix in (f"{path}: ", f"{os.path.basename(path)}: "):
        reason = reason.removeprefix(prefix)
    # specutils' "format could not be identified" goes on with a table of every format
    return f"cannot read: {reason.splitlines()[0].strip()}"


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
    """The torch device to run on; `AstroSPTError` for one that cannot hold the model."""
    import torch

    if device in (None, "cpu"):
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise AstroSPTError(
            f"unknown device {device!r}: expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"
        ) from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type not in ("cuda", "mps", "xpu"):
        # e.g. "meta", which holds no data: the model would come back empty
        raise AstroSPTError(f"device {device!r} cannot run a model: use 'cpu' or 'cuda'")
    backend = getattr(torch, resolved.type, None)
    if backend is None or not backend.is_available():
        name = "CUDA" if resolved.type == "cuda" else resolved.type
        raise AstroSPTError(f"device {resolved} was asked for but {name} is not available")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise AstroSPTError(
            f"device {resolved} was asked for but there are {torch.cuda.device_count()} "
            "CUDA devices"
        )
    return resolved


def _network_device(bundle):
    import torch

    parameter = next(bundle.network.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


# How far beyond its training range a label may lie, in the network's standardised space
# (units of the training labels' standard deviation, after log10 for log-scaled labels),
# before it is no extrapolation but the network answering input it cannot describe.
# Measured: 2,212 real LAMOST DR1-DR10 spectra of every kind of star reach at most 16
# spreads beyond with the default model (trained on giants of 0.4-14 Gyr), pure noise
# reaches hundreds; 20 leaves every real spectrum its value (and the flag
# outside_label_range) while 1e168 Gyr, or a mass of -2,000 solMass, becomes NaN.
_UNPHYSICAL_MARGIN = 20.0
# Labels of these physical types are amounts, positive by nature (a [Fe/H] is not).
_POSITIVE_TYPES = frozenset({"mass", "time", "length", "temperature", "power"})


def _unphysical(bundle, values, errors) -> dict[int, str]:
    """Rows (by position) whose labels are no physical value, with the reason.

    A label is unphysical when it or its error is not finite, when it is not positive for
    a positive quantity, when it lies more than ``_UNPHYSICAL_MARGIN`` training standard
    deviations beyond the training labels' range in the network's space (beyond
    ``±_UNPHYSICAL_MARGIN`` about their mean for a model without reference statistics),
    or when its error is wider than that whole plausible band.
    """
    import astropy.units as u

    ranges = bundle.reference.label_ranges if bundle.reference is not None else {}
    reasons: dict[int, list[str]] = {}
    for i, label in enumerate(bundle.labels):
        value, error = values[:, i], errors[:, i]
        with np.errstate(all="ignore"):
            z = label.to_network(value)
            low, high = np.sort(label.to_network(ranges.get(label.name, [0.0, 0.0])))
            low, high = low - _UNPHYSICAL_MARGIN, high + _UNPHYSICAL_MARGIN
            width = np.ptp(label.from_network([low, high]))
            positive = not _POSITIVE_TYPES.isdisjoint(set(u.Unit(label.unit).physical_type))
            tests = [
                (~np.isfinite(value) | ~np.isfinite(error), "not finite"),
                (np.isfinite(value) & (value <= 0) & positive, "not positive"),
                (~((z >= low) & (z <= high)), "far outside the training range"),
                (~(error <= width), "an error wider than any plausible value"),
            ]
        for row in np.flatnonzero(np.any([bad for bad, _ in tests], axis=0)):
            why = next(text for bad, text in tests if bad[row])
            reasons.setdefault(int(row), []).append(
                f"{label.name} = {value[row]:.3g} +/- {error[row]:.3g} {label.unit} ({why})"
            )
    return {
        row: "unphysical prediction, set to NaN: " + "; ".join(texts)
        for row, texts in reasons.items()
    }


def _predict_block(bundle, result, rows, n_samples, seed, keep_samples, device, sources, done=None):
    """Projection, predictive distribution and OOD test of valid preprocessed spectra.

    Runs on blocks of exactly ``_NETWORK_CHUNK`` rows (the last one padded), so that a
    spectrum's result does not depend on its batch; ``done(n)`` is called after each
    block of ``n`` spectra (a progress bar's update).
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
        if done is not None:
            done(n)
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


@dataclass(frozen=True)
class _NetworkSettings:
    """What `_estimate_rows` needs of `estimate`'s arguments (sent to worker processes)."""

    n_samples: int
    seed: int
    return_samples: bool
    sources: object
    strict: bool
    large_uncertainty: float


@dataclass
class _Estimated:
    """What `estimate` keeps of one batch of inputs.

    ``rows`` are every row of the batch, read or not, with their ``flags``; ``valued``
    the rows that got values, with their ``mean``, ``std``, ``samples`` (or None) and
    ``components``; ``obsids`` and ``messages`` are keyed by row.
    """

    rows: np.ndarray
    flags: np.ndarray
    obsids: dict
    messages: dict
    valued: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    samples: object
    components: dict

    def shifted(self, first):
        """The same with rows counted from ``first`` (a worker's task numbers its own)."""
        import dataclasses

        return dataclasses.replace(
            self,
            rows=self.rows + first,
            valued=self.valued + first,
            obsids={first + k: v for k, v in self.obsids.items()},
            messages={first + k: v for k, v in self.messages.items()},
        )


def _estimate_rows(bundle, items, batch, settings, device, done=None):
    """The network part of `estimate` on one batch of `iter_preprocessed`: projection,
    predictive distribution, OOD test and the flags and messages that depend on the rows
    only, as an `_Estimated` (rows numbered as the batch numbers them; ``items[row]`` is
    the row's input). ``done(n)`` counts spectra for a progress bar.
    """
    rows_ok, result, obsids, messages = batch
    messages = dict(messages)
    rows = np.array(sorted(set(rows_ok.tolist()) | set(messages)), dtype=int)
    flags = np.zeros(len(rows), dtype=_flags.FLAG_DTYPE)
    n_labels = len(bundle.labels)
    nothing = np.zeros((0, n_labels))
    estimated = _Estimated(
        rows, flags, obsids, messages, np.zeros(0, int), nothing, nothing, None, {}
    )
    if settings.return_samples:
        estimated.samples = np.zeros((0, settings.n_samples, n_labels))
    unread = sorted(set(messages) - set(rows_ok.tolist()))
    flags[np.searchsorted(rows, unread)] |= _flags.UNREADABLE  # the file could not be read
    usable = np.zeros(0, bool) if result is None else np.all(np.isfinite(result.flux), axis=1)
    if done is not None:  # the spectra that reach no network count now, the others by block
        done(len(rows) - int(usable.sum()))
    if result is None:
        return estimated
    flags[np.searchsorted(rows, rows_ok)] |= result.flags
    if not usable.any():
        return estimated
    valued = rows_ok[usable]
    at = np.searchsorted(rows, valued)  # the valued rows' positions in rows
    with np.errstate(all="ignore"):  # overflow is caught below, as unphysical
        mean, std, draws, ood, parts = _predict_block(
            bundle,
            result,
            np.flatnonzero(usable),
            settings.n_samples,
            settings.seed,
            settings.return_samples,
            device,
            settings.sources,
            done=done,
        )
    if ood is not None:
        flags[at[ood]] |= _flags.OUT_OF_DISTRIBUTION
    with np.errstate(all="ignore"):
        if bundle.reference is not None:
            flags[at[bundle.outside_label_range(mean)]] |= _flags.OUTSIDE_LABEL_RANGE
        large = bundle.large_uncertainty(mean, std, settings.large_uncertainty)
    flags[at[large]] |= _flags.LARGE_UNCERTAINTY
    unphysical = _unphysical(bundle, mean, std)
    for k, message in unphysical.items():
        if settings.strict:
            raise InvalidSpectrumError(f"{items[valued[k]].source}: {message}")
        messages[int(valued[k])] = message
        flags[at[k]] |= _flags.UNPHYSICAL_VALUE
    keep = np.ones(len(valued), bool)
    keep[list(unphysical)] = False
    estimated.valued = valued[keep]
    estimated.mean, estimated.std = mean[keep], std[keep]
    estimated.components = {name: part[keep] for name, part in parts.items()}
    if settings.return_samples:
        estimated.samples = draws[keep]
    return estimated


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
    air=None,
    large_uncertainty: float | None = None,
    error_sources: bool = False,
    sources=None,
    n_jobs: int | None = None,
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
        Show a progress bar counted in spectra (on standard error): ``None`` shows one
        on a terminal once the run has taken 2 seconds; ``True`` always, ``False`` never.
    redshift : float, array or None
        Redshift(s) to shift the spectra to the rest frame, overriding what the spectra
        carry (see `astro_spt.preprocess.preprocess`).
    air : bool, array of bool or None
        Whether the wavelengths are in air (one for all, or one per input), overriding
        what the spectra say. ``None`` takes each spectrum's word: ``meta["air"]``,
        ``meta["vacuum"]``, a FITS ``VACUUM`` keyword or spectral type ``AWAV``/``WAVE``
        (as specutils' ``wcs1d-fits`` reader keeps it); LAMOST files are vacuum. Spectra
        that say nothing are taken as vacuum, with one warning per call.
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
    n_jobs : int or None
        Processes that estimate the files, each the whole pipeline on tasks of 64
        files, while this one merges their results: ``None`` (default) one per core,
        ``1`` all in this process. The model is sent to each process once. Fewer than 64
        files a process, in-memory spectra and calls from a daemonic process are done in
        this process; with a ``device`` other than the CPU the processes read and
        preprocess and this one runs the network. Every process runs one BLAS and one
        torch thread (the fastest on a shared machine). Results do not depend on it, bit
        for bit. Scripts that start processes must guard their code with ``if __name__
        == "__main__":``.

    Returns
    -------
    `~astropy.table.QTable`
        One row per input spectrum, in input order: ``source`` (a file's name, or an
        in-memory spectrum's position), ``obsid`` (when the spectra carry one), for each
        label ``X`` the columns ``X`` and ``X_err`` with units (``age`` [Gyr], ``mass``
        [solMass] for the default model), ``flags`` (see `astro_spt.flags`),
        ``flag_names`` (the flags' names, comma-separated), ``message`` (why a row has no
        values; empty when it has) and ``path`` (the file as given). Every column has a
        display format (ages and masses to 0.01) and a description, which ECSV, FITS and
        Parquet keep. ``print(table)`` leaves ``flag_names``, ``message`` and ``path``
        out so that the values fit 80 columns (``table.pprint_exclude_names.set([])``
        shows them). Unusable inputs get NaN values, flags and a message. ``meta``
        records the model, its revision, the seed, ``n_samples``, the package version
        and ``messages`` (``{input: message}``, the input as given).

    Warns
    -----
    astro_spt.exceptions.FailedInputWarning
        Once, when some inputs could not be estimated, with their number and the first
        few with their reasons.
    astro_spt.exceptions.AstroSPTWarning
        Once, when some spectra do not say whether their wavelengths are in air.

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
    (6, ['source', 'age', 'age_err', 'mass', 'mass_err', 'flags', 'flag_names', 'message', 'path'])
    >>> [str(table[name].unit) for name in ("age", "age_err", "mass", "mass_err")]
    ['Gyr', 'Gyr', 'solMass', 'solMass']
    >>> table.meta["seed"], table.meta["n_samples"]
    (0, 100)

    The flags say which results to trust. The K dwarf (``sp06-160``) is no giant: its
    age comes out older than any star of the training set, and is flagged so:

    >>> print(table["source"][2], table["flag_names"][2])
    spec-55862-B6212_sp06-160.fits.gz repaired_pixels,outside_label_range,masked_standard_regions
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

    bar = progress_bar(n, progress=progress, unit="spectrum", desc="estimating")
    # The caller's model goes back where it was, whatever happens on the way.
    original_device = _network_device(bundle)
    try:
        try:
            bundle.network.to(device)
        except Exception as err:
            raise AstroSPTError(f"cannot move the model to device {device}: {err}") from err
        settings = _NetworkSettings(n_samples, seed, return_samples, sources, strict, fraction)
        for part in _estimated_batches(
            items,
            config,
            n_jobs,
            bundle,
            settings,
            device,
            bar.update,
            batch_size=batch_size,
            strict=strict,
            redshift=redshift,
            air=air,
        ):
            flags[part.rows] |= part.flags
            messages.update(part.messages)
            for row, obsid in part.obsids.items():
                obsids[row] = obsid
            values[part.valued] = part.mean
            errors[part.valued] = part.std
            for name, value in part.components.items():
                components.setdefault(name, np.full((n, n_labels), np.nan))[part.valued] = value
            if return_samples:
                samples[part.valued] = part.samples
    finally:
        bar.close()
        if _network_device(bundle) != original_device:
            bundle.network.to(original_device)

    table = QTable()
    table["source"] = [_display_name(item) for item in items]
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
    table["flag_names"] = flag_names(flags)
    # Why a row has no values, with the row (meta, unlike a column, is lost by most formats).
    table["message"] = np.array([messages.get(row, "") for row in range(n)], dtype=str)
    table["path"] = np.array([_path_of(item) for item in items], dtype=str)
    _describe_columns(table, bundle.labels)
    # print(table) shows the values, errors and flags in 80 columns; astropy would drop
    # them all for a text column as wide as a list of flag names.
    table.pprint_exclude_names = _HIDDEN_IN_PRINT
    table.meta.update(
        {
            "model": bundle.name or bundle.source or bundle.description,
            "model_revision": bundle.revision,
            "astro_spt_version": __version__,
            "seed": seed,
            "n_samples": n_samples,
            "messages": {items[k].source: m for k, m in sorted(messages.items())},
        }
    )
    _warn_failures(table)
    return table


def flag_names(flags) -> np.ndarray:
    """The ``flag_names`` column of `estimate`: the names of the set bits, comma-separated.

    Examples
    --------
    >>> from astro_spt import flags
    >>> from astro_spt.estimation import flag_names
    >>> flag_names([0, flags.LOW_SNR | flags.OUTLIERS]).tolist()
    ['', 'outliers,low_snr']
    """
    values = np.asarray(flags)
    names = {int(v): ",".join(_flags.decode_flags(int(v))) for v in np.unique(values)}
    return np.array([names[int(v)] for v in values.ravel()], dtype=str)


def _display_name(item: _Item) -> str:
    """The ``source`` of a row: a file's name (its folder is in ``path``), else the input's
    position or identifier."""
    return os.path.basename(item.source) if _path_of(item) else item.source


def _path_of(item: _Item) -> str:
    """The ``path`` of a row: the file as given, or the file an in-memory spectrum says it
    came from (``meta["filename"]``), else empty."""
    if item.path is not None:
        return item.path
    meta = getattr(item.spectrum, "meta", None)
    if isinstance(meta, Mapping) and item.source in (
        str(meta.get("filename")),
        str(meta.get("file")),
    ):
        return item.source
    return ""


# How the values of a label print (info.format), by physical type: ages to 0.01 Gyr,
# masses to 0.01 solMass, temperatures to 1 K, velocities to 0.1 km/s, anything else to
# four significant digits.
_DISPLAY_FORMATS = {"time": ".2f", "mass": ".2f", "dimensionless": ".2f", "temperature": ".0f"}


def _display_format(unit) -> str:
    import astropy.units as u

    unit = u.Unit(unit)
    if isinstance(unit, u.FunctionUnitBase):  # dex: [Fe/H], log g
        return ".2f"
    if unit.physical_type == "speed":
        return ".1f"
    return _DISPLAY_FORMATS.get(str(unit.physical_type), ".4g")


_COLUMN_DESCRIPTIONS = {
    "source": "The input: a file's name (its folder is in 'path'), or an in-memory "
    "spectrum's position in the input",
    "obsid": "LAMOST observation id (-1: none known)",
    "flags": "Quality bit mask (astro_spt.flags)",
    "flag_names": "Names of the quality flags set, comma-separated (astro_spt.flags)",
    "message": "Why the row has no values (empty when it has)",
    "path": "The file as given (empty for an in-memory spectrum without a file name)",
}
_ERROR_DESCRIPTIONS = {
    "err": "total 1-sigma uncertainty",
    "err_noise": "uncertainty from the spectrum's noise and masked pixels",
    "err_aleatoric": "uncertainty from the labels' scatter about the prediction",
    "err_epistemic": "uncertainty of the model itself (Monte Carlo dropout)",
    "err_floor": "variance floor of the model (SPT paper Eq. 6)",
    "samples": "samples of the predictive distribution",
}


def _describe_columns(table, labels) -> None:
    """Display formats and descriptions of `estimate`'s columns (kept by ECSV, FITS,
    Parquet)."""
    for name, description in _COLUMN_DESCRIPTIONS.items():
        if name in table.colnames:
            table[name].info.description = description
    for label in labels:
        fmt = _display_format(label.unit)
        for name in table.colnames:
            if name == label.name:
                table[name].info.description = f"Estimated {label.name}"
            elif name.startswith(f"{label.name}_"):
                kind = name.removeprefix(f"{label.name}_")
                what = _ERROR_DESCRIPTIONS.get(kind, kind.replace("_", " "))
                table[name].info.description = f"{label.name}: {what}"
            else:
                continue
            table[name].info.format = fmt


def _warn_failures(table) -> None:
    """One `FailedInputWarning` for the rows of a table that have no values."""
    failed = np.flatnonzero(np.char.str_len(np.asarray(table["message"], dtype=str)) > 0)
    if failed.size == 0:
        return
    shown = "; ".join(f"{table['source'][k]} ({table['message'][k]})" for k in failed[:3])
    more = f"; and {failed.size - 3} more" if failed.size > 3 else ""
    warnings.warn(
        f"{failed.size} of {len(table)} inputs could not be estimated (NaN values; see the "
        f"'message' and 'flag_names' columns): {shown}{more}",
        FailedInputWarning,
        stacklevel=3,
    )


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


def iter_preprocessed(
    items,
    config,
    *,
    batch_size,
    strict=False,
    redshift=None,
    air=None,
    starts=None,
    unknown_medium=None,
):
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
    air : bool or array-like of bool, shape (n_inputs,), optional
        Whether the inputs' wavelengths are in air (one for all, or one each); default
        what each spectrum says (see `astro_spt.preprocess.preprocess`).
    starts : iterable of int, optional
        First row of each batch; default ``range(0, n_inputs, batch_size)``.
    unknown_medium : list or None, optional
        A list to which the sources whose wavelength medium is unknown are appended,
        for a caller that warns once for several calls; default: one warning at the end.

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
    >>> print(messages[6])  # doctest: +ELLIPSIS
    cannot read: cannot be opened ([Errno 2] No such file or directory: 'no/such/file.fits')
    """

    if not (isinstance(items, list) and all(isinstance(item, _Item) for item in items)):
        items = _expand(items)
    if redshift is not None:
        try:
            redshift = np.broadcast_to(np.asarray(redshift, dtype=float), (len(items),))
        except (TypeError, ValueError):
            raise InvalidSpectrumError(
                f"redshift must be one number or one per input ({len(items)}), got {redshift!r:.80}"
            ) from None
    if air is not None:
        try:
            air = np.broadcast_to(np.asarray(air, dtype=bool), (len(items),))
        except (TypeError, ValueError):
            raise InvalidSpectrumError(
                f"air must be True, False or one per input ({len(items)}), got {air!r:.80}"
            ) from None
    if starts is None:
        starts = range(0, len(items), batch_size)
    # the sources of unknown medium: warned about at the end, or left to the caller that
    # passes its own list (worker processes, whose caller warns once for all of them)
    warn = unknown_medium is None
    unknown_medium = [] if warn else unknown_medium
    for start in starts:
        batch = items[start : start + batch_size]
        spectra_ok, rows_ok, obsids, messages = [], [], {}, {}
        for k, item in enumerate(batch):
            spectrum, message = _read(item, strict)
            if spectrum is None:
                messages[start + k] = message
                continue
            obsid = _obsid_of(spectrum)
            if obsid is not None:
                obsids[start + k] = obsid
            if air is None and _medium_unknown(spectrum):
                unknown_medium.append(item.source)
            spectra_ok.append(spectrum)
            rows_ok.append(start + k)
        if not spectra_ok:
            yield np.asarray(rows_ok, dtype=int), None, obsids, messages
            continue
        rows_ok = np.asarray(rows_ok)
        z = None if redshift is None else redshift[rows_ok]
        result = _preprocess_apart(spectra_ok, config, z, None if air is None else air[rows_ok])
        for k, message in result.messages.items():
            if strict:
                raise InvalidSpectrumError(f"{items[rows_ok[k]].source}: {message}")
            messages[int(rows_ok[k])] = message
        yield rows_ok, result, obsids, messages
    if warn:
        _warn_unknown_medium(unknown_medium, len(items), stacklevel=4)


def _warn_unknown_medium(sources, total, stacklevel):
    """Once per call, naming a few: preprocess' own warning is per batch."""
    if sources:
        from .preprocess.pipeline import UNKNOWN_MEDIUM_MESSAGE

        shown = ", ".join(sources[:3]) + (", ..." if len(sources) > 3 else "")
        warnings.warn(
            UNKNOWN_MEDIUM_MESSAGE.format(n=len(sources), total=total) + f" ({shown})",
            AstroSPTWarning,
            stacklevel=stacklevel,
        )


def _medium_unknown(spectrum) -> bool:
    """Whether nothing says if a spectrum's wavelengths are in air or vacuum."""
    from .preprocess.pipeline import _is_air

    if not hasattr(spectrum, "spectral_axis"):  # bare arrays of a LAMOST file: vacuum
        return False
    try:
        return _is_air(spectrum) is None
    except Exception:  # an invalid meta['air']: preprocess reports it, row by row
        return False


def _preprocess_apart(spectra, config, redshift, air=None):
    """`preprocess` of 1-D spectra, one row each, no row depending on another.

    Should the batch raise all the same (preprocess isolates each spectrum's reading, not
    yet known failures of the numerics), each spectrum is preprocessed alone: rows are
    independent, so the others come out the same and only the culprit fails.
    """
    from .preprocess import preprocess

    with warnings.catch_warnings():
        # the callers report unusable spectra row by row (flags and messages)
        warnings.simplefilter("ignore", AstroSPTWarning)
        try:
            return preprocess(spectra, config, redshift=redshift, air=air)
        except Exception as error:
            if len(spectra) == 1:
                result = _unreadable_result(1, config)
                result.messages[0] = f"cannot be preprocessed: {_reason(error)}"
                return result
        parts = [
            _preprocess_apart(
                [spectrum],
                config,
                None if redshift is None else redshift[k : k + 1],
                None if air is None else air[k : k + 1],
            )
            for k, spectrum in enumerate(spectra)
        ]
    result = _unreadable_result(len(spectra), config)
    for k, part in enumerate(parts):
        for name in _ROW_FIELDS:
            getattr(result, name)[k] = getattr(part, name)[0]
        if 0 in part.messages:
            result.messages[k] = part.messages[0]
    return result


# The per-row arrays of a PreprocessResult.
_ROW_FIELDS = ("flux", "flags", "ivar", "mask", "n_repaired", "snr", "coverage", "redshift")


def _unreadable_result(n, config):
    """A `PreprocessResult` of ``n`` rows, every one unreadable (NaN, fully masked)."""
    import astropy.units as u

    from .preprocess import PreprocessResult, make_wavelength_grid

    wavelength = make_wavelength_grid(config.grid) * u.AA
    m = len(wavelength)
    return PreprocessResult(
        flux=np.full((n, m), np.nan, np.float32),
        flags=np.full(n, _flags.UNREADABLE, _flags.FLAG_DTYPE),
        wavelength=wavelength,
        ivar=np.zeros((n, m), np.float32),
        mask=np.ones((n, m), bool),
        n_repaired=np.zeros(n, np.int64),
        snr=np.full(n, np.nan),
        coverage=np.zeros(n),
        redshift=np.full(n, np.nan),
        config=config,
        messages={},
    )


def _load(model):
    from .hub import load_model

    if model is None and not conf.hub_repo:
        return _embedded_default()
    return load_model(model)


_DEFAULT = threading.local()


def _embedded_default():
    """The embedded default model, loaded (and verified) once per thread: loading it
    costs ~0.3-2 s of CPU, as much as estimating a hundred spectra. `estimate` leaves the
    bundle as it found it (the network back on its device); one per thread, because Monte
    Carlo prediction sets the dropout masks on the network in place."""
    from .hub import load_model

    if getattr(_DEFAULT, "bundle", None) is None:
        _DEFAULT.bundle = load_model(None)
    return _DEFAULT.bundle


@dataclass
class ModelInput:
    """Exactly what a model's network sees of some inputs (`EstimatorBundle.preprocess
    <astro_spt.bundle.EstimatorBundle.preprocess>`).

    Attributes
    ----------
    spectra : `~astro_spt.preprocess.PreprocessResult`
        The inputs preprocessed with the model's settings (its continuum normalisation,
        denoising, grid), one row per input in input order.
    features : `~numpy.ndarray` of float32, shape (n, n_components)
        The network's input: the PCA coefficients of each spectrum, projected as
        `estimate` projects them (gappy PCA for bundles of this version); NaN rows for
        inputs that never reach the network (``used`` False).
    used : `~numpy.ndarray` of bool, shape (n,)
        Which inputs reach the network (those with finite preprocessed flux).
    projection : `~astro_spt.pca.PCAProjection`
        The projection of the used rows (in their order), with what noise propagation
        and the out-of-distribution test need.

    Examples
    --------
    >>> import astro_spt
    >>> from astro_spt.io import example_files
    >>> seen = astro_spt.load_model().preprocess(example_files()[:3])
    >>> len(seen), seen.features.shape, seen.used.all()
    (3, (3, 143), np.True_)
    >>> seen.projection.coefficients.shape
    (3, 143)
    """

    spectra: object
    features: np.ndarray
    used: np.ndarray
    projection: object

    def __len__(self) -> int:
        return len(self.used)


def model_input(bundle, spectra, *, batch_size=None, strict=False, redshift=None, air=None):
    """`ModelInput` of inputs for ``bundle``; see `EstimatorBundle.preprocess
    <astro_spt.bundle.EstimatorBundle.preprocess>`."""
    from .pca import PCAProjection

    batch_size = conf.default_batch_size if batch_size is None else int(batch_size)
    result = preprocess_inputs(
        spectra,
        bundle.preprocess_settings(),
        batch_size=batch_size,
        strict=strict,
        redshift=redshift,
        air=air,
    )
    used = np.all(np.isfinite(result.flux), axis=1)
    rows = np.flatnonzero(used)
    parts = []
    # the blocks, padding and float64 of estimate: the same numbers, bit for bit
    for n, flux, _, mask in _padded_blocks(result, rows):
        parts.append((n, bundle.project(flux, mask)))
    k, m = bundle.pca.n_components, result.flux.shape[1]

    def joined(name, shape):
        arrays = [getattr(p, name)[:n] for n, p in parts]
        return np.concatenate(arrays) if arrays else np.zeros((0, *shape))

    projection = PCAProjection(
        coefficients=joined("coefficients", (k,)),
        reconstruction_error=joined("reconstruction_error", ()),
        inverse_gram=joined("inverse_gram", (k, k)),
        observed=joined("observed", (m,)).astype(bool),
        residual_variance=parts[0][1].residual_variance if parts else 0.0,
        components=bundle.pca.components,
    )
    features = np.full((len(used), k), np.nan, dtype=np.float32)
    features[rows] = projection.coefficients.astype(np.float32)
    return ModelInput(spectra=result, features=features, used=used, projection=projection)


def preprocess_inputs(
    spectra,
    config=None,
    *,
    batch_size: int = 256,
    strict: bool = False,
    redshift=None,
    air=None,
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
    air : bool or array-like of bool, shape (n_inputs,), optional
        Whether the wavelengths are in air (one for all, or one each), overriding what
        the spectra say (see `estimate`).

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
    from .preprocess import PreprocessConfig

    config = PreprocessConfig() if config is None else config
    items = _expand(spectra)
    result = _unreadable_result(len(items), config)
    for rows, batch, _, batch_messages in iter_preprocessed(
        items, config, batch_size=batch_size, strict=strict, redshift=redshift, air=air
    ):
        result.messages |= batch_messages
        if batch is not None:
            for name in _ROW_FIELDS:
                getattr(result, name)[rows] = getattr(batch, name)
    return result


# Reading and preprocessing are GIL-bound Python and numpy, the network one thread a
# process: estimate() spreads the whole pipeline over processes, this process merges.
# Fewer files than this per worker do not pay a worker's start-up (measured: ~0.3 s CPU
# a worker from a preloaded forkserver, ~0.1 s to load the model, ~5 ms CPU a file).
_MIN_FILES_PER_WORKER = 64
# Files a worker estimates per task: small enough to keep every worker busy to the end,
# and one network block (``_NETWORK_CHUNK``): fewer would run padded blocks.
_WORKER_TASK = 64
# CPU seconds the workers spent on tasks, for benchmarks: they are no children of this
# process (the forkserver's), so resource.RUSAGE_CHILDREN does not count them.
_WORKER_CPU_SECONDS = [0.0]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _checked_n_jobs(n_jobs):
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or n_jobs < 1
    ):
        raise ValueError(f"n_jobs must be None (all cores) or a positive integer, got {n_jobs!r}")
    return n_jobs


def _n_workers(n_jobs, items) -> int:
    """Worker processes for reading and preprocessing: 0 means this process does it."""
    n_jobs = _usable_cpus() if _checked_n_jobs(n_jobs) is None else int(n_jobs)
    if n_jobs == 1 or any(item.spectrum is not None for item in items):
        # in-memory spectra: pickling them to a worker costs what preprocessing them does
        return 0
    import multiprocessing

    if multiprocessing.current_process().daemon:
        # a daemonic process (a Dask worker's, a pool's) may not start processes: the
        # processes around it already share the cores
        return 0
    n_files = sum(item.path is not None for item in items)
    return int(min(n_jobs, n_files // _MIN_FILES_PER_WORKER))


def _one_thread_each():
    """One BLAS and one torch thread in this process, restored afterwards.

    Processes, not threads, share the cores: measured on 2 shared cores, OpenBLAS's two
    threads made the batched 143×143 inverses of the gappy PCA 20× slower in CPU time,
    and torch's two threads the network 2×; the results are the same bit for bit.
    """
    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    else:
        stack.enter_context(threadpool_limits(1))
    torch = sys.modules.get("torch")  # not imported for it
    if torch is not None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        stack.callback(torch.set_num_threads, threads)
    return stack


def _estimated_batches(
    items, config, n_jobs, bundle, settings, device, done, *, batch_size, **options
):
    """`estimate`'s batches as `_Estimated` parts, with one thread per process.

    With worker processes (``n_jobs`` and the number of files call for them) and the
    network on the CPU, the workers run the whole pipeline (read, preprocess, network,
    flags), each on tasks of ``_WORKER_TASK`` files, the model sent to each worker once;
    this process only merges. On another device the workers read and preprocess, this
    process runs the network. Either way the network sees the blocks of
    ``_NETWORK_CHUNK`` rows that make a row's result independent of its batch, so the
    results are the same bit for bit.
    """
    n_workers = _n_workers(n_jobs, items)
    with _one_thread_each():
        if n_workers == 0:
            for batch in iter_preprocessed(items, config, batch_size=batch_size, **options):
                yield _estimate_rows(bundle, items, batch, settings, device, done)
            return
        shipped = _shipped(bundle) if device.type == "cpu" else None
        try:
            network = None if shipped is None else (*shipped, settings)
            for first, part in _batches_in_workers(
                items, config, n_workers, batch_size, options, network
            ):
                if network is None:  # a preprocessed batch: the network runs here
                    yield _estimate_rows(bundle, items, part, settings, device, done)
                elif isinstance(part, _Estimated):
                    done(len(part.rows))
                    yield part.shifted(first)
                else:  # the workers failed: this process goes on with the rest
                    yield _estimate_rows(bundle, items, part, settings, device, done)
        finally:
            if shipped is not None:
                _unship(shipped[0])


def _batches_in_workers(items, config, n_workers, batch_size, options, network=None):
    """Yields ``(first, part)``.

    Without ``network``: each batch of ``batch_size`` items read and preprocessed by the
    workers, merged into one batch of `iter_preprocessed` (``first`` 0: its rows count
    from the first item). With ``network`` (``(key, path, settings)``, see `_shipped`):
    each task's `_Estimated`, its rows counted from ``first``. Should the workers fail,
    the rest is read here and comes as batches of `iter_preprocessed` (``first`` 0).
    """
    import collections
    import concurrent.futures
    import itertools

    n = len(items)
    per_item = {}
    for name in ("redshift", "air"):
        value = options.get(name)
        if value is not None:
            try:
                per_item[name] = np.broadcast_to(value, (n,))
            except ValueError:  # iter_preprocessed says what is wrong with it
                for batch in iter_preprocessed(items, config, batch_size=batch_size, **options):
                    yield 0, batch
                return
    executor = _worker_pool(n_workers)

    def submit(start):
        tasks = []
        for first in range(start, min(start + batch_size, n), _WORKER_TASK):
            last = min(first + _WORKER_TASK, start + batch_size, n)
            task = {**options, **{k: v[first:last] for k, v in per_item.items()}}
            future = executor.submit(_worker_batch, items[first:last], config, task, network)
            tasks.append((first, last, future))
        return tasks

    # Two batches ahead: the workers work while this process merges (or runs the
    # network), and at most three batches are in memory whatever the number of files.
    starts = iter(range(0, n, batch_size))
    unknown_medium = []
    pending = collections.deque()
    done = 0  # the rows before it are yielded
    try:
        pending.extend(submit(start) for start in itertools.islice(starts, 2))
        while pending:
            tasks = pending.popleft()
            start = next(starts, None)
            if start is not None:
                pending.append(submit(start))
            parts = []
            for first, last, future in tasks:
                part, caught, unknown, seconds = future.result()
                _WORKER_CPU_SECONDS[0] += seconds
                unknown_medium.extend(unknown)
                for message, category, filename, lineno in caught:
                    warnings.warn_explicit(message, category, filename, lineno)
                if network is not None:
                    yield first, part
                    done = last
                else:
                    parts.append((first, *part))
            if network is None:
                yield 0, _merged(parts)
                done = min(done + batch_size, n)
    except concurrent.futures.process.BrokenProcessPool as err:
        with _POOL_LOCK:
            _POOL.clear()
        first = done
        warnings.warn(
            f"estimate() continues in one process: its worker processes failed ({err}). A "
            "script that calls estimate() on many files must do so under "
            "'if __name__ == \"__main__\":', as any script that starts processes",
            AstroSPTWarning,
            stacklevel=4,
        )
        rest = {**options, **{k: v[first:] for k, v in per_item.items()}}
        for rows, result, obsids, messages in iter_preprocessed(
            items[first:], config, batch_size=batch_size, unknown_medium=unknown_medium, **rest
        ):
            shift = (
                {k + first: v for k, v in obsids.items()},
                {k + first: v for k, v in messages.items()},
            )
            yield 0, (rows + first, result, *shift)
    finally:
        # the pool stays for later calls; what this call will not read is dropped
        for tasks in pending:
            for *_, future in tasks:
                future.cancel()
    _warn_unknown_medium(unknown_medium, n, stacklevel=5)


# The worker pool, kept for later calls of this process: a worker's start (a fork of the
# server, its first imports and caches) costs ~1 s of wall clock and ~0.1 s of CPU, as
# much as reading 30 files. "key" is (workers, the pid that made it): a forked child
# makes its own.
_POOL = {}
_POOL_LOCK = threading.Lock()  # estimate() called from several threads shares one pool


def _pool_is_ours() -> bool:
    return "key" in _POOL and _POOL["key"][1] == os.getpid()


def _worker_pool(n_workers):
    import concurrent.futures
    import multiprocessing

    with _POOL_LOCK:
        if _POOL.get("key") != (n_workers, os.getpid()):
            if _pool_is_ours():
                # its workers exit once the tasks given to it (by another thread?) are done
                _POOL["executor"].shutdown(wait=False)
            if "forkserver" in multiprocessing.get_all_start_methods():
                # forked from one server that imported the reader, preprocessing and the
                # network's modules once
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(
                    [
                        "astro_spt.estimation",
                        "astro_spt.preprocess",
                        "astro_spt.io.reading",
                        "torch",
                        "astro_spt.bundle",
                    ]
                )
            else:  # pragma: no cover - macOS, Windows
                context = multiprocessing.get_context("spawn")
            _POOL["executor"] = concurrent.futures.ProcessPoolExecutor(
                n_workers, mp_context=context
            )
            _POOL["key"] = (n_workers, os.getpid())
        return _POOL["executor"]


# Models sent to the workers: each pickled once per call into a private folder of this
# process, under the hash of its pickle (a model changed between calls gets a new
# file), and loaded by each worker once (`_worker_model`). "dir" is (the folder, the pid
# that made it); "users" counts the calls using each file: a file no call uses is
# deleted when another call ends, so that one file or so stays for the next call.
_SHIPPED = {"users": {}}


def _shipped(bundle):
    """``(key, path)`` of ``bundle`` pickled for the workers; None if it cannot be
    pickled (its network then runs in this process)."""
    import hashlib
    import pickle
    import tempfile

    try:
        data = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    key = hashlib.sha256(data).hexdigest()[:32]
    with _POOL_LOCK:
        if _SHIPPED.get("dir", (None, None))[1] != os.getpid():
            folder = tempfile.mkdtemp(prefix="astro_spt-models-")  # readable by us only
            _SHIPPED.update({"dir": (folder, os.getpid()), "users": {}})
        path = os.path.join(_SHIPPED["dir"][0], f"{key}.pickle")
        if not os.path.exists(path):
            with tempfile.NamedTemporaryFile(dir=_SHIPPED["dir"][0], delete=False) as file:
                file.write(data)
            os.replace(file.name, path)
        _SHIPPED["users"][key] = _SHIPPED["users"].get(key, 0) + 1
    return key, path


def _unship(key):
    """The call that used ``key``'s file is over: delete the files no call uses, but
    this one (the next call likely sends the same model)."""
    with _POOL_LOCK:
        if _SHIPPED.get("dir", (None, None))[1] != os.getpid():
            return
        users = _SHIPPED["users"]
        users[key] -= 1
        for other in [k for k, count in users.items() if count == 0 and k != key]:
            del users[other]
            with contextlib.suppress(OSError):
                os.remove(os.path.join(_SHIPPED["dir"][0], f"{other}.pickle"))


@atexit.register
def _close_pool():
    """Shut the pool down before the interpreter tears its modules down (else its clean-up
    at exit prints "Exception ignored" tracebacks); delete the models sent to it."""
    import shutil

    if _pool_is_ours():
        _POOL["executor"].shutdown(wait=True, cancel_futures=True)
    _POOL.clear()
    folder, pid = _SHIPPED.get("dir", (None, None))
    if pid == os.getpid():
        shutil.rmtree(folder, ignore_errors=True)
    _SHIPPED.clear()
    _SHIPPED["users"] = {}


# In a worker process: the models it was sent, by key, the last few (a pool shared by
# threads that estimate with different models).
_WORKER_MODELS = {}
_WORKER_MODELS_KEPT = 2


def _worker_model(key, path):
    """The model sent as ``key`` (a pickle this package's process wrote, `_shipped`),
    loaded once per worker."""
    import pickle

    bundle = _WORKER_MODELS.pop(key, None)
    if bundle is None:
        with open(path, "rb") as file:
            bundle = pickle.load(file)
    _WORKER_MODELS[key] = bundle  # the most recent last
    while len(_WORKER_MODELS) > _WORKER_MODELS_KEPT:
        del _WORKER_MODELS[next(iter(_WORKER_MODELS))]
    return bundle


def _worker_batch(items, config, options, network=None):
    """A worker's task: `iter_preprocessed` of a few items (with ``network``, ``(key,
    path, settings)``, their `_Estimated` by the model sent as ``key``), the warnings it
    gave and its CPU seconds."""
    import time

    started = time.process_time()
    unknown_medium = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the model first: unpickling it imports torch, whose threads are limited next
        bundle = None if network is None else _worker_model(*network[:2])
        with _one_thread_each():
            (batch,) = iter_preprocessed(
                items, config, batch_size=len(items), unknown_medium=unknown_medium, **options
            )
            if bundle is not None:
                import torch

                batch = _estimate_rows(bundle, items, batch, network[2], torch.device("cpu"))
    caught = [(w.message, w.category, w.filename, w.lineno) for w in caught]
    return batch, caught, unknown_medium, time.process_time() - started


def _merged(parts):
    """One batch of `iter_preprocessed` from consecutive parts (rows counted from each
    part's ``first`` row)."""
    import dataclasses

    rows = np.concatenate([first + rows for first, rows, *_ in parts]).astype(int)
    obsids = {first + k: v for first, _, _, part, _ in parts for k, v in part.items()}
    messages = {first + k: v for first, *_, part in parts for k, v in part.items()}
    results = [result for _, _, result, _, _ in parts if result is not None]
    if not results:
        return rows, None, obsids, messages
    merged = dataclasses.replace(
        results[0],
        **{name: np.concatenate([getattr(r, name) for r in results]) for name in _ROW_FIELDS},
        messages={},
    )
    offset = 0
    for result in results:
        merged.messages.update({offset + k: v for k, v in result.messages.items()})
        offset += len(result)
    return rows, merged, obsids, messages
