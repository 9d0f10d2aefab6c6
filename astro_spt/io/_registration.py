"""Register the LAMOST readers with specutils without importing specutils eagerly.

Importing specutils costs more than a second (it pulls in matplotlib through ndcube), so
``import astro_spt`` must not do it. If specutils is already imported the readers are
registered at once; otherwise a one-shot meta-path finder registers them right after
specutils itself finishes importing, so ``Spectrum.read(path)`` identifies LAMOST files
whichever package the user imports first.
"""

import importlib.abc
import importlib.util
import sys

__all__ = []


def _register():
    from .lamost import register_lamost_readers

    register_lamost_readers()


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register()

    def __getattr__(self, name):
        # Resource readers and the like come from the wrapped loader.
        return getattr(self._loader, name)


class _SpecutilsImportHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "specutils":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install():
    """Register the readers now, or as soon as specutils is imported."""
    if "specutils" in sys.modules:
        _register()
    elif not any(isinstance(f, _SpecutilsImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _SpecutilsImportHook())
