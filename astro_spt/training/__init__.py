"""Training of SPT estimators: the paper's recipe (SPT paper §2.6) and the glue around it."""

from .loop import (
    EarlyStopping,
    TrainingConfig,
    TrainingHistory,
    average_state_dicts,
    fit_network,
    fit_scatter_head,
)
from .train import (
    SIZES,
    EstimatorConfig,
    size_for,
    split_indices,
    split_training_rows,
    train,
)

__all__ = [
    "SIZES",
    "EarlyStopping",
    "EstimatorConfig",
    "TrainingConfig",
    "TrainingHistory",
    "average_state_dicts",
    "fit_network",
    "fit_scatter_head",
    "size_for",
    "split_indices",
    "split_training_rows",
    "train",
]
