"""Property tests of `astro_spt.estimate` on generated spectra (issue 18).

Arbitrary 1-D and 2-D spectra (any length, including 0-4 pixels; any spectral unit,
frequency and energy included, and units that are no spectral axis at all; NaN, infinite,
negative and huge values; masks of any dtype and shape; every astropy uncertainty type or
none; odd meta values), and objects that only look like spectra, are mixed with real
LAMOST spectra in one call. Whatever they are:

- the table has one row per input spectrum;
- each good row is bit-identical to running its spectrum alone;
- each other row is NaN in every label, with a flag and a message;
- nothing but the package's exceptions escapes, and ``strict=True`` raises the package's.

The CI profile (``tests/conftest.py``) runs a few dozen examples with a fixed seed; the
``fuzz``-marked variant runs as many as the profile says:
``pytest tests/test_fuzz.py -m fuzz --hypothesis-profile=long`` (10,000).
"""

import functools
import glob
import os
import types
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import (
    InverseVariance,
    StdDevUncertainty,
    UnknownUncertainty,
    VarianceUncertainty,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from specutils import Spectrum

import astro_spt
from astro_spt import flags
from astro_spt.exceptions import AstroSPTError, AstroSPTWarning, FailedInputWarning
from astro_spt.io import example_files

N_SAMPLES = 4  # Monte Carlo passes: the properties hold for any number, and 4 is cheap
LABELS = ("age", "mass")
COLUMNS = ("age", "age_err", "mass", "mass_err")


@functools.cache
def model():
    return astro_spt.load_model()


@functools.cache
def good_spectra():
    return [Spectrum.read(path) for path in example_files()]


@functools.cache
def alone(index):
    """The example spectrum ``index`` estimated on its own."""
    return astro_spt.estimate(good_spectra()[index], model(), n_samples=N_SAMPLES)


# -- strategies --------------------------------------------------------------------

SPECTRAL_UNITS = [
    u.AA, u.nm, u.um, u.m, u.Hz, u.GHz, u.THz, u.eV, u.keV, u.J, u.cm**-1,
    u.km / u.s, u.Jy, u.pix, u.s, u.dimensionless_unscaled,
]  # fmt: skip
FLUX_UNITS = [
    u.Unit("1e-17 erg / (s cm2 AA)"), u.erg / u.s / u.cm**2 / u.Hz, u.Jy, u.W / u.m**2 / u.um,
    u.ct, u.dimensionless_unscaled, u.m, u.Unit("1e300 Jy"),
]  # fmt: skip
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e308, -1e308, 5e-324, 1e30, -1e30]
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(),
    st.text(max_size=4),
    st.just(np.array([True, False])),
    st.just(np.array([])),
    st.just(np.array([[1.0, np.nan]])),
    st.just([1, "a"]),
    st.just({"nested": 1}),
    st.just(object()),
    st.just(3 * u.km / u.s),
    st.just(np.nan * u.dimensionless_unscaled),
)
HEADER_VALUES = st.one_of(
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False, allow_infinity=False),  # a FITS header holds neither
    st.text("TFxy", max_size=3),
)


@st.composite
def axes(draw, n):
    """A spectral axis of ``n`` values in some unit."""
    unit = draw(st.sampled_from(SPECTRAL_UNITS))
    kind = draw(st.sampled_from(["model grid", "model grid", "wide", "arbitrary", "reversed"]))
    if kind in ("model grid", "reversed"):
        start, stop = draw(st.sampled_from([(3700.0, 9200.0), (3000.0, 5000.0), (8000.0, 20000.0)]))
        values = np.geomspace(start, stop, n) * u.AA
        if unit.is_equivalent(u.AA, equivalencies=u.spectral()):
            values = values.to(unit, equivalencies=u.spectral())
        else:
            values = values.value * unit
        return values[::-1] if kind == "reversed" else values
    if kind == "wide":
        return np.geomspace(1e-3, 4e13, n) * unit
    if n > 60:  # hypothesis draws long arrays slowly: random ones of any sign and scale
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        return np.sort(rng.choice([-1, 1], n) * 10.0 ** rng.uniform(-300, 300, n)) * unit
    return draw(arrays(np.float64, n, elements=st.floats(width=64))) * unit


@st.composite
def values_like(draw, shape, realistic):
    """Flux-like values: a smooth positive spectrum with special values, or anything."""
    if (not realistic or draw(st.booleans())) and np.prod(shape) <= 200:
        return draw(arrays(np.float64, shape, elements=st.floats(width=64)))
    scale = draw(st.sampled_from([1.0, 1e-17, 1e30, -1.0, 1e-300, 1e300]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = scale * (1 + 0.05 * rng.standard_normal(shape))
    size = int(np.prod(shape))
    if size:
        for index, special in draw(
            st.lists(st.tuples(st.integers(0, size - 1), st.sampled_from(SPECIAL)), max_size=5)
        ):
            values.flat[index] = special
    return values


@st.composite
def uncertainties(draw, shape):
    kind = draw(
        st.sampled_from([None, StdDevUncertainty, VarianceUncertainty, InverseVariance])
        | st.just(UnknownUncertainty)
    )
    if kind is None:
        return None
    if draw(st.integers(0, 9)) == 0:  # of another shape than the flux
        shape = (max(0, shape[-1] - 1),)
    values = draw(values_like(shape, realistic=True))
    unit = draw(st.sampled_from([None, None, u.Jy, u.Jy**-2, u.m]))
    return kind(np.abs(values) if draw(st.booleans()) else values, unit=unit)


@st.composite
def masks(draw, shape):
    kind = draw(st.sampled_from([None, bool, np.int8, float, "wrong shape"]))
    if kind is None:
        return None
    if kind == "wrong shape":
        return np.zeros(shape[-1] + 1, bool)
    return draw(arrays(kind, shape, elements=st.sampled_from([0, 1, 2]).map(kind)))


@st.composite
def metas(draw):
    meta = draw(
        st.dictionaries(
            st.sampled_from(
                ["air", "vacuum", "redshift", "z", "radial_velocity", "obsid", "filename", "file"]
            ),
            ODD,
            max_size=3,
        )
    )
    if draw(st.booleans()):
        header = fits.Header()
        for key, value in draw(
            st.dictionaries(st.sampled_from(["VACUUM", "Z", "OBSID"]), HEADER_VALUES, max_size=2)
        ).items():
            header[key] = value
        meta["header"] = header
    return meta


@st.composite
def generated(draw):
    """An arbitrary spectrum, a look-alike, or another odd element of an input list."""
    n = draw(st.one_of(st.integers(0, 5), st.integers(6, 60), st.sampled_from([1000, 3000])))
    rows = draw(st.sampled_from([None, None, None, 0, 1, 2]))  # None: a 1-D flux
    shape = (n,) if rows is None else (rows, n)
    flux = draw(values_like(shape, realistic=True)) * draw(st.sampled_from(FLUX_UNITS))
    axis = draw(axes(n))
    uncertainty, mask, meta = draw(uncertainties(shape)), draw(masks(shape)), draw(metas())
    try:
        return Spectrum(
            flux=flux, spectral_axis=axis, uncertainty=uncertainty, mask=mask, meta=meta
        )
    except Exception:  # what specutils refuses to build, it gets as a look-alike
        return types.SimpleNamespace(
            flux=flux, spectral_axis=axis, uncertainty=uncertainty, mask=mask, meta=meta
        )


OTHER = st.sampled_from(
    [None, 3.5, "no/such/file.fits", "no/such/[ab].fits", b"no/such/file.fits", np.ones(5)]
)
INPUTS = st.one_of(generated(), generated(), generated(), OTHER)


def expected_rows(element) -> int:
    if isinstance(element, str) and glob.has_magic(element) and not os.path.lexists(element):
        return len(glob.glob(element))  # a pattern is as many inputs as it matches
    flux = getattr(element, "flux", None)
    if getattr(flux, "ndim", None) == 2 and flux.shape[0] > 0:
        return flux.shape[0]
    return 1


@st.composite
def batches(draw):
    """Generated inputs and real LAMOST spectra, shuffled: (inputs, which example each
    input is, or None)."""
    odd = draw(st.lists(INPUTS, min_size=1, max_size=3))
    good = draw(st.lists(st.integers(0, len(example_files()) - 1), min_size=1, max_size=2))
    tagged = draw(st.permutations([(x, None) for x in odd] + [(None, k) for k in good]))
    inputs = [good_spectra()[k] if k is not None else x for x, k in tagged]
    return inputs, [k for _, k in tagged]


# -- properties ---------------------------------------------------------------------


def same_row(a, b):
    return all(
        np.array_equal(a[c].value, b[c].value, equal_nan=True) for c in COLUMNS
    ) and np.array_equal(a["flags"], b["flags"])


def check_batch(inputs, examples, batch_size):
    counts = [expected_rows(x) for x in inputs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = astro_spt.estimate(inputs, model(), n_samples=N_SAMPLES, batch_size=batch_size)
    assert len(table) == sum(counts)
    values = np.stack([table[c].value for c in COLUMNS], axis=1)
    finite = np.isfinite(values).all(axis=1)
    # the package's warnings only (no numpy or astropy one leaks), and one summary of
    # the failed inputs exactly when some failed
    assert all(issubclass(w.category, AstroSPTWarning) for w in caught), caught
    failed = [w for w in caught if issubclass(w.category, FailedInputWarning)]
    assert len(failed) == (0 if finite.all() else 1)
    assert (finite | np.isnan(values).all(axis=1)).all(), "a row half NaN"
    assert (table["flags"][~finite] != 0).all() and all(table["message"][~finite])
    assert not any(table["message"][finite])
    assert (table["flags"][~finite] & (flags.UNREADABLE | flags.UNPHYSICAL_VALUE) != 0).all()
    start = 0
    for element, example, count in zip(inputs, examples, counts, strict=True):
        rows = table[start : start + count]
        if example is not None:  # a real spectrum: exactly what it gives alone
            assert same_row(rows, alone(example))
        elif count == 1 and finite[start]:  # a generated one that came out usable
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstroSPTWarning)  # e.g. unknown medium
                single = astro_spt.estimate(element, model(), n_samples=N_SAMPLES)
            assert same_row(rows, single)
        start += count
    if not finite.all():
        with pytest.raises(AstroSPTError), warnings.catch_warnings():
            warnings.simplefilter("ignore", AstroSPTWarning)
            astro_spt.estimate(inputs, model(), n_samples=N_SAMPLES, strict=True)


FUZZ_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=12, **FUZZ_SETTINGS)
@given(batch=batches())
def test_generated_spectra_among_real_ones(batch):
    check_batch(*batch, batch_size=None)


@pytest.mark.fuzz
@settings(**FUZZ_SETTINGS)
@given(batch=batches(), batch_size=st.sampled_from([1, 3, None]))
def test_generated_spectra_among_real_ones_long(batch, batch_size):
    # each batch runs its own padded network block: small batches cost more
    check_batch(*batch, batch_size)


@settings(max_examples=10, **FUZZ_SETTINGS)
@given(element=INPUTS)
def test_strict_raises_the_package_s_error_or_nothing(element):
    inputs = [good_spectra()[1], element]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstroSPTWarning)  # e.g. unknown medium
            table = astro_spt.estimate(inputs, model(), n_samples=N_SAMPLES, strict=True)
    except AstroSPTError:
        return
    assert np.isfinite(table["age"].value).all() and not any(table["message"])


@settings(max_examples=40, **FUZZ_SETTINGS)
@given(element=generated())
def test_preprocess_gives_one_row_per_flux_row_and_no_foreign_exception(element):
    from astro_spt.preprocess import preprocess

    if not isinstance(element, Spectrum):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstroSPTWarning)
        try:
            result = preprocess([good_spectra()[0], element])
        except AstroSPTError:
            return
    rows = int(np.prod(element.flux.shape[:-1])) if element.flux.ndim > 1 else 1
    assert len(result) == 1 + rows
    bad = (result.flags[1:] & flags.UNREADABLE) != 0
    assert np.isnan(result.flux[1:][bad]).all() and all(
        k + 1 in result.messages for k in np.flatnonzero(bad)
    )
