"""The scikit-image baselines (TV, bilateral, wavelet, NL-means) against simulated ground truth."""

import math

import numpy as np
import pytest
import torch

from cryoscape.io.errors import InputError
from cryoscape.methods.denoise.classical import (CLASSICAL_METHODS, ClassicalConfig, denoise_classical,
                                                 estimate_noise_sigma)

SNRS = (0.8, 0.4, 0.1, 0.05, 0.01)  # seed 004's grid


@pytest.fixture(scope="module")
def particles(adk):
    """32 AdK particle images of 32 px with CTF (1–2.5 µm): ``(clean with CTF, {snr: noisy}, {snr: σ})``."""
    from cryoscape.data.simulate import (AtomSource, SimulationConfig, add_dataset_noise, plan_simulation,
                                         render_images)
    cfg = SimulationConfig(n_images=32, box=32, seed=3, defocus_min_um=1.0, defocus_max_um=2.5)
    src = AtomSource(adk.coords[::5], cfg.sigma)
    plan = plan_simulation(cfg, src)
    clean = render_images(plan, src, slice(0, 32), apply_ctf=True)
    sigmas = {snr: float(clean.double().std()) / math.sqrt(snr) for snr in SNRS}
    noisy = {snr: add_dataset_noise(clean, sigmas[snr], 11, 0) for snr in SNRS}
    return clean, noisy, sigmas


def _mse(a, b):
    return float(((a.double() - b.double()) ** 2).mean())


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

    class Count:
        n = 0

        def advance(self, k):
            self.n += k

    c = Count()
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
