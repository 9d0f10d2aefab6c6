# Sphinx configuration for astro_spt.
import datetime
import os
import sys
from importlib.metadata import version as _version
from pathlib import Path

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
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
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
# the full setuptools_scm version (e.g. 0.1.dev12+g1f1e8ec) does not fit the navbar
html_title = f"{project} v{version}"
# Only the API pages have sub-pages to navigate; elsewhere an empty sidebar would take a
# sixth of the width from tables and code.
html_sidebars = {"*": [], "tutorials/*": [], "api": ["sidebar-nav-bs"]}
nitpicky = False
automodapi_toctreedirnm = "api"
numpydoc_show_class_members = False

# Files written by setup() below, pulled into pages with ``.. include::``.
exclude_patterns += ["_generated"]  # noqa: F405

# Tutorials run their code at build time (matplotlib's plot directive, in sphinx-astropy's
# extensions) from the root of the source tree, on the real spectra in examples/data.
plot_working_directory = str(Path(__file__).parents[1])
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.figsize": (8, 4.5), "savefig.bbox": "tight"}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"


def _write_generated(app):
    # The flag table and the model card are generated from the flag registry and the
    # shipped bundle at every build, so the pages cannot drift from the code.
    sys.path.insert(0, str(Path(__file__).parent / "_ext"))
    from spt_docs import write_generated

    write_generated(Path(app.srcdir) / "_generated")


def setup(app):
    app.connect("builder-inited", _write_generated)
