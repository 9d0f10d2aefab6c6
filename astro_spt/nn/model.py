"""The Spectral Transformer: embedding, SPT blocks and MLP head (SPT paper §2.1, Fig. 1)."""

import torch
from torch import nn
from torch.nn import functional as F

from .attention import MultiHeadHSA

__all__ = ["MCDropout", "SPTBlock", "SpectralTransformer"]

DROPOUT_POSITIONS = ("head", "all")


class MCDropout(nn.Module):
    """Dropout that can stay stochastic at prediction time without ``model.train()``.

    In training mode it is ordinary inverted dropout. In evaluation mode it is the
    identity, unless Monte Carlo prediction has handed it explicit masks (see
    `~astro_spt.nn.mc_predict`): then those masks are applied. MC prediction therefore
    never switches the network to training mode, so BatchNorm keeps using, and never
    updates, its running statistics.

    A mask is boolean (keep or drop), or floating point already holding ``1 / (1 - p)``
    for kept units and 0 for dropped ones; of shape (N, n_units), or (N, T, n_units) for
    T passes, applied to input of shape (N * T, n_units) or broadcast against input of
    shape (N, 1, n_units); a first axis of 1 shares the T masks among all N rows.

    Parameters
    ----------
    p : float
        Probability of dropping a unit.
    n_units : int
        Width of the layer's input (the number of units a mask covers).

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import MCDropout
    >>> drop = MCDropout(0.5, n_units=4).eval()
    >>> drop(torch.ones(1, 4))
    tensor([[1., 1., 1., 1.]])
    """

    def __init__(self, p: float, n_units: int):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.n_units = int(n_units)
        self.mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the dropout: random in training mode, the MC masks, or the identity.

        Parameters
        ----------
        x : `torch.Tensor`, shape (..., n_units)
            The layer's input.

        Returns
        -------
        `torch.Tensor`
            Same shape as ``x``; kept units are scaled by ``1 / (1 - p)``.

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import MCDropout
        >>> drop = MCDropout(0.5, n_units=4)
        >>> x = torch.ones(1000, 4)
        >>> sorted(drop.train()(x).unique().tolist())  # training: dropped or scaled by 2
        [0.0, 2.0]
        >>> bool(torch.equal(drop.eval()(x), x))  # evaluation: the identity
        True
        >>> drop.mask = torch.tensor([[True, False, True, True]])  # as mc_predict sets it
        >>> drop(x)[0].tolist()
        [2.0, 0.0, 2.0, 2.0]
        """
        if self.mask is not None:
            mask = self.mask
            if mask.dtype == torch.bool:
                mask = mask.to(x.dtype) * (1.0 / (1.0 - self.p))
            if x.ndim == 2 and mask.ndim == 3:
                # passes folded into the batch axis: rows of T consecutive passes against
                # masks of shape (N, T, n_units), or (1, T, n_units) shared by all rows
                return (x.view(-1, *mask.shape[1:]) * mask).view(x.shape)
            return x * mask  # already scaled, as mc_predict hands it over
        if self.training and self.p > 0:
            return F.dropout(x, self.p, training=True)
        return x

    def extra_repr(self) -> str:
        """The settings shown in the module's repr.

        Examples
        --------
        >>> from astro_spt.nn import MCDropout
        >>> MCDropout(0.1, n_units=16)
        MCDropout(p=0.1, n_units=16)
        """
        return f"p={self.p}, n_units={self.n_units}"


class SPTBlock(nn.Module):
    """One block of the SPT backbone: ``x + HSA(BN(x))`` then ``x + FFN(BN(x))``.

    Parameters
    ----------
    d_model : int
        Width of the block's input and output.
    n_heads : int
        Number of attention heads.
    d_ff : int
        Hidden width of the GELU feed-forward network.
    dropout : float
        Dropout rate on the two residual branches (0 disables them).
    attention_scale : float or None
        Final scale of the Hadamard self-attention (see `MultiHeadHSA`).
    bn_momentum : float
        Momentum of the BatchNorm running statistics.
    attention_activation : {"enhanced_softmax", "softmax"}
        Weight function of the attention (see `MultiHeadHSA`).

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import SPTBlock
    >>> block = SPTBlock(d_model=16, n_heads=4, d_ff=32).eval()
    >>> block(torch.randn(5, 16)).shape
    torch.Size([5, 16])
    """

    def __init__(
        self,
        d_model: int = 512,
        n_heads: int = 8,
        d_ff: int = 2048,
        dropout: float = 0.0,
        attention_scale: float | None = None,
        bn_momentum: float = 0.1,
        attention_activation: str = "enhanced_softmax",
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm1d(d_model, momentum=bn_momentum)
        self.attention = MultiHeadHSA(
            d_model, n_heads, scale=attention_scale, activation=attention_activation
        )
        self.drop1 = MCDropout(dropout, d_model)
        self.norm2 = nn.BatchNorm1d(d_model, momentum=bn_momentum)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.drop2 = MCDropout(dropout, d_model)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """The attention branch, ``HSA(BN(x))``, before its dropout.

        `SpectralTransformer.forward_shared` computes it once per spectrum for Monte
        Carlo prediction and hands it to `forward` as ``attended``.

        Parameters
        ----------
        x : `torch.Tensor`, shape (N, d_model)
            The block's input.

        Returns
        -------
        `torch.Tensor`, shape (N, d_model)

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SPTBlock
        >>> block = SPTBlock(d_model=16, n_heads=4, d_ff=32).eval()
        >>> x = torch.randn(5, 16)
        >>> attended = block.attend(x)
        >>> attended.shape
        torch.Size([5, 16])
        >>> torch.allclose(block(x, attended), block(x))
        True
        """
        return self.attention(self.norm1(x))

    def forward(self, x: torch.Tensor, attended: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block: ``x + HSA(BN(x))`` then ``x + FFN(BN(x))``.

        Parameters
        ----------
        x : `torch.Tensor`, shape (N, d_model)
            The block's input, one vector per spectrum.
        attended : `torch.Tensor` or None, optional
            The output of `attend` for this ``x``, when already computed.

        Returns
        -------
        `torch.Tensor`, shape (N, d_model)

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SPTBlock
        >>> block = SPTBlock(d_model=16, n_heads=4, d_ff=32).eval()
        >>> block(torch.randn(5, 16)).shape
        torch.Size([5, 16])
        """
        if attended is None:
            attended = self.attend(x)
        x = x + self.drop1(attended)
        return x + self.drop2(self.ffn(self.norm2(x)))


def _reset(module: nn.Module, std: float) -> None:
    """`SpectralTransformer.reset_parameters` of one module."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        module.reset_parameters()


def noise_feature(noise: torch.Tensor) -> torch.Tensor:
    """What an aleatoric head built with ``scatter_noise=True`` reads of the noise, (N, D).

    The logarithm of each label's σ from the propagated noise (the square root of the
    covariance's diagonal), clamped to [-10, 5] so that a noiseless or a hopeless
    spectrum stays a finite input.

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn.model import noise_feature
    >>> noise_feature(torch.diag_embed(torch.tensor([[1e-4, 1.0], [0.0, 1e12]])))
    tensor([[ -4.6052,   0.0000],
            [-10.0000,   5.0000]])
    """
    variance = torch.diagonal(noise, dim1=-2, dim2=-1)
    return torch.clamp(0.5 * torch.log(variance), -10.0, 5.0)


class SpectralTransformer(nn.Module):
    """The Spectral Transformer (SPT) regression network.

    A linear projection of the PCA coefficients to ``d_model``, a backbone of
    ``n_blocks`` `SPTBlock` s, a final BatchNorm and an MLP head (SPT paper §2.1, Fig. 1).
    The defaults are the paper's: 143 inputs, ``d_model`` 512, 8 heads of 64, 6 blocks.
    Weights are initialised from a truncated normal distribution (paper §2.6).

    Where dropout sits is left open by the paper. ``dropout_position="head"`` puts it
    only in the MLP head, before each of its linear layers, so Monte Carlo prediction
    runs the backbone once and only the head T times; ``"all"`` also puts it on the
    residual branches of every block, which makes MC prediction cost about T forward
    passes.

    Parameters
    ----------
    n_inputs : int
        Number of input features (PCA components).
    n_outputs : int
        Number of predicted labels.
    d_model : int
        Width of the embedding and of every block.
    n_heads : int
        Number of attention heads (``d_model`` must be divisible by it).
    n_blocks : int
        Number of SPT blocks.
    d_ff : int or None
        Hidden width of the feed-forward networks; ``None`` means ``4 * d_model``.
    head_hidden : int or None
        Hidden width of the MLP head; ``None`` means ``d_model // 2``.
    dropout : float
        Dropout rate, also the rate used by Monte Carlo dropout.
    dropout_position : {"head", "all"}
        Where the dropout layers are.
    attention_scale : float or None
        Final scale of the attention heads; ``None`` means the head size.
    init_std : float
        Standard deviation of the truncated-normal initialisation (truncated at ±2σ).
    bn_momentum : float
        Momentum of the BatchNorm running statistics.
    attention_activation : {"enhanced_softmax", "softmax"}
        Weight function of the attention: the paper's enhanced softmax (default), or the
        ordinary softmax for the ablation in ``docs/benchmarks.rst``.
    aleatoric : bool
        Add a second MLP head on the normalised backbone output that predicts each
        spectrum's label covariance (the scatter of the labels about the prediction,
        heteroscedastic): `scatter_covariance`. It is trained after the network, by a
        Gaussian likelihood (`~astro_spt.training.fit_scatter_head`), and leaves the
        predicted labels unchanged.
    scatter_noise : bool
        The aleatoric head also reads the spectrum's noise: the logarithm of each label's
        σ from the propagated noise of the spectrum
        (`~astro_spt.bundle.EstimatorBundle.noise_covariance`), so that the scatter it
        predicts can follow the S/N (the backbone's input, the PCA coefficients, hardly
        tells a noisy spectrum from a clean one). `scatter_cholesky` then needs ``noise``.

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import SpectralTransformer
    >>> net = SpectralTransformer(n_inputs=10, d_model=32, n_heads=4, n_blocks=2).eval()
    >>> net(torch.randn(3, 10)).shape
    torch.Size([3, 2])
    >>> SpectralTransformer(**net.hparams).hparams == net.hparams
    True
    """

    def __init__(
        self,
        n_inputs: int = 143,
        n_outputs: int = 2,
        d_model: int = 512,
        n_heads: int = 8,
        n_blocks: int = 6,
        d_ff: int | None = None,
        head_hidden: int | None = None,
        dropout: float = 0.1,
        dropout_position: str = "head",
        attention_scale: float | None = None,
        init_std: float = 0.02,
        bn_momentum: float = 0.1,
        attention_activation: str = "enhanced_softmax",
        aleatoric: bool = False,
        scatter_noise: bool = False,
    ):
        super().__init__()
        if dropout_position not in DROPOUT_POSITIONS:
            raise ValueError(
                f"dropout_position must be one of {DROPOUT_POSITIONS}, got {dropout_position!r}"
            )
        for name, value in (
            ("n_inputs", n_inputs),
            ("n_outputs", n_outputs),
            ("n_blocks", n_blocks),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        d_ff = 4 * d_model if d_ff is None else d_ff
        head_hidden = d_model // 2 if head_hidden is None else head_hidden
        self.hparams = {
            "n_inputs": n_inputs,
            "n_outputs": n_outputs,
            "d_model": d_model,
            "n_heads": n_heads,
            "n_blocks": n_blocks,
            "d_ff": d_ff,
            "head_hidden": head_hidden,
            "dropout": dropout,
            "dropout_position": dropout_position,
            "attention_scale": attention_scale,
            "init_std": init_std,
            "bn_momentum": bn_momentum,
            "attention_activation": attention_activation,
            "aleatoric": bool(aleatoric),
            "scatter_noise": bool(aleatoric and scatter_noise),
        }
        block_dropout = dropout if dropout_position == "all" else 0.0
        self.embed = nn.Linear(n_inputs, d_model)
        self.blocks = nn.ModuleList(
            SPTBlock(
                d_model,
                n_heads,
                d_ff,
                block_dropout,
                attention_scale,
                bn_momentum,
                attention_activation,
            )
            for _ in range(n_blocks)
        )
        self.norm = nn.BatchNorm1d(d_model, momentum=bn_momentum)
        self.head = nn.Sequential(
            MCDropout(dropout, d_model),
            nn.Linear(d_model, head_hidden),
            nn.GELU(),
            MCDropout(dropout, head_hidden),
            nn.Linear(head_hidden, n_outputs),
        )
        # One output per entry of a lower-triangular Cholesky factor of the covariance.
        # Its random draws come from a fork of the generator: with the same seed, the
        # rest of the network starts, and trains, exactly as without the head, so that
        # the uncertainty model cannot move the predicted labels.
        self.scatter_head = None
        if aleatoric:
            with torch.random.fork_rng(devices=[]):
                self.scatter_head = nn.Sequential(
                    nn.Linear(d_model + (n_outputs if scatter_noise else 0), head_hidden),
                    nn.GELU(),
                    nn.Linear(head_hidden, n_outputs * (n_outputs + 1) // 2),
                )
        self.reset_parameters(init_std)

    def reset_parameters(self, std: float = 0.02) -> None:
        """Truncated-normal weights (±2σ), zero biases, unit BatchNorm scales.

        Called by the constructor with ``init_std``; call it again to start afresh.

        Parameters
        ----------
        std : float, optional
            Standard deviation σ of the linear layers' weights, truncated at ±2σ.

        Examples
        --------
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1)
        >>> net.reset_parameters(std=0.01)
        >>> weight, bias = net.embed.weight.detach(), net.embed.bias.detach()
        >>> bool(weight.abs().max() <= 0.02), bool((bias == 0).all())  # within ±2σ, zero
        (True, True)
        """
        head = set() if self.scatter_head is None else set(self.scatter_head.modules())
        for module in self.modules():
            if module not in head:
                _reset(module, std)
        if head:
            with torch.random.fork_rng(devices=[]):  # see __init__
                for module in self.scatter_head.modules():
                    _reset(module, std)

    def _check_input(self, x: torch.Tensor) -> None:
        n_inputs = self.hparams["n_inputs"]
        if x.ndim != 2 or x.shape[1] != n_inputs:
            raise ValueError(
                f"expected input of shape (n_spectra, {n_inputs}), got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict the (scaled) labels of a batch of spectra from their PCA coefficients.

        In evaluation mode the pass is deterministic; `~astro_spt.nn.mc_predict` makes
        it stochastic for Monte Carlo dropout.

        Parameters
        ----------
        x : `torch.Tensor`, shape (N, n_inputs)
            PCA coefficients, one row per spectrum.

        Returns
        -------
        `torch.Tensor`, shape (N, n_outputs)

        Raises
        ------
        ValueError
            If ``x`` is not of shape (N, n_inputs).

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1).eval()
        >>> with torch.no_grad():
        ...     y = net(torch.randn(4, 8))
        >>> y.shape
        torch.Size([4, 2])
        """
        return self.forward_stochastic(*self.forward_shared(x))

    # Monte Carlo prediction runs forward_shared once per spectrum and
    # forward_stochastic once per pass: the split sits at the first dropout layer.
    def forward_shared(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The deterministic part of the network, before its first dropout layer.

        Parameters
        ----------
        x : `torch.Tensor`, shape (N, n_inputs)
            PCA coefficients.

        Returns
        -------
        tuple of `torch.Tensor`
            What `forward_stochastic` takes: with ``dropout_position="head"`` one tensor,
            the normalised backbone output (N, d_model); with ``"all"`` two, the
            embedding and the first block's attention branch (`SPTBlock.attend`).

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SpectralTransformer
        >>> x = torch.randn(4, 8)
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1).eval()
        >>> [t.shape for t in net.forward_shared(x)]
        [torch.Size([4, 16])]
        >>> net_all = SpectralTransformer(
        ...     n_inputs=8, d_model=16, n_heads=2, n_blocks=1, dropout_position="all"
        ... ).eval()
        >>> len(net_all.forward_shared(x))
        2
        """
        if self.hparams["dropout_position"] == "head":
            return (self.backbone(x),)
        self._check_input(x)
        h = self.embed(x)
        return h, self.blocks[0].attend(h)

    def forward_stochastic(self, *shared: torch.Tensor, n_passes: int = 1) -> torch.Tensor:
        """The rest of the network, from the output of `forward_shared`.

        Parameters
        ----------
        *shared : `torch.Tensor`
            The tensors returned by `forward_shared`.
        n_passes : int, optional
            Number of passes T per spectrum: the result holds T consecutive rows per
            spectrum, as if every shared row were repeated T times (what Monte Carlo
            prediction runs, with masks of shape (N, T, n_units) in the dropout layers).

        Returns
        -------
        `torch.Tensor`, shape (N * n_passes, n_outputs)

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1).eval()
        >>> x = torch.randn(4, 8)
        >>> y = net.forward_stochastic(*net.forward_shared(x))
        >>> y.shape, torch.allclose(y, net(x))
        (torch.Size([4, 2]), True)
        >>> net.forward_stochastic(*net.forward_shared(x), n_passes=3).shape
        torch.Size([12, 2])
        """
        if self.hparams["dropout_position"] == "all":
            h, attended = (t.repeat_interleave(n_passes, dim=0) for t in shared)
            h = self.blocks[0](h, attended)
            for block in self.blocks[1:]:
                h = block(h)
            return self.head(self.norm(h))
        (h,) = shared
        if n_passes == 1:
            return self.head(h)
        # The head starts with dropout: its input, the same for the T passes, is broadcast
        # against the (N, T, d_model) masks instead of being copied T times first.
        y = self.head(h.unsqueeze(1))
        return y.expand(-1, n_passes, -1).reshape(-1, y.shape[-1])

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised backbone output of the deterministic network, shape (N, d_model).

        What the MLP heads read; dropout is off (evaluation mode, no Monte Carlo masks).

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1).eval()
        >>> net.backbone(torch.randn(4, 8)).shape
        torch.Size([4, 16])
        """
        self._check_input(x)
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def scatter_cholesky(self, h: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Lower-triangular Cholesky factors of the label covariance from a backbone output.

        Parameters
        ----------
        h : `torch.Tensor`, shape (N, d_model)
            Output of `backbone`.
        noise : `torch.Tensor`, shape (N, n_outputs, n_outputs), optional
            The covariance of the labels from the spectrum's propagated noise, in the
            network's label space; needed, and only read, when the network was built
            with ``scatter_noise=True``.

        Returns
        -------
        `torch.Tensor`, shape (N, n_outputs, n_outputs)
            ``L`` with a positive diagonal; the covariance is ``L @ L.mT``.

        Raises
        ------
        ValueError
            If the network was built without ``aleatoric=True``, or with
            ``scatter_noise=True`` and ``noise`` is missing.

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(
        ...     n_inputs=8, d_model=16, n_heads=2, n_blocks=1, aleatoric=True
        ... ).eval()
        >>> factor = net.scatter_cholesky(net.backbone(torch.randn(4, 8)))
        >>> factor.shape, bool((torch.diagonal(factor, dim1=1, dim2=2) > 0).all())
        (torch.Size([4, 2, 2]), True)
        """
        if self.scatter_head is None:
            raise ValueError("this network has no aleatoric head (built with aleatoric=False)")
        d = self.hparams["n_outputs"]
        if self.hparams.get("scatter_noise"):
            if noise is None:
                raise ValueError("this aleatoric head reads the spectrum's noise: pass noise=")
            h = torch.cat([h, noise_feature(noise).to(h.dtype)], dim=1)
        raw = self.scatter_head(h)
        rows, cols = torch.tril_indices(d, d, device=raw.device)
        factor = raw.new_zeros(raw.shape[0], d, d)
        factor[:, rows, cols] = raw
        # exp of a clamped log keeps the diagonal positive and finite (σ from 1e-3 to 1e3
        # of the standardised labels' spread)
        diagonal = torch.exp(torch.clamp(torch.diagonal(factor, dim1=1, dim2=2), -7.0, 7.0))
        return torch.tril(factor, diagonal=-1) + torch.diag_embed(diagonal)

    def scatter_covariance(
        self, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predicted covariance of the labels about the prediction (aleatoric), (N, D, D).

        In the network's (standardised) label space; needs ``aleatoric=True``, and
        ``noise`` with ``scatter_noise=True`` (`scatter_cholesky`).

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(
        ...     n_inputs=8, d_model=16, n_heads=2, n_blocks=1, aleatoric=True
        ... ).eval()
        >>> with torch.no_grad():
        ...     covariance = net.scatter_covariance(torch.randn(4, 8))
        >>> covariance.shape
        torch.Size([4, 2, 2])
        """
        factor = self.scatter_cholesky(self.backbone(x), noise)
        return factor @ factor.mT

    def stochastic_layers(self) -> list[MCDropout]:
        """The dropout layers that make a pass stochastic, in forward order.

        Layers with ``p = 0`` are left out.

        Returns
        -------
        list of `MCDropout`

        Examples
        --------
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1)
        >>> net.stochastic_layers()  # dropout_position="head": the MLP head only
        [MCDropout(p=0.1, n_units=16), MCDropout(p=0.1, n_units=8)]
        >>> net_all = SpectralTransformer(
        ...     n_inputs=8, d_model=16, n_heads=2, n_blocks=1, dropout_position="all"
        ... )
        >>> len(net_all.stochastic_layers())  # also two in every block
        4
        """
        return [m for m in self.modules() if isinstance(m, MCDropout) and m.p > 0]

    def count_parameters(self) -> int:
        """Number of trainable parameters.

        Returns
        -------
        int

        Examples
        --------
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1)
        >>> net.count_parameters()
        3610
        """
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward_flops(self, n_passes: int = 1) -> int:
        """Floating-point operations of a forward pass per spectrum, or of T passes.

        Counts multiply-adds of the linear layers as two operations each; element-wise
        operations (softmaxes, GELU, BatchNorm) are a few per unit and are included as
        rough counts. With ``n_passes`` T, the work of Monte Carlo prediction
        (`~astro_spt.nn.mc_predict`): `forward_shared` once and `forward_stochastic`
        T times.

        Parameters
        ----------
        n_passes : int, optional
            Number of passes T.

        Returns
        -------
        int

        Examples
        --------
        >>> from astro_spt.nn import SpectralTransformer
        >>> net = SpectralTransformer(n_inputs=8, d_model=16, n_heads=2, n_blocks=1)
        >>> net.forward_flops()
        7664
        >>> net.forward_flops(100)  # the backbone once, the MLP head 100 times
        42512
        """
        hp = self.hparams
        d, f, h = hp["d_model"], hp["d_ff"], hp["head_hidden"]
        embed = 2 * hp["n_inputs"] * d
        # per block: 2 BN, 2 softmax + enhanced softmax (~5 ops/unit each), GELU (~8 ops)
        attend = 2 * 4 * d * d + 2 * d + 3 * 5 * d + 2 * d
        rest_of_block = 2 * 2 * d * f + 2 * d + 2 * d + 8 * f
        head = 2 * (d * h + h * hp["n_outputs"]) + 8 * h
        total = embed + hp["n_blocks"] * (attend + rest_of_block) + 2 * d + head
        shared = total - head if hp["dropout_position"] == "head" else embed + attend
        return shared + n_passes * (total - shared)
