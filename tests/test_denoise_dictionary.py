"""Patch-dictionary denoisers (DDTF, K-SVD class) against simulated ground truth and the frame's algebra."""

import numpy as np
import pytest
import torch

from cryoscape.io.errors import InputError
from cryoscape.methods.denoise.dictionary import (DDTFConfig, KSVDConfig, dct_basis, denoise_ddtf, denoise_ksvd,
                                                  learn_ddtf, overcomplete_dct, overlap_average)

from conftest import SNR_GRID as SNRS, ProgressCount, mse  # seed 004's grid

FAST_KSVD = dict(max_patches=600, batch_size=200, alpha=3.0)  # a small learning budget: the test stays fast


@pytest.fixture(scope="module")
def particles(noisy_particles):
    """``(clean with CTF, {snr: noisy}, {snr: σ})`` of the shared denoising set (conftest)."""
    return noisy_particles


def _mse(a, b):
    return mse(a, b)


def test_dct_basis_is_orthonormal_with_constant_atom():
    for p in (4, 8):
        B = dct_basis(p)
        assert np.abs(B.T @ B - np.eye(p * p)).max() < 1e-12
        assert np.allclose(B[:, 0], 1 / p)
    D = overcomplete_dct(8, 16)                                       # Elad & Aharon's 64 × 255 start
    assert D.shape == (255, 64) and np.allclose(np.linalg.norm(D, axis=1), 1) and np.abs(D.sum(1)).max() < 1e-9


def _objective(G, W, lam):
    """``‖G − W V‖² + λ²‖V‖₀`` at the thresholded coefficients (DC row kept)."""
    V = W.T @ G
    V[1:] *= np.abs(V[1:]) > lam
    return float(((G - W @ V) ** 2).sum() + lam ** 2 * np.count_nonzero(V[1:]))


def test_ddtf_learning_keeps_the_frame_and_lowers_the_objective(particles):
    _, noisy, sigmas = particles
    x = noisy[0.1].numpy()
    G = np.lib.stride_tricks.sliding_window_view(x, (8, 8), axis=(1, 2))[:, ::3, ::3].reshape(-1, 64).T
    G = G.astype(np.float64)
    lam = 3.5 * sigmas[0.1]
    values = []
    for it in (0, 1, 3, 8):
        for init in ("dct", "random"):
            W = learn_ddtf(G, lam, it, init, seed=1)
            assert np.abs(W.T @ W - np.eye(64)).max() < 1e-10          # [A, D] orthonormal: DᵀD = I, AᵀD = 0
            assert np.allclose(W[:, 0], 1 / 8)                         # the DC atom A kept
        values.append(_objective(G, learn_ddtf(G, lam, it, "random", seed=1), lam))
    # alternating minimisation: every step lowers the objective, from a random start by a few per cent
    assert all(b < a for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.985 * values[0], values


def test_ddtf_lambda_zero_is_identity(particles):
    _, noisy, _ = particles
    for shape, stride in (((32, 32), 1), ((29, 23), 3)):
        y = noisy[0.1][:6, :shape[0], :shape[1]].contiguous()
        out, W = denoise_ddtf(y, cfg=DDTFConfig(threshold=0.0, stride=stride, patch=8), return_frame=True)
        assert float((out - y).abs().max()) < 1e-5 * float(y.abs().max())
        assert np.abs(W.T @ W - np.eye(64)).max() < 1e-10 and np.allclose(W[:, 0], 1 / 8)
    y = noisy[0.1][:3]
    assert torch.equal(denoise_ddtf(y, cfg=DDTFConfig(sigma=0.0)), y)  # a known noiseless stack is kept


def test_overlap_average_identity_and_bands():
    """Unchanged patches average back to the image; bands of rows (a large micrograph) = whole images."""
    x = torch.randn(3, 37, 29)

    def unchanged(band):
        return torch.nn.functional.unfold(band[:, None], 6, stride=4)

    def shrink(band):
        return torch.nn.functional.hardshrink(torch.nn.functional.unfold(band[:, None], 6, stride=2), 0.8)

    assert torch.allclose(overlap_average(x, 6, 4, unchanged), x, atol=1e-6)
    whole = overlap_average(x, 6, 2, shrink)
    banded = overlap_average(x, 6, 2, shrink, budget=3 * 36 * 12)        # 3 patch rows a band
    assert torch.allclose(whole, banded, atol=1e-6) and not torch.allclose(whole, x, atol=1e-2)


def test_ddtf_reduces_mse_at_every_snr(particles):
    clean, noisy, _ = particles
    for snr in SNRS:
        y = noisy[snr]
        before = y.clone()
        out = denoise_ddtf(y)
        assert torch.equal(y, before) and out.dtype == torch.float32 and out.shape == y.shape
        ratio = _mse(out, clean) / _mse(y, clean)
        assert ratio < 0.6, (snr, ratio)


def test_ksvd_reduces_mse_at_every_snr(particles):
    clean, noisy, _ = particles
    for snr in SNRS:
        y = noisy[snr][:12]
        before = y.clone()
        out = denoise_ksvd(y, cfg=KSVDConfig(**FAST_KSVD))
        assert torch.equal(y, before) and out.dtype == torch.float32 and out.shape == y.shape
        ratio = _mse(out, clean[:12]) / _mse(y, clean[:12])
        assert ratio < 0.6, (snr, ratio)


def test_ksvd_fixed_sparsity_any_size_and_progress(particles):
    clean, noisy, _ = particles
    c = ProgressCount()
    y = noisy[0.4][:4, :30, :27].contiguous()
    out = denoise_ksvd(y, cfg=KSVDConfig(n_nonzero_coefs=2, **FAST_KSVD), progress=c)
    assert out.shape == y.shape and c.n == 4
    assert _mse(out, clean[:4, :30, :27]) < 0.6 * _mse(y, clean[:4, :30, :27])
    # a patch whose mean-free energy is within the OMP tolerance keeps its mean only: a constant image
    # (any offset) comes back exactly
    flat = torch.full((2, 16, 16), 2.5)
    assert torch.allclose(denoise_ksvd(flat, cfg=KSVDConfig(sigma=0.1, **FAST_KSVD)), flat)


def test_bad_input():
    good = torch.randn(2, 16, 16)
    for fn in (denoise_ddtf, denoise_ksvd):
        with pytest.raises(InputError, match="empty"):
            fn(torch.zeros(0, 16, 16))
        bad = good.clone()
        bad[0, 1, 1] = float("inf")
        with pytest.raises(InputError, match="NaN"):
            fn(bad)
        with pytest.raises(InputError, match="smaller"):
            fn(torch.randn(2, 16, 6))                                  # patch 8 (K-SVD) / 10 (DDTF) > 6
    with pytest.raises(InputError, match="stride"):
        denoise_ddtf(good, cfg=DDTFConfig(patch=4, stride=5))
    with pytest.raises(InputError, match="init"):
        denoise_ddtf(good, cfg=DDTFConfig(init="pca"))
    with pytest.raises(InputError, match="n_nonzero_coefs"):
        denoise_ksvd(good, cfg=KSVDConfig(n_nonzero_coefs=0))
