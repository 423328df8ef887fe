"""physics/transform2d: in-plane rotation, phase flipping, CTF-weighted 2-D class averages.

Truths: the forward model (Gaussian atoms projected analytically at pose ``Rz(ψ)·A``), torch.rot90 (exact
quarter turns), the analytic CTF at rotated frequencies, finite differences (gradcheck), and simulated
classes whose templates are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoscape.analysis.fsc import resolution_at
from cryoscape.geometry.poses import Poses
from cryoscape.geometry.rotations import euler_to_matrix, random_rotations
from cryoscape.physics.ctf import CTFParams, ctf_2d
from cryoscape.physics.imaging import GaussianAtoms, ImagingGrid, forward_images
from cryoscape.physics.transform2d import Averager2D, phase_flip, quarter_turn, rotate_images, rotated_ctf_params

F64 = torch.float64


def rz(psi: torch.Tensor) -> torch.Tensor:
    """RELION's ``Rz(ψ)`` (CONVENTIONS.md) through the Euler matrix with rot = tilt = 0."""
    z = torch.zeros_like(psi)
    return euler_to_matrix(torch.stack([z, z, psi], -1))


def blobs(D: int, apix: float, n_atoms: int, radius_px: float, seed: int) -> GaussianAtoms:
    """Gaussian atoms (σ = 2 px, band-limited to ~1e-9 at Nyquist) inside a ball of ``radius_px`` pixels."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_atoms, 3, generator=g, dtype=F64)
    r = torch.rand(n_atoms, 1, generator=g, dtype=F64) ** (1 / 3) * radius_px * apix
    return GaussianAtoms(v / v.norm(dim=1, keepdim=True) * r, sigma=2.0 * apix, method="exact")


def disc_mask(D: int, radius: float) -> torch.Tensor:
    c = torch.arange(D, dtype=F64) - D // 2
    return (c[:, None] ** 2 + c[None, :] ** 2) <= radius ** 2


# ------------------------------------------------------------------------------------------------------------
# rotate_images
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("D, bound", [(32, 5e-5), (33, 5e-5), (48, 1e-6)])
def test_rotation_matches_projection_at_rz_psi_times_pose(D, bound):
    """Projection at ``Rz(ψ)·A`` = rotate_images(projection at A, ψ). Measured max relative error over the
    angles: 8.3e-6 (D = 32), 2.5e-6 (D = 33), 1.5e-8 (D = 48) — the residue is the blobs' tails cut by the
    box (less of them at D = 48), not the interpolation."""
    apix = 1.5
    proj = blobs(D, apix, 25, D * 0.25, seed=D)
    grid = ImagingGrid(D, apix, dtype=F64)
    A = random_rotations(3, generator=torch.Generator().manual_seed(1)).to(F64)
    zero = torch.zeros(3, 2, dtype=F64)
    ref = forward_images(proj, Poses(A, zero), grid)
    worst = 0.0
    for deg in (17.0, 100.0, -135.0, 45.0, -44.9, 230.0, 3.0):
        psi = torch.full((3,), math.radians(deg), dtype=F64)
        truth = forward_images(proj, Poses(rz(psi) @ A, zero), grid)
        err = ((rotate_images(ref, psi) - truth).norm(dim=(1, 2)) / truth.norm(dim=(1, 2))).max().item()
        worst = max(worst, err)
    assert worst < bound, worst
    # per-image angles in one call, and the single-image form
    psi = torch.tensor([0.3, -2.0, 2.9], dtype=F64)
    truth = forward_images(proj, Poses(rz(psi) @ A, zero), grid)
    assert torch.allclose(rotate_images(ref, psi), truth, atol=bound * truth.abs().max())
    assert torch.allclose(rotate_images(ref[1], -2.0), rotate_images(ref, psi)[1], atol=1e-12)


@pytest.mark.parametrize("D", [16, 17])
def test_quarter_turns_are_exact_pixel_permutations(D):
    """k·90° equals torch.rot90 (dims (−2, −1), the direction of Q) exactly: for odd D as is; for even D
    rot90 turns about (D − 1)/2, so it is rolled by one pixel onto the centre D//2 (the wrapped first
    row/column is zero in this image, as the zero-extended rotation makes it)."""
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, D, D, generator=g, dtype=F64)
    if D % 2 == 0:
        img[:, 0, :] = 0
        img[:, :, 0] = 0
    for k in (1, 2, 3, -1, 5):
        ref = torch.rot90(img, k, dims=(-2, -1))
        if D % 2 == 0:
            kk = k % 4
            ref = torch.roll(ref, shifts={1: (1, 0), 2: (1, 1), 3: (0, 1)}[kk], dims=(-2, -1))
        out = rotate_images(img, torch.full((2,), k * math.pi / 2, dtype=F64))
        assert torch.allclose(out, ref, atol=1e-13, rtol=0), (k, (out - ref).abs().max())
        assert torch.equal(quarter_turn(img, k), ref)  # the permutation alone is bit-exact


def test_rotation_by_psi_then_minus_psi_returns_a_band_limited_image():
    """ψ then −ψ: measured max error 1.1e-8 relative to the peak (float32: 4.2e-7) for a σ = 2 px blob near
    the centre (a blob whose tails reach the box edge loses them: content rotated out of the box is gone;
    at σ = 1.5 px the error is 1.4e-5, the sheared spectrum nearing Nyquist)."""
    D = 32
    c = torch.arange(D, dtype=F64) - D // 2
    img = torch.exp(-((c[None, :] - 2) ** 2 + (c[:, None] + 1) ** 2) / (2 * 2.0 ** 2))[None].repeat(4, 1, 1)
    psi = torch.tensor([0.3, 1.2, -2.5, math.radians(44.0)], dtype=F64)
    back = rotate_images(rotate_images(img, psi), -psi)
    assert (back - img).abs().max().item() < 1e-7 * img.max().item()
    # float32 works too, at float32 precision
    back32 = rotate_images(rotate_images(img.float(), psi.float()), -psi.float())
    assert (back32 - img.float()).abs().max().item() < 2e-6


def test_rotation_gradients_match_finite_differences():
    """gradcheck in float64 on 4- and 5-px images: gradients with respect to the images and the angles
    (a quarter turn included: 2.1 rad), full Jacobians for one image, random projections for a batch."""
    g = torch.Generator().manual_seed(3)
    img = torch.randn(1, 4, 4, generator=g, dtype=F64, requires_grad=True)
    psi = torch.tensor([2.1], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rotate_images(a, b), (img, psi), eps=1e-6, atol=1e-7)
    img5 = torch.randn(3, 5, 5, generator=g, dtype=F64, requires_grad=True)
    psi3 = torch.tensor([0.4, -0.7, -2.6], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rotate_images(a, b, pad=1), (img5, psi3), fast_mode=True)


# ------------------------------------------------------------------------------------------------------------
# CTF
# ------------------------------------------------------------------------------------------------------------

def _ctf(n, seed, dfmin=10000.0, dfmax=25000.0, astig=2000.0):
    g = np.random.default_rng(seed)
    du = g.uniform(dfmin, dfmax, n)
    return CTFParams(du, du - g.uniform(0.5, 1.0, n) * astig, g.uniform(-np.pi, np.pi, n), 300.0, 2.7, 0.1)


def test_ctf_at_rotated_frequencies_is_the_ctf_with_azimuth_plus_psi():
    """Analytic: ``C(Q(ψ)ᵀ k)`` (ctf_2d at rotated frequencies) = the CTF of azimuth ``α + ψ`` at ``k``."""
    grid = ImagingGrid(32, 3.0, dtype=F64)
    ctf = _ctf(4, 0)
    psi = torch.tensor([0.3, -1.1, 2.0, 3.0], dtype=F64)
    kx, ky = grid.kx, grid.ky
    for i in range(4):
        c, s = math.cos(psi[i]), math.sin(psi[i])
        one = ctf.subset([i])
        # Q(ψ)ᵀ (kx, ky) = (c kx + s ky, −s kx + c ky)
        truth = ctf_2d(c * kx + s * ky, -s * kx + c * ky, one.defocus_u, one.defocus_v, one.angle_ast, 300.0,
                       2.7, 0.1)
        assert torch.allclose(grid.ctf(rotated_ctf_params(one, psi[i:i + 1])), truth, atol=1e-12)
        wrong = grid.ctf(rotated_ctf_params(one, -psi[i:i + 1]))
        assert (wrong - truth).abs().max() > 0.1  # the sign matters


def test_rotating_a_ctf_filtered_image_equals_filtering_the_rotated_image_with_the_turned_azimuth():
    """Real space: ``rotate(CTF_α ⊛ z, φ) = CTF_{α−φ} ⊛ rotate(z, φ)`` inside the disc (CTF on a padded
    canvas so nothing wraps). Measured relative error 1.4e-8; the opposite azimuth sign gives 0.30–0.36."""
    D, apix = 48, 3.0
    grid = ImagingGrid(D, apix, pad=2, dtype=F64)
    z = forward_images(blobs(D, apix, 10, 5, seed=4), Poses.identity(2), ImagingGrid(D, apix, dtype=F64))
    ctf = CTFParams([15000.0, 14000.0], [8000.0, 6000.0], [0.4, -1.0], 300.0, 2.7, 0.1)
    phi = torch.tensor([0.7, -2.2], dtype=F64)

    def filt(x, params):
        return grid.to_images(grid.transform(x) * grid.ctf(params))

    lhs = rotate_images(filt(z, ctf), phi)
    rhs = filt(rotate_images(z, phi), rotated_ctf_params(ctf, -phi))
    bad = filt(rotate_images(z, phi), rotated_ctf_params(ctf, phi))
    m = disc_mask(D, D / 2 - 6)
    err = ((lhs - rhs) * m).norm() / (rhs * m).norm()
    assert err < 1e-6, err
    assert ((lhs - bad) * m).norm() / (rhs * m).norm() > 0.2


def test_phase_flip_makes_the_transfer_function_nonnegative():
    """Phase-flipped CTF ⊛ z = |CTF| ⊛ z (truth: the filter applied directly)."""
    D, apix = 32, 3.0
    grid = ImagingGrid(D, apix, dtype=F64)
    z = forward_images(blobs(D, apix, 10, 5, seed=5), Poses.identity(3), grid)
    ctf = _ctf(3, 1)
    x = grid.to_images(grid.transform(z) * grid.ctf(ctf))
    truth = grid.to_images(grid.transform(z) * grid.ctf(ctf).abs())
    assert torch.allclose(phase_flip(x, ctf, grid), truth, atol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# Averager2D
# ------------------------------------------------------------------------------------------------------------

def _classes(K, n_per, D, apix, seed, noise=0.0):
    """K templates (Gaussian atoms projected at pose A_k) and n_per images each at pose Rz(ψ)·A_k with a
    shift and an astigmatic CTF, from the forward model (independent of rotate_images)."""
    g = torch.Generator().manual_seed(seed)
    grid = ImagingGrid(D, apix, dtype=F64)
    proj = GaussianAtoms(torch.stack([blobs(D, apix, 15, D * 0.22, seed + k).coords for k in range(K)]),
                         sigma=2.0 * apix, method="exact")
    A = random_rotations(K, generator=g).to(F64)
    templates = forward_images(proj, Poses(A, torch.zeros(K, 2, dtype=F64)), grid, index=torch.arange(K))
    N = K * n_per
    cls = torch.arange(N) % K
    psi = (torch.rand(N, generator=g, dtype=F64) * 2 - 1) * math.pi
    shift = (torch.rand(N, 2, generator=g, dtype=F64) * 2 - 1) * 2 * apix
    ctf = _ctf(N, seed)
    images = forward_images(proj, Poses(rz(psi) @ A[cls], shift), ImagingGrid(D, apix, pad=2, dtype=F64), ctf,
                            index=cls)  # the CTF on a padded canvas, then cropped: the data a camera records
    if noise:
        images = images + noise * templates.std() * torch.randn(images.shape, generator=g, dtype=F64)
    return templates, images, ctf, cls, psi, shift


def _corr(a, b, m):
    a, b = a[..., m], b[..., m]
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def test_wiener_average_recovers_the_templates_from_noiseless_images():
    """K = 3 classes, 40 images each (ψ uniform, shifts ±2 px, defocus 1–2.5 µm, astigmatism up to
    2000 Å at random azimuths, D = 32, 3 Å/px; the CTF applied on a padded canvas and cropped, so the
    ringing beyond the box is lost as in real data). Measured inside the disc: 1 − correlation ≤ 2.3e-5,
    relative error ≤ 6.9e-3 (8.1e-3 with the default regulariser)."""
    D, apix, K = 32, 3.0, 3
    templates, images, ctf, cls, psi, shift = _classes(K, 40, D, apix, seed=10)
    av = Averager2D(K, D, apix)
    av.add(images[:70], ctf.subset(slice(0, 70)), cls[:70], psi[:70], shift[:70])  # two calls: accumulates
    av.add(images[70:], ctf.subset(slice(70, None)), cls[70:], psi[70:], shift[70:])
    assert av.counts.sum().item() == 3 * 40 and av.counts.min().item() > 0
    out = av.averages(tau2=1e8)
    m = disc_mask(D, D / 2)
    rho = _corr(out, templates, m)
    assert rho.min() > 0.9999, rho
    rel = ((out - templates) * m).norm(dim=(1, 2)) / (templates * m).norm(dim=(1, 2))
    assert rel.max() < 1e-2, rel
    # the default regulariser is also small enough for noiseless data
    assert _corr(av.averages(), templates, m).min() > 0.999
    # without the CTF and with per-image weights: a weighted mean of exact copies is the template
    clean = forward_images(GaussianAtoms(torch.zeros(1, 3, dtype=F64), 2.0 * apix, method="exact"),
                           Poses(torch.eye(3, dtype=F64).expand(4, 3, 3), torch.zeros(4, 2, dtype=F64)),
                           ImagingGrid(D, apix, dtype=F64))
    av1 = Averager2D(1, D, apix)
    av1.add(rotate_images(clean, torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64)), None, torch.zeros(4),
            torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64), torch.zeros(4, 2), weight=torch.tensor([1., 2, 3, 4]))
    assert torch.allclose(av1.averages(tau2=1e12)[0] * m, clean[0] * m, atol=1e-6 * clean.max())


def test_half_set_frc_lies_in_0_1_and_falls_with_noise():
    """Noisy copies (noise σ = 1 and 4 × the templates' std): FRC ≤ 1, > 0.5 in shells 1–3, and lower
    (and the resolution worse) with more noise; resolution_A agrees with analysis.fsc.resolution_at.
    Measured: mean FRC 0.34–0.41 → 0.23–0.29, resolution 13–16 Å → 15–20 Å (shells beyond the blobs'
    band hold only noise, FRC down to −0.25 there)."""
    D, apix, K = 32, 3.0, 3
    results = []
    for noise in (1.0, 4.0):
        templates, images, ctf, cls, psi, shift = _classes(K, 60, D, apix, seed=20, noise=noise)
        av = Averager2D(K, D, apix)
        av.add(images, ctf, cls, psi, shift, half=torch.arange(len(cls)) // K % 2)
        frc = av.frc()
        assert frc.shape == (K, D // 2)
        assert bool((frc <= 1 + 1e-12).all()) and bool((frc[:, 1:4] > 0.5).all()), frc
        res = av.resolution_A()
        for k in range(K):
            assert res[k].item() == pytest.approx(resolution_at(frc[k].numpy(), D, apix), rel=1e-12)
        results.append((frc.mean(1), res))
    (f_lo, r_lo), (f_hi, r_hi) = results
    assert bool((f_hi < f_lo).all()), (f_lo, f_hi)
    assert bool((r_hi > r_lo).all()), (r_lo, r_hi)


def test_averager_rejects_bad_input():
    av = Averager2D(2, 8, 1.0)
    with pytest.raises(ValueError):
        av.add(torch.zeros(2, 8, 8), None, torch.tensor([0, 2]), torch.zeros(2), torch.zeros(2, 2))
    with pytest.raises(ValueError):
        av.add(torch.zeros(2, 9, 9), None, torch.tensor([0, 1]), torch.zeros(2), torch.zeros(2, 2))
