"""Per-spectrum quality flags: one registry of bit, name and description.

Every spectrum that passes through `astro_spt` carries an integer bit mask. Each bit is
defined once, here, as a `FlagDefinition` in the `FLAGS` registry (after photutils'
``aperture/flags.py``); the constants (``MISSING_VALUES``, ``LOW_SNR``, ...), the decoders
and the documentation table are all derived from it. Preprocessing sets the bits that
describe the input spectrum (SPT paper §3.2 drops spectra with oscillations, missing
values, outliers and negative flux; a library repairs and flags them instead), the
estimators set the bits about the prediction.

This module is cheap to import: it needs numpy only, and astropy's `~astropy.table.Table`
only when `flag_table` is called.

Examples
--------
>>> from astro_spt import flags
>>> value = flags.MISSING_VALUES | flags.LOW_SNR
>>> flags.decode_flags(value)
['missing_values', 'low_snr']
>>> flags.encode_flags(["outliers", "repaired_pixels"]) == flags.OUTLIERS | flags.REPAIRED_PIXELS
True
"""

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EMISSION_FEATURES",
    "FEATURELESS",
    "FLAGS",
    "FLAG_DTYPE",
    "HEAVY_DAMAGE",
    "LARGE_UNCERTAINTY",
    "LOW_SNR",
    "MASKED_STANDARD_REGIONS",
    "MISSING_VALUES",
    "NEGATIVE_FLUX",
    "NO_REDSHIFT",
    "OSCILLATION",
    "OUTLIERS",
    "OUTSIDE_LABEL_RANGE",
    "OUT_OF_DISTRIBUTION",
    "POOR_COVERAGE",
    "REPAIRED_PIXELS",
    "SEVERITIES",
    "UNPHYSICAL_VALUE",
    "UNREADABLE",
    "UNRESOLVED_FEATURES",
    "FlagDefinition",
    "FlagRegistry",
    "decode_flags",
    "encode_flags",
    "flag_bits",
    "flag_table",
    "has_flag",
]

#: Integer type of flag arrays: bits 0-30 (the sign bit is not used) leave room for 13
#: more flags, and map to FITS ``J``.
FLAG_DTYPE = np.int32

#: Severity levels, from harmless to fatal.
SEVERITIES = ("info", "warning", "bad")


@dataclass(frozen=True)
class FlagDefinition:
    """One quality flag: its bit, name, meaning and severity.

    Parameters
    ----------
    bit : int
        Bit position (0 is the least significant bit); the flag's value is ``1 << bit``.
    name : str
        Lower-case identifier, as returned by `decode_flags`.
    description : str
        One-line meaning, as shown in the documentation.
    severity : {'info', 'warning', 'bad'}
        ``'info'``: worth knowing, the result is usable (e.g. a few pixels repaired);
        ``'warning'``: the result may be biased; ``'bad'``: do not use the result.

    Examples
    --------
    >>> from astro_spt.flags import FlagDefinition
    >>> FlagDefinition(3, "oscillation", "Periodic ripple.", "warning").value
    8
    """

    bit: int
    name: str
    description: str
    severity: str = "warning"

    def __post_init__(self):
        if not 0 <= self.bit < 8 * np.dtype(FLAG_DTYPE).itemsize - 1:
            raise ValueError(f"flag bit {self.bit} does not fit in {np.dtype(FLAG_DTYPE)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def value(self) -> int:
        """The flag's integer value, ``1 << bit``.

        Examples
        --------
        >>> from astro_spt.flags import FLAGS
        >>> FLAGS["low_snr"].value
        32
        >>> FLAGS["low_snr"].value == 1 << FLAGS["low_snr"].bit
        True
        """
        return 1 << self.bit


class FlagRegistry:
    """An ordered collection of `FlagDefinition` with unique bits and names.

    Parameters
    ----------
    definitions : iterable of `FlagDefinition`

    Examples
    --------
    >>> from astro_spt.flags import FLAGS
    >>> FLAGS["low_snr"].bit
    5
    >>> FLAGS.by_bit(5).name
    'low_snr'
    >>> "oscillation" in FLAGS
    True
    """

    def __init__(self, definitions: Iterable[FlagDefinition]):
        self._by_name: dict[str, FlagDefinition] = {}
        self._by_bit: dict[int, FlagDefinition] = {}
        for definition in definitions:
            if definition.name in self._by_name:
                raise ValueError(f"duplicate flag name {definition.name!r}")
            if definition.bit in self._by_bit:
                raise ValueError(f"duplicate flag bit {definition.bit}")
            self._by_name[definition.name] = definition
            self._by_bit[definition.bit] = definition

    def __getitem__(self, name: str) -> FlagDefinition:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown flag {name!r}; known flags: {list(self._by_name)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[FlagDefinition]:
        return iter(sorted(self._by_bit.values(), key=lambda d: d.bit))

    def __len__(self) -> int:
        return len(self._by_bit)

    def __repr__(self) -> str:
        return f"<FlagRegistry of {len(self)} flags: {', '.join(d.name for d in self)}>"

    def by_bit(self, bit: int) -> FlagDefinition:
        """Return the definition of bit ``bit``.

        Raises
        ------
        KeyError
            If no flag uses that bit.

        Examples
        --------
        >>> from astro_spt.flags import FLAGS
        >>> definition = FLAGS.by_bit(11)
        >>> definition.name, definition.severity
        ('unreadable', 'bad')
        """
        return self._by_bit[bit]

    @property
    def names(self) -> list[str]:
        """Flag names in bit order.

        Examples
        --------
        >>> from astro_spt.flags import FLAGS
        >>> FLAGS.names[:3]
        ['missing_values', 'negative_flux', 'outliers']
        >>> len(FLAGS.names) == len(FLAGS)
        True
        """
        return [d.name for d in self]

    @property
    def all_bits(self) -> int:
        """The OR of every defined flag.

        Examples
        --------
        >>> from astro_spt.flags import FLAGS
        >>> FLAGS.all_bits == 2 ** len(FLAGS) - 1  # the bits are 0, 1, 2, ... without gaps
        True
        """
        return sum(d.value for d in self)

    def mask_of(self, severity: str) -> int:
        """The OR of the flags of one severity (``'info'``, ``'warning'`` or ``'bad'``).

        Raises
        ------
        ValueError
            If ``severity`` is not one of ``SEVERITIES``.

        Examples
        --------
        Keep the rows of a result whose flags carry no ``'bad'`` bit:

        >>> import numpy as np
        >>> from astro_spt.flags import FLAGS, decode_flags
        >>> bad = FLAGS.mask_of("bad")
        >>> decode_flags(bad)
        ['heavy_damage', 'unreadable', 'unphysical_value', 'featureless']
        >>> flags = np.array([0, FLAGS["low_snr"].value, FLAGS["unreadable"].value])
        >>> (flags & bad) == 0
        array([ True,  True, False])
        """
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        return sum(d.value for d in self if d.severity == severity)


FLAGS = FlagRegistry(
    [
        FlagDefinition(
            0,
            "missing_values",
            "Gaps (NaN, infinite, zero inverse variance or masked pixels, or five or more "
            "pixels in a row of one value: a fill value, a clipped or saturated stretch) "
            "longer than the repairable length, or too many missing pixels, outside the "
            "windows surveys routinely mask (see ``masked_standard_regions``); gaps were "
            "interpolated over.",
            "warning",
        ),
        FlagDefinition(
            1,
            "negative_flux",
            "Stretches of negative flux (e.g. sky over-subtraction); they were interpolated over.",
            "warning",
        ),
        FlagDefinition(
            2,
            "outliers",
            "Sharp spikes or troughs (cosmic rays, sky-line residuals); they were replaced "
            "by a running median.",
            "warning",
        ),
        FlagDefinition(
            3,
            "oscillation",
            "Periodic ripple of the flux about its continuum; not repaired.",
            "warning",
        ),
        FlagDefinition(
            4,
            "poor_coverage",
            "The input covers too little of the model wavelength grid; the uncovered ends "
            "were filled with the nearest measured value.",
            "warning",
        ),
        FlagDefinition(
            5, "low_snr", "Median signal-to-noise ratio per pixel below the threshold.", "warning"
        ),
        FlagDefinition(
            6,
            "repaired_pixels",
            "More than a small fraction (``min_repaired_fraction``, 1 % by default) of the "
            "grid was interpolated over or clipped; the exact count is in ``n_repaired``.",
            "info",
        ),
        FlagDefinition(
            7,
            "heavy_damage",
            "Too large a fraction of the model grid was repaired or not measured: results "
            "are unreliable.",
            "bad",
        ),
        FlagDefinition(
            8,
            "out_of_distribution",
            "The spectrum lies outside the training distribution: its PCA reconstruction "
            "error, latent distance or the distance of the network's embedding of it "
            "exceeds the 99.9th percentile of held-out spectra of that distribution (the "
            "model's validation spectra).",
            "warning",
        ),
        FlagDefinition(
            9,
            "outside_label_range",
            "A prediction lies outside the range of the training labels.",
            "warning",
        ),
        FlagDefinition(
            10,
            "large_uncertainty",
            "The uncertainty of a label is larger than the label's spread in the training "
            "set (in the space the model learns it, e.g. log age): the spectrum narrows "
            "it down no more than the training set does.",
            "warning",
        ),
        FlagDefinition(
            11,
            "unreadable",
            "Not a usable low-resolution spectrum: could not be read or preprocessed (no "
            "valid data on the model grid); its values are NaN.",
            "bad",
        ),
        FlagDefinition(
            12,
            "no_redshift",
            "No redshift or radial velocity was known: the spectrum was not shifted to the "
            "rest frame.",
            "info",
        ),
        FlagDefinition(
            13,
            "masked_standard_regions",
            "More than a fraction (``standard_mask_min_fraction``, 20 % by default) "
            "of one of the wavelength windows surveys routinely mask "
            "(``standard_mask_windows_aa``: by default the blue end below 4,000 Å, the "
            "telluric A band at 7,550-7,700 Å and the red end above 9,000 Å) was missing "
            "and interpolated over; such gaps do not set ``missing_values``.",
            "info",
        ),
        FlagDefinition(
            14,
            "unphysical_value",
            "The prediction is no physical value: not finite, not positive for a positive "
            "quantity (mass, age), or, it or its error, more than 20 training standard "
            "deviations beyond the training labels' range (in the space the network learns "
            "them in); its values are NaN.",
            "bad",
        ),
        FlagDefinition(
            15,
            "featureless",
            "No absorption lines: at the scale of lines (under about 8 Å), and leaving out "
            "its 40 Å of largest departure, the flux departs from a smooth continuum by less "
            "than 1 % (RMS) beyond its noise, where every star of the LAMOST development data "
            "departs by 2 % or more (1.5 % with the pixels DR1 files mask masked too); a "
            "continuum (a flat field, a black body, a quasar's or a featureless white "
            "dwarf's, with or without a step or a wander) or a spectrum far smoother than "
            "LAMOST's resolution, which no model of LAMOST stellar spectra can read; its "
            "values are NaN.",
            "bad",
        ),
        FlagDefinition(
            16,
            "emission_features",
            "The flux rises above its continuum more than it dips below it (the skewness "
            "of its departure from a smooth continuum exceeds 1, where absorption lines "
            "make it negative): emission lines, strong sky-line residuals, or lines that "
            "are no absorption-line star's; the model was trained on absorption-line "
            "spectra.",
            "warning",
        ),
        FlagDefinition(
            17,
            "unresolved_features",
            "Five or more pixels each lie above or below both their neighbours by more "
            "than 20 % of the local flux (and many standard deviations): features "
            "narrower than a line at LAMOST's resolution, such as bad pixels, a pattern "
            "written into the flux, or a spectrum of higher resolution than the model's; "
            "not repaired.",
            "warning",
        ),
    ]
)

MISSING_VALUES = FLAGS["missing_values"].value
NEGATIVE_FLUX = FLAGS["negative_flux"].value
OUTLIERS = FLAGS["outliers"].value
OSCILLATION = FLAGS["oscillation"].value
POOR_COVERAGE = FLAGS["poor_coverage"].value
LOW_SNR = FLAGS["low_snr"].value
REPAIRED_PIXELS = FLAGS["repaired_pixels"].value
HEAVY_DAMAGE = FLAGS["heavy_damage"].value
OUT_OF_DISTRIBUTION = FLAGS["out_of_distribution"].value
OUTSIDE_LABEL_RANGE = FLAGS["outside_label_range"].value
LARGE_UNCERTAINTY = FLAGS["large_uncertainty"].value
UNREADABLE = FLAGS["unreadable"].value
NO_REDSHIFT = FLAGS["no_redshift"].value
MASKED_STANDARD_REGIONS = FLAGS["masked_standard_regions"].value
UNPHYSICAL_VALUE = FLAGS["unphysical_value"].value
FEATURELESS = FLAGS["featureless"].value
EMISSION_FEATURES = FLAGS["emission_features"].value
UNRESOLVED_FEATURES = FLAGS["unresolved_features"].value


def decode_flags(value) -> list[str] | list[list[str]]:
    """Return the names of the flags set in a bit mask.

    Parameters
    ----------
    value : int or array-like of int
        A flag value, or an array of them (e.g. the ``flags`` column of a result).

    Returns
    -------
    names : list of str, or list of lists of str
        Flag names in bit order; for array input, one list per element (flattened in
        C order).

    Raises
    ------
    ValueError
        If ``value`` is negative or has bits that no flag defines.

    Examples
    --------
    >>> from astro_spt.flags import decode_flags, OUTLIERS, REPAIRED_PIXELS
    >>> decode_flags(OUTLIERS | REPAIRED_PIXELS)
    ['outliers', 'repaired_pixels']
    >>> decode_flags(0)
    []
    >>> decode_flags([0, 32, 2048])
    [[], ['low_snr'], ['unreadable']]
    """
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"flag values must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if np.any(array < 0):
        raise ValueError("flag values must be non-negative")
    unknown = np.bitwise_and(array, ~np.int64(FLAGS.all_bits))
    if np.any(unknown):
        raise ValueError(f"undefined flag bits set: {int(np.bitwise_or.reduce(unknown, None))}")
    if array.ndim == 0:
        return [d.name for d in FLAGS if int(array) & d.value]
    bits = flag_bits(array.ravel())
    names = np.array(FLAGS.names, dtype=object)
    columns = [d.bit for d in FLAGS]
    return [list(names[row[columns]]) for row in bits]


def flag_bits(values) -> np.ndarray:
    """Unpack flag values into a boolean array with one column per bit.

    Parameters
    ----------
    values : array-like of int, shape (n,)

    Returns
    -------
    bits : `~numpy.ndarray` of bool, shape (n, 32)
        ``bits[i, b]`` is True where bit ``b`` is set in ``values[i]``.

    Examples
    --------
    >>> from astro_spt.flags import flag_bits, FLAGS
    >>> flag_bits([1, 3])[:, :3]
    array([[ True, False, False],
           [ True,  True, False]])
    """
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    width = 8 * np.dtype(FLAG_DTYPE).itemsize
    return (values[:, None] >> np.arange(width)) & 1 == 1


def has_flag(values, name: str) -> np.ndarray | bool:
    """Whether flag ``name`` is set in each of ``values``.

    Parameters
    ----------
    values : int or array-like of int
    name : str
        A flag name from `FLAGS`.

    Returns
    -------
    set : bool or `~numpy.ndarray` of bool

    Examples
    --------
    >>> from astro_spt.flags import has_flag, LOW_SNR, OUTLIERS
    >>> has_flag([LOW_SNR, OUTLIERS | LOW_SNR, 0], "low_snr")
    array([ True,  True, False])
    """
    result = (np.asarray(values, dtype=np.int64) & FLAGS[name].value) != 0
    return bool(result) if result.ndim == 0 else result


def encode_flags(names: Iterable[str]) -> int:
    """Combine flag names into a bit mask.

    Parameters
    ----------
    names : iterable of str
        Flag names from `FLAGS`.

    Returns
    -------
    value : int

    Raises
    ------
    KeyError
        If a name is not a defined flag.

    Examples
    --------
    >>> from astro_spt.flags import encode_flags
    >>> encode_flags(["missing_values", "negative_flux"])
    3
    """
    value = 0
    for name in names:
        value |= FLAGS[name].value
    return value


def flag_table():
    """Return the flag registry as a table (the documentation's flag table comes from it).

    ``print`` shows every flag with its description wrapped below the line (astropy
    would cut the descriptions, and the columns after them, at the screen's width);
    ``astro-spt flags`` prints the same.

    Returns
    -------
    table : `~astropy.table.Table`
        Columns ``bit``, ``value``, ``name``, ``constant``, ``severity``, ``description``,
        one row per flag in bit order.

    Examples
    --------
    >>> from astro_spt.flags import flag_table
    >>> table = flag_table()
    >>> print(table["bit", "value", "name"][:2])
    bit value      name
    --- ----- --------------
      0     1 missing_values
      1     2  negative_flux
    >>> print(table[5:7])
    bit value name            severity
    --- ----- --------------- --------
      5    32 low_snr         warning
              Median signal-to-noise ratio per pixel below the threshold.
      6    64 repaired_pixels info
              More than a small fraction (``min_repaired_fraction``, 1 % by default) of
              the grid was interpolated over or clipped; the exact count is in
              ``n_repaired``.
    """
    definitions = list(FLAGS)
    return _flag_table_class()(
        {
            "bit": [d.bit for d in definitions],
            "value": [d.value for d in definitions],
            "name": [d.name for d in definitions],
            "constant": [d.name.upper() for d in definitions],
            "severity": [d.severity for d in definitions],
            "description": [d.description for d in definitions],
        }
    )


@functools.cache
def _flag_table_class():
    from astropy.table import Table

    class FlagTable(Table):
        """A `~astropy.table.Table` of flags that prints its descriptions in full."""

        def __str__(self):
            if not {"bit", "value", "name", "severity", "description"} <= set(self.colnames):
                return super().__str__()
            return _format_flags(self)

    return FlagTable


def _format_flags(table, width: int = 88) -> str:
    """Rows of `flag_table` as text: bit, value, name and severity on a line, the
    description wrapped below it to ``width`` characters."""
    import textwrap

    header = ("bit", "value", "name", "severity")
    cells = [[str(row[c]) for c in header] for row in table]
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=True)]
    indent = " " * (widths[0] + widths[1] + 2)
    lines = [
        " ".join(
            h.rjust(w) if k < 2 else h.ljust(w)
            for k, (h, w) in enumerate(zip(header, widths, strict=True))
        ).rstrip(),
        " ".join("-" * w for w in widths),
    ]
    for row, texts in zip(table, cells, strict=True):
        lines.append(
            " ".join(
                t.rjust(w) if k < 2 else t.ljust(w)
                for k, (t, w) in enumerate(zip(texts, widths, strict=True))
            ).rstrip()
        )
        lines += textwrap.wrap(
            str(row["description"]), width, initial_indent=indent, subsequent_indent=indent
        )
    return "\n".join(lines)
