"""The micrograph simulator (data/micrographs.py) and the whole-field CTF (physics/imaging.apply_ctf), against
independent truths: the requested SNR, the noise statistics of the frame halves, the particles' mass centroids
at the listed centres, the forward model's own images, and the CTF as a multiplier of Fourier modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoscape.data.micrographs import MicrographConfig, particle_box, simulate_micrographs
from cryoscape.data.simulate import AtomSource
from cryoscape.geometry.poses import Poses
from cryoscape.geometry.rotations import random_rotations
from cryoscape.io.errors import InputError
from cryoscape.io.mrc import read_micrograph, write_micrograph
from cryoscape.physics.ctf import CTFParams, ctf_2d
from cryoscape.physics.imaging import GaussianAtoms, ImagingGrid, apply_ctf, forward_images

APIX = 1.5


@pytest.fixture(scope="module")
def source(adk):
    """Three AdK frames (Cα, σ = 3 Å), splatted (σ = 2 px)."""
    return AtomSource(adk.coords[::40], 3.0)


@pytest.fixture(scope="module")
def mset(source):
    """Two 256² micrographs at SNR 0.1, four frames each, particles 1.25 diameters apart."""
    cfg = MicrographConfig(size=256, apix=APIX, n_particles=6, min_distance_A=2.5 * source.radius(), snr=0.1,
                           n_frames=4, keep_frames=True, astigmatism_um=0.05, seed=3)
    return simulate_micrographs(source, cfg, 2)


def test_noise_has_the_requested_snr_and_the_halves_split_it(mset):
    assert mset.noisy.shape == (2, 256, 256) and mset.halves.shape == (2, 2, 256, 256)
    assert mset.frames.shape == (2, 4, 256, 256)
    for m in range(2):
        clean, noisy, (h0, h1) = mset.clean[m].double(), mset.noisy[m].double(), mset.halves[m].double()
        noise = noisy - clean
        # σ² = var(clean)/SNR is exact by construction; the drawn noise's variance is within ~2 % (65k pixels)
        assert float(clean.var() / noise.var()) == pytest.approx(0.1, rel=0.03)
        assert float(noise.std()) == pytest.approx(mset.noise_sigma[m], rel=0.02)
        torch.testing.assert_close(0.5 * (h0 + h1), noisy, atol=1e-5, rtol=0)
        # each half has 2σ², their difference 4σ², and the halves' noises are independent
        s2 = mset.noise_sigma[m] ** 2
        assert float((h0 - h1).var()) == pytest.approx(4 * s2, rel=0.03)
        assert float((h0 - clean).var()) == pytest.approx(2 * s2, rel=0.03)
        r = np.corrcoef((h0 - clean).reshape(-1), (h1 - clean).reshape(-1))[0, 1]
        assert abs(r) < 0.02
        # the halves are the even and odd frame means; the frames hold T σ² each
        f = mset.frames[m].double()
        torch.testing.assert_close(f[0::2].mean(0), h0, atol=1e-5, rtol=0)
        assert float((f[1] - clean).var()) == pytest.approx(4 * s2, rel=0.03)


def test_particles_sit_at_their_coords_and_keep_the_min_distance(mset, source):
    radius_px = source.radius() / APIX
    assert len(mset.coords) == 12 and mset.coords.shape == (12, 2)
    r = int(math.ceil(radius_px + 2 * source.sigma / APIX))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    for m in range(2):
        part = mset.particles(m)
        c = part["coords"]
        d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))[np.triu_indices(len(c), 1)]
        assert d.min() >= 2.5 * radius_px - 1e-9
        assert (c >= radius_px).all() and (c <= 255 - radius_px).all()  # the default edge margin
        img = np.pad(mset.clean_noctf[m].double().numpy(), r)  # windows may reach past the edges
        for x, y in c:
            # the mass centroid of the CTF-free particle is its atoms' centroid, the listed centre
            ix, iy = int(round(x)), int(round(y))
            win = img[iy:iy + 2 * r + 1, ix:ix + 2 * r + 1]
            assert win.sum() == pytest.approx(img.sum() / len(c), rel=1e-3)  # each window holds one particle
            cx, cy = (win * (xx + ix)).sum() / win.sum(), (win * (yy + iy)).sum() / win.sum()
            assert abs(cx - x) < 1e-3 and abs(cy - y) < 1e-3  # measured: 5e-7 px
    assert set(np.unique(mset.conformation)) <= {0, 1, 2}
    assert np.allclose(mset.rotations @ mset.rotations.transpose(0, 2, 1), np.eye(3), atol=1e-9)


def test_one_particle_micrograph_is_the_forward_model_image(source):
    """A micrograph of one particle equals forward_images of the same pose, shift and CTF on the whole field."""
    cfg = MicrographConfig(size=128, apix=APIX, n_particles=1, snr=1.0, astigmatism_um=0.1, bfactor=20.0, seed=5)
    ms = simulate_micrographs(source, cfg, 1)
    x, y = ms.coords[0]
    t = torch.tensor([[(x - 64) * APIX, (y - 64) * APIX]], dtype=torch.float32)
    poses = Poses(torch.as_tensor(ms.rotations, dtype=torch.float32), t)
    projector = source.projector()
    conf = torch.as_tensor(ms.conformation)
    expected = forward_images(projector, poses, ImagingGrid(128, APIX, pad=cfg.ctf_pad), ms.ctf, conf)[0]
    scale = float(expected.abs().max())
    assert float((ms.clean[0] - expected).abs().max()) < 1e-4 * scale  # measured: 3.5e-7
    expected_noctf = forward_images(projector, poses, ImagingGrid(128, APIX), None, conf)[0]
    assert float((ms.clean_noctf[0] - expected_noctf).abs().max()) < 1e-4 * float(expected_noctf.max())


@pytest.mark.parametrize("D,pad", [(48, 1), (48, 2), (47, 1), (47, 2)])
def test_apply_ctf_equals_the_ctf_inside_forward_images(D, pad):
    g = torch.Generator().manual_seed(D + pad)
    projector = GaussianAtoms(torch.randn(40, 3, generator=g) * 5, 2.5)
    poses = Poses(random_rotations(3, g), torch.zeros(3, 2))
    ctf = CTFParams([12000, 20000, 8000], [11000, 20000, 8500], [0.4, 0.0, 2.0], 300, 2.7, 0.1, 0.0, [0, 60, 0])
    grid = ImagingGrid(D, APIX, pad)
    expected = forward_images(projector, poses, grid, ctf)
    got = apply_ctf(forward_images(projector, poses, grid, None), ctf, APIX, pad)
    assert float((got - expected).abs().max()) < 1e-5 * float(expected.abs().max())


def test_apply_ctf_multiplies_each_fourier_mode_by_the_ctf_on_a_non_square_field():
    """A cosine of a frequency of the (H, W) grid comes back times CTF(k) (the CTF is even in k)."""
    H, W = 40, 72
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    ctf = CTFParams([15000], [13000], [0.7], 300, 2.7, 0.07, 0.3, 10.0)
    for fy, fx in [(3, 5), (-7, 11), (0, 20), (13, 0)]:
        ky, kx = fy / (H * APIX), fx / (W * APIX)
        wave = torch.cos(2 * math.pi * (fx * x / W + fy * y / H))
        c = float(ctf_2d(torch.tensor([[kx]], dtype=torch.float64), torch.tensor([[ky]], dtype=torch.float64),
                         ctf.defocus_u, ctf.defocus_v, ctf.angle_ast, 300, 2.7, 0.07, 0.3, 10.0)[0, 0, 0])
        got = apply_ctf(wave[None], ctf, APIX)[0]
        torch.testing.assert_close(got, c * wave, atol=1e-10, rtol=0)


def test_non_square_fields_same_seed_same_bits_and_mrc_round_trip(source, tmp_path):
    cfg = MicrographConfig(size=(160, 224), apix=APIX, n_particles=3, snr=0.5, seed=11)
    a = simulate_micrographs(source, cfg, 2)
    b = simulate_micrographs(source, cfg, 1)  # micrograph 0 does not depend on the set's size
    assert a.noisy.shape == (2, 160, 224)
    assert torch.equal(a.noisy[0], b.noisy[0]) and np.array_equal(a.coords[:3], b.coords)
    assert (a.coords[:, 0] <= 223).all() and (a.coords[:, 1] <= 159).all()
    assert float(a.clean[1].var() / (a.noisy[1] - a.clean[1]).var()) == pytest.approx(0.5, rel=0.05)
    write_micrograph(tmp_path / "m.mrc", a.noisy[1].numpy(), a.apix)
    data, apix = read_micrograph(tmp_path / "m.mrc")
    assert apix == pytest.approx(APIX) and np.array_equal(data, a.noisy[1].numpy())


def test_bad_configs_are_input_errors(source):
    B = particle_box(source, APIX)
    bad = [
        (dict(size=B - 2), "--size"),
        (dict(size=256, snr=float("nan")), "--snr"),
        (dict(size=256, snr=float("inf")), "--snr"),
        (dict(size=256, snr=0.0), "--snr"),
        (dict(size=256, n_particles=200), "--n-particles"),
        (dict(size=256, n_frames=3), "--n-frames"),
        (dict(size=(256, 256, 3)), "--size"),
    ]
    for kw, where in bad:
        with pytest.raises(InputError) as err:
            simulate_micrographs(source, MicrographConfig(apix=APIX, **kw), 1)
        assert err.value.where == where, (kw, str(err.value))
    # 39 particles 30 px apart cover 53 % of the centres' region: under the random-packing bound (54.7 %), so
    # the up-front check lets them through, but random sequential addition jams before placing them all
    with pytest.raises(InputError, match="placed 38 of 39"):
        simulate_micrographs(source, MicrographConfig(size=256, apix=APIX, n_particles=39, min_distance_A=30 * APIX), 1)
    with pytest.raises(InputError):
        simulate_micrographs(source, MicrographConfig(size=256, apix=APIX), 0)


# ------------------------------------------------------------------------------------------------ junk, dose, MTF

from cryoscape.data.micrographs import (MicrographSimulator, apply_transfer, detector_dqe, detector_mtf,  # noqa: E402
                                        detector_ntf, read_micrographs_ctf)
from cryoscape.io.star import read_micrographs_star, write_micrographs_star  # noqa: E402


@pytest.fixture(scope="module")
def second(adk):
    """A stand-in second molecule: the first 120 Cα of AdK (a smaller, differently shaped particle)."""
    return AtomSource(adk.coords[0, :120], 3.0)


@pytest.fixture(scope="module")
def junky(source, second):
    """One 320² micrograph with 6 particles and 3 junk objects (ice, aggregate, second), a gradient, SNR 0.1 in
    the particle boxes."""
    cfg = MicrographConfig(size=320, apix=APIX, n_particles=6, snr=0.1, snr_region="particles", junk_fraction=0.34,
                           junk_kinds=("ice", "aggregate", "second"), gradient=0.5, seed=4)
    sim = MicrographSimulator(source, cfg, second)
    return sim, sim.micrograph(0)


def _particles_alone(source, g, D):
    """The listed particles rendered one by one on a whole ``D × D`` field by forward_images (no CTF), summed."""
    t = torch.as_tensor((g.coords - D // 2) * APIX, dtype=torch.float32)
    poses = Poses(torch.as_tensor(g.rotations, dtype=torch.float32), t)
    return forward_images(source.projector(), poses, ImagingGrid(D, APIX), None, torch.as_tensor(g.conformation)).sum(0)


def test_the_ctf_free_field_is_the_listed_particles_plus_the_listed_junk(junky, source):
    sim, g = junky
    assert sim.n_junk == round(6 * 0.34 / 0.66) == 3 and len(g.junk_kind) == 3 and len(g.coords) == 6
    expected = _particles_alone(source, g, 320)
    part = g.clean_noctf - g.junk_noctf
    assert float((part - expected).abs().max()) < 1e-4 * float(expected.max())  # measured 2e-6
    # each junk object's mass centroid is its listed centre (copies of a molecule are centred on their centroid:
    # the whole object, listed radius + 4 px; an ice blob is point-symmetric: any disc about its centre, here its
    # major semi-axis, which no neighbour reaches), for the objects wholly inside the field
    J = g.junk_noctf.double().numpy()
    yy, xx = np.mgrid[0:320, 0:320]
    checked = 0
    for kind, (x, y), rA in zip(g.junk_kind, g.junk_xy, g.junk_radius_A):
        r = rA / APIX + (4 if kind != "ice" else 0)
        if min(x, y) < r or max(x, y) > 319 - r:
            continue
        w = ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) * J
        assert abs((w * xx).sum() / w.sum() - x) < 0.02 and abs((w * yy).sum() / w.sum() - y) < 0.02, kind
        checked += 1
    assert checked >= 1
    # junk never sits on a particle: every particle is ≥ r_particle + r_junk from every junk centre
    d = np.sqrt(((g.coords[:, None] - g.junk_xy[None]) ** 2).sum(-1))
    assert (d >= sim.r_px + g.junk_radius_A[None] / APIX - 1e-9).all()


def test_each_truth_centre_is_a_local_maximum_of_the_matched_filter(source):
    """Noiseless, CTF-free micrograph: correlating with each particle's own projection (its pose, no shift)
    peaks at the particle's rounded centre within ±6 px; and a blob filter finds exactly as many maxima as
    there are listed particles, each within 3 px of one."""
    from scipy.ndimage import gaussian_filter
    from skimage.feature import peak_local_max
    cfg = MicrographConfig(size=256, apix=APIX, n_particles=6, snr=1.0, seed=8)
    sim = MicrographSimulator(source, cfg)
    g = sim.micrograph(0)
    F = g.clean_noctf.double().numpy()
    B = sim.box
    Fp = np.pad(F, B)
    for j in range(len(g.coords)):
        tmpl = forward_images(source.projector(), Poses(torch.as_tensor(g.rotations[j:j + 1], dtype=torch.float32),
                                                        torch.zeros(1, 2)), sim.grid, None,
                              torch.as_tensor(g.conformation[j:j + 1]))[0].double().numpy()
        ix, iy = np.round(g.coords[j]).astype(int)
        score = {(dx, dy): float((Fp[iy + dy - B // 2 + B:iy + dy + B // 2 + B, ix + dx - B // 2 + B:
                                     ix + dx + B // 2 + B] * tmpl).sum())
                 for dy in range(-6, 7) for dx in range(-6, 7)}
        assert max(score, key=score.get) == (0, 0), j
    blob = gaussian_filter(F, sim.r_px / 2)
    peaks = peak_local_max(blob, min_distance=int(sim.r_px), threshold_abs=0.3 * blob.max())[:, ::-1]
    assert len(peaks) == len(g.coords)
    d = np.sqrt(((peaks[:, None] - g.coords[None]) ** 2).sum(-1))
    assert (d.min(0) < 3).all()


def test_snr_in_the_particle_boxes(junky, source):
    """With junk and a gradient, ``snr_region = particles`` puts SNR 0.1 in the union of the particles' boxes:
    the particles' own CTF-applied signal there over the noise there (box mask built here from the truth)."""
    sim, g = junky
    signal = apply_ctf((g.clean_noctf - g.junk_noctf)[None].double(), g.ctf, APIX, pad=2)[0]
    mask = np.zeros((320, 320), bool)
    B = sim.box
    for x, y in np.round(g.coords).astype(int):
        mask[max(0, y - B // 2):y + B // 2, max(0, x - B // 2):x + B // 2] = True
    noise = (g.noisy - g.clean).double().numpy()[mask]
    snr = float(signal.numpy()[mask].var() / noise.var())
    assert snr == pytest.approx(0.1, rel=0.05) and g.snr_particles == pytest.approx(snr, rel=1e-3)
    assert g.noise_sigma == pytest.approx(math.sqrt(signal.numpy()[mask].var() / 0.1), rel=1e-4)
    # the field's variance holds the junk and gradient too: the field SNR is far higher
    assert g.snr_field > 3 * snr


def test_carbon_edge_is_listed_and_particles_stay_in_the_hole(source):
    cfg = MicrographConfig(size=(256, 320), apix=APIX, n_particles=4, snr=1.0, carbon_edge=1.0, seed=2)
    sim = MicrographSimulator(source, cfg)
    plan = sim.plan(0)
    g = sim.render(plan)
    assert list(g.junk_kind) == ["carbon"] and len(g.coords) == 4
    hc, R = plan.carbon.params["hole_centre"], plan.carbon.radius_px
    assert abs(np.hypot(*(g.junk_xy[0] - hc)) - R) < 1e-6  # the listed point is on the edge
    assert (np.hypot(*(g.coords - hc).T) - R <= -sim.r_px).all()  # whole particles inside the hole
    # the film is there: on the carbon side the CTF-free field is ~carbon_contrast · p_ref, in the hole ~0
    yy, xx = np.mgrid[0:256, 0:320]
    d = np.hypot(xx - hc[0], yy - hc[1]) - R
    J = g.junk_noctf.numpy()
    assert J[d > 10].mean() == pytest.approx(3.0 * sim.p_ref, rel=0.05) and abs(J[d < -10].mean()) < 1e-3 * sim.p_ref


def test_poisson_noise_has_mean_equal_to_variance_at_the_dose(source):
    """Dose 30 e/Å² over 4 frames: the counts recovered from the written micrograph (Σ N = λ₀ (1 − c · noisy))
    are integers with mean λ (λ₀ = dose · apix² in empty ice) and variance equal to the mean; each frame's
    counts have mean λ/4."""
    dose, T = 30.0, 4
    cfg = MicrographConfig(size=256, apix=APIX, n_particles=4, dose=dose, n_frames=T, keep_frames=True, seed=6)
    sim = MicrographSimulator(source, cfg)
    g = sim.micrograph(0)
    lam0 = dose * APIX ** 2
    c = 2 * cfg.peak_phase_rad / sim.p_ref
    counts = lam0 * (1 - c * g.noisy.double().numpy())
    assert np.abs(counts - np.round(counts)).max() < 0.02
    lam = lam0 * (1 - c * g.clean.double().numpy())
    resid = counts - lam
    assert abs(resid.mean()) < 0.05 and (resid ** 2).mean() / lam.mean() == pytest.approx(1.0, rel=0.02)
    empty = ~g.box_mask.numpy()
    assert counts[empty].mean() == pytest.approx(lam0, rel=0.005)
    assert counts[empty].var() == pytest.approx(lam0, rel=0.03)
    frame_counts = lam0 / T * (1 - c * g.frames[1].double().numpy())
    assert np.abs(frame_counts - np.round(frame_counts)).max() < 0.02
    assert frame_counts.mean() == pytest.approx(lam.mean() / T, rel=0.01)
    torch.testing.assert_close(g.frames.mean(0), g.noisy, atol=1e-4, rtol=0)


def test_detector_mtf_ntf_dqe_follow_their_formulas():
    """Values by hand at a few frequencies: MTF = sinc(πωx/2) sinc(πωy/2) exp(−|ω|²/2b²), NTF =
    exp(−|ω|²/2b²)/√DQE₀, DQE = MTF²/NTF² (0.405 DQE₀ at Nyquist on one axis)."""
    H, W, b, q = 64, 96, 0.9, 0.7
    mtf, ntf, dqe = detector_mtf((H, W), b), detector_ntf((H, W), b, q), detector_dqe((H, W), q)
    sinc = lambda x: 1.0 if x == 0 else math.sin(x) / x  # noqa: E731
    for iy, ix in [(0, 0), (0, W // 2), (H // 2, 0), (5, 17), (H - 9, 30)]:
        wy = 2 * (iy if iy < H // 2 else iy - H) / H
        wx = 2 * ix / W
        g = math.exp(-(wx ** 2 + wy ** 2) / (2 * b ** 2))
        assert float(mtf[iy, ix]) == pytest.approx(sinc(math.pi * wx / 2) * sinc(math.pi * wy / 2) * g, rel=1e-12)
        assert float(ntf[iy, ix]) == pytest.approx(g / math.sqrt(q), rel=1e-12)
        assert float(dqe[iy, ix]) == pytest.approx(float(mtf[iy, ix] ** 2 / ntf[iy, ix] ** 2), rel=1e-12)
    assert float(dqe[0, W // 2]) == pytest.approx(q * (2 / math.pi) ** 2, rel=1e-12)
    # a cosine of the field's grid comes back times MTF at its frequency
    y, x = np.mgrid[0:H, 0:W]
    wave = torch.from_numpy(np.cos(2 * np.pi * (7 * x / W + 3 * y / H)))
    expected = sinc(math.pi * 7 / W) * sinc(math.pi * 3 / H) * math.exp(-((14 / W) ** 2 + (6 / H) ** 2) / (2 * b * b))
    torch.testing.assert_close(apply_transfer(wave, mtf), expected * wave, atol=1e-12, rtol=0)


def test_micrographs_with_the_detector_model(source):
    """The clean micrograph with the MTF is the one without, filtered by the MTF (same draws); with a dose, the
    noise power spectrum of an empty field is NTF² / (λ₀ c²) in every band (so DQE = MTF²/NTF²)."""
    kw = dict(size=192, apix=APIX, n_particles=2, snr=0.5, seed=9)
    a = MicrographSimulator(source, MicrographConfig(**kw)).micrograph(0)
    b = MicrographSimulator(source, MicrographConfig(**kw, mtf=True, mtf_width=0.8)).micrograph(0)
    torch.testing.assert_close(b.clean, apply_transfer(a.clean, detector_mtf((192, 192), 0.8)), atol=1e-6, rtol=0)
    assert float((b.noisy - b.clean).double().var()) == pytest.approx(b.noise_sigma ** 2, rel=0.03)
    # shot noise through the detector on an empty field
    dose, q, w = 20.0, 0.6, 0.8
    sim = MicrographSimulator(source, MicrographConfig(size=256, apix=APIX, n_particles=0, dose=dose, mtf=True,
                                                       mtf_width=w, dqe0=q, seed=1))
    lam0, c = dose * APIX ** 2, 2 * 0.1 / sim.p_ref
    nps = np.zeros((256, 256))
    for m in range(2):  # ≥ 2,000 independent |F|² per band and micrograph: a band's mean is within ~1.5 % (1 sd)
        g = sim.micrograph(m)
        nps += np.abs(np.fft.fft2((g.noisy - g.clean).double().numpy())) ** 2 / 256 ** 2 / 2
    expected = detector_ntf((256, 256), w, q, full=True).numpy() ** 2 / (lam0 * c ** 2)
    wy, wx = np.meshgrid(2 * np.fft.fftfreq(256), 2 * np.fft.fftfreq(256), indexing="ij")
    rad = np.hypot(wx, wy)
    for lo, hi in [(0.05, 0.3), (0.3, 0.6), (0.6, 0.9), (0.9, 1.2)]:
        band = (rad >= lo) & (rad < hi)
        assert nps[band].mean() == pytest.approx(expected[band].mean(), rel=0.05), (lo, hi)


def test_micrograph_m_depends_on_the_seed_and_m_only_with_junk_dose_and_detector(source, second):
    cfg = MicrographConfig(size=(160, 224), apix=APIX, n_particles=2, dose=25.0, junk_fraction=0.34,
                           junk_kinds=("ice", "second"), carbon_edge=0.5, gradient=0.3, mtf=True, seed=12)
    a = simulate_micrographs(source, cfg, 2, second_source=second)
    b = MicrographSimulator(source, cfg, second).micrograph(1)  # alone, without micrograph 0 before it
    assert torch.equal(a.noisy[1], b.noisy) and np.array_equal(a.junk(1)["xy"], b.junk_xy)
    assert np.array_equal(a.particles(1)["coords"], b.coords) and list(a.junk(1)["kind"]) == list(b.junk_kind)
    assert len(a.junk_kind) >= 2 and set(a.junk_kind) <= {"ice", "second", "carbon"}
    assert not torch.equal(a.noisy[0], a.noisy[1])


def test_micrographs_star_round_trip_and_bad_files(tmp_path):
    ctf = CTFParams([15000.0, 21000.0], [14000.0, 20500.0], [0.3, 2.0], 300.0, 2.7, 0.1, 0.5, 20.0)
    write_micrographs_star(tmp_path / "m.star", ["micrographs/a.mrc", "micrographs/b.mrc"], ctf, 1.1)
    names, got, apix = read_micrographs_ctf(tmp_path / "m.star")
    assert names == ["micrographs/a.mrc", "micrographs/b.mrc"] and apix == pytest.approx(1.1)
    for k in CTFParams.fields:
        np.testing.assert_allclose(getattr(got, k).numpy(), getattr(ctf, k).numpy(), rtol=1e-6, atol=1e-6)
    import starfile
    blocks = starfile.read(tmp_path / "m.star", always_dict=True)
    assert set(blocks) == {"optics", "micrographs"} and blocks["micrographs"]["rlnDefocusAngle"].iloc[1] == \
        pytest.approx(math.degrees(2.0), abs=1e-5)
    text = (tmp_path / "m.star").read_text()
    bad = {
        "nan": text.replace("15000.000000", "nan"),
        "missing": text.replace("_rlnDefocusV #4", "_rlnDefocusX #4"),
        "text": text.replace("21000.000000", "abc"),
        "group": text.replace("micrographs/b.mrc\t1", "micrographs/b.mrc\t7"),
        "none": text.split("data_micrographs")[0],
    }
    for name, body in bad.items():
        (tmp_path / f"{name}.star").write_text(body)
        with pytest.raises(InputError) as err:
            read_micrographs_star(tmp_path / f"{name}.star")
        assert f"{name}.star" in str(err.value), name


def test_bad_new_options_are_input_errors(source, second):
    bad = [
        (dict(junk_fraction=0.95), "--junk-fraction"),
        (dict(junk_kinds=("ice", "dust")), "--junk-kinds"),
        (dict(junk_fraction=0.1, junk_kinds=("second",)), "--junk-kinds"),  # no second molecule given
        (dict(snr_region="box"), "--snr-region"),
        (dict(snr_region="particles", n_particles=0), "--snr-region"),
        (dict(dose=0.0), "--dose"),
        (dict(dose=float("nan")), "--dose"),
        (dict(dqe0=0.0), "--dqe0"),
        (dict(mtf_width=-1.0), "--mtf-width"),
        (dict(carbon_edge=1.5), "--carbon-edge"),
        (dict(gradient=-0.1), "--gradient"),
    ]
    for kw, where in bad:
        with pytest.raises(InputError) as err:
            MicrographSimulator(source, MicrographConfig(**{"size": 256, "apix": APIX, "n_particles": 3, **kw}))
        assert err.value.where == where, (kw, str(err.value))
    with pytest.raises(InputError, match="junk objects"):  # a field too full for the junk asked for
        MicrographSimulator(source, MicrographConfig(size=128, apix=APIX, n_particles=3, junk_fraction=0.9,
                                                     edge_margin_A=0.0)).plan(0)
