"""The Spectral Transformer network, its loss and Monte Carlo dropout prediction.

This sub-package is the model layer of `astro_spt` (SPEC §2, layer 3). It depends on
PyTorch and numpy only: no astropy units, no spectra.
"""

from .activations import enhanced_softmax
from .attention import MultiHeadHSA
from .loss import MahalanobisLoss
from .mc import MCPrediction, input_jacobian, mc_predict, model_precision, predictive_samples
from .model import MCDropout, SpectralTransformer, SPTBlock

__all__ = [
    "MCDropout",
    "MCPrediction",
    "MahalanobisLoss",
    "MultiHeadHSA",
    "SPTBlock",
    "SpectralTransformer",
    "enhanced_softmax",
    "input_jacobian",
    "mc_predict",
    "model_precision",
    "predictive_samples",
]
