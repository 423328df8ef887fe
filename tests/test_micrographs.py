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
