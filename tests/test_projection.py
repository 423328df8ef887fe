"""Projection against analytic truths: Gaussian atoms, the Fourier slice theorem, shifts, gradients."""

import math

import torch

from cryoscape.geometry import euler_to_matrix, random_rotations
from cryoscape.physics import (FourierSliceProjector, atoms_to_volume, fft2_centered, irfft2_centered,
                               project_atoms_fourier, project_atoms_real, rfft2_centered, shift_images)


def _atoms(n=150, seed=1, spread=8.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64) * spread, g


def test_single_atom_projection_is_the_2d_gaussian():
    """An atom at x with pose R projects to a unit-mass 2-D Gaussian at (R x)_xy (+ shift)."""
    D, apix, sigma = 48, 1.2, 2.5
    x = torch.tensor([[4.0, -3.0, 7.0]], dtype=torch.float64)
    R = euler_to_matrix(torch.tensor([[0.4, 1.0, -0.7]], dtype=torch.float64))
    t = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    img = project_atoms_real(x, R, sigma, D, apix, t, truncate=math.inf)[0]
    windowed = project_atoms_real(x, R, sigma, D, apix, t)[0]  # default: ±6σ window
    c = (R[0] @ x[0])[:2] + t[0]
    g = (torch.arange(D, dtype=torch.float64) - D // 2) * apix
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    ref = torch.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)
    assert torch.allclose(img, ref, atol=1e-14)
    assert float((windowed - ref).abs().max()) < 2e-8 * float(ref.max())
    assert math.isclose(float(img.sum()) * apix ** 2, 1.0, rel_tol=1e-6)  # unit mass


def test_fourier_and_real_space_atom_projections_agree():
    coords, g = _atoms()
    D, apix, sigma = 64, 1.5, 3.0
    R = random_rotations(6, g, dtype=torch.float64)
    t = torch.randn(6, 2, generator=g, dtype=torch.float64) * 3
    real = project_atoms_real(coords, R, sigma, D, apix, t)
    four = irfft2_centered(project_atoms_fourier(coords, R, sigma, D, apix, t), D)
    assert float((real - four).norm() / real.norm()) < 1e-5


def test_fourier_slice_theorem_on_a_voxelised_gaussian_map():
    """Fourier-slice projection of the voxelised atoms = analytic projection (≤ 1 % with padding 2)."""
    coords, g = _atoms(200)
    D, apix, sigma = 64, 1.5, 3.0
    vol = atoms_to_volume(coords, sigma, D, apix)
    assert math.isclose(float(vol.sum()) * apix ** 3, 200.0, rel_tol=1e-6)  # mass of 200 atoms
    R = random_rotations(8, g, dtype=torch.float64)
    ref = project_atoms_real(coords, R, sigma, D, apix)
    proj = FourierSliceProjector(vol, apix, pad=2).project(R)
    err2 = float((proj - ref).norm() / ref.norm())
    err1 = float((FourierSliceProjector(vol, apix, pad=1).project(R) - ref).norm() / ref.norm())
    assert err2 <= 0.01
    assert err2 < err1  # padding helps
    # float32 path too
    p32 = FourierSliceProjector(vol.float(), apix, pad=2).project(R.float())
    assert float((p32.double() - ref).norm() / ref.norm()) <= 0.01


def test_fourier_slice_handles_odd_boxes_and_identity():
    coords, _ = _atoms(80, seed=3, spread=3)
    D, apix, sigma = 65, 1.0, 2.0
    vol = atoms_to_volume(coords, sigma, D, apix)
    R = torch.eye(3, dtype=torch.float64)[None]
    direct = vol.sum(0) * apix  # projection along z for the identity pose
    for pad in (2, 3):  # odd and even padded sizes
        proj = FourierSliceProjector(vol, apix, pad=pad).project(R)[0]
        assert float((proj - direct).norm() / direct.norm()) < 0.01


def test_shift_matches_shifted_atoms():
    coords, g = _atoms(100)
    D, apix, sigma = 64, 1.5, 3.0
    R = random_rotations(3, g, dtype=torch.float64)
    t = torch.tensor([[3.0, -4.5], [0.0, 6.0], [-7.5, 1.5]], dtype=torch.float64)
    moved = shift_images(project_atoms_real(coords, R, sigma, D, apix), t, apix)
    ref = project_atoms_real(coords, R, sigma, D, apix, t)
    assert float((moved - ref).norm() / ref.norm()) < 1e-6


def test_centered_fft_conventions():
    D = 32
    img = torch.zeros(D, D, dtype=torch.float64)
    img[D // 2, D // 2] = 1.0  # delta at the origin → flat, real transform
    f = fft2_centered(img)
    assert torch.allclose(f.real, torch.ones(D, D, dtype=torch.float64)) and float(f.imag.abs().max()) < 1e-12
    x = torch.randn(3, D, D, dtype=torch.float64)
    assert torch.allclose(irfft2_centered(rfft2_centered(x), D), x)


def test_renderer_gradients_wrt_coordinates_and_pose():
    coords, g = _atoms(5, spread=3)
    coords.requires_grad_(True)
    e = torch.tensor([[0.3, 0.9, -0.4]], dtype=torch.float64, requires_grad=True)

    def f(c, ang):
        return project_atoms_real(c, euler_to_matrix(ang), 1.5, 12, 1.0)

    assert torch.autograd.gradcheck(f, (coords, e))

    def ff(c):
        return torch.view_as_real(project_atoms_fourier(c, euler_to_matrix(e.detach()), 1.5, 12, 1.0))

    assert torch.autograd.gradcheck(ff, (coords,))


def test_phase_ramp_separable_and_general_paths_agree():
    """On a meshgrid the ramp is built as an outer product; on any other grid element by element. Both
    must equal exp(−2πi (kx tx + ky ty))."""
    from cryoscape.physics import phase_ramp, rfreq_grid_2d
    ky, kx = rfreq_grid_2d(16, 1.3, dtype=torch.float64)
    shifts = torch.tensor([[0.7, -2.1], [3.3, 0.4]], dtype=torch.float64)
    direct = torch.exp(-2j * math.pi * (kx[None] * shifts[:, 0, None, None] + ky[None] * shifts[:, 1, None, None]))
    torch.testing.assert_close(phase_ramp(kx, ky, shifts), direct, atol=1e-12, rtol=0)
    # a grid that is not a meshgrid (rotated frequencies) takes the general path
    c, s = math.cos(0.3), math.sin(0.3)
    kxr, kyr = c * kx - s * ky, s * kx + c * ky
    direct = torch.exp(-2j * math.pi * (kxr[None] * shifts[:, 0, None, None] + kyr[None] * shifts[:, 1, None, None]))
    torch.testing.assert_close(phase_ramp(kxr, kyr, shifts), direct, atol=1e-12, rtol=0)
