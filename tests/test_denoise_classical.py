"""The scikit-image baselines (TV, bilateral, wavelet, NL-means) against simulated ground truth."""

import numpy as np
import pytest
import torch

from cryoscape.io.errors import InputError
from cryoscape.methods.denoise.classical import (CLASSICAL_METHODS, ClassicalConfig, denoise_classical,
                                                 estimate_noise_sigma)

from conftest import SNR_GRID as SNRS, ProgressCount, mse  # seed 004's grid


@pytest.fixture(scope="module")
def particles(noisy_particles):
    """``(clean with CTF, {snr: noisy}, {snr: σ})`` of the shared denoising set (conftest)."""
    return noisy_particles


def _mse(a, b):
    return mse(a, b)


def test_noise_sigma_estimate(particles):
    clean, noisy, sigmas = particles
    for snr in (0.8, 0.01):
        est = estimate_noise_sigma(noisy[snr])
        assert abs(np.median(est) / sigmas[snr] - 1) < 0.06, (snr, np.median(est), sigmas[snr])


@pytest.mark.parametrize("method", CLASSICAL_METHODS)
def test_reduces_mse_at_every_snr(particles, method):
    clean, noisy, _ = particles
    cfg = ClassicalConfig(method=method)
    for snr in SNRS:
        y = noisy[snr][:12]
        before = y.clone()
        out = denoise_classical(y, cfg=cfg)
        assert torch.equal(y, before)                                # input untouched
        assert out.dtype == torch.float32 and out.shape == y.shape
        ratio = _mse(out, clean[:12]) / _mse(y, clean[:12])
        assert ratio < 0.7, (method, snr, ratio)


@pytest.mark.parametrize("method", CLASSICAL_METHODS)
def test_affine_equivariance(particles, method):
    """f(a·y + b) = a·f(y) + b: strengths follow the estimated σ and the value range (negative pixels,
    offsets) does not matter — the bilateral filter's rescaling included."""
    _, noisy, _ = particles
    y = noisy[0.1][:4]
    ref = denoise_classical(y, cfg=ClassicalConfig(method=method)).double()
    a, b = 7.0, -3.0
    out = denoise_classical(a * y + b, cfg=ClassicalConfig(method=method)).double()
    err = float((out - (a * ref + b)).abs().max() / (a * ref.abs().max()))
    assert err < 2e-3, (method, err)


def test_known_sigma_zero_is_identity_and_progress(particles):
    _, noisy, _ = particles
    c = ProgressCount()
    y = noisy[0.1][:5]
    out = denoise_classical(y, cfg=ClassicalConfig(method="tv", sigma=0.0), progress=c)
    assert torch.equal(out, y) and c.n == 5


def test_any_size_and_threads(particles):
    _, noisy, _ = particles
    y = noisy[0.1][:3, :29, :23].contiguous()
    one = denoise_classical(y, cfg=ClassicalConfig(method="nlmeans", workers=1))
    two = denoise_classical(y, cfg=ClassicalConfig(method="nlmeans", workers=2))
    assert one.shape == (3, 29, 23) and torch.allclose(one, two)


def test_bad_input():
    good = torch.randn(2, 16, 16)
    with pytest.raises(InputError, match="empty"):
        denoise_classical(torch.zeros(0, 16, 16))
    bad = good.clone()
    bad[1, 3, 4] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        denoise_classical(bad)
    with pytest.raises(InputError, match="unknown classical"):
        denoise_classical(good, cfg=ClassicalConfig(method="bm3d"))
    with pytest.raises(InputError, match="shape"):
        denoise_classical(torch.randn(16, 16))
    with pytest.raises(InputError):
        denoise_classical(good, cfg=ClassicalConfig(method="wavelet", wavelet="nope"))
