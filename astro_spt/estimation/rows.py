"""From preprocessed spectra to rows of the table: the PCA projection and the network on
whole blocks of ``_NETWORK_CHUNK`` rows, so that a spectrum's result does not depend on
its batch, and the flags decided per row; the model `estimate` uses by default.
"""

import threading
from dataclasses import dataclass

import numpy as np

from .. import flags as _flags
from ..conf import conf
from ..exceptions import (
    AstroSPTError,
    InvalidSpectrumError,
)

# Every PCA projection and network call runs on whole blocks of this many rows (the last
# block padded). BLAS/oneDNN kernels take different code paths for different numbers of
# rows, which changes results in the last bits; padding to whole blocks makes a spectrum's
# result independent of how the inputs were batched.
_NETWORK_CHUNK = 64
# Blocks run together, at most: on 512 rows the network runs about 1.5x faster than on
# 64 (issue 17; benchmarks/bench_pipeline.py), and a row's result is the same bit for bit
# whether its block runs alone or with others (the kernels' row tiles divide 64;
# tests/test_estimation.py checks it on real files).
_NETWORK_BLOCKS = 8


def _padded_blocks(result, rows):
    """Up to ``_NETWORK_BLOCKS`` blocks of ``_NETWORK_CHUNK`` rows of a `PreprocessResult`
    at a time, the last block padded.

    Yields ``(n, flux, ivar, mask)``: the number of real rows, then the arrays (flux as
    float64; padding rows are zeros, unmasked), of a whole number of blocks.
    """
    for start in range(0, len(rows), _NETWORK_CHUNK * _NETWORK_BLOCKS):
        block = rows[start : start + _NETWORK_CHUNK * _NETWORK_BLOCKS]
        pad = ((0, -len(block) % _NETWORK_CHUNK), (0, 0))
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
# Why a featureless spectrum's row has no values.
_FEATURELESS = (
    "featureless: no absorption lines at the scale of LAMOST's, no star's spectrum the "
    "model can read; values set to NaN"
)
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


def _project_by_block(bundle, flux, mask):
    """The gappy PCA projection of whole blocks, one ``_NETWORK_CHUNK`` block at a time.

    Its batched inverses stay in cache that way (on 512 rows at once they took twice the
    time); the network then runs on all the blocks together.
    """
    from ..pca import PCAProjection

    parts = [
        bundle.project(flux[start : start + _NETWORK_CHUNK], mask[start : start + _NETWORK_CHUNK])
        for start in range(0, len(flux), _NETWORK_CHUNK)
    ]
    if len(parts) == 1:
        return parts[0]
    per_row = ("coefficients", "reconstruction_error", "inverse_gram", "observed")
    return PCAProjection(
        *(np.concatenate([getattr(part, name) for part in parts]) for name in per_row),
        residual_variance=parts[0].residual_variance,
        components=parts[0].components,
    )


def _predict_block(bundle, result, rows, n_samples, seed, keep_samples, device, sources, done=None):
    """Projection, predictive distribution and OOD test of valid preprocessed spectra.

    Runs on whole blocks of ``_NETWORK_CHUNK`` rows (the last one padded), up to
    ``_NETWORK_BLOCKS`` at a time, so that a spectrum's result does not depend on its
    batch; ``done(n)`` is called after each call of ``n`` spectra (a progress bar's
    update).
    """
    outputs = {"mean": [], "std": [], "samples": [], "ood": [], "components": []}
    for n, block_flux, block_ivar, block_mask in _padded_blocks(result, rows):
        projection = _project_by_block(bundle, block_flux, block_mask)
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
            outputs["ood"].append(
                bundle.out_of_distribution(projection=projection, embedding=labels.embedding)[:n]
            )
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
    if result is not None:
        # no lines: no star's spectrum, whatever number the network would give it
        featureless = usable & ((result.flags & _flags.FEATURELESS) != 0)
        for k in np.flatnonzero(featureless):
            if settings.strict:
                raise InvalidSpectrumError(f"{items[rows_ok[k]].source}: {_FEATURELESS}")
            messages[int(rows_ok[k])] = _FEATURELESS
        usable &= ~featureless
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


def _load(model):
    from ..hub import load_model

    if model is None and not conf.hub_repo:
        return _embedded_default()
    return load_model(model)


_DEFAULT = threading.local()


def _embedded_default():
    """The embedded default model, loaded (and verified) once per thread: loading it
    costs ~0.3-2 s of CPU, as much as estimating a hundred spectra. `estimate` leaves the
    bundle as it found it (the network back on its device); one per thread, because Monte
    Carlo prediction sets the dropout masks on the network in place."""
    from ..hub import load_model

    if getattr(_DEFAULT, "bundle", None) is None:
        _DEFAULT.bundle = load_model(None)
    return _DEFAULT.bundle
