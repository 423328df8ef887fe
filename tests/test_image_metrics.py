"""Image metrics (analysis/images.py) against hand-computed values and analytic limits."""

import math

import numpy as np
import pytest

from cryoscape.analysis import images as m


def test_psnr_and_mse_equal_their_formula_on_a_hand_computed_case():
    clean = np.array([[0.0, 1.0], [2.0, 3.0]])
    est = clean + np.array([[1.0, 0.0], [0.0, 0.0]])
    # MSE = 1/4; range = 3; PSNR = 10 log10(9 / 0.25) = 10 log10(36)
    assert m.mse(est, clean)[0] == pytest.approx(0.25)
    assert m.psnr(est, clean)[0] == pytest.approx(10 * math.log10(36.0))
    # per image, then averaged: a second image with MSE 1 and range 3 gives 10 log10(9)
    stack_c = np.stack([clean, clean])
    stack_e = np.stack([est, clean + 1.0])
    assert m.image_scores(stack_e, stack_c)["psnr_dB"] == pytest.approx(
        0.5 * (10 * math.log10(36.0) + 10 * math.log10(9.0)))


def test_psnr_of_gaussian_noise_matches_its_variance():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, (4, 64, 64))
    clean[:, 0, 0], clean[:, 0, 1] = 0.0, 1.0  # range exactly 1
    est = clean + rng.normal(0, 0.1, clean.shape)
    assert m.psnr(est, clean).mean() == pytest.approx(20.0, abs=0.1)  # 10 log10(1 / 0.01)


def test_ssim_frc_pearson_limits():
    rng = np.random.default_rng(1)
    clean = rng.normal(size=(3, 32, 32))
    assert np.allclose(m.ssim(clean, clean), 1.0)
    assert np.allclose(m.frc(clean, clean), 1.0)
    assert np.allclose(m.pearson(2 * clean + 5, clean), 1.0)
    other = rng.normal(size=(3, 32, 32))
    assert abs(m.frc(other, clean)[:, 4:].mean()) < 0.05
    assert abs(m.pearson(other, clean).mean()) < 0.05
    assert m.ssim(other, clean).mean() < 0.1


def test_frc_resolution_of_a_low_pass_copy():
    """A copy low-passed at shell 8 of D = 64 (apix 2 Å) matches the clean image up to 64·2/8 = 16 Å."""
    rng = np.random.default_rng(2)
    clean = rng.normal(size=(2, 64, 64))
    f = np.fft.fftshift(np.fft.fft2(clean), axes=(-2, -1))
    y, x = np.mgrid[-32:32, -32:32]
    f[:, np.hypot(x, y) > 8.4] = 0
    low = np.fft.ifft2(np.fft.ifftshift(f, axes=(-2, -1))).real
    res = m.frc_resolution_A(low, clean, apix=2.0)
    assert 14.0 <= res <= 16.5


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        m.mse(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
