"""The enhanced softmax of the SPT paper (Appendix A)."""

import torch

__all__ = ["enhanced_softmax"]

# Above this row maximum the exponentials are rescaled by exp(-max) to avoid overflow;
# below it expm1 is used directly, which keeps full precision near zero.
_RESCALE_ABOVE = 1.0


def enhanced_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Enhanced softmax, :math:`(e^{x_i} - 1) / \sum_j (e^{x_j} - 1)`.

    SPT paper §2.2 and Appendix A: on non-negative inputs it sharpens the attention
    weights where the ordinary softmax flattens them; for :math:`0 < x_2 < x_1` the ratio
    of its outputs exceeds :math:`x_1 / x_2`, while the softmax's ratio stays below it.

    The inputs of the Hadamard self-attention are non-negative, which is the domain the
    function is meant for. It is computed in float32 (or float64 for float64 input) and
    returned in the input's dtype, so half-precision input gives no overflow. A row whose
    denominator vanishes (an all-zero row) gets uniform weights.

    Parameters
    ----------
    x : `torch.Tensor`
        Input scores.
    dim : int, optional
        The dimension along which the weights sum to one.

    Returns
    -------
    `torch.Tensor`
        Weights of the same shape and dtype as ``x``.

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import enhanced_softmax
    >>> w = enhanced_softmax(torch.tensor([[1.0, 0.5, 0.0]]))
    >>> w.sum().item()
    1.0
    >>> enhanced_softmax(torch.zeros(1, 4))
    tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xw = x.to(work_dtype)
    row_max = xw.amax(dim=dim, keepdim=True)
    # (e^x - 1) e^-m = e^(x-m) - e^-m; the common factor e^-m cancels in the ratio.
    shift = torch.clamp(row_max, min=_RESCALE_ABOVE) - _RESCALE_ABOVE
    # The clamp keeps the unselected branch finite, so that gradients through
    # torch.where stay finite too; it never touches a selected value.
    numerator = torch.where(
        shift > 0,
        torch.exp(xw - shift) - torch.exp(-shift),
        torch.expm1(torch.clamp(xw, max=_RESCALE_ABOVE)),
    )
    denominator = numerator.sum(dim=dim, keepdim=True)
    tiny = torch.finfo(work_dtype).tiny
    degenerate = denominator.abs() <= tiny
    n = x.shape[dim]
    weights = torch.where(
        degenerate,
        torch.full_like(numerator, 1.0 / n),
        numerator / torch.where(degenerate, torch.ones_like(denominator), denominator),
    )
    return weights.to(x.dtype)
