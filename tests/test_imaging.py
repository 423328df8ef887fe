"""The shared forward model (physics/imaging.py), likelihood (physics/likelihood.py) and Poses, against
analytic results and the formulas they implement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoscape.geometry.poses import Poses
from cryoscape.geometry.rotations import random_rotations
from cryoscape.physics.ctf import CTFParams, ctf_from_params
from cryoscape.physics.fourier import fft3_centered, irfft2_centered, rfft2_centered, rfreq_grid_2d
from cryoscape.physics.gaussian import atoms_to_volume, project_atoms_fourier, project_atoms_real
from cryoscape.physics.imaging import (FourierField, GaussianAtoms, ImagingGrid, VoxelMap, centre, forward,
                                       forward_images, forward_points)
from cryoscape.physics.likelihood import (correlation, gaussian_nll, noise_spectrum, shell_correlation,
                                          squared_error)

D, APIX, SIGMA = 32, 2.0, 4.0


def _atoms(n=40, seed=0, spread=3.5):
    """``n`` atoms with coordinates ~ N(0, spread²) Å: well inside the 64 Å box."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64) * spread


def _ctf(n, seed=0):
    rng = np.random.default_rng(seed)
    du = rng.uniform(8000, 20000, n)
    return CTFParams(du, du - rng.uniform(0, 800, n), rng.uniform(0, np.pi, n), 300, 2.7, 0.1, 0.0,
                     rng.uniform(0, 60, n))


def _poses(n, seed=0, shift=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    R = random_rotations(n, generator=g, dtype=dtype)
    t = (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * 2 * shift
    return Poses(R, t)


def test_forward_images_is_projection_then_ctf_in_float64():
    """Analytic projection, shifted in real space by moving the atoms, then the CTF by the formula."""
    x, poses, ctf = _atoms(), _poses(6), _ctf(6)
    for box in (D, D + 1):
        grid = ImagingGrid(box, APIX, dtype=torch.float64)
        img = forward_images(GaussianAtoms(x, SIGMA, method="exact"), poses, grid, ctf)
        proj = project_atoms_real(x, poses.R, SIGMA, box, APIX, poses.shift_A)
        ky, kx = rfreq_grid_2d(box, APIX, dtype=torch.float64)
        ref = irfft2_centered(rfft2_centered(proj) * ctf_from_params(ctf, kx, ky), box)
        assert float((img - ref).abs().max() / ref.abs().max()) < 1e-12


def test_splat_and_exact_agree_and_gradients_flow():
    x = _atoms().requires_grad_()  # well inside the box: the splat wraps around, the exact sum does not
    poses, grid = _poses(4, shift=1.0), ImagingGrid(D, APIX, dtype=torch.float64)
    exact = forward(GaussianAtoms(x, SIGMA, method="exact"), poses, grid)
    splat = forward(GaussianAtoms(x, SIGMA, method="splat"), poses, grid)
    assert float((splat - exact).detach().abs().norm() / exact.detach().abs().norm()) < 1e-4  # σ = 2 px
    splat.abs().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_cpu_kernel_path_matches_torch_splat():
    x = _atoms().to(torch.float32)
    poses = _poses(5, dtype=torch.float32)
    grid = ImagingGrid(D, APIX)
    kernel = forward(GaussianAtoms(x, SIGMA, method="splat"), poses, grid)  # numba, float32
    torch_path = forward(GaussianAtoms(x.double(), SIGMA, method="splat"), poses.to(dtype=torch.float64),
                         grid.to(dtype=torch.float64))
    assert float((kernel - torch_path).abs().max() / torch_path.abs().max()) < 1e-5


def test_voxel_map_obeys_the_fourier_slice_theorem():
    """Fourier slice of the voxelised atoms ≈ the analytic transform of their projection (shift included)."""
    x = _atoms(seed=1)
    vol = atoms_to_volume(x, SIGMA, D, APIX)
    poses = _poses(5, seed=2, shift=2.0)
    grid = ImagingGrid(D, APIX, dtype=torch.float64)
    f = forward(VoxelMap(vol, APIX, pad=2), poses, grid)
    ref = project_atoms_fourier(x, poses.R, SIGMA, D, APIX, poses.shift_A) * grid.disc
    assert float((f - ref).abs().norm() / ref.abs().norm()) < 0.01  # trilinear interpolation at pad 2


def test_fourier_field_at_points_equals_the_analytic_transform():
    """A field given as the analytic 3-D transform of Gaussian atoms, evaluated at Rᵀk, shifted and
    CTF-weighted, equals the analytic 2-D transform times the CTF at every disc point."""
    x, poses, ctf = _atoms(seed=3), _poses(4, seed=4), _ctf(4, seed=1)
    grid = ImagingGrid(D, APIX, dtype=torch.float64)
    L = D * APIX

    def field(q):  # q in pixels of 1/(D apix)
        k = q / L
        phase = -2 * math.pi * torch.einsum("npj,aj->npa", k, x)
        env = torch.exp(-2 * math.pi ** 2 * SIGMA ** 2 * (k * k).sum(-1)) / APIX ** 2
        return torch.polar(torch.ones_like(phase), phase).sum(-1) * env

    got = forward_points(FourierField(field), poses, grid, ctf)
    ref = grid.at_points(project_atoms_fourier(x, poses.R, SIGMA, D, APIX, poses.shift_A) * grid.ctf(ctf))
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-10


def test_centre_undoes_the_shift():
    x = _atoms(seed=5)
    shifted, still = _poses(3, seed=6, shift=4.0), None
    still = Poses(shifted.R, torch.zeros_like(shifted.shift_A))
    grid = ImagingGrid(D, APIX, dtype=torch.float64)
    img = forward_images(GaussianAtoms(x, SIGMA, method="exact"), shifted, grid)
    ref = forward(GaussianAtoms(x, SIGMA, method="exact"), still, grid)
    got = centre(img, shifted, grid)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-6


def test_padded_canvas_keeps_the_box_and_differs_only_by_delocalisation():
    x, poses, ctf = _atoms(seed=7), _poses(3, seed=8), _ctf(3, seed=2)
    grid1, grid2 = ImagingGrid(D, APIX, dtype=torch.float64), ImagingGrid(D, APIX, pad=2, dtype=torch.float64)
    a = forward_images(GaussianAtoms(x, SIGMA, method="exact"), poses, grid1, ctf)
    b = forward_images(GaussianAtoms(x, SIGMA, method="exact"), poses, grid2, ctf)
    assert b.shape == a.shape == (3, D, D)
    rel = float((a - b).norm() / a.norm())
    assert 1e-6 < rel < 0.5  # close but not equal: the CTF's spread wraps around on the small box only


def test_grid_conventions():
    grid = ImagingGrid(8, 1.5)
    r = grid.radius_px
    assert grid.disc.sum() == int((r <= 4).sum()) and bool(grid.disc[4, 0]) and not bool(grid.disc[4, 1])
    assert int(grid.shell[0, 3]) == 3 and int(grid.shell[1, 1]) == 1
    assert torch.equal(grid.friedel[:, 0], torch.ones(8)) and torch.equal(grid.friedel[:, 4], torch.ones(8))
    assert bool((grid.friedel[:, 1:4] == 2).all())
    assert grid.plane.shape == (grid.points.numel(), 3)
    # Friedel-weighted half-plane power = whole-plane power inside the disc (Parseval on the disc)
    img = torch.randn(2, 8, 8, dtype=torch.float64)
    half = (rfft2_centered(img).abs() ** 2 * grid.friedel.double() * grid.disc).sum((-1, -2))
    full = torch.fft.fft2(torch.fft.ifftshift(img, dim=(-2, -1)))
    fy = torch.fft.fftfreq(8, d=1 / 8, dtype=torch.float64)
    disc = (fy[:, None] ** 2 + fy[None, :] ** 2).sqrt() <= 4
    assert torch.allclose(half, (full.abs() ** 2 * disc).sum((-1, -2)))


def test_likelihood_scores():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 50, dtype=torch.complex128, generator=g)
    p = torch.randn(3, 50, dtype=torch.complex128, generator=g)
    w = torch.rand(50, generator=g, dtype=torch.float64)
    ref = ((p - y).abs() ** 2 * w).sum(-1) / w.sum()
    assert torch.allclose(squared_error(p, y, w), ref)
    assert torch.allclose(squared_error(torch.view_as_real(p), torch.view_as_real(y), w), ref)
    assert torch.allclose(gaussian_nll(p, y, 0.5, w), ((p - y).abs() ** 2 * w).sum(-1))
    assert torch.allclose(correlation(2.5 * y, y, w), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(correlation(-y, y), -torch.ones(3, dtype=torch.float64))
    # shell correlation = the FSC of analysis.fsc on two maps
    from cryoscape.analysis.fsc import fsc
    a = torch.randn(16, 16, 16, dtype=torch.float64, generator=g)
    b = a + torch.randn(16, 16, 16, dtype=torch.float64, generator=g)
    f = torch.arange(16, dtype=torch.float64) - 8
    shell = torch.round(torch.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)).long()
    got = shell_correlation(fft3_centered(a), fft3_centered(b), shell, 8)
    assert np.allclose(got.numpy(), fsc(a.numpy(), b.numpy()), atol=1e-12)
    # noise spectrum of white noise of variance v per complex point is v in every shell
    noise = torch.randn(400, 8, 5, dtype=torch.complex128, generator=g) * math.sqrt(3.0)
    sh = torch.randint(0, 4, (8, 5), generator=g)
    spec = noise_spectrum(noise, sh, 4)
    assert torch.allclose(spec, torch.full((4,), 3.0, dtype=torch.float64), rtol=0.05)


def test_poses_conventions_and_conversions():
    from cryoscape.io.cryodrgn_pkl import poses_from_cryodrgn
    p = _poses(5, seed=9)
    assert torch.equal(p.relion_origin_A(), -p.shift_A)
    q = Poses.from_relion(p.R, p.relion_origin_A())
    assert torch.equal(q.shift_A, p.shift_A)
    rot, trans = p.to_cryodrgn(64, 1.5)
    back = Poses.from_cryodrgn(rot, trans, 64, 1.5)
    assert torch.allclose(back.shift_A, p.shift_A) and torch.equal(back.R, p.R)
    R_io, origin_io = poses_from_cryodrgn(rot, trans, 64, 1.5)  # the reader's meaning: RELION origins
    assert np.allclose(origin_io, -p.shift_A.numpy())
    sub = p.subset(np.array([3, 1]))
    assert len(sub) == 2 and torch.equal(sub.R[0], p.R[3])
    assert p.to(dtype=torch.float32).R.dtype == torch.float32
    with pytest.raises(Exception):
        p.R = p.R  # frozen
    with pytest.raises(ValueError):
        Poses(torch.eye(3)[None], torch.zeros(2, 2))


def test_ctf_params_frozen_and_movable():
    c = _ctf(4)
    with pytest.raises(AttributeError):
        c.defocus_u = c.defocus_v
    assert c.to(dtype=torch.float32).defocus_u.dtype == torch.float32
    sub = c.subset(np.array([2, 0]))
    assert float(sub.defocus_u[0]) == float(c.defocus_u[2])


def test_gaussian_nll_with_a_per_shell_noise_spectrum_on_the_grid_points():
    """Noise whose variance grows with the shell: the spectrum measured on the disc points recovers it, and
    the NLL with that spectrum is P/2 per image on average (E|n|² = σ² at every point)."""
    grid = ImagingGrid(16, 2.0, dtype=torch.float64)
    s = grid.point_shells
    assert int(s.max()) == grid.n_shells - 1 and s.numel() == grid.points.numel()
    truth = 1.0 + 0.5 * torch.arange(grid.n_shells, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(3000, s.numel(), dtype=torch.complex128, generator=g) * truth[s].sqrt()
    spec = noise_spectrum(noise, s, grid.n_shells)
    assert torch.allclose(spec, truth, rtol=0.06)
    nll = gaussian_nll(noise, torch.zeros_like(noise), spec[s])
    assert abs(float(nll.mean()) / (s.numel() / 2) - 1) < 0.02
