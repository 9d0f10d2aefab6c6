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
    "Conf",
    "__version__",
    "conf",
    "estimate",
    "flags",
    "load_model",
    "nn",
    "samples_distribution",
    "train",
]

from astropy import config as _config


class Conf(_config.ConfigNamespace):
    """Configuration of `astro_spt`, read from ``astro_spt.cfg`` in astropy's config directory.

    The items go at the top of the file, before any ``[section]``: astropy reads a
    package's own settings there, and those of a sub-module ``astro_spt.X`` in a
    section ``[X]`` (the specutils and astroquery layout). The directory is
    ``$XDG_CONFIG_HOME/astropy`` when it exists, else ``~/.astropy/config``
    (`astropy.config.get_config_dir`). For example::

        hub_repo = my-group/giants-model
        hub_revision = v2
        cache_dir = /data/models

    Set an item for a session with ``conf.hub_repo = "..."``, or within a block with
    ``conf.set_temp``; ``conf.reload()`` reads the file again.

    Examples
    --------
    >>> from astro_spt import conf
    >>> conf.hub_revision
    'main'
    >>> with conf.set_temp("default_batch_size", 64):
    ...     conf.default_batch_size
    64
    """

    hub_repo = _config.ConfigItem(
        "",
        "Hugging Face Hub repository of the default model (load_model(), astro-spt "
        "estimate without --model); empty means the bundle embedded in the package.",
        cfgtype="string",
    )
    hub_revision = _config.ConfigItem(
        "main",
        "Revision (branch, tag or commit) of hub_repo when it is the default model.",
        cfgtype="string",
    )
    hub_endpoint = _config.ConfigItem(
        "",
        "URL of the Hugging Face Hub (or a compatible mirror); empty means the "
        "HF_ENDPOINT environment variable or https://huggingface.co.",
        cfgtype="string",
    )
    cache_dir = _config.ConfigItem(
        "",
        "Directory of the download cache; empty means the standard Hugging Face cache.",
        cfgtype="string",
    )
    default_batch_size = _config.ConfigItem(
        256, "Number of spectra read and preprocessed at a time by estimate().", cfgtype="integer"
    )


conf = Conf()
# The module astro_spt.conf (kept for ``from astro_spt.conf import conf``) has the same
# name: importing it binds ``astro_spt.conf`` to the module, so it is imported now, once,
# and the name bound back to the configuration.
conf = importlib.import_module(".conf", __name__).conf

from .io import _registration  # noqa: E402

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
