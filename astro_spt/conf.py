"""Kept so that ``from astro_spt.conf import conf`` goes on working.

The configuration lives in the package itself, `astro_spt.Conf` and ``astro_spt.conf``,
so that astropy reads it from the top of ``astro_spt.cfg`` (see `astro_spt.Conf`).
"""

from . import Conf, conf

__all__ = ["Conf", "conf"]
