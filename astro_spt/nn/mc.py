"""Monte Carlo dropout prediction (SPT paper §2.4; Gal & Ghahramani 2016)."""

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "MCPrediction",
    "input_jacobian",
    "mc_predict",
    "model_precision",
    "predictive_samples",
]


@dataclass
class MCPrediction:
    """Predictive mean and covariance from Monte Carlo dropout.

    Attributes
    ----------
    mean : `torch.Tensor`, shape (N, D)
        Mean of the T stochastic passes.
    covariance : `torch.Tensor`, shape (N, D, D)
        :math:`\\tau^{-1} I` plus the sample covariance of the passes (float64).
    samples : `torch.Tensor` or None, shape (N, T, D)
        The passes themselves, when asked for.
    seed : int
        The seed the masks were drawn with (pass it again to reproduce the run).
    components : dict of str to `torch.Tensor` or None
        Variances of the separate sources of the covariance, each shape (N, D), when the
        predictor reports them (`~astro_spt.bundle.EstimatorBundle.predict_scaled`).
    embedding : `torch.Tensor` or None, shape (N, d_model)
        The network's embedding of the inputs (the backbone output its heads read), when
        the predictor computed it (`~astro_spt.bundle.EstimatorBundle.predict_scaled`).

    Examples
    --------
    Returned by `mc_predict`:

    >>> import torch
    >>> from astro_spt.nn import SpectralTransformer, mc_predict
    >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1).eval()
    >>> x = torch.randn(4, 8)
    >>> pred = mc_predict(net, x, n_samples=20, tau=10.0, return_samples=True)
    >>> pred.mean.shape, pred.covariance.shape, pred.samples.shape
    (torch.Size([4, 2]), torch.Size([4, 2, 2]), torch.Size([4, 20, 2]))
    >>> pred.std.shape  # predictive standard deviations
    torch.Size([4, 2])

    Its ``seed`` reproduces the run:

    >>> again = mc_predict(net, x, n_samples=20, tau=10.0, seed=pred.seed)
    >>> torch.equal(again.mean, pred.mean)
    True
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    samples: torch.Tensor | None
    seed: int
    components: dict | None = None
    embedding: torch.Tensor | None = None

    @property
    def std(self) -> torch.Tensor:
        """Square roots of the diagonal of the covariance, shape (N, D).

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SpectralTransformer, mc_predict
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1).eval()
        >>> pred = mc_predict(net, torch.randn(4, 8), n_samples=20, tau=10.0, seed=1)
        >>> pred.std.shape
        torch.Size([4, 2])
        >>> bool((pred.std >= 10.0**-0.5).all())  # never below the floor, tau ** -0.5
        True
        """
        return torch.sqrt(torch.diagonal(self.covariance, dim1=-2, dim2=-1))


def model_precision(
    dropout: float, length_scale: float, n_train: int, weight_decay: float
) -> float:
    r"""Model precision :math:`\tau = p l^2 / (2 N \lambda)` of MC dropout.

    SPT paper §2.4 (after Gal & Ghahramani 2016): :math:`p` the dropout rate,
    :math:`l` the prior length-scale, :math:`N` the number of training samples and
    :math:`\lambda` the weight decay. :math:`\tau^{-1}` is the variance floor added to
    every predictive variance.

    Examples
    --------
    >>> from astro_spt.nn import model_precision
    >>> model_precision(0.1, 1.0, 3000, 5e-4)
    0.03333333333333333
    """
    if not (0 < dropout < 1 and length_scale > 0 and n_train > 0 and weight_decay > 0):
        raise ValueError(
            "model_precision needs 0 < dropout < 1 and positive length_scale, n_train "
            f"and weight_decay; got {dropout}, {length_scale}, {n_train}, {weight_decay}"
        )
    return dropout * length_scale**2 / (2 * n_train * weight_decay)


#: Rows (spectra times passes) that `mc_predict` runs through the stochastic part at once.
_CHUNK_ROWS = 1024


def _spectrum_keys(x: torch.Tensor) -> list[bytes]:
    # The randomness of a spectrum depends on its own input bytes and the seed only,
    # not on its batch or position, so results do not depend on how inputs are batched.
    rows = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
    return [row.tobytes() for row in rows]


def _key_words(key) -> np.ndarray:
    if isinstance(key, str):
        key = key.encode()
    elif not isinstance(key, bytes | bytearray):
        key = str(key).encode()
    return np.frombuffer(hashlib.blake2b(key, digest_size=16).digest(), dtype=np.uint32)


def _spectrum_rng(seed, key, *stream) -> np.random.Generator:
    """The generator of one spectrum: seeded by ``seed``, its key and a stream number."""
    words = _key_words(key)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words, *stream])))


#: Entropy word that sets the dropout masks' stream apart from every other use of a seed.
_MASK_STREAM = 0x6D61736B


def _draw_masks(seed, n_samples, layers, scaled=False) -> np.ndarray:
    """Masks of the stochastic ``layers`` for ``n_samples`` passes, shape (T, total width).

    Pass ``t`` keeps a unit where the generator seeded by ``seed`` (and `_MASK_STREAM`)
    gives a float32 uniform of at least the layer's ``p``, one number per pass and unit,
    in that order. The masks depend on the seed alone: every spectrum of a run sees the
    same T masks. Boolean keep-masks, or with ``scaled`` float32 masks holding
    ``1 / (1 - p)`` for kept units and 0 for dropped ones (what `MCDropout` multiplies by).
    """
    widths = [layer.n_units for layer in layers]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _MASK_STREAM])))
    uniform = rng.random((n_samples, sum(widths)), dtype=np.float32)
    keep = uniform >= np.repeat([np.float32(layer.p) for layer in layers], widths)
    if not scaled:
        return keep
    scales = np.repeat([1.0 / (1.0 - layer.p) for layer in layers], widths).astype(np.float32)
    return keep * scales


def mc_predict(
    model,
    x: torch.Tensor,
    n_samples: int = 100,
    *,
    tau: float | None = None,
    seed: int | None = None,
    return_samples: bool = False,
    shared: tuple[torch.Tensor, ...] | None = None,
) -> MCPrediction:
    r"""Predict with Monte Carlo dropout: T stochastic passes, their mean and covariance.

    mean :math:`= \frac1T \sum_t \hat y_t`, covariance
    :math:`= \tau^{-1} I + \frac1T \sum_t \hat y_t \hat y_t^T - \text{mean}\,\text{mean}^T`
    (SPT paper §2.4, Eq. 5–6).

    The network stays in evaluation mode: only its dropout layers are stochastic, through
    explicit keep-masks, so BatchNorm uses and never updates its running statistics. The
    deterministic part before the first dropout layer runs once per spectrum, not T times
    (`SpectralTransformer.forward_shared`), and the T passes run together, as one matrix
    product per layer over all N T rows.

    The T sets of masks are drawn from ``seed`` alone and shared by every spectrum of the
    call: pass ``t`` is one draw of the network's weights from the approximate posterior,
    applied to all inputs, as in Gal & Ghahramani (2016). So a seeded run is reproducible,
    a spectrum's result does not depend on the other spectra of its batch, and the spread
    of a population's estimates keeps the correlation that the model's own uncertainty
    gives them. Drawing one set of masks per call, not per spectrum, is also what makes
    the passes cheap (issue 17).

    Parameters
    ----------
    model : `~astro_spt.nn.SpectralTransformer`
        The network (any module with ``forward_shared``, ``forward_stochastic`` taking
        ``n_passes`` and ``stochastic_layers``).
    x : `torch.Tensor`, shape (N, n_inputs)
        Inputs.
    n_samples : int, optional
        Number of stochastic passes T.
    tau : float or None, optional
        Model precision (`model_precision`); ``None`` adds no variance floor.
    seed : int or None, optional
        Seed of the dropout masks; ``None`` draws a fresh one (returned in the result).
    return_samples : bool, optional
        Keep the T passes in the result.
    shared : tuple of `torch.Tensor` or None, optional
        ``model.forward_shared(x)`` in evaluation mode, when the caller has computed it
        (e.g. to read the backbone output for an aleatoric head too); computed here
        otherwise. The result is the same bit for bit.

    Returns
    -------
    `MCPrediction`

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import SpectralTransformer, mc_predict
    >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1).eval()
    >>> x = torch.randn(4, 8)
    >>> a = mc_predict(net, x, n_samples=20, tau=10.0, seed=1)
    >>> b = mc_predict(net, x, n_samples=20, tau=10.0, seed=1)
    >>> torch.equal(a.mean, b.mean), a.covariance.shape
    (True, torch.Size([4, 2, 2]))
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    if tau is not None and not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])

    layers = model.stochastic_layers()
    # float32 masks of 0 and 1 / (1 - p): x * (1 / (1 - p)) is what the layer's
    # x * 1.0 * (1 / (1 - p)) with a boolean mask gives, bit for bit, in one pass
    scaled = x.dtype == torch.float32
    if layers:
        # shape (1, T, n_units) per layer: broadcast against every spectrum's T passes
        masks = torch.from_numpy(_draw_masks(seed, n_samples, layers, scaled=scaled))
        masks = masks.to(x.device).unsqueeze(0)
    # spectra per chunk: about _CHUNK_ROWS rows of passes, so that masks and activations
    # of a chunk stay in cache (issue 17: 1.5x faster than all passes at once)
    step = max(1, _CHUNK_ROWS // n_samples)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if shared is None:
                shared = model.forward_shared(x)
            chunks = []
            start = 0
            for layer in layers:
                layer.mask = masks[:, :, start : start + layer.n_units]
                start += layer.n_units
            for first in range(0, len(x), step):
                rows = slice(first, first + step)
                chunks.append(
                    model.forward_stochastic(*(t[rows] for t in shared), n_passes=n_samples)
                )
            samples = torch.cat(chunks).view(len(x), n_samples, -1)
    finally:
        for layer in layers:
            layer.mask = None
        model.train(was_training)

    mean = samples.mean(dim=1)
    centred = samples.double() - mean.double().unsqueeze(1)
    covariance = torch.einsum("ntd,nte->nde", centred, centred) / n_samples
    if tau is not None:
        eye = torch.eye(samples.shape[-1], dtype=torch.float64, device=covariance.device)
        covariance = covariance + eye / tau
    return MCPrediction(mean, covariance, samples if return_samples else None, seed)


def input_jacobian(model, x: torch.Tensor) -> torch.Tensor:
    """Derivatives of the deterministic network's outputs with respect to its inputs.

    One backward pass per output, in evaluation mode (BatchNorm on its running
    statistics, so each spectrum's derivatives depend on that spectrum only). It carries
    the uncertainty of the inputs (e.g. of PCA coefficients from a noisy spectrum) to the
    outputs to first order.

    Parameters
    ----------
    model : `~astro_spt.nn.SpectralTransformer`
        The network.
    x : `torch.Tensor`, shape (N, n_inputs)
        Inputs.

    Returns
    -------
    `torch.Tensor`, shape (N, n_outputs, n_inputs)

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import SpectralTransformer, input_jacobian
    >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1).eval()
    >>> x = torch.randn(4, 8)
    >>> jacobian = input_jacobian(net, x)
    >>> jacobian.shape
    torch.Size([4, 2, 8])
    >>> step = 1e-3 * torch.eye(8)[0]  # a finite difference agrees
    >>> with torch.no_grad():
    ...     change = (net(x + step) - net(x)) / 1e-3
    >>> torch.allclose(change, jacobian[:, :, 0], atol=1e-3)
    True
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            inputs = x.detach().clone().requires_grad_(True)
            outputs = model(inputs)
            rows = []
            for d in range(outputs.shape[1]):
                (grad,) = torch.autograd.grad(
                    outputs[:, d].sum(), inputs, retain_graph=d + 1 < outputs.shape[1]
                )
                rows.append(grad)
    finally:
        model.train(was_training)
    return torch.stack(rows, dim=1).detach()


def predictive_samples(
    mc_samples: torch.Tensor,
    covariance: torch.Tensor,
    *,
    epistemic_scale: torch.Tensor | None = None,
    keys,
    seed: int,
) -> torch.Tensor:
    """Samples of the full predictive distribution: MC dropout passes plus Gaussian terms.

    Each Monte Carlo pass (the model's own, epistemic, spread, stretched per output by
    ``epistemic_scale``) gets a Gaussian draw of ``covariance`` added (the spread the
    passes do not hold: the labels' scatter, the spectrum's noise, a variance floor).
    The draws are made exactly orthogonal to the passes' deviations and exactly of
    ``covariance`` over the T samples, so the samples' mean is the passes' mean and
    their covariance (normalised by T) is the passes' stretched covariance plus
    ``covariance``, to rounding. ``std`` of the samples is then the predictive
    uncertainty itself, not a Monte Carlo estimate of it. With fewer than
    ``2 D + 2`` passes the draws are only standardised, not orthogonalised.

    Parameters
    ----------
    mc_samples : `torch.Tensor`, shape (N, T, D)
        The Monte Carlo dropout passes.
    covariance : `torch.Tensor`, shape (N, D, D)
        Covariance to add, symmetric positive semi-definite.
    epistemic_scale : `torch.Tensor`, shape (D,), optional
        Factor on each output's deviations of the passes from their mean.
    keys : sequence of bytes
        One per spectrum: with ``seed`` it seeds the draws (as in `mc_predict`), so a
        spectrum's samples do not depend on its batch.
    seed : int
        Seed of the draws.

    Returns
    -------
    `torch.Tensor`, shape (N, T, D), float64

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import predictive_samples
    >>> passes = 0.1 * torch.randn(3, 50, 2, dtype=torch.float64)
    >>> extra = torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64)).expand(3, 2, 2)
    >>> samples = predictive_samples(passes, extra, keys=[b"a", b"b", b"c"], seed=0)
    >>> expected = torch.diagonal(extra, dim1=1, dim2=2) + passes.var(dim=1, unbiased=False)
    >>> torch.allclose(samples.var(dim=1, unbiased=False), expected)
    True
    >>> torch.allclose(samples.mean(dim=1), passes.mean(dim=1))
    True
    """
    samples = mc_samples.double()
    n, t, d = samples.shape
    if len(keys) != n:
        raise ValueError(f"got {len(keys)} keys for {n} spectra")
    mean = samples.mean(dim=1, keepdim=True)
    deviations = samples - mean
    if epistemic_scale is not None:
        deviations = deviations * epistemic_scale.to(deviations)
    draws = np.empty((n, t, d))
    for i, key in enumerate(keys):
        # a stream of its own, independent of the dropout masks (stream 0)
        rng = _spectrum_rng(seed, key, 1)
        draws[i] = rng.standard_normal((t, d))
    draws = torch.from_numpy(draws).to(samples.device)
    ones = torch.ones(n, t, 1, dtype=samples.dtype, device=samples.device)
    if t >= 2 * d + 2:
        basis, _ = torch.linalg.qr(torch.cat([ones, deviations], dim=2))
        draws = draws - basis @ (basis.mT @ draws)
    else:
        draws = draws - draws.mean(dim=1, keepdim=True)
    # whiten over the T samples, then colour with the wanted covariance
    gram = draws.mT @ draws / t + 1e-12 * torch.eye(d, dtype=draws.dtype, device=draws.device)
    whitened = torch.linalg.solve_triangular(torch.linalg.cholesky(gram), draws.mT, upper=False).mT
    colour = _psd_factor(covariance.double().to(samples.device))
    return mean + deviations + whitened @ colour.mT


def _psd_factor(covariance: torch.Tensor) -> torch.Tensor:
    """A factor F with F F^T = covariance, for positive semi-definite (even singular) input."""
    values, vectors = torch.linalg.eigh(0.5 * (covariance + covariance.mT))
    return vectors * torch.sqrt(torch.clamp(values, min=0.0)).unsqueeze(-2)
