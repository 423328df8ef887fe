"""CTF-Wiener and covariance Wiener filtering (methods/denoise/wiener.py, cwf.py) and the Fourier–Bessel matrix
of a Fourier filter (physics/steerable.py), against independent truths: the simulator's CTF-free images, the
CTF applied in pixel space, and the Marchenko–Pastur law."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscape.data.simulate import AtomSource, SimulationConfig, plan_simulation, render_images
from cryoscape.io.errors import InputError
from cryoscape.methods.denoise.cwf import CWFConfig, ctf_groups, denoise_cwf
from cryoscape.methods.denoise.wiener import WienerConfig, denoise_wiener
from cryoscape.physics.ctf import CTFParams
from cryoscape.physics.imaging import ImagingGrid
from cryoscape.physics.noise import noise_sigma
from cryoscape.physics.steerable import FourierBessel, shrink_spikes

D, N = 32, 240
DEFOCI = np.linspace(1.0e4, 2.5e4, 7)
SNRS = (0.8, 0.4, 0.1, 0.05, 0.01)


@pytest.fixture(scope="module")
def stack(adk):
    """AdK (Cα, σ = 3 Å) at 32 px, random views, 7 defocus groups: CTF-affected and CTF-free clean images."""
    src = AtomSource(adk.coords[::10], 3.0)
    plan = plan_simulation(SimulationConfig(n_images=N, box=D, seed=3), src)
    df = DEFOCI[np.arange(N) % len(DEFOCI)]
    plan.ctf = CTFParams(df, df, 0.0, 300.0, 2.7, 0.1)
    with_ctf = render_images(plan, src, slice(0, N), apply_ctf=True)
    no_ctf = render_images(plan, src, slice(0, N), apply_ctf=False)
    return {"ctf": plan.ctf, "apix": plan.apix, "with_ctf": with_ctf, "no_ctf": no_ctf}


def _noisy(clean: torch.Tensor, snr: float, seed: int = 0) -> torch.Tensor:
    sigma = noise_sigma(float(clean.double().var(unbiased=False)), snr)
    g = torch.Generator().manual_seed(seed)
    return clean + sigma * torch.randn(clean.shape, generator=g)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


def _apply_ctf(images: torch.Tensor, ctf: CTFParams, apix: float) -> torch.Tensor:
    grid = ImagingGrid(images.shape[-1], apix, dtype=torch.float64)
    return grid.to_images(grid.transform(images.double()) * grid.ctf(ctf))


# -- the CTF as an operator in the Fourier–Bessel basis ---------------------------------------------------------

def test_fb_ctf_operator_matches_the_ctf_applied_in_pixel_space(stack):
    """H @ expand(x) = expand(CTF ⊛ x) for particle images, at every defocus (the operator is only the
    rotation average of the exact map, so equality is up to the square grid's m ↔ m±4 couplings)."""
    fb = FourierBessel(D)
    x = stack["no_ctf"][:20].double()
    ctf = CTFParams(DEFOCI, DEFOCI, 0.0, 300.0, 2.7, 0.1)
    H = fb.filter_blocks(ImagingGrid(D, stack["apix"], dtype=torch.float64).ctf(ctf))
    assert H.shape == (7, fb.n_blocks, fb.p_max, fb.p_max)
    a = fb.to_blocks(fb.expand(x))
    for k in range(7):
        y = _apply_ctf(x, ctf.subset([k] * len(x)), stack["apix"])
        ref = fb.to_blocks(fb.expand(y))
        got = torch.einsum("mpq,nmq->nmp", H[k], a)
        err = float((got - ref).abs().norm() / ref.abs().norm())
        no_op = float((a - ref).abs().norm() / ref.abs().norm())  # the CTF really changes the coefficients
        assert err < 3e-2 and no_op > 0.5, (k, err, no_op)  # measured: 0.6 % at 1.75 µm, 2.3 % at 2.5 µm


def test_fb_filter_operator_is_exact_within_a_block():
    """For a radially symmetric filter and an image of one angular frequency m, the block H_m reproduces the
    m-component of the filtered image to round-off (the only approximation is the cross-block leakage)."""
    fb = FourierBessel(24)
    grid = ImagingGrid(24, 1.0, dtype=torch.float64)
    h = torch.cos(0.6 * grid.radius_px) * torch.exp(-grid.radius_px / 10)
    H = fb.filter_blocks(h)[0]
    g = torch.Generator().manual_seed(0)
    for m in (0, 1, 5):
        a = torch.complex(torch.randn(3, fb.n_coeffs, generator=g, dtype=torch.float64),
                          torch.randn(3, fb.n_coeffs, generator=g, dtype=torch.float64) * (m > 0))
        a[:, fb.m != m] = 0
        y = grid.to_images(grid.transform(fb.evaluate(a)) * h)
        ref = fb.to_blocks(fb.expand(y))[:, m]
        got = (H[m] @ fb.to_blocks(a)[:, m, :, None])[..., 0]
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-10
    eye = fb.filter_blocks(torch.ones(24, 13, dtype=torch.float64))[0]  # identity filter → identity blocks
    assert torch.allclose(eye, torch.diag_embed(fb.block_mask.to(eye.dtype)), atol=1e-12)
    assert torch.equal(fb.from_blocks(fb.to_blocks(a)), a)


def test_shrink_spikes_removes_pure_noise_and_recovers_a_spike():
    """Marchenko–Pastur: the sample eigenvalues of white noise stay below (1 + √γ)² and are set to 0; a spike
    of known size far above the edge is recovered to within 10 %."""
    g = torch.Generator().manual_seed(1)
    n, p = 2000, 100
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    ell = torch.linalg.eigvalsh(x.T @ x / n)
    assert float(shrink_spikes(ell, p / n).abs().max()) == 0.0
    u = torch.zeros(p, dtype=torch.float64)
    u[0] = 1
    x = x + torch.randn(n, 1, generator=g, dtype=torch.float64) * 3.0 * u  # signal variance 9
    top = torch.linalg.eigvalsh(x.T @ x / n)[-1:]
    for loss in ("operator", "frobenius"):
        assert abs(float(shrink_spikes(top, p / n, loss)[0]) - 9.0) < 0.9


# -- the filters ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("snr", SNRS)
def test_wiener_and_cwf_reduce_the_error_against_the_ctf_free_truth(stack, snr):
    """Both estimate the CTF-free image better than the noisy image does and better than the zero image."""
    noisy = _noisy(stack["with_ctf"], snr)
    truth = stack["no_ctf"]
    base = min(_mse(noisy, truth), _mse(torch.zeros_like(truth), truth))
    w = denoise_wiener(noisy, stack["ctf"], stack["apix"])
    c = denoise_cwf(noisy, stack["ctf"], stack["apix"])
    assert w.dtype == torch.float32 and w.shape == noisy.shape and c.shape == noisy.shape
    mw, mc = _mse(w, truth), _mse(c, truth)
    # measured at SNR 0.01: Wiener 0.91 × the better baseline (the zero image), CWF 0.14 ×
    assert mw < 0.95 * base and mc < 0.5 * base, (snr, mw, mc, base)


def test_cwf_returns_noiseless_images_up_to_ctf_zeros(stack):
    """On noiseless data (known tiny noise variance) CWF's output, put through the CTF again, is the input,
    inside the disc (the CTF-free estimate itself is only determined away from the CTF zeros)."""
    y = stack["with_ctf"][:200]
    ctf = stack["ctf"].subset(slice(0, 200))
    out = denoise_cwf(y, ctf, stack["apix"], CWFConfig(noise_var=1e-10 * float(y.var())))
    disc = FourierBessel(D).mask
    again = _apply_ctf(out, ctf, stack["apix"])
    err = float((again - y.double())[:, disc].norm() / y[:, disc].double().norm())
    assert err < 0.05, err
    # and away from the zeros the CTF-free image is recovered: low-pass both (first zero of the 1 µm CTF ≈ 1/20 Å⁻¹)
    grid = ImagingGrid(D, stack["apix"], dtype=torch.float64)
    low = (grid.radius_px / (D * stack["apix"]) < 1 / 25).to(torch.float64)
    a = grid.to_images(grid.transform(out.double()) * low)[:, disc]
    b = grid.to_images(grid.transform(stack["no_ctf"][:200].double()) * low)[:, disc]
    assert float((a - b).norm() / b.norm()) < 0.1


def test_wiener_without_ctf_denoises_any_size():
    """Plain Wiener (ctf=None) on white noise over a smooth non-square image lowers the error."""
    g = torch.Generator().manual_seed(2)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(80.0), indexing="ij")
    clean = torch.stack([torch.sin(xx / 6 + k) * torch.cos(yy / 9) + torch.exp(-((xx - 40) ** 2 + (yy - 24) ** 2) / 60)
                         for k in range(3)])
    noisy = clean + 0.7 * torch.randn(clean.shape, generator=g)
    out = denoise_wiener(noisy, None)
    assert out.shape == clean.shape
    assert _mse(out, clean) < 0.25 * _mse(noisy, clean)
    assert torch.equal(noisy, noisy.clone())  # input untouched (it is the same tensor object below)
    before = noisy.clone()
    denoise_wiener(noisy, None, cfg=WienerConfig(noise="tail"))
    assert torch.equal(noisy, before)


def test_ctf_groups_exact_and_binned():
    df = np.repeat(DEFOCI, 3)
    g, rep = ctf_groups(CTFParams(df, df, 0.0, 300.0, 2.7, 0.1), 16)
    assert len(rep) == 7 and torch.equal(torch.as_tensor(df)[torch.argsort(g, stable=True)],
                                         rep.defocus_u[g][torch.argsort(g, stable=True)])
    df = np.random.default_rng(0).uniform(1e4, 2.5e4, 100)
    g, rep = ctf_groups(CTFParams(df, df, 0.0, 300.0, 2.7, 0.1), 4)
    assert len(rep) == 4 and torch.equal(torch.bincount(g), torch.full((4,), 25))
    for k in range(4):  # bins are defocus intervals in order, represented by a member
        assert float(rep.defocus_u[k]) in set(df[(g == k).numpy()])
        if k:
            assert df[(g == k).numpy()].min() >= df[(g == k - 1).numpy()].max()


def test_bad_input_raises_input_error(stack):
    ctf = stack["ctf"]
    with pytest.raises(InputError):
        denoise_cwf(torch.zeros(0, D, D), None)
    with pytest.raises(InputError):
        denoise_wiener(torch.zeros(0, D, D), None)
    nan = stack["with_ctf"][:10].clone()
    nan[3, 5, 5] = float("nan")
    with pytest.raises(InputError):
        denoise_cwf(nan, ctf.subset(slice(0, 10)), stack["apix"])
    with pytest.raises(InputError):
        denoise_wiener(nan, ctf.subset(slice(0, 10)), stack["apix"])
    with pytest.raises(InputError):
        denoise_cwf(torch.zeros(10, D, D + 2), None)
    with pytest.raises(InputError):
        denoise_wiener(torch.zeros(10, D, D + 2), ctf.subset(slice(0, 10)), stack["apix"])
    with pytest.raises(InputError):
        denoise_cwf(stack["with_ctf"][:10], ctf.subset(slice(0, 9)), stack["apix"])
    with pytest.raises(InputError):
        CWFConfig(shrinker="magic").check()


def test_cwf_without_ctf_and_with_astigmatism(stack):
    """ctf=None: a plain covariance Wiener filter of CTF-free noisy images; astigmatic CTFs (each image its own
    azimuth, so binned into groups, operator = the angular average) still give a large gain."""
    truth = stack["no_ctf"]
    noisy = _noisy(truth, 0.05, seed=4)
    out = denoise_cwf(noisy, None)
    assert _mse(out, truth) < 0.2 * _mse(noisy, truth)
    rng = np.random.default_rng(5)
    df = DEFOCI[np.arange(N) % len(DEFOCI)]
    ctf = CTFParams(df + 500, df - 500, rng.uniform(0, np.pi, N), 300.0, 2.7, 0.1)
    y = _noisy(_apply_ctf(truth, ctf, stack["apix"]).float(), 0.1, seed=6)
    progress = type("P", (), {"n": 0, "advance": lambda self, k: setattr(self, "n", self.n + k)})()
    out = denoise_cwf(y, ctf, stack["apix"], CWFConfig(n_groups=7), progress=progress)
    assert progress.n == N
    base = min(_mse(y, truth), _mse(torch.zeros_like(truth), truth))
    assert _mse(out, truth) < 0.3 * base
