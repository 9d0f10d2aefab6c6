"""Training of SPT networks: the paper's recipe (SPT paper §2.6)."""

from .loop import EarlyStopping, TrainingConfig, TrainingHistory, average_state_dicts, fit_network

__all__ = [
    "EarlyStopping",
    "TrainingConfig",
    "TrainingHistory",
    "average_state_dicts",
    "fit_network",
]
