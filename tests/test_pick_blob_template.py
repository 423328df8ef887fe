"""Blob and template pickers and the peak finder: hand-built maps, the direct formula of the local correlation,
tiling, and the simulator's ground truth (noiseless: every truth centre is a local maximum of the matched
filter; noisy: both pickers find the particles)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from cryoscape.data.embedded import adk_files
from cryoscape.data.micrographs import MicrographConfig, simulate_micrographs
from cryoscape.data.simulate import AtomSource
from cryoscape.io.errors import InputError
from cryoscape.io.models import read_trajectory
from cryoscape.methods.pick.blob import BlobConfig, normalise_micrograph, pick_blob
from cryoscape.methods.pick.peaks import clean_score_map, find_peaks, refine_subpixel
from cryoscape.methods.pick.template import (TemplateConfig, Templates, disc_mask, fibonacci_rotations,
                                             local_correlation, make_templates, pick_template, prepare_templates,
                                             template_score_map, templates_from_file)

APIX = 2.0


@pytest.fixture(scope="module")
def adk():
    return AtomSource(read_trajectory(*adk_files(), "ca").coords, 3.0)


@pytest.fixture(scope="module")
def field(adk):
    """Two 320 × 352 px micrographs of 2 Å/px with 9 AdK particles each, SNR 0.05 (and their noiseless,
    CTF-free fields), defocus 1–2.5 µm, the CTF on the whole field."""
    cfg = MicrographConfig(size=(320, 352), apix=APIX, n_particles=9, snr=0.05, seed=5)
    return simulate_micrographs(adk, cfg, 2)


def match(picks: np.ndarray, truth: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one (Hungarian) matching of picks to truth within ``radius``: ``(i_pick, i_truth)``."""
    if len(picks) == 0 or len(truth) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = cdist(picks, truth)
    cost = np.where(d <= radius, d, 1e9)
    i, j = linear_sum_assignment(cost)
    ok = cost[i, j] <= radius
    return i[ok], j[ok]


# ------------------------------------------------------------------------------------------------------------
# peaks
# ------------------------------------------------------------------------------------------------------------

def test_find_peaks_min_distance_threshold_edge_and_order():
    s = np.zeros((40, 50))
    peaks = {(10, 10): 5.0, (10, 14): 4.0, (25, 30): 3.0, (25, 36): 2.5, (1, 30): 6.0, (33, 8): 1.0}  # (row, col)
    for (r, c), v in peaks.items():
        s[r, c] = v
    xy, score = find_peaks(s, 5)
    # (10, 14) is 4 px from the higher (10, 10): suppressed; (25, 36) is 6 px from (25, 30): kept
    assert score.tolist() == [6.0, 5.0, 3.0, 2.5, 1.0]
    assert xy.tolist() == [[30, 1], [10, 10], [30, 25], [36, 25], [8, 33]]
    d = cdist(xy, xy) + np.eye(len(xy)) * 1e9
    assert d.min() >= 5
    # distance exactly min_distance is allowed: 6 px apart with min 6 keeps both
    assert len(find_peaks(s, 6)[0]) == 5
    xy, score = find_peaks(s, 5, threshold=2.5, edge_px=2)  # strictly above 2.5; row 1 is within 2 px of the edge
    assert xy.tolist() == [[10, 10], [30, 25]] and score.tolist() == [5.0, 3.0]
    xy, score = find_peaks(torch.from_numpy(s).float(), 5, max_picks=2)  # a tensor works too
    assert score.tolist() == [6.0, 5.0]
    assert find_peaks(np.zeros((20, 20)), 3)[0].shape == (0, 2)  # a flat map has no peak


def test_find_peaks_subpixel_parabola():
    yy, xx = np.mgrid[:40, :50].astype(float)
    x0, y0 = 21.3, 17.8
    s = -((xx - x0) ** 2 + 0.5 * (yy - y0) ** 2)  # a paraboloid: the 3-point fit is exact
    xy, _ = find_peaks(s, 3, subpixel=True)
    np.testing.assert_allclose(xy[0], [x0, y0], atol=1e-9)
    g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 2.5 ** 2))  # a Gaussian: within a few hundredths
    xy, _ = find_peaks(g, 3, subpixel=True)
    assert np.hypot(*(xy[0] - [x0, y0])) < 0.05
    x, y = refine_subpixel(g, np.array([0]), np.array([0]))  # at the edge: no refinement
    assert (x[0], y[0]) == (0.0, 0.0)


def test_clean_score_map_removes_plateau_keeps_isolated_peak():
    s = np.zeros((80, 80))
    s[10:40, 10:40] = 2.0                       # a large bright blob (30 × 30 px)
    s[20, 20] = 2.5                             # with a bump on it
    yy, xx = np.mgrid[:80, :80]
    s += 3.0 * np.exp(-((xx - 62) ** 2 + (yy - 62) ** 2) / (2 * 2.0 ** 2))  # an isolated particle-size peak
    out = clean_score_map(s, cutoff=1.0, size_px=9)
    xy, _ = find_peaks(out, 5, threshold=0.5)
    assert len(find_peaks(s, 5, threshold=0.5)[0]) > 1  # before cleaning the blob gives peaks
    assert len(xy) == 1 and np.hypot(xy[0, 0] - 62, xy[0, 1] - 62) == 0
    assert out[10:40, 10:40].max() == s.min()   # the whole blob, rim and corners included, is gone
    np.testing.assert_array_equal(out[50:, 50:], s[50:, 50:])  # elsewhere unchanged
    t = clean_score_map(torch.from_numpy(s), cutoff=1.0, size_px=9)
    np.testing.assert_array_equal(t.numpy(), out)
    assert np.array_equal(clean_score_map(s, cutoff=5.0, size_px=9), s)  # nothing above the cutoff


# ------------------------------------------------------------------------------------------------------------
# local correlation
# ------------------------------------------------------------------------------------------------------------

def test_local_correlation_equals_direct_formula():
    """Roseman's FLCF from FFTs (tiled) equals the Pearson correlation of each template with the image under the
    mask, computed pixel by pixel (the image zero outside), maximised over templates."""
    g = torch.Generator().manual_seed(0)
    img = torch.randn(21, 26, generator=g, dtype=torch.float64)
    raw = torch.randn(3, 7, 7, generator=g, dtype=torch.float64)
    mask = disc_mask(7, 3.0, dtype=torch.float64)
    t = prepare_templates(raw, mask, 1.0, 1)
    best, index = local_correlation(img, t, mask, tile_px=16, batch=2)
    m = mask.numpy().astype(bool)
    pad = np.pad(img.numpy(), 3)
    direct = np.full((21, 26), -np.inf)
    arg = np.zeros((21, 26), int)
    for y in range(21):
        for x in range(26):
            patch = pad[y:y + 7, x:x + 7][m]
            for k in range(3):
                c = np.corrcoef(raw[k].numpy()[m], patch)[0, 1]
                if c > direct[y, x]:
                    direct[y, x], arg[y, x] = c, k
    np.testing.assert_allclose(best.numpy(), direct, atol=1e-10)
    np.testing.assert_array_equal(index.numpy(), arg)


def test_tiled_score_equals_untiled(field, adk):
    T = make_templates(adk, APIX, n_views=3)
    cfg = TemplateConfig(diameter_A=2 * field.radius_A, psi_step_deg=45, tile_px=None)
    mic = field.noisy[0].double()
    whole = template_score_map(mic, APIX, cfg, T, ctf=field.ctf.subset([0]))
    cfg.tile_px, cfg.batch, cfg.cache_mb = 48, 5, 0  # many tiles, small batches, spectra recomputed per tile
    tiled = template_score_map(mic, APIX, cfg, T, ctf=field.ctf.subset([0]))
    assert whole["score"].shape == tiled["score"].shape and whole["score"].shape[0] < 48 * 3
    np.testing.assert_allclose(tiled["score"].numpy(), whole["score"].numpy(), atol=1e-10)
    assert torch.equal(tiled["view"], whole["view"]) and torch.equal(tiled["psi"], whole["psi"])
    f32 = template_score_map(field.noisy[0], APIX, cfg, T, ctf=field.ctf.subset([0]))  # float32: same to 1e-4
    np.testing.assert_allclose(f32["score"].numpy(), whole["score"].numpy(), atol=1e-4)


# ------------------------------------------------------------------------------------------------------------
# against the simulator's ground truth
# ------------------------------------------------------------------------------------------------------------

def test_noiseless_truth_centres_are_local_maxima_of_the_matched_filter(field, adk):
    """On the noiseless CTF-free field, with each particle's own projection as a template (its pose and
    conformation), the correlation's maximum within half a radius of every truth centre is within 1 px of it,
    ≈ 1, and attained by that particle's template at ψ = 0."""
    truth = field.particles(0)
    T = torch.cat([make_templates(adk, APIX, rotations=torch.as_tensor(R[None]), conformation=int(f))
                   for R, f in zip(truth["rotations"], truth["conformation"])])
    cfg = TemplateConfig(diameter_A=2 * field.radius_A, work_apix=APIX, lowpass_A=2 * APIX, psi_step_deg=90)
    res = template_score_map(field.clean_noctf[0], APIX, cfg, T)
    assert res["scale"] == (1.0, 1.0)
    score = res["score"].numpy()
    H, W = score.shape
    yy, xx = np.mgrid[:H, :W]
    r = field.radius_A / APIX
    for k, (x, y) in enumerate(truth["coords"]):
        near = (xx - x) ** 2 + (yy - y) ** 2 <= (r / 2) ** 2
        py, px = divmod(int(np.argmax(np.where(near, score, -np.inf))), W)
        assert math.hypot(px - x, py - y) <= 1.0
        assert score[py, px] > 0.99
        assert int(res["view"][py, px]) == k and float(res["psi"][py, px]) == 0.0


@pytest.mark.parametrize("picker", ["blob", "template"])
def test_pickers_find_the_particles(field, adk, picker):
    """At SNR 0.05 with the CTF, default settings: recall ≥ 0.9 and precision ≥ 0.8 (Hungarian matching
    within half the particle radius), and the matched picks lie within 3 px of the truth on average."""
    r = field.radius_A / APIX
    cfg = BlobConfig(diameter_A=2 * field.radius_A) if picker == "blob" else \
        TemplateConfig(diameter_A=2 * field.radius_A)
    kw = {} if picker == "blob" else {"templates": make_templates(adk, APIX)}
    fn = pick_blob if picker == "blob" else pick_template
    n_true = n_pick = n_hit = 0
    err = []
    for m in range(len(field)):
        truth = field.particles(m)["coords"]
        xy, score = fn(field.noisy[m], APIX, cfg, ctf=field.ctf.subset([m]), **kw)
        assert xy.dtype == np.float64 and score.dtype == np.float64 and xy.shape == (len(score), 2)
        assert np.all(np.diff(score) <= 0)
        i, j = match(xy, truth, r / 2)
        n_true, n_pick, n_hit = n_true + len(truth), n_pick + len(xy), n_hit + len(i)
        err.extend(np.hypot(*(xy[i] - truth[j]).T))
    assert n_hit / n_true >= 0.9, (n_hit, n_true)
    assert n_hit / n_pick >= 0.8, (n_hit, n_pick)
    assert np.mean(err) < 3.0


def test_polarity(field):
    """A dark-particle micrograph (the negative) picked with ``polarity='dark'`` gives the bright picks; with
    the wrong polarity most particles are missed."""
    r = field.radius_A / APIX
    truth = field.particles(0)["coords"]
    cfg = BlobConfig(diameter_A=2 * field.radius_A)
    xy, s = pick_blob(field.noisy[0], APIX, cfg, ctf=field.ctf.subset([0]))
    cfg_dark = BlobConfig(diameter_A=2 * field.radius_A, polarity="dark")
    xy_d, s_d = pick_blob(-field.noisy[0], APIX, cfg_dark, ctf=field.ctf.subset([0]))
    np.testing.assert_allclose(xy_d, xy, atol=1e-6)
    np.testing.assert_allclose(s_d, s, atol=1e-6)
    xy_w, _ = pick_blob(-field.noisy[0], APIX, cfg, ctf=field.ctf.subset([0]))
    assert len(match(xy_w, truth, r / 2)[0]) <= len(truth) // 2


# ------------------------------------------------------------------------------------------------------------
# pieces and bad input
# ------------------------------------------------------------------------------------------------------------

def test_templates_are_centred_projections(adk):
    R = fibonacci_rotations(12)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=R.dtype).expand(12, 3, 3))
    z = R[:, 2, 2].numpy()
    np.testing.assert_allclose(z, 1 - (2 * np.arange(12) + 1) / 12, atol=1e-12)  # viewing directions' z
    T = make_templates(adk, APIX, n_views=12)
    B = T.shape[-1]
    assert B % 2 == 0 and B >= 3 * adk.radius() / APIX
    ij = torch.arange(B, dtype=torch.float64) - B // 2
    mass = T.double().sum((-2, -1))
    cx = (T.double() * ij[None, None, :]).sum((-2, -1)) / mass
    cy = (T.double() * ij[None, :, None]).sum((-2, -1)) / mass
    assert float(cx.abs().max()) < 0.05 and float(cy.abs().max()) < 0.05  # centroid at pixel B//2


def test_templates_from_file(tmp_path, adk, field):
    """A map, class averages and an atomic model on disk give the templates made from the same density: the
    map's projections (Fourier slice) correlate ≥ 0.99 with the Gaussian atoms' analytic ones; class averages
    come back as written, with the header's pixel size; a PDB gives the model's projections; and the map's
    templates, cropped to the working pixel, pick the particles."""
    from cryoscape.io.models import write_pdb
    from cryoscape.io.mrc import write_map, write_stack
    from cryoscape.physics.gaussian import atoms_to_volume
    conf = read_trajectory(*adk_files(), "ca")
    conf.coords = conf.coords[:1]
    one = AtomSource(conf.coords, 3.0)
    ref = make_templates(one, APIX, box=48, n_views=4).double()
    write_map(tmp_path / "adk.mrc", atoms_to_volume(one.coords[0], 3.0, 48, APIX).float().numpy(), APIX)
    cfg = TemplateConfig(diameter_A=2 * field.radius_A, n_views=4, work_apix=APIX)
    got = templates_from_file(tmp_path / "adk.mrc", APIX, cfg)
    assert isinstance(got, Templates) and got.apix == APIX and got.images.shape == (4, 48, 48)
    for a, b in zip(got.images.double(), ref):
        assert float(torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1]) > 0.99
    coarse = templates_from_file(tmp_path / "adk.mrc", APIX, TemplateConfig(diameter_A=80, n_views=4))
    assert coarse.images.shape == (4, 20, 20) and coarse.apix == pytest.approx(APIX * 48 / 20)  # 15 Å / 3
    write_stack(tmp_path / "classes.mrcs", ref[:3].float().numpy(), 2.5)
    cls = templates_from_file(tmp_path / "classes.mrcs", APIX, cfg)
    assert cls.apix == 2.5 and torch.equal(cls.images, ref[:3].float())
    write_pdb(tmp_path / "adk.pdb", conf)
    pdb = templates_from_file(tmp_path / "adk.pdb", APIX, TemplateConfig(diameter_A=80, n_views=4))
    torch.testing.assert_close(pdb.images, make_templates(one, APIX, n_views=4), atol=1e-3 * float(ref.max()),
                               rtol=0)
    with pytest.raises(InputError, match="does not exist"):
        templates_from_file(tmp_path / "missing.mrc", APIX, cfg)
    r = field.radius_A / APIX
    truth = field.particles(0)["coords"]
    xy, _ = pick_template(field.noisy[0], APIX, TemplateConfig(diameter_A=2 * field.radius_A), templates=coarse,
                          ctf=field.ctf.subset([0]))
    assert len(match(xy, truth, r / 2)[0]) >= 0.9 * len(truth) and len(xy) <= len(truth) + 2


def test_normalise_micrograph_crops_to_the_working_pixel():
    """A Gaussian blob at (x, y) = (70.4, 40.2) px of a 96 × 160 micrograph, cropped to 4× larger pixels, peaks
    at (x, y) / 4 in working pixels (the samples sit at original pixel i · H/h)."""
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(160.0), indexing="ij")
    img = torch.exp(-((xx - 70.4) ** 2 + (yy - 40.2) ** 2) / (2 * 6.0 ** 2))
    out, scale = normalise_micrograph(img.double(), 1.0, 4.0)
    assert out.shape == (24, 40) and scale == (4.0, 4.0)
    assert abs(float(out.mean())) < 1e-12 and abs(float(out.std()) - 1) < 1e-12
    xy, _ = find_peaks(out, 3, subpixel=True, max_picks=1)
    assert np.hypot(xy[0, 0] * 4 - 70.4, xy[0, 1] * 4 - 40.2) < 0.3


def test_bad_input(field, adk):
    mic = field.noisy[0].clone()
    T = make_templates(adk, APIX, n_views=2)
    with pytest.raises(InputError, match="--diameter"):
        pick_blob(mic, APIX, BlobConfig())
    with pytest.raises(InputError, match="--polarity"):
        pick_template(mic, APIX, TemplateConfig(diameter_A=80, polarity="white"), templates=T)
    mic[3, 4] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        pick_blob(mic, APIX, BlobConfig(diameter_A=80))
    with pytest.raises(InputError, match="smaller than the template"):
        pick_template(field.noisy[0][:40, :40], APIX, TemplateConfig(diameter_A=80), templates=T)
    with pytest.raises(InputError, match="templates"):
        pick_template(field.noisy[0], APIX, TemplateConfig(diameter_A=80), templates=torch.zeros(2, 8, 9))
