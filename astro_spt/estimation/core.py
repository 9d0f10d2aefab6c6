"""`estimate`: inputs to a `~astropy.table.QTable` of labels, uncertainties and flags."""

import numpy as np

from .. import flags as _flags
from .._progress import progress_bar
from ..conf import conf
from ..exceptions import (
    AstroSPTError,
)
from .inputs import _expand
from .rows import _load, _network_device, _NetworkSettings, _resolve_device
from .table import (
    _HIDDEN_IN_PRINT,
    _describe_columns,
    _display_name,
    _path_of,
    _warn_failures,
    flag_names,
)
from .workers import _estimated_batches


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
        Processes that estimate the files, each the whole pipeline on tasks of up to
        512 files, while this one merges their results: ``None`` (default) one per core,
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

    The flags say which results to trust. The K dwarf (``sp06-160``) is no giant: the
    network sees it unlike any giant it was trained on, and its age is barely constrained:

    >>> print(table["source"][2], table["flag_names"][2].replace(",", " "))
    ... # doctest: +NORMALIZE_WHITESPACE
    spec-55862-B6212_sp06-160.fits.gz repaired_pixels out_of_distribution
        large_uncertainty masked_standard_regions
    >>> decode_flags(table["flags"][2])
    ['repaired_pixels', 'out_of_distribution', 'large_uncertainty', 'masked_standard_regions']
    >>> warned = has_flag(table["flags"], "out_of_distribution")
    >>> np.flatnonzero(warned).tolist()  # rows to set aside
    [2]
    """
    import astropy.units as u
    from astropy.table import QTable

    from .. import __version__
    from ..bundle import LARGE_UNCERTAINTY_FRACTION, EstimatorBundle

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
