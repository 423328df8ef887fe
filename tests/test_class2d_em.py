"""The polar Fourier grid, the in-plane likelihood and 2D classification by EM, against independent truths:
direct DFT sums, the 3-D forward model at poses ``Rz(ψ)·A``, brute-force sums, and the templates that made the
images."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from cryoscape.geometry.poses import Poses
from cryoscape.geometry.rotations import euler_to_matrix
from cryoscape.io.errors import InputError
from cryoscape.methods.class2d.em import Class2DConfig, fit, shift_grid
from cryoscape.physics.ctf import CTFParams
from cryoscape.physics.imaging import GaussianAtoms, ImagingGrid, forward_images
from cryoscape.physics.likelihood import gaussian_nll, inplane_loglik
from cryoscape.physics.polar import PolarGrid

D, APIX = 32, 2.0


@pytest.fixture(scope="module")
def atoms(adk):
    c = torch.as_tensor(adk.coords[0], dtype=torch.float64)
    return GaussianAtoms(c - c.mean(0), 3.0, method="exact")


def _views() -> torch.Tensor:
    """Three poses looking along z, x and y: clearly different projections (rot, tilt, psi in radians)."""
    e = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.pi / 2, 0.0], [math.pi / 2, math.pi / 2, 0.0]], dtype=torch.float64)
    return euler_to_matrix(e)


def _rz(psi: torch.Tensor) -> torch.Tensor:
    return euler_to_matrix(torch.stack([torch.zeros_like(psi), torch.zeros_like(psi), psi], -1))


def _blob_image(centres, sigma=2.0):
    i = torch.arange(D, dtype=torch.float64) - D // 2
    return sum(torch.exp(-((i[None, :] - x) ** 2 + (i[:, None] - y) ** 2) / (2 * sigma ** 2)) for x, y in centres)


def test_polar_samples_are_the_dft_and_rotation_is_a_roll(atoms):
    """X(r, θ) equals the direct DFT sum; the projection at Rz(ψ_t)·A equals the roll by t of the projection at A,
    and a shift by s multiplies by the ramp (both from the 3-D forward model, not from the polar code)."""
    pg = PolarGrid(D, 15, apix=APIX, dtype=torch.float64)
    img = _blob_image([(3, -2), (-4, 5)])[None]
    i = torch.arange(D, dtype=torch.float64) - D // 2
    kx, ky = pg.kx[5, 7], pg.ky[5, 7]
    direct = (img[0] * torch.exp(-2j * math.pi * (kx * i[None, :] + ky * i[:, None]) / D)).sum()
    assert abs(direct - pg.transform(img)[0, 5, 7]) < 1e-10

    grid = ImagingGrid(D, APIX, dtype=torch.float64)
    A = _views()[1:2]
    zero = torch.zeros(1, 2, dtype=torch.float64)
    ref = pg.transform(forward_images(atoms, Poses(A, zero), grid))
    t = 13
    psi = torch.tensor([2 * math.pi * t / pg.L], dtype=torch.float64)
    rotated = pg.transform(forward_images(atoms, Poses(_rz(psi) @ A, zero), grid))
    assert (rotated - pg.roll(ref, torch.tensor([t]))).abs().max() < 1e-3 * ref.abs().max()
    assert (rotated - pg.roll(ref, torch.tensor([-t]))).abs().max() > 0.1 * ref.abs().max()  # the sign matters
    s = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    shifted = pg.transform(forward_images(atoms, Poses(A, s * APIX), grid))
    assert (shifted - pg.phase_ramp(s) * ref).abs().max() < 1e-3 * ref.abs().max()


def test_spectra_correlate_and_convolve_against_brute_force():
    pg = PolarGrid(D, 12, dtype=torch.float64)
    x = pg.transform(_blob_image([(3, -2), (-4, 5)])[None])
    c = pg.transform(_blob_image([(0, 4), (2, 2)])[None])
    assert (pg.from_spectrum(pg.spectrum(x)) - x).abs().max() < 1e-12
    g = pg.correlate(pg.spectrum_major(x), pg.spectrum_major(c), pg.ring_area)  # (1, 1, L)
    for t in (0, 5, pg.L - 3):
        brute = (pg.ring_area[:, None] * x[0] * c[0].roll(-t, dims=-1).conj()).real.sum()
        assert abs(g[0, 0, t] - brute) < 1e-9 * abs(brute)
    w = torch.rand(1, 1, pg.L, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = pg.from_spectrum(pg.convolve(w, pg.spectrum_major(x)).permute(1, 2, 0))
    brute = sum(w[0, 0, t] * x[0].roll(t, dims=-1) for t in range(pg.L))
    assert (h[0] - brute).abs().max() < 1e-9 * brute.abs().max()


def test_to_images_is_a_low_pass_inverse():
    """The ring-area quadrature brings a band-limited image back within 2 % of its peak inside the disc of
    radius D/2 where classes live (measured 1.3 %; up to 8 % in the box corners)."""
    pg = PolarGrid(D, D // 2, dtype=torch.float64)
    img = _blob_image([(3, -2), (-4, 5)])[None]
    back = pg.to_images(pg.transform(img))
    i = torch.arange(D, dtype=torch.float64) - D // 2
    disc = (i[:, None] ** 2 + i[None, :] ** 2) < (D / 2) ** 2
    assert ((back - img)[0][disc]).abs().max() < 0.02 * img.abs().max()


def test_inplane_loglik_equals_the_explicit_gaussian_likelihood(atoms):
    """ℓ(k, t, s) differences equal differences of −Σ a_r |x − h·ramp_s·roll_t(c_k)|²/(2σ²) from the explicit model."""
    pg = PolarGrid(D, 12, apix=APIX, dtype=torch.float64)
    grid = ImagingGrid(D, APIX, dtype=torch.float64)
    zero = torch.zeros(2, 2, dtype=torch.float64)
    classes = forward_images(atoms, Poses(_views()[:2], zero), grid)
    df = torch.tensor([1.2e4, 2.1e4], dtype=torch.float64)
    ctf = CTFParams(df, df * 0.95, torch.tensor([0.3, 1.1]), 300.0, 2.7, 0.1)
    gen = torch.Generator().manual_seed(2)
    images = classes + 0.3 * classes.std() * torch.randn(2, D, D, generator=gen, dtype=torch.float64)
    noise = 0.5 + torch.rand(pg.r_max + 1, generator=gen, dtype=torch.float64)
    steps = shift_grid(1.0, 1.0)
    X, h = pg.transform(images), pg.ctf(ctf)
    ramps = pg.phase_ramp(steps)  # (S, R, L)
    Y = pg.spectrum_major(((X * h / noise[:, None])[:, None] * ramps.conj()[None]).reshape(-1, *X.shape[1:]))
    A = pg.spectrum_major((h * h / noise[:, None]).to(X.dtype))
    c = pg.transform(classes)
    ll = inplane_loglik(Y, A, pg.spectrum_major(c), pg.spectrum_major((c.abs() ** 2).to(c.dtype)), pg)
    assert ll.shape == (2, steps.shape[0], 2, pg.L)
    weight = pg.ring_area[:, None].expand(-1, pg.L)

    def explicit(n, s, k, t):
        model = h[n] * ramps[s] * pg.roll(c[k:k + 1], torch.tensor([t]))[0]
        return -gaussian_nll(model[None], X[n:n + 1], noise[:, None], weight)[0]

    for (n, s, k, t), (n2, s2, k2, t2) in [((0, 0, 0, 0), (0, 3, 1, 17)), ((1, 2, 1, 40), (1, 0, 0, 5))]:
        want = explicit(n, s, k, t) - explicit(n2, s2, k2, t2)
        got = ll[n, s, k, t] - ll[n2, s2, k2, t2]
        assert abs(got - want) < 1e-8 * max(1.0, abs(want))


def _templates_and_copies(atoms, n_per_class: int, snr: float, seed: int = 1):
    grid = ImagingGrid(D, APIX)
    K = 3
    N = K * n_per_class
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(N) % K
    psi = torch.rand(N, generator=gen, dtype=torch.float64) * 2 * math.pi
    shift = (torch.rand(N, 2, generator=gen, dtype=torch.float64) - 0.5) * 3 * APIX
    df = 1e4 * (1 + 1.5 * torch.rand(N, generator=gen, dtype=torch.float64))
    ctf = CTFParams(df, df, torch.zeros(N), 300.0, 2.7, 0.1)
    A = _views()
    clean = forward_images(atoms, Poses(_rz(psi) @ A[labels], shift), ImagingGrid(D, APIX, dtype=torch.float64), ctf)
    noisy = clean + clean.std() / math.sqrt(snr) * torch.randn(N, D, D, generator=gen, dtype=torch.float64)
    templates = forward_images(atoms, Poses(A, torch.zeros(K, 2, dtype=torch.float64)),
                               ImagingGrid(D, APIX, dtype=torch.float64))
    del grid
    return noisy.float(), ctf, labels, psi, templates


def _best_rotation_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over in-plane rotations of the normalised correlation of two images' polar samples (low-passed)."""
    pg = PolarGrid(D, 8, dtype=torch.float64)
    A, B = pg.transform(a[None].double()), pg.transform(b[None].double())
    g = pg.correlate(pg.spectrum_major(A), pg.spectrum_major(B), pg.ring_area)[0, 0]
    na = pg.correlate(pg.spectrum_major(A), pg.spectrum_major(A), pg.ring_area)[0, 0, 0]
    nb = pg.correlate(pg.spectrum_major(B), pg.spectrum_major(B), pg.ring_area)[0, 0, 0]
    return float(g.max() / torch.sqrt(na * nb))


def test_em_recovers_known_templates_from_rotated_shifted_noisy_copies(atoms):
    """3 templates (views along z, x, y), 60 copies each at random in-plane angles, shifts ±1.5 px, CTF, SNR 1:
    the classes are the templates (ARI ≥ 0.95, each average correlates ≥ 0.9 with its template at low
    resolution) and the in-plane angles are right up to one rotation per class (median error < 6°)."""
    images, ctf, labels, psi, templates = _templates_and_copies(atoms, 60, snr=1.0)
    res = fit(images, ctf, APIX, Class2DConfig(n_classes=3, n_iterations=12, shift_range_px=2.0, seed=0),
              progress=False)
    assert adjusted_rand_score(labels.numpy(), res.labels.numpy()) >= 0.95
    for k in range(3):
        members = res.labels == k
        true_k = int(torch.mode(labels[members]).values)
        assert _best_rotation_correlation(res.averages[k], templates[true_k].float()) >= 0.9
        d = (res.psi[members] - psi[members]) % (2 * math.pi)  # a constant per class
        centre = torch.atan2(torch.sin(d).mean(), torch.cos(d).mean())
        err = torch.remainder(d - centre + math.pi, 2 * math.pi) - math.pi
        assert float(err.abs().median()) < math.radians(6)


def test_stochastic_mode_uses_subsets_then_assigns_every_image(atoms):
    """Mini-batches of 60 of the 180 images for the first iterations, then full passes: every image gets an
    assignment and the templates are still found (ARI ≥ 0.9)."""
    images, ctf, labels, _, _ = _templates_and_copies(atoms, 60, snr=1.0)
    res = fit(images, ctf, APIX, Class2DConfig(n_classes=3, n_iterations=10, mini_batch=60, full_passes=3,
                                               shift_range_px=2.0, seed=0), progress=False)
    assert res.labels.shape == (180,) and int(res.counts.sum()) == 180
    assert adjusted_rand_score(labels.numpy(), res.labels.numpy()) >= 0.9


def test_resume_gives_the_uninterrupted_result(atoms, tmp_path, monkeypatch):
    """Interrupted after iteration 2 of 3 (an exception in the third), the same call resumes from the
    checkpoint and ends with the uninterrupted run's classes and assignments, bit for bit."""
    from cryoscape.methods.class2d import em

    images, ctf, *_ = _templates_and_copies(atoms, 20, snr=1.0)
    cfg = Class2DConfig(n_classes=3, n_iterations=3, shift_range_px=1.0, seed=0)
    full = fit(images, ctf, APIX, cfg, progress=False)
    real, calls = em._iterate, []

    def dies_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    ck = tmp_path / "ck.pt"
    monkeypatch.setattr(em, "_iterate", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        fit(images, ctf, APIX, cfg, checkpoint=ck, progress=False)
    monkeypatch.setattr(em, "_iterate", real)
    assert torch.load(ck, weights_only=False)["epoch"] == 2
    resumed = fit(images, ctf, APIX, cfg, checkpoint=ck, progress=False)
    assert torch.equal(resumed.averages, full.averages)
    assert torch.equal(resumed.labels, full.labels) and torch.equal(resumed.psi, full.psi)
    # killed after the last checkpoint but before the caller wrote its files: the same call returns the same
    again = fit(images, ctf, APIX, cfg, checkpoint=ck, progress=False)
    assert torch.equal(again.labels, full.labels) and torch.equal(again.psi, full.psi)
    assert torch.equal(again.shift_A, full.shift_A) and torch.equal(again.max_prob, full.max_prob)


def test_shifts_stay_within_the_range(atoms):
    """The local search never leaves the disc of shift_range_px (with range 0 every shift is 0)."""
    images, ctf, *_ = _templates_and_copies(atoms, 10, snr=1.0)
    for rng in (0.0, 1.0):
        res = fit(images, ctf, APIX, Class2DConfig(n_classes=2, n_iterations=4, shift_range_px=rng,
                                                   global_shift_iterations=1, seed=0), progress=False)
        assert float((res.shift_A / APIX).norm(dim=-1).max()) <= rng + 1e-9


def test_bad_input_is_one_input_error(atoms):
    images = torch.zeros(5, D, D)
    with pytest.raises(InputError, match="classes"):
        fit(images, None, APIX, Class2DConfig(n_classes=6), progress=False)
    with pytest.raises(InputError, match="square"):
        fit(torch.zeros(5, D, D + 2), None, APIX, Class2DConfig(n_classes=2), progress=False)
    bad = torch.randn(5, D, D)
    bad[2, 3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        fit(bad, None, APIX, Class2DConfig(n_classes=2), progress=False)
    assert np.isfinite(shift_grid(3.0, 1.0).numpy()).all() and shift_grid(3.0, 1.0).shape[0] == 29
