"""The optimisation loop of the SPT paper (§2.6) on feature and label arrays.

Adam (β₁ 0.9, β₂ 0.999, ε 1e-8), learning rate 1e-4 multiplied by 0.8 every 100 epochs,
L2 weight decay 5e-4, early stopping after ``patience`` epochs without improvement of the
validation loss, and final weights the average of the weights of the last ``patience``
epochs. It works on arrays already reduced to network inputs and scaled labels; the
spectra-to-bundle glue lives in `astro_spt.training.train`.
"""

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .._progress import progress_bar

__all__ = [
    "EarlyStopping",
    "TrainingConfig",
    "TrainingHistory",
    "average_state_dicts",
    "fit_network",
    "fit_scatter_head",
    "gaussian_nll",
]


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of the optimisation (SPT paper §2.6; the open ones are marked).

    Attributes
    ----------
    learning_rate : float
        Initial learning rate (paper: 1e-4).
    lr_decay : float
        Factor applied to the learning rate every ``lr_step_epochs`` epochs (paper: 0.8).
    lr_step_epochs : int
        Epochs between learning-rate decays (paper: 100).
    weight_decay : float
        L2 weight decay λ (paper: 5e-4); also enters the MC-dropout precision τ.
    betas, adam_eps : tuple of float, float
        Adam's parameters (paper: 0.9, 0.999, 1e-8).
    batch_size : int
        Mini-batch size (open in the paper). 128 gave a lower validation error than 32
        and 64 on the real-data benchmark (``docs/benchmarks.rst``).
    max_epochs : int
        Upper limit on the number of epochs (open). A safety cap: on the real-data
        benchmark early stopping ended every run within 70 epochs.
    patience : int
        Epochs without validation improvement before stopping (paper: 10); the final
        weights are the average of the weights after each of those epochs.
    min_delta : float
        Smallest decrease of the validation loss that counts as an improvement.
    loss : {"mahalanobis", "mahalanobis_squared", "mse"}
        Training loss (paper: Mahalanobis distance; the squared form is open). The
        distance did better than its square and than the mean squared error on the
        real-data benchmark (``docs/benchmarks.rst``).
    seed : int
        Seed of the initialisation, the shuffling and the training dropout.

    Examples
    --------
    >>> from astro_spt.training import TrainingConfig
    >>> config = TrainingConfig(batch_size=64, max_epochs=300)  # the rest: the paper's
    >>> config.learning_rate, config.patience, config.loss
    (0.0001, 10, 'mahalanobis')
    >>> TrainingConfig.from_dict(config.to_dict()) == config
    True

    Pass it to `fit_network`, or to `train` through `EstimatorConfig`.
    """

    learning_rate: float = 1e-4
    lr_decay: float = 0.8
    lr_step_epochs: int = 100
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    # batch size, epoch cap and loss form: open in the paper, settled on validation data
    # in docs/benchmarks.rst
    batch_size: int = 128
    max_epochs: int = 1000
    patience: int = 10
    min_delta: float = 0.0
    loss: str = "mahalanobis"
    seed: int = 0

    def __post_init__(self):
        if self.loss not in ("mahalanobis", "mahalanobis_squared", "mse"):
            raise ValueError(f"unknown loss {self.loss!r}")
        if self.patience < 1 or self.max_epochs < 1 or self.batch_size < 2:
            raise ValueError("patience and max_epochs must be >= 1 and batch_size >= 2")
        object.__setattr__(self, "betas", tuple(self.betas))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of the settings.

        Returns
        -------
        dict

        Examples
        --------
        >>> import json
        >>> from astro_spt.training import TrainingConfig
        >>> d = TrainingConfig(max_epochs=300).to_dict()
        >>> d["max_epochs"], d["betas"]
        (300, [0.9, 0.999])
        >>> text = json.dumps(d)  # e.g. for a provenance record
        """
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingConfig":
        """Rebuild from `to_dict` output; unknown keys are an error.

        Parameters
        ----------
        d : dict
            Settings by field name; missing ones take their defaults.

        Returns
        -------
        `TrainingConfig`

        Raises
        ------
        ValueError
            For an unknown key or an invalid value.

        Examples
        --------
        >>> from astro_spt.training import TrainingConfig
        >>> TrainingConfig.from_dict({"batch_size": 64}).batch_size
        64
        >>> TrainingConfig.from_dict({"lr": 1e-3})
        Traceback (most recent call last):
        ...
        ValueError: unknown TrainingConfig fields: ['lr']
        """
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainingConfig fields: {sorted(unknown)}")
        return cls(**d)

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of (zero-based) ``epoch``.

        Examples
        --------
        >>> from astro_spt.training import TrainingConfig
        >>> c = TrainingConfig()
        >>> c.learning_rate_at(99), round(c.learning_rate_at(100), 12)
        (0.0001, 8e-05)
        """
        return self.learning_rate * self.lr_decay ** (epoch // self.lr_step_epochs)


@dataclass
class TrainingHistory:
    """Per-epoch record of a training run, as returned by `fit_network`.

    Attributes
    ----------
    train_loss, val_loss : list of float
        Mean training and validation loss of each epoch.
    learning_rate : list of float
        Learning rate of each epoch.
    best_epoch : int
        Zero-based epoch of the lowest validation loss.
    stopped_early : bool
        Whether early stopping ended the run before ``max_epochs``.
    averaged_epochs : list of int
        Epochs whose weights were averaged into the final network.
    split : dict or None
        Set by `train`: the indices of the ``train``, ``validation`` and ``test`` spectra.
    test_metrics : `~astropy.table.Table` or None
        Set by `train`: the accuracy on the test spectra.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.nn import SpectralTransformer
    >>> from astro_spt.training import TrainingConfig, fit_network
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(80, 4)), rng.normal(size=(80, 2))
    >>> net = SpectralTransformer(n_inputs=4, d_model=8, n_heads=2, n_blocks=1)
    >>> config = TrainingConfig(max_epochs=3)
    >>> history = fit_network(net, x[:60], y[:60], x[60:], y[60:], config)
    >>> history.n_epochs, len(history.val_loss), history.stopped_early
    (3, 3, False)
    >>> history.learning_rate[0], history.averaged_epochs
    (0.0001, [0, 1, 2])
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    averaged_epochs: list[int] = field(default_factory=list)
    split: dict | None = None
    test_metrics: object = None

    @property
    def n_epochs(self) -> int:
        """Number of epochs run.

        Examples
        --------
        >>> from astro_spt.training import TrainingHistory
        >>> TrainingHistory(train_loss=[1.2, 0.9, 0.8], val_loss=[1.1, 1.0, 1.0]).n_epochs
        3
        """
        return len(self.train_loss)

    def to_dict(self) -> dict:
        """The per-epoch record as JSON types (without the split and test metrics).

        Returns
        -------
        dict

        Examples
        --------
        >>> import json
        >>> from astro_spt.training import TrainingHistory
        >>> history = TrainingHistory(train_loss=[1.2, 0.9], val_loss=[1.1, 1.0], best_epoch=1)
        >>> d = history.to_dict()
        >>> d["val_loss"], d["best_epoch"], "split" in d
        ([1.1, 1.0], 1, False)
        >>> text = json.dumps(d)  # e.g. for a provenance record
        """
        d = asdict(self)
        d.pop("split")
        d.pop("test_metrics")
        return d


class EarlyStopping:
    """Stop after ``patience`` epochs without an improvement of the validation loss.

    Examples
    --------
    >>> from astro_spt.training import EarlyStopping
    >>> stopper = EarlyStopping(patience=2)
    >>> [stopper.update(v) for v in [3.0, 2.0, 2.5, 2.1, 1.0]]
    [False, False, False, True, False]
    """

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience = patience
        self.min_delta = min_delta
        self.best = np.inf
        self.best_epoch = -1
        self.since_best = 0
        self._epoch = -1

    def update(self, val_loss: float) -> bool:
        """Record one epoch's validation loss; True when training should stop.

        Parameters
        ----------
        val_loss : float
            The epoch's validation loss.

        Returns
        -------
        bool
            Whether ``patience`` epochs have passed without an improvement.

        Examples
        --------
        >>> from astro_spt.training import EarlyStopping
        >>> stopper = EarlyStopping(patience=2)
        >>> stopper.update(3.0), stopper.update(2.0), stopper.update(2.5)
        (False, False, False)
        >>> stopper.update(2.1), stopper.best, stopper.best_epoch
        (True, 2.0, 1)
        """
        self._epoch += 1
        if val_loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.since_best = val_loss, self._epoch, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience


def average_state_dicts(states):
    """Element-wise mean of network state dicts (floating tensors; others from the last).

    Examples
    --------
    >>> import torch
    >>> from astro_spt.training import average_state_dicts
    >>> average_state_dicts([{"w": torch.tensor([0.0])}, {"w": torch.tensor([2.0])}])
    {'w': tensor([1.])}
    """
    import torch

    if not states:
        raise ValueError("no state dicts to average")
    averaged = {}
    for key, last in states[-1].items():
        if torch.is_floating_point(last):
            stacked = torch.stack([s[key].double() for s in states])
            averaged[key] = stacked.mean(0).to(last.dtype)
        else:
            averaged[key] = last.clone()
    return averaged


def _make_loss(config, y_train):
    import torch

    from ..nn import MahalanobisLoss

    if config.loss == "mse":
        return torch.nn.MSELoss()
    return MahalanobisLoss.from_labels(y_train, squared=config.loss == "mahalanobis_squared")


def _evaluate(net, loss_fn, x, y, batch_size):
    import torch

    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            total += loss_fn(net(xb), yb).item() * len(xb)
    return total / len(x)


def fit_network(
    net, x_train, y_train, x_val, y_val, config=None, *, device=None, progress=False, callback=None
):
    """Train ``net`` in place with the paper's recipe and return its history.

    Parameters
    ----------
    net : `~astro_spt.nn.SpectralTransformer`
        The network; its weights are replaced by the average of the last
        ``config.patience`` epochs' weights when training ends.
    x_train, y_train : array-like, shape (N, n_inputs) and (N, n_outputs)
        Training inputs and scaled labels.
    x_val, y_val : array-like
        Validation inputs and scaled labels (early stopping).
    config : `TrainingConfig`, optional
        Settings; the defaults are the paper's.
    device : str or `torch.device`, optional
        Where to train (default CPU).
    progress : bool, optional
        Show a progress bar of epochs (on standard error).
    callback : callable, optional
        Called as ``callback(epoch, net, history)`` after every epoch.

    Returns
    -------
    `TrainingHistory`

    Examples
    --------
    >>> import numpy as np
    >>> from astro_spt.nn import SpectralTransformer
    >>> from astro_spt.training import TrainingConfig, fit_network
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(80, 4)), rng.normal(size=(80, 2))
    >>> net = SpectralTransformer(n_inputs=4, d_model=8, n_heads=2, n_blocks=1)
    >>> h = fit_network(net, x[:60], y[:60], x[60:], y[60:], TrainingConfig(max_epochs=3))
    >>> h.n_epochs
    3
    """
    import torch

    config = config or TrainingConfig()
    device = torch.device(device or "cpu")

    def as_tensor(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

    x_train, y_train, x_val, y_val = map(as_tensor, (x_train, y_train, x_val, y_val))
    if len(x_train) < 2 or len(x_val) < 1:
        raise ValueError("need at least 2 training and 1 validation samples")
    net.to(device)
    loss_fn = _make_loss(config, y_train.cpu().numpy()).to(device)
    optimiser = torch.optim.Adam(
        net.parameters(),
        lr=config.learning_rate,
        betas=config.betas,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimiser, step_size=config.lr_step_epochs, gamma=config.lr_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # training-time dropout draws from the global generator

    history = TrainingHistory()
    recent = []  # state dicts of the last `patience` epochs
    stopper = EarlyStopping(config.patience, config.min_delta)
    bar = progress_bar(config.max_epochs, progress=bool(progress), unit="epoch", desc="training")
    n = len(x_train)
    for epoch in range(config.max_epochs):
        net.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            optimiser.zero_grad()
            loss = loss_fn(net(x_train[idx]), y_train[idx])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        history.learning_rate.append(optimiser.param_groups[0]["lr"])
        scheduler.step()
        history.train_loss.append(total / n)
        val = _evaluate(net, loss_fn, x_val, y_val, 4 * config.batch_size)
        history.val_loss.append(val)
        recent.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        recent = recent[-config.patience :]
        stop = stopper.update(val)
        history.best_epoch = stopper.best_epoch
        bar.update()
        if callback is not None:
            callback(epoch, net, history)
        if stop:
            history.stopped_early = True
            break
    bar.close()
    history.averaged_epochs = list(range(history.n_epochs - len(recent), history.n_epochs))
    net.load_state_dict(average_state_dicts(recent))
    net.eval()
    return history


def gaussian_nll(residual, factor):
    """Negative log-likelihood (less a constant) of residuals under N(0, L Lᵀ), per sample.

    Parameters
    ----------
    residual : `torch.Tensor`, shape (N, D)
    factor : `torch.Tensor`, shape (N, D, D)
        Lower-triangular Cholesky factors with a positive diagonal.

    Returns
    -------
    `torch.Tensor`, shape (N,)

    Examples
    --------
    >>> import torch
    >>> from astro_spt.training.loop import gaussian_nll
    >>> factor = torch.diag_embed(torch.tensor([[2.0, 1.0]]))  # σ = 2 and 1
    >>> gaussian_nll(torch.tensor([[2.0, 0.0]]), factor)  # ½·1 + log 2
    tensor([1.1931])
    """
    import torch

    whitened = torch.linalg.solve_triangular(factor, residual.unsqueeze(-1), upper=False)
    log_det = torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * whitened.squeeze(-1).pow(2).sum(-1) + log_det


def fit_scatter_head(
    net,
    x_train,
    y_train,
    x_val,
    y_val,
    *,
    seed: int = 0,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    max_epochs: int = 300,
    patience: int = 20,
    device=None,
    residual_train=None,
    noise_train=None,
    noise_val=None,
    beyond_noise: bool | None = None,
) -> dict:
    r"""Train the aleatoric head of a trained network by a Gaussian likelihood.

    The second stage of training (``docs/uncertainties.rst``): the network's mean is
    fitted by the paper's Mahalanobis loss (`fit_network`) and stays frozen; only
    ``net.scatter_head`` learns, from the residuals of the deterministic network, the
    covariance :math:`L L^T` of the labels about its prediction, minimising
    :math:`\frac12 r^T (L L^T)^{-1} r + \log |L|` (`gaussian_nll`). So the predicted
    labels, and their accuracy, are exactly those of the first stage. Early stopping on
    the validation likelihood keeps the best epoch's weights.

    Parameters
    ----------
    net : `~astro_spt.nn.SpectralTransformer`
        A trained network built with ``aleatoric=True``.
    x_train, y_train, x_val, y_val : array-like
        Inputs and scaled labels, as for `fit_network`.
    seed : int, optional
        Seed of the batch order.
    learning_rate, weight_decay, batch_size, max_epochs, patience : optional
        Adam settings and early stopping.
    device : str or `torch.device`, optional
        Where to train.
    residual_train : array-like, shape of ``y_train``, optional
        The residuals to learn from, instead of ``y_train - net(x_train)``: e.g.
        out-of-fold residuals of networks that did not see those spectra, which, unlike
        a network's residuals on its own training set, are as large as on new spectra.
    noise_train, noise_val : array-like, shape (N, D, D), optional
        Covariance of each residual from the spectrum's noise, in the network's label
        space (`~astro_spt.bundle.EstimatorBundle.noise_covariance`). A head built with
        ``scatter_noise=True`` reads it (and needs it); with ``beyond_noise`` the head
        learns the scatter beyond it, the likelihood's covariance being :math:`L L^T`
        plus this.
    beyond_noise : bool, optional
        Whether the likelihood adds the noise covariance to the head's; default: when
        the noise is given to a head that does not read it.

    Returns
    -------
    dict
        ``train_nll`` and ``val_nll`` per epoch, ``best_epoch``.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from astro_spt.nn import SpectralTransformer
    >>> from astro_spt.training.loop import fit_scatter_head
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 8)).astype("float32")
    >>> y = rng.normal(size=(400, 2)) * np.where(x[:, :1] > 0, 1.0, 0.1)  # two noise levels
    >>> _ = torch.manual_seed(0)
    >>> net = SpectralTransformer(
    ...     n_inputs=8, d_model=16, n_heads=2, n_blocks=1, aleatoric=True
    ... ).eval()
    >>> history = fit_scatter_head(
    ...     net, x[:300], y[:300], x[300:], y[300:], seed=0, learning_rate=1e-2, patience=100
    ... )
    >>> with torch.no_grad():
    ...     sigma = torch.diagonal(net.scatter_covariance(torch.from_numpy(x)), dim1=1, dim2=2)
    >>> noisy = torch.from_numpy(x[:, 0] > 0)
    >>> bool(sigma[noisy].mean() > 5 * sigma[~noisy].mean())  # it learned which is which
    True
    """
    import torch

    if net.scatter_head is None:
        raise ValueError("the network has no aleatoric head (build it with aleatoric=True)")
    device = torch.device(device or "cpu")
    net.to(device).eval()

    def prepare(x, y):
        x = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
        y = torch.as_tensor(np.asarray(y, dtype=np.float32), device=device)
        with torch.no_grad():
            return net.backbone(x), y - net(x)

    h_train, r_train = prepare(x_train, y_train)
    h_val, r_val = prepare(x_val, y_val)
    if residual_train is not None:
        r_train = torch.as_tensor(np.asarray(residual_train, dtype=np.float32), device=device)

    def known(noise, n):
        if noise is None:
            return torch.zeros(n, r_train.shape[1], r_train.shape[1], device=device)
        return torch.as_tensor(np.asarray(noise, dtype=np.float32), device=device)

    reads_noise = net.hparams.get("scatter_noise", False)
    if reads_noise and (noise_train is None or noise_val is None):
        raise ValueError("this aleatoric head reads the spectrum's noise: pass noise_train/val")
    if beyond_noise is None:
        beyond_noise = noise_train is not None and not reads_noise
    n_train, n_val = known(noise_train, len(h_train)), known(noise_val, len(h_val))

    def nll(h, residual, noise):
        factor = net.scatter_cholesky(h, noise if reads_noise else None)
        if beyond_noise:
            factor = torch.linalg.cholesky(factor @ factor.mT + noise)
        return gaussian_nll(residual, factor).mean()

    parameters = list(net.scatter_head.parameters())
    optimiser = torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history = {"train_nll": [], "val_nll": [], "best_epoch": 0}
    best, best_state, waited = np.inf, None, 0
    n = len(h_train)
    for epoch in range(max_epochs):
        net.scatter_head.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = nll(h_train[idx], r_train[idx], n_train[idx])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        net.scatter_head.eval()
        with torch.no_grad():
            val = nll(h_val, r_val, n_val).item()
        history["train_nll"].append(total / n)
        history["val_nll"].append(val)
        if val < best:
            best, waited, history["best_epoch"] = val, 0, epoch
            best_state = {k: v.detach().clone() for k, v in net.scatter_head.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    net.scatter_head.load_state_dict(best_state)
    net.eval()
    return history
