"""The Mahalanobis-distance loss of the SPT paper (§2.3)."""

import numpy as np
import torch
from torch import nn

__all__ = ["MahalanobisLoss"]


class MahalanobisLoss(nn.Module):
    r"""Mean Mahalanobis distance between predictions and labels.

    .. math::

        L = \frac{1}{N} \sum_i \sqrt{(y_i - \hat y_i)^T \Sigma^{-1} (y_i - \hat y_i) + \epsilon}

    with :math:`\Sigma` the covariance of the training labels (SPT paper §2.3): it
    weighs the labels by their spread and keeps their correlation, so neither age nor
    mass dominates the loss by its scale. The small :math:`\epsilon` keeps the gradient
    finite at zero error. ``squared=True`` drops the square root (the squared distance).

    Parameters
    ----------
    covariance : array-like, shape (D, D)
        Covariance of the training labels, in the units the network predicts.
    squared : bool, optional
        Use the squared distance instead of the distance.
    eps : float, optional
        Added under the square root.
    reduction : {"mean", "sum", "none"}, optional
        How the per-sample losses are combined.

    Raises
    ------
    ValueError
        If the covariance is not a symmetric positive-definite square matrix.

    Examples
    --------
    >>> import torch
    >>> from astro_spt.nn import MahalanobisLoss
    >>> loss = MahalanobisLoss([[4.0, 0.0], [0.0, 1.0]])
    >>> round(loss(torch.tensor([[2.0, 0.0]]), torch.zeros(1, 2)).item(), 6)
    1.0
    >>> labels = torch.randn(100, 2)
    >>> MahalanobisLoss.from_labels(labels).precision.shape
    torch.Size([2, 2])
    """

    def __init__(self, covariance, squared: bool = False, eps: float = 1e-12, reduction="mean"):
        super().__init__()
        cov = np.asarray(covariance, dtype=np.float64)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"covariance must be a square matrix, got shape {cov.shape}")
        if not np.allclose(cov, cov.T, rtol=1e-10, atol=0.0):
            raise ValueError("covariance must be symmetric")
        if not np.all(np.isfinite(cov)) or np.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError("covariance must be finite and positive definite")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.register_buffer("covariance", torch.from_numpy(cov).float())
        self.register_buffer("precision", torch.from_numpy(np.linalg.inv(cov)).float())
        self.squared = squared
        self.eps = eps
        self.reduction = reduction

    @classmethod
    def from_labels(cls, labels, **kwargs) -> "MahalanobisLoss":
        """A loss whose covariance is that of the given training labels (N, D).

        Parameters
        ----------
        labels : array-like or `torch.Tensor`, shape (N, D)
            Training labels in the units the network predicts, N >= 2.
        **kwargs
            Other arguments of `MahalanobisLoss` (``squared``, ``eps``, ``reduction``).

        Returns
        -------
        `MahalanobisLoss`

        Examples
        --------
        >>> import numpy as np
        >>> from astro_spt.nn import MahalanobisLoss
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.normal([5.0, 1.2], [2.0, 0.3], size=(1000, 2))  # e.g. age, mass
        >>> loss = MahalanobisLoss.from_labels(labels)
        >>> [round(v, 1) for v in loss.covariance.diagonal().tolist()]
        [4.2, 0.1]
        >>> MahalanobisLoss.from_labels(labels, squared=True).squared
        True
        """
        y = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels, float)
        if y.ndim != 2 or y.shape[0] < 2:
            raise ValueError(f"labels must have shape (N >= 2, D), got {y.shape}")
        return cls(np.atleast_2d(np.cov(y, rowvar=False)), **kwargs)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss between predictions and labels.

        Parameters
        ----------
        prediction, target : `torch.Tensor`, shape (..., D)
            Predicted and true labels, of the same shape.

        Returns
        -------
        `torch.Tensor`
            A scalar for ``reduction="mean"`` or ``"sum"``; one value per sample, shape
            (...), for ``"none"``.

        Raises
        ------
        ValueError
            If the shapes differ or do not have D labels.

        Examples
        --------
        >>> import torch
        >>> from astro_spt.nn import MahalanobisLoss
        >>> covariance = [[4.0, 0.0], [0.0, 1.0]]  # label 0 spreads twice as wide
        >>> prediction = torch.tensor([[2.0, 0.0], [2.0, 1.0]])
        >>> target = torch.zeros(2, 2)
        >>> loss = MahalanobisLoss(covariance, reduction="none")
        >>> [round(v, 3) for v in loss(prediction, target).tolist()]
        [1.0, 1.414]
        >>> round(MahalanobisLoss(covariance)(prediction, target).item(), 3)  # the mean
        1.207
        """
        if prediction.shape != target.shape or prediction.shape[-1] != self.precision.shape[0]:
            raise ValueError(
                f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must "
                f"have the same shape, with {self.precision.shape[0]} labels"
            )
        diff = prediction - target
        distance2 = torch.einsum("...i,ij,...j->...", diff, self.precision.to(diff.dtype), diff)
        loss = distance2 if self.squared else torch.sqrt(distance2 + self.eps)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
