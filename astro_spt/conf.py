"""Package-wide configuration, in the ``[astro_spt]`` section of ``astro_spt.cfg``."""

from astropy import config as _config

__all__ = ["Conf", "conf"]


class Conf(_config.ConfigNamespace):
    """Configuration parameters for `astro_spt`.

    Examples
    --------
    >>> from astro_spt import conf
    >>> conf.default_n_samples
    100
    >>> with conf.set_temp("default_n_samples", 10):
    ...     conf.default_n_samples
    10
    """

    hub_repo = _config.ConfigItem(
        "",
        "Hugging Face Hub repository of the default estimator; empty means the "
        "bundle embedded in the package.",
        cfgtype="string",
    )
    hub_revision = _config.ConfigItem(
        "main", "Revision (branch, tag or commit) of the hub repository.", cfgtype="string"
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
    default_n_samples = _config.ConfigItem(
        100, "Number of Monte Carlo dropout passes per spectrum.", cfgtype="integer"
    )
    default_batch_size = _config.ConfigItem(
        256, "Number of spectra per batch in estimation.", cfgtype="integer"
    )


conf = Conf()
