"""Multi-head Hadamard self-attention (SPT paper §2.2, Eq. 1–2)."""

import torch
from torch import nn

from .activations import enhanced_softmax

__all__ = ["MultiHeadHSA"]

#: Functions that turn attention scores into weights, by name.
ATTENTION_ACTIVATIONS = {"enhanced_softmax": enhanced_softmax, "softmax": torch.softmax}


class MultiHeadHSA(nn.Module):
    r"""Multi-head Hadamard self-attention.

    Per head, with :math:`Q, K, V` the head's linear projections of the input (each of
    size :math:`d^* = d_{model} / h`)::

        A    = d* · (softmax(Q) ⊙ softmax(K))
        W    = enhanced_softmax(A)
        head = s · (W ⊙ V)

    where the softmaxes run over the head's :math:`d^*` features. The heads are
    concatenated and passed through an output projection (SPT paper Eq. 2). Every
    operation is element-wise, so the cost is linear in the input length, and any number
    of leading dimensions is accepted (one vector per spectrum, or a token sequence).

    Parameters
    ----------
    d_model : int
        Size of the input and output vectors.
    n_heads : int
        Number of heads; must divide ``d_model``.
    scale : float or None, optional
        The final scale :math:`s`. The paper leaves it open; the default, :math:`d^*`,
        restores the magnitude of :math:`V` because the weights of a head sum to one.
    bias : bool, optional
        Whether the linear projections have biases.
    activation : {"enhanced_softmax", "softmax"}, optional
        The function that turns the scores :math:`A` into weights :math:`W`. The paper's
        ``"enhanced_softmax"`` is the default; ``"softmax"`` is the ordinary softmax, kept
        for the ablation in ``docs/benchmarks.rst``.

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import MultiHeadHSA
    >>> hsa = MultiHeadHSA(d_model=16, n_heads=4)
    >>> hsa(torch.randn(3, 16)).shape
    torch.Size([3, 16])
    """

    def __init__(
        self,
        d_model: int = 512,
        n_heads: int = 8,
        scale: float | None = None,
        bias: bool = True,
        activation: str = "enhanced_softmax",
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if activation not in ATTENTION_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {tuple(ATTENTION_ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = activation
        self._weights = ATTENTION_ACTIVATIONS[activation]
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.scale = float(self.d_head if scale is None else scale)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the features of every input vector.

        Parameters
        ----------
        x : `torch.Tensor`, shape (..., d_model)
            Input vectors; any leading dimensions.

        Returns
        -------
        `torch.Tensor`, shape (..., d_model)

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import MultiHeadHSA
        >>> hsa = MultiHeadHSA(d_model=16, n_heads=4)
        >>> hsa(torch.randn(3, 16)).shape  # one vector per spectrum
        torch.Size([3, 16])
        >>> hsa(torch.randn(2, 10, 16)).shape  # or a batch of 10-token sequences
        torch.Size([2, 10, 16])
        """
        lead = x.shape[:-1]
        q, k, v = self.qkv(x).view(*lead, 3, self.n_heads, self.d_head).unbind(dim=-3)
        scores = self.d_head * (torch.softmax(q, dim=-1) * torch.softmax(k, dim=-1))
        heads = self.scale * (self._weights(scores, dim=-1) * v)
        return self.out(heads.reshape(*lead, self.d_model))

    def extra_repr(self) -> str:
        """The settings shown in the module's repr.

        Examples
        --------
        >>> from astro_spt.nn import MultiHeadHSA
        >>> print(MultiHeadHSA(d_model=16, n_heads=4))
        MultiHeadHSA(
          n_heads=4, scale=4.0, activation='enhanced_softmax'
          (qkv): Linear(in_features=16, out_features=48, bias=True)
          (out): Linear(in_features=16, out_features=16, bias=True)
        )
        """
        return f"n_heads={self.n_heads}, scale={self.scale}, activation={self.activation!r}"
