"""Read a LAMOST spectrum with specutils, preprocess it, and plot both.

``python examples/read_and_preprocess.py`` writes ``read_and_preprocess.png``.
"""

from pathlib import Path

from matplotlib.figure import Figure
from specutils import Spectrum

import astro_spt  # noqa: F401  (registers the LAMOST readers with specutils)
from astro_spt.preprocess import preprocess

path = Path(__file__).parent / "data" / "spec-55862-B6212_sp06-023.fits.gz"
spectrum = Spectrum.read(path)
print(f"{path.name}: {spectrum.meta['designation']}, z = {spectrum.meta['redshift']:.5f}")

result = preprocess(spectrum)
print("flags:", result.flag_names[0] or "none")

fig = Figure(figsize=(9, 5))
top, bottom = fig.subplots(2, 1, sharex=True)
top.plot(spectrum.spectral_axis, spectrum.flux, lw=0.5)
top.set_ylabel("flux (relative)")
bottom.plot(result.wavelength, result.flux[0], lw=0.5)
bottom.set_ylabel("preprocessed flux")
bottom.set_xlabel("rest-frame vacuum wavelength (Å)")
fig.savefig("read_and_preprocess.png", dpi=120)
