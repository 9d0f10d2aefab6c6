"""The real LAMOST spectra shipped with the package, for examples, tutorials and tests."""

from importlib import resources
from pathlib import Path

__all__ = ["example_files"]


def example_files() -> list[Path]:
    """Paths of the six LAMOST DR1 low-resolution spectra shipped with astro_spt.

    Five red giants and one K dwarf (plate B6212, spectrograph 6), gzipped but otherwise
    as LAMOST published them; their LAMOST pipeline parameters, provenance and the LAMOST
    acknowledgement are in the ``README.rst`` beside them. They are installed with the
    package, so examples that use them work offline from any directory. In the source
    tree ``examples/data`` points to the same files.

    Returns
    -------
    list of pathlib.Path
        The ``spec-*.fits.gz`` files, sorted by name.

    Examples
    --------
    >>> from astro_spt.io import example_files
    >>> [path.name for path in example_files()][:2]
    ['spec-55862-B6212_sp06-023.fits.gz', 'spec-55862-B6212_sp06-080.fits.gz']
    >>> len(example_files())
    6
    """
    folder = resources.files("astro_spt") / "data" / "example_spectra"
    return sorted(Path(str(path)) for path in folder.iterdir() if path.name.endswith(".fits.gz"))
