"""Ages and masses of the example LAMOST red giants with the embedded default model.

Run from anywhere: ``python examples/estimate_ages.py``. Offline: the default model ships
inside the package.
"""

from pathlib import Path

import astro_spt
from astro_spt.flags import decode_flags

data = Path(__file__).parent / "data"
table = astro_spt.estimate(sorted(data.glob("spec-*.fits.gz")))

table["source"] = [Path(s).name for s in table["source"]]
for name in ("age", "age_err", "mass", "mass_err"):
    table[name].info.format = ".2f"
table["source", "age", "age_err", "mass", "mass_err", "flags"].pprint_all()
for row in table:
    if row["flags"]:
        print(f"{row['source']}: {', '.join(decode_flags(row['flags']))}")
print(f"model: {table.meta['model']}")
