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
from cryoscape.physics import (ctf_2d, irfft2_centered, project_atoms_real, project_atoms_splat, rfft2_centered,
                               rfreq_grid_2d, splat_atoms)
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


def _reference_images(plan, coords, weights, sigma, index, ctf_pad):
    """Straight from the formulas in float64: exact projections (no window), on a canvas ``ctf_pad``
    times the box, times the CTF of ``ctf_2d``, cut back to the box."""
    D, apix = plan.box, plan.apix
    Dc, lo = ctf_pad * D, (ctf_pad * D) // 2 - D // 2
    conf, R = plan.conformation[index], plan.rotations[index]
    proj = project_atoms_real(torch.as_tensor(coords)[conf], R, sigma, D, apix,
                              torch.as_tensor(plan.offsets_A[index]), torch.as_tensor(weights), truncate=math.inf)
    canvas = torch.zeros(len(conf), Dc, Dc, dtype=torch.float64)
    canvas[:, lo:lo + D, lo:lo + D] = proj
    ky, kx = rfreq_grid_2d(Dc, apix, dtype=torch.float64)
    c = plan.ctf.subset(index)
    ctf = ctf_2d(kx, ky, c.defocus_u, c.defocus_v, c.angle_ast, c.voltage_kv, c.cs_mm, c.amp_contrast,
                 c.phase_shift, c.bfactor)
    return irfft2_centered(rfft2_centered(canvas) * ctf, Dc)[:, lo:lo + D, lo:lo + D]


@pytest.mark.parametrize("D, ctf_pad", [(64, 1), (64, 2), (63, 1), (63, 2)])
def test_rendered_images_match_the_formulas(D, ctf_pad):
    """render_images (both projections) against images built independently from the formulas: several
    frames, atom weights, B-factor, astigmatism, phase shift, offsets, a slice that does not start at 0
    and batches that do not divide it; even and odd boxes, with and without the larger CTF canvas."""
    rng = np.random.default_rng(4)
    coords, weights, sigma = rng.normal(0, 7, (3, 120, 3)), rng.uniform(0.5, 2, 120), 3.0
    cfg = SimulationConfig(n_images=30, box=D, apix=1.5, shift_max_A=4, astigmatism_um=0.1, bfactor=60,
                           phase_shift_deg=20, seed=8, ctf_pad=ctf_pad)
    index = slice(7, 26)
    for projection, bound in (("exact", 1e-5), ("splat", 2e-4)):  # σ = 2 px here
        source = AtomSource(coords, sigma, weights, projection=projection)
        plan = plan_simulation(cfg, source)
        got = render_images(plan, source, index, batch=5, ctf_pad=ctf_pad).double()
        ref = _reference_images(plan, source.coords.numpy(), weights, sigma, index, ctf_pad)
        assert float((got - ref).norm() / ref.norm()) < bound, projection
    empty, projs = render_images(plan, source, slice(5, 5), stages=True)
    assert empty.shape == projs.shape == (0, D, D)


def _box_muller_reference(key: int, first: int, n: int, p: int) -> np.ndarray:
    """The generator written out independently in float64: SplitMix64 of the pair counter in numpy's
    wrapping uint64 arithmetic, then Box–Muller with numpy's log, cos and sin."""
    u64 = np.uint64
    gamma, half = u64(0x9E3779B97F4A7C15), (p + 1) // 2
    with np.errstate(over="ignore"):
        i = np.arange(first, first + n, dtype=u64)[:, None]
        j = np.arange(half, dtype=u64)[None, :]
        z = u64(key) + i * u64(half) * gamma + (j + u64(1)) * gamma
        z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
        x = z ^ (z >> u64(31))
    a = ((x >> u64(32)) | u64(1)).astype(np.float64) / 2.0 ** 32
    lo = x & u64(0xFFFFFFFF)
    theta = (((lo & u64(0xFFFFFF)).astype(np.float64) / 2.0 ** 24 - 0.5) * math.pi / 2
             + (lo >> u64(30)).astype(np.float64) * math.pi / 2)
    r = np.sqrt(-2 * np.log(a))
    out = np.empty((n, 2 * half))
    out[:, 0::2], out[:, 1::2] = r * np.cos(theta), r * np.sin(theta)
    return out[:, :p]


@pytest.mark.parametrize("n, p", [(250, 4096), (40, 25)])
def test_noise_equals_exact_box_muller(n, p):
    """Every value (a million for 64² images) within 2e-6·(1 + |v|) of the exact formula on the same bits,
    near a = 1 (values near 0) as well as in the tails."""
    key = noise_key(11, 1)
    got = normal_noise((n, p), key, first_image=40).astype(np.float64)
    ref = _box_muller_reference(key, 40, n, p)
    assert np.all(np.abs(got - ref) <= 2e-6 * (1 + np.abs(ref)))
    if n * p >= 10 ** 6:  # both ends were exercised
        assert np.abs(ref).min() < 1e-4 and np.abs(ref).max() > 4.5


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
