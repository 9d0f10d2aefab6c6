"""Tests of astro_spt.pca: the PCA basis stored as plain arrays."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astro_spt.pca import PCABasis


@pytest.fixture
def data():
    rng = np.random.default_rng(42)
    # Five strong directions plus weak noise, like spectra: most variance in few components.
    latent = rng.normal(size=(300, 5)) * np.array([10.0, 5.0, 3.0, 2.0, 1.0])
    return 1.0 + latent @ rng.normal(size=(5, 40)) + 0.01 * rng.normal(size=(300, 40))


def test_fit_matches_covariance_eigendecomposition(data):
    pca = PCABasis.fit(data)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(data, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    np.testing.assert_allclose(pca.explained_variance, eigenvalues[order], rtol=1e-9, atol=1e-12)
    # Components equal the eigenvectors up to sign (the well-separated leading ones).
    for k in range(5):
        assert abs(abs(pca.components[k] @ eigenvectors[:, order[k]]) - 1) < 1e-9
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(40), atol=1e-12)
    np.testing.assert_allclose(pca.explained_variance_ratio.sum(), 1.0)
    np.testing.assert_allclose(pca.mean, data.mean(axis=0))


def test_matches_scikit_learn(data):
    decomposition = pytest.importorskip("sklearn.decomposition")
    ours = PCABasis.fit(data, n_components=5)
    theirs = decomposition.PCA(n_components=5, svd_solver="full").fit(data)
    np.testing.assert_allclose(ours.explained_variance, theirs.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(ours.components), np.abs(theirs.components_), atol=1e-10)
    np.testing.assert_allclose(
        np.abs(ours.transform(data)), np.abs(theirs.transform(data)), rtol=1e-7, atol=1e-9
    )


def test_variance_threshold_and_n_components(data):
    ratios = np.cumsum(PCABasis.fit(data).explained_variance_ratio)
    for threshold in (0.5, 0.9, 0.999, 1.0):
        pca = PCABasis.fit(data, variance_threshold=threshold)
        k = pca.n_components
        assert ratios[k - 1] >= threshold - 1e-12
        assert k == 1 or ratios[k - 2] < threshold
    assert PCABasis.fit(data, variance_threshold=0.999).n_components == 5
    assert PCABasis.fit(data, n_components=3).n_components == 3
    assert PCABasis.fit(data[:10]).n_components == 10  # min(n_samples, n_features)


def test_fit_is_deterministic_with_fixed_signs(data):
    a = PCABasis.fit(data, n_components=6)
    b = PCABasis.fit(data.copy(), n_components=6)
    assert np.array_equal(a.components, b.components)
    biggest = a.components[np.arange(6), np.argmax(np.abs(a.components), axis=1)]
    assert np.all(biggest > 0)


def test_transform_inverse_and_reconstruction_error(data):
    pca = PCABasis.fit(data, n_components=5)
    z = pca.transform(data)
    assert z.shape == (300, 5) and z.dtype == np.float64
    rebuilt = pca.inverse_transform(z)
    expected = np.sqrt(np.mean((data - rebuilt) ** 2, axis=1))
    np.testing.assert_allclose(pca.reconstruction_error(data), expected, rtol=1e-10)
    # The five strong directions leave only the 0.01 noise outside the basis.
    assert pca.reconstruction_error(data).max() < 0.02
    # Coefficients are uncorrelated with the explained variances as their variances.
    np.testing.assert_allclose(np.var(z, axis=0, ddof=1), pca.explained_variance, rtol=1e-9)
    # A full basis reconstructs exactly.
    full = PCABasis.fit(data)
    np.testing.assert_allclose(full.inverse_transform(full.transform(data)), data, atol=1e-10)


def test_arrays_round_trip_exactly(data):
    pca = PCABasis.fit(data, n_components=7)
    arrays = pca.to_arrays()
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    again = PCABasis.from_arrays({k: v.copy() for k, v in arrays.items()})
    for name, value in arrays.items():
        assert np.array_equal(again.to_arrays()[name], value)
    # float32 arrays are accepted and held as float64
    small = PCABasis.from_arrays({k: v.astype(np.float32) for k, v in arrays.items()})
    assert small.components.dtype == np.float64
    assert "7 components of 40 features" in repr(pca)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_components": 0}, "n_components"),
        ({"n_components": 41}, "n_components"),
        ({"variance_threshold": 1.5}, "variance_threshold"),
        ({"n_components": 2, "variance_threshold": 0.9}, "not both"),
    ],
)
def test_fit_rejects_bad_settings(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        PCABasis.fit(data, **kwargs)


def test_rejects_bad_input(data):
    with pytest.raises(ValueError, match="shape"):
        PCABasis.fit(data[0])
    bad = data.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        PCABasis.fit(bad)
    pca = PCABasis.fit(data, n_components=3)
    with pytest.raises(ValueError, match="expected shape"):
        pca.transform(data[:, :10])
    with pytest.raises(ValueError, match="expected shape"):
        pca.inverse_transform(np.zeros((2, 4)))
    arrays = pca.to_arrays()
    with pytest.raises(ValueError, match="missing components"):
        PCABasis.from_arrays({k: v for k, v in arrays.items() if k != "components"})
    with pytest.raises(ValueError, match="do not match"):
        PCABasis.from_arrays({**arrays, "mean": arrays["mean"][:5]})
    with pytest.raises(ValueError, match="explained_variance must have shape"):
        PCABasis.from_arrays({**arrays, "explained_variance": arrays["explained_variance"][:2]})


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.floats(0.0, 1.0))
def test_gappy_inverse_is_the_direct_one_for_any_mask(seed, k, masked_share):
    """Few masked pixels take the Woodbury route, many the direct inverse: both give
    (I + eta / lambda - C_M C_M^T)^-1 and the coefficients it makes."""
    rng = np.random.default_rng(seed)
    n_pixels = 24
    components = np.linalg.qr(rng.normal(size=(n_pixels, k)))[0].T
    variance = np.sort(rng.uniform(0.5, 5.0, k))[::-1]
    pca = PCABasis(
        np.zeros(n_pixels),
        components,
        variance,
        variance / variance.sum(),
        residual_variance=rng.uniform(1e-3, 0.5),
    )
    x = rng.normal(size=(5, n_pixels))
    mask = rng.random((5, n_pixels)) < masked_share
    result = pca.project(x, mask)
    for i in range(5):
        masked = components[:, mask[i]]
        gram = np.diag(1 + pca.residual_variance / variance) - masked @ masked.T
        direct = np.linalg.inv(gram)
        np.testing.assert_allclose(result.inverse_gram[i], direct, rtol=1e-9, atol=1e-12)
        observed = components[:, ~mask[i]]
        np.testing.assert_allclose(
            result.coefficients[i], direct @ (observed @ x[i, ~mask[i]]), rtol=1e-8, atol=1e-10
        )
