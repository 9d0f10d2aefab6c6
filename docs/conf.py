# Sphinx configuration for astro_spt.
import datetime
import os
from importlib.metadata import version as _version

from sphinx_astropy.conf.v2 import *  # noqa: F403

project = "astro_spt"
author = "The astro_spt developers"
copyright = f"{datetime.datetime.now().year}, {author}"
release = _version("astro-spt")
version = ".".join(release.split(".")[:2])

extensions += ["sphinx_automodapi.automodapi", "sphinx_automodapi.smart_resolver"]  # noqa: F405

intersphinx_mapping.update(  # noqa: F405
    {
        "specutils": ("https://specutils.readthedocs.io/en/stable/", None),
        "torch": ("https://pytorch.org/docs/stable/", None),
    }
)

# Inheritance diagrams need graphviz's dot, which a plain pip install does not have.
automodapi_inheritance_diagram = False


def _online(host="docs.astropy.org", port=443, timeout=3.0):
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


# Offline builds (CI has no network beyond package registries) skip intersphinx rather
# than fail on unreachable inventories under -W.
if os.environ.get("ASTRO_SPT_DOCS_OFFLINE") or not _online():
    intersphinx_mapping.clear()  # noqa: F405

html_theme_options = {"github_url": "https://github.com/astro-spt/astro_spt"}
html_title = f"{project} v{release}"
nitpicky = False
automodapi_toctreedirnm = "api"
numpydoc_show_class_members = False
