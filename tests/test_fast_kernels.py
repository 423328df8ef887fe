"""The simulator's fast paths against independent truths: B-spline splatting against the analytic
projection of Gaussian atoms, the compiled CPU splat against the torch one, and the counter-based
normal generator against the exact Box–Muller formula and the normal distribution."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from cryoscape.data.simulate import (AtomSource, SimulationConfig, add_dataset_noise, plan_simulation,
                                    render_images)
from cryoscape.geometry import random_rotations
from cryoscape.physics import irfft2_centered, project_atoms_real, project_atoms_splat, splat_atoms
from cryoscape.physics.gaussian import cubic_bspline_weights
from cryoscape.utils.cpu_kernels import add_normal_noise, noise_key, normal_noise, splat_cubic_bspline


def _atoms_and_poses(n_atoms=300, n_images=48, extent=20.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(n_atoms, 3, generator=g, dtype=torch.float64) - 0.5) * extent
    R = random_rotations(n_images, g, dtype=torch.float64)
    shifts = (torch.rand(n_images, 2, generator=g, dtype=torch.float64) - 0.5) * 6
    return coords, R, shifts


@pytest.mark.parametrize("sigma_px, D, bound", [(1.5, 64, 1e-3), (3.0, 64, 1e-4), (1.5, 65, 1e-3),
                                                (1.0, 64, 1.5e-2)])
def test_splat_projection_matches_the_analytic_projection(sigma_px, D, bound):
    """The splatted projection equals the Gaussian atoms' analytic projection sampled at pixel centres
    (no window), up to the B-spline's aliases, which shrink fast as σ grows in pixels."""
    apix = 1.0
    coords, R, shifts = _atoms_and_poses()
    ref = project_atoms_real(coords, R, sigma_px * apix, D, apix, shifts, truncate=math.inf)
    got = irfft2_centered(project_atoms_splat(coords, R, sigma_px * apix, D, apix, shifts), D)
    err = float((got - ref).norm() / ref.norm())
    assert err < bound, err
    if sigma_px >= 1.5:  # and the error is not trivially small: the approximation is really exercised
        assert err > 1e-7


def test_bspline_weights_partition_unity_and_splat_conserves_mass():
    t = torch.rand(1000, dtype=torch.float64)
    w = cubic_bspline_weights(t)
    assert torch.allclose(w.sum(-1), torch.ones_like(t))
    # first moment: Σ_j w_j (j − t) = 0 for nodes j = −1..2 (the spline is centred on the point)
    nodes = torch.arange(-1, 3, dtype=torch.float64)
    assert torch.allclose((w * (nodes - t[:, None])).sum(-1), torch.zeros_like(t), atol=1e-12)
    x = torch.rand(5, 40, dtype=torch.float64) * 100 - 50  # wraps around a 16-pixel grid many times
    y = torch.rand(5, 40, dtype=torch.float64) * 100 - 50
    weights = torch.rand(40, dtype=torch.float64)
    grid = splat_atoms(x, y, 16, weights)
    assert torch.allclose(grid.sum((-1, -2)), weights.sum().expand(5))


def test_cpu_splat_kernel_equals_the_torch_splat():
    """The compiled kernel projects and splats exactly as physics.splat_atoms does, wrap-around included."""
    coords = np.random.default_rng(0).normal(0, 12, (3, 200, 3)).astype(np.float32)
    coords[:, :5] *= 4  # some atoms outside the 48-pixel box: they wrap around
    conf = np.array([0, 2, 1, 2, 0, 1], dtype=np.int64)
    R = random_rotations(6, torch.Generator().manual_seed(1)).float()
    shifts = torch.rand(6, 2, generator=torch.Generator().manual_seed(2)) * 8 - 4
    weights = np.random.default_rng(3).uniform(0.5, 2, 200).astype(np.float32)
    apix, D = 1.3, 48
    p = torch.matmul(torch.as_tensor(coords)[conf], R.transpose(-1, -2))[..., :2] + shifts[:, None, :]
    for origin in (0, D // 2):
        got = splat_cubic_bspline(coords, conf, R.numpy(), shifts.numpy(), apix, weights, D, origin=origin)
        ref = splat_atoms(p[..., 0] / apix + origin, p[..., 1] / apix + origin, D, torch.as_tensor(weights))
        np.testing.assert_allclose(got, ref.numpy(), atol=2e-5 * float(ref.abs().max()))


def test_atom_source_paths_agree_with_ctf_and_shifts():
    """In the simulator, splat and exact rendering give the same images within the splat's bound."""
    c = np.random.default_rng(1).normal(0, 8, (2, 150, 3))
    cfg = SimulationConfig(n_images=40, box=64, apix=1.5, shift_max_A=4, astigmatism_um=0.1, seed=5)
    exact, splat = AtomSource(c, 3.0, projection="exact"), AtomSource(c, 3.0, projection="splat")
    plan = plan_simulation(cfg, exact)
    a = render_images(plan, exact, slice(0, 40)).double()
    b = render_images(plan, splat, slice(0, 40), batch=16).double()  # several batches, even box
    assert float((a - b).norm() / a.norm()) < 1e-3
    odd = SimulationConfig(n_images=10, box=63, apix=1.5, shift_max_A=4, seed=6)
    plan = plan_simulation(odd, exact)
    a, b = render_images(plan, exact, slice(0, 10)).double(), render_images(plan, splat, slice(0, 10)).double()
    assert float((a - b).norm() / a.norm()) < 1e-3
    assert AtomSource(c, 3.0).uses_splat(1.5) and not AtomSource(c, 1.0).uses_splat(1.5)
    with pytest.raises(ValueError, match="projection"):
        AtomSource(c, 3.0, projection="fast")


def _box_muller_reference(key: int, first: int, n: int, p: int) -> np.ndarray:
    """The generator written out in float64 with Python integers: SplitMix64 of the pair counter, then
    Box–Muller with the exact log, cos and sin."""
    gamma, mask = 0x9E3779B97F4A7C15, (1 << 64) - 1
    half = (p + 1) // 2
    out = np.empty((n, p))
    for i in range(n):
        base = (key + (first + i) * half * gamma) & mask
        for j in range(half):
            z = (base + (j + 1) * gamma) & mask
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            x = z ^ (z >> 31)
            a = ((x >> 32) | 1) / 2.0 ** 32
            lo = x & 0xFFFFFFFF
            theta = ((lo & 0xFFFFFF) / 2.0 ** 24 - 0.5) * math.pi / 2 + (lo >> 30) * math.pi / 2
            r = math.sqrt(-2 * math.log(a))
            out[i, 2 * j] = r * math.cos(theta)
            if 2 * j + 1 < p:
                out[i, 2 * j + 1] = r * math.sin(theta)
    return out


@pytest.mark.parametrize("p", [64, 25])
def test_noise_equals_exact_box_muller(p):
    key = noise_key(11, 1)
    got = normal_noise((6, p), key, first_image=40)
    ref = _box_muller_reference(key, 40, 6, p)
    np.testing.assert_allclose(got, ref, rtol=0, atol=3e-6)


def test_noise_is_standard_normal_and_independent_of_chunking():
    key = noise_key(3)
    v = normal_noise((250, 64, 64), key).astype(np.float64)
    flat = v.ravel()  # 1,024,000 values
    assert abs(flat.mean()) < 5 * 1 / math.sqrt(flat.size)
    assert abs(flat.var() - 1) < 5 * math.sqrt(2 / flat.size)
    assert stats.kstest(flat[::3], "norm").pvalue > 1e-3
    for t in (2.0, 3.0, 4.0):  # tails: counts within 5 standard deviations of the binomial expectation
        expected = 2 * stats.norm.sf(t) * flat.size
        assert abs((np.abs(flat) > t).sum() - expected) < 5 * math.sqrt(expected) + 3
    # neighbouring pixels and the two values of a pair are uncorrelated
    assert abs(np.corrcoef(flat[0::2], flat[1::2])[0, 1]) < 0.01
    assert abs(np.corrcoef(v[:, :, :-1].ravel(), v[:, :, 1:].ravel())[0, 1]) < 0.01
    # images 0..249 drawn in two calls equal one call; another seed gives other values
    parts = np.concatenate([normal_noise((100, 64, 64), key, 0), normal_noise((150, 64, 64), key, 100)])
    assert np.array_equal(parts, v.astype(np.float32))
    assert not np.array_equal(normal_noise((1, 64, 64), noise_key(4)), v[:1].astype(np.float32))


def test_dataset_noise_adds_sigma_times_the_generator():
    clean = torch.randn(5, 32, 32)
    noisy = add_dataset_noise(clean, 2.5, seed=9, first_image=7)
    expected = clean.numpy() + np.float32(2.5) * normal_noise((5, 32, 32), noise_key(9, 1), 7)
    np.testing.assert_allclose(noisy.numpy(), expected, atol=1e-5)
    assert not torch.equal(noisy, clean)  # the input is left alone
    with pytest.raises(ValueError, match="float32"):
        add_normal_noise(np.zeros((2, 4)), 1.0, 0, 0)
