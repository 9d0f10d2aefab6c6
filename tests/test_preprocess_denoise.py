"""Tests of `astro_spt.preprocess.denoise`."""

import numpy as np
import pytest

from astro_spt.preprocess import denoise_modwt


def noisy_signal(n=3, sigma=0.5, seed=0):
    x = np.linspace(0, 1, 4096)
    clean = 10 + 2 * np.sin(6 * np.pi * x) - 4 * np.exp(-0.5 * ((x - 0.5) / 0.003) ** 2)
    rng = np.random.default_rng(seed)
    return clean, clean + rng.normal(0, sigma, (n, x.size))


@pytest.mark.parametrize("threshold", ["universal", "level"])
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_denoising_reduces_noise(threshold, mode):
    clean, noisy = noisy_signal()
    denoised = denoise_modwt(noisy, level=4, threshold=threshold, mode=mode)
    before = np.sqrt(np.mean((noisy - clean) ** 2))
    after = np.sqrt(np.mean((denoised - clean) ** 2))
    assert after < 0.5 * before
    # the narrow line survives
    assert denoised[:, 2048].mean() < clean[0] + 0.5 * (clean[2048] - clean[0]) + 8


def test_deeper_levels_remove_more_noise():
    clean, noisy = noisy_signal()
    errors = [np.std(denoise_modwt(noisy, level=j) - clean) for j in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2]


def test_batch_equals_rows_and_keeps_dtype():
    _, noisy = noisy_signal(4)
    noisy = noisy.astype(np.float32)
    batch = denoise_modwt(noisy)
    assert batch.dtype == np.float32 and batch.shape == noisy.shape
    for i in range(4):
        np.testing.assert_allclose(batch[i], denoise_modwt(noisy[i]), rtol=1e-6, atol=1e-5)


def test_edges_are_not_wrapped():
    # A spectrum rising from 0 to 100: a circular transform would mix the two ends and
    # pull them towards 50; mirroring leaves a small kink only.
    ramp = np.linspace(0, 100, 4096)[None, :]
    denoised = denoise_modwt(ramp, level=6)
    np.testing.assert_allclose(denoised, ramp, atol=0.2)
    np.testing.assert_allclose(denoised[:, 100:-100], ramp[:, 100:-100], atol=1e-6)


def test_non_finite_rows_and_odd_lengths():
    _, noisy = noisy_signal(2)
    noisy[1, 10] = np.nan
    out = denoise_modwt(noisy)
    assert np.isnan(out[1, 10]) and np.isfinite(out[0]).all()
    np.testing.assert_array_equal(out[1], noisy[1])
    odd = denoise_modwt(noisy[0, :1001], level=3)
    assert odd.shape == (1001,)
    assert denoise_modwt(np.full((1, 64), np.nan)).shape == (1, 64)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="at least 32"):
        denoise_modwt(np.ones(16), level=5)
    with pytest.raises(ValueError, match="threshold"):
        denoise_modwt(np.ones(64), threshold="sure")
    with pytest.raises(ValueError, match="mode"):
        denoise_modwt(np.ones(64), mode="garrote")
    with pytest.raises(ValueError, match="1-D or 2-D"):
        denoise_modwt(np.ones((2, 2, 64)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", [1, 2, 4, 6])
def test_haar_inverse_is_pywavelets_bit_for_bit(dtype, level):
    import pywt

    from astro_spt.preprocess.denoise import _haar_imodwt

    rng = np.random.default_rng(level)
    x = (rng.normal(0, 1, (5, 2**level * 37)) * 10.0 ** rng.uniform(-20, 20, (5, 1))).astype(dtype)
    coefficients = pywt.swt(x, "haar", level=level, norm=True, trim_approx=True, axis=-1)
    # thresholded coefficients no longer invert exactly: any rounding would show
    coefficients = [c * rng.uniform(0, 2, c.shape).astype(dtype) for c in coefficients]
    expected = pywt.iswt(coefficients, "haar", norm=True, axis=-1)
    result = _haar_imodwt(coefficients)
    assert result.dtype == expected.dtype
    np.testing.assert_array_equal(result, expected)
