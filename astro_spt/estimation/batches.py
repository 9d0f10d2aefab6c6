"""Inputs read and preprocessed in batches with a model's settings: `iter_preprocessed`,
`preprocess_inputs`, and the network's exact input, `model_input`.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from .. import flags as _flags
from ..conf import conf
from ..exceptions import (
    AstroSPTWarning,
    InvalidSpectrumError,
)
from .inputs import _expand, _Item, _obsid_of, _read, _reason
from .rows import _padded_blocks


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
        from ..preprocess.pipeline import UNKNOWN_MEDIUM_MESSAGE

        shown = ", ".join(sources[:3]) + (", ..." if len(sources) > 3 else "")
        warnings.warn(
            UNKNOWN_MEDIUM_MESSAGE.format(n=len(sources), total=total) + f" ({shown})",
            AstroSPTWarning,
            stacklevel=stacklevel,
        )


def _medium_unknown(spectrum) -> bool:
    """Whether nothing says if a spectrum's wavelengths are in air or vacuum."""
    from ..preprocess.pipeline import _is_air

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
    from ..preprocess import preprocess

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

    from ..preprocess import PreprocessResult, make_wavelength_grid

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
    from ..pca import PCAProjection

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
    from ..preprocess import PreprocessConfig

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
