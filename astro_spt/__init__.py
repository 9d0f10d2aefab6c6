"""Ages and masses of red giant stars from their spectra with the Spectral Transformer.

``import astro_spt`` is cheap: it registers the LAMOST readers with specutils and
nothing else. PyTorch, scikit-learn and matplotlib are imported by the sub-modules that
need them, when they are first used.
"""

import importlib

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - running from a source tree without a build
    __version__ = "0.0.0"

__all__ = [
    "__version__",
    "conf",
    "estimate",
    "flags",
    "load_model",
    "nn",
    "samples_distribution",
    "train",
]

from .conf import conf
from .io import _registration

_registration.install()

# Public names loaded on first use, so that ``import astro_spt`` stays light.
_LAZY = {
    "nn": "astro_spt.nn",
    "flags": "astro_spt.flags",
    "load_model": "astro_spt.hub:load_model",
    "estimate": "astro_spt.estimation:estimate",
    "samples_distribution": "astro_spt.estimation:samples_distribution",
    "train": "astro_spt.training:train",
    "preprocess": "astro_spt.preprocess",
    "metrics": "astro_spt.metrics",
}


def __getattr__(name):
    if name in _LAZY:
        target = _LAZY[name]
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        value = getattr(module, attr) if attr else module
        globals()[name] = value
        return value
    raise AttributeError(f"module 'astro_spt' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
