"""Every public class, function and method in the API reference has a numpydoc
Examples section (STYLE.md: "numpydoc docstrings ... Examples on every public name").

The modules checked are read from the ``automodapi`` directives of ``docs/api.rst``, so a
module added to the reference is checked without touching this file. The examples
themselves run as doctests (pytest-doctestplus collects the package's docstrings).
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest

API_RST = Path(__file__).parents[1] / "docs" / "api.rst"


def _documented_modules():
    text = API_RST.read_text()
    return re.findall(r"^\.\. automodapi:: (astro_spt[\w.]*)$", text, flags=re.MULTILINE)


def _public_callables(module):
    """Yield ``(qualified name, object)`` for the public classes and functions of
    *module* and the public methods and properties its classes define themselves."""
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants are described in the module docstring
        if not obj.__module__.startswith("astro_spt"):
            continue  # e.g. FLAG_DTYPE, a numpy type
        yield f"{module.__name__}.{name}", obj
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            elif isinstance(member, property):
                member = member.fget
            if inspect.isfunction(member):
                yield f"{module.__name__}.{name}.{attr}", member


def _missing_examples():
    missing = []
    for module_name in _documented_modules():
        module = importlib.import_module(module_name)
        for qualname, obj in _public_callables(module):
            doc = inspect.getdoc(obj) or ""
            if not re.search(r"^Examples\n-{8}$", doc, flags=re.MULTILINE) or ">>>" not in doc:
                missing.append(qualname)
    return missing


def test_api_reference_lists_the_modules():
    modules = _documented_modules()
    assert "astro_spt.estimation" in modules
    assert len(modules) >= 15


def test_every_public_name_has_an_example():
    missing = _missing_examples()
    if missing:
        pytest.fail(f"{len(missing)} public names lack an Examples section: {missing}")
