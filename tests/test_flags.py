"""Tests of the quality-flag registry, `astro_spt.flags`."""

import subprocess
import sys

import numpy as np
import pytest

from astro_spt import flags
from astro_spt.flags import FLAGS, FlagDefinition, FlagRegistry

# The contract of SPEC.md §2: these names must exist.
CONTRACT = [
    "missing_values",
    "negative_flux",
    "outliers",
    "oscillation",
    "poor_coverage",
    "low_snr",
    "repaired_pixels",
    "heavy_damage",
    "out_of_distribution",
    "outside_label_range",
    "large_uncertainty",
    "unreadable",
]


def test_contract_names_and_constants():
    for name in CONTRACT:
        assert name in FLAGS
        assert getattr(flags, name.upper()) == FLAGS[name].value
        assert name.upper() in flags.__all__


def test_bits_are_distinct_powers_of_two():
    values = [d.value for d in FLAGS]
    assert len(set(values)) == len(values)
    assert all(v & (v - 1) == 0 for v in values)
    assert FLAGS.all_bits == sum(values)
    assert FLAGS.all_bits <= np.iinfo(flags.FLAG_DTYPE).max


def test_names_are_lowercase_and_described():
    for definition in FLAGS:
        assert definition.name == definition.name.lower()
        assert definition.description.endswith(".")
        assert definition.severity in flags.SEVERITIES


def test_decode_scalar_and_array():
    assert flags.decode_flags(0) == []
    assert flags.decode_flags(np.int32(flags.OUTLIERS | flags.LOW_SNR)) == ["outliers", "low_snr"]
    values = np.array([0, flags.UNREADABLE, flags.MISSING_VALUES | flags.OSCILLATION])
    assert flags.decode_flags(values) == [[], ["unreadable"], ["missing_values", "oscillation"]]


def test_encode_decode_round_trip():
    for definition in FLAGS:
        assert flags.encode_flags([definition.name]) == definition.value
    everything = flags.encode_flags(FLAGS.names)
    assert flags.decode_flags(everything) == FLAGS.names


def test_decode_rejects_bad_values():
    with pytest.raises(ValueError, match="undefined flag bits"):
        flags.decode_flags(1 << 30)
    with pytest.raises(ValueError, match="non-negative"):
        flags.decode_flags(-1)
    with pytest.raises(ValueError, match="integers"):
        flags.decode_flags(1.5)
    with pytest.raises(KeyError, match="unknown flag 'spikes'"):
        flags.encode_flags(["spikes"])


def test_has_flag_and_bits():
    values = np.array([flags.LOW_SNR, flags.OUTLIERS, 0])
    np.testing.assert_array_equal(flags.has_flag(values, "low_snr"), [True, False, False])
    assert flags.has_flag(flags.LOW_SNR, "low_snr") is True
    bits = flags.flag_bits(values)
    assert bits.shape == (3, 32)
    assert bits[0, FLAGS["low_snr"].bit]
    assert bits.sum() == 2


def test_severity_masks():
    assert FLAGS.mask_of("bad") == (
        flags.HEAVY_DAMAGE | flags.UNREADABLE | flags.UNPHYSICAL_VALUE | flags.FEATURELESS
    )
    assert FLAGS.mask_of("info") & flags.REPAIRED_PIXELS
    assert FLAGS.mask_of("info") | FLAGS.mask_of("warning") | FLAGS.mask_of("bad") == (
        FLAGS.all_bits
    )
    with pytest.raises(ValueError, match="severity"):
        FLAGS.mask_of("fatal")


def test_masked_standard_regions_is_informational():
    # issue 14: gaps in a survey's routinely masked windows are worth knowing, not a defect
    definition = FLAGS["masked_standard_regions"]
    assert (definition.bit, definition.severity) == (13, "info")
    assert flags.MASKED_STANDARD_REGIONS == 1 << 13
    assert flags.MASKED_STANDARD_REGIONS & FLAGS.mask_of("info")
    assert "missing_values" in definition.description


def test_flag_table_matches_registry():
    table = flags.flag_table()
    assert list(table.colnames) == [
        "bit",
        "value",
        "name",
        "constant",
        "severity",
        "description",
    ]
    assert len(table) == len(FLAGS)
    for row, definition in zip(table, FLAGS, strict=True):
        assert row["name"] == definition.name
        assert row["value"] == definition.value
        assert row["constant"] == definition.name.upper()


def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="duplicate flag name"):
        FlagRegistry([FlagDefinition(0, "a", "A."), FlagDefinition(1, "a", "B.")])
    with pytest.raises(ValueError, match="duplicate flag bit"):
        FlagRegistry([FlagDefinition(0, "a", "A."), FlagDefinition(0, "b", "B.")])
    with pytest.raises(ValueError, match="does not fit"):
        FlagDefinition(40, "c", "C.")
    with pytest.raises(ValueError, match="severity"):
        FlagDefinition(1, "c", "C.", "fatal")
    assert "FlagRegistry of" in repr(FLAGS)
    assert FLAGS.by_bit(0).name == "missing_values"


def test_import_is_cheap():
    code = (
        "import sys, astro_spt.flags; "
        "heavy = [m for m in ('torch', 'specutils', 'astropy.table') if m in sys.modules]; "
        "print(heavy)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
