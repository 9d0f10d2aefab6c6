"""Preprocessing: from `specutils` spectra to model inputs on a common grid, with flags.

The data preparation of SPT paper §3.2, one module per step:

- `~astro_spt.preprocess.config`: all settings, in one serialisable `PreprocessConfig`;
- `~astro_spt.preprocess.grid`: the model grid, air to vacuum, `resample_to_grid`;
- `~astro_spt.preprocess.anomalies`: `detect_anomalies` repairs and flags gaps, spikes,
  negative flux, ripples, poor coverage and low S/N;
- `~astro_spt.preprocess.denoise`: MODWT (Haar) wavelet denoising, `denoise_modwt`;
- `~astro_spt.preprocess.normalize`: `normalize` by pseudo-continuum, median or
  standardisation;
- `~astro_spt.preprocess.pipeline`: `preprocess`, all of the above on a batch of spectra.

The array functions take and return numpy arrays of shape (n_spectra, n_pixels), so the
training and estimation layers can call them on batches directly. Nothing here imports
torch; specutils is imported only when `preprocess` is called.
"""

from .anomalies import AnomalyResult, detect_anomalies
from .config import AnomalyConfig, DenoiseConfig, GridConfig, NormalizeConfig, PreprocessConfig
from .denoise import denoise_modwt
from .grid import ResampledSpectra, air_to_vacuum, make_wavelength_grid, resample_to_grid
from .normalize import NORMALIZE_METHODS, normalize
from .pipeline import PreprocessResult, preprocess

__all__ = [
    "NORMALIZE_METHODS",
    "AnomalyConfig",
    "AnomalyResult",
    "DenoiseConfig",
    "GridConfig",
    "NormalizeConfig",
    "PreprocessConfig",
    "PreprocessResult",
    "ResampledSpectra",
    "air_to_vacuum",
    "denoise_modwt",
    "detect_anomalies",
    "make_wavelength_grid",
    "normalize",
    "preprocess",
    "resample_to_grid",
]
