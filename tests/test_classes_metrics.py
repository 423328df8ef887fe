"""Metrics of 2-D classes (``cryoscape.analysis.classes``) against hand-computed values and analytic images."""

import math

import numpy as np
import pytest
import torch

from cryoscape.analysis import classes as C


def relion_matrix(rot, tilt, psi):
    """``A = Rz(psi) Ry(tilt) Rz(rot)`` written out from CONVENTIONS.md (degrees in), independent of the package."""
    def rz(a):
        c, s = math.cos(a), math.sin(a)
        return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])

    def ry(b):
        c, s = math.cos(b), math.sin(b)
        return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    rot, tilt, psi = (math.radians(v) for v in (rot, tilt, psi))
    return rz(psi) @ ry(tilt) @ rz(rot)


def poses(rot_tilt, seed=0):
    """Pose matrices ``(N, 3, 3)`` with the given (rot, tilt) in degrees and random in-plane angles."""
    psi = np.random.default_rng(seed).uniform(0, 360, len(rot_tilt))
    return np.stack([relion_matrix(r, t, p) for (r, t), p in zip(rot_tilt, psi)])


# -- label agreement ---------------------------------------------------------------------------------------------
def test_hungarian_accuracy_hand_cases():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    perm = {0: 7, 1: 3, 2: 5}
    assert C.hungarian_accuracy([perm[t] for t in truth], truth) == 1.0
    # contingency (rows: clusters a, b, c; columns: classes 0, 1) [[4, 1], [1, 2], [0, 2]]: the best one-to-one
    # matching is a→0 and b→1 (or c→1): (4 + 2) / 10
    truth = np.array([0] * 5 + [1] * 5)
    pred = np.array(["a", "a", "a", "a", "b", "a", "b", "b", "c", "c"])
    assert C.hungarian_accuracy(pred, truth) == pytest.approx(0.6)
    # fewer clusters than classes: one cluster matches the largest class (5 of 10)
    assert C.hungarian_accuracy(np.zeros(10), [0] * 5 + [1] * 3 + [2] * 2) == pytest.approx(0.5)
    # more clusters than classes: every item its own cluster matches one item per class
    assert C.hungarian_accuracy(np.arange(10), [0] * 5 + [1] * 5) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        C.hungarian_accuracy([0, 1], [0, 1, 2])


def test_adjusted_rand_hand_value():
    # contingency [[2, 0, 0], [0, 1, 1]]: Σ C(n_ij, 2) = 1, rows Σ C(a_i, 2) = 2, columns Σ C(b_j, 2) = 1,
    # C(4, 2) = 6: expected 2·1/6 = 1/3, max (2 + 1)/2, ARI = (1 − 1/3) / (3/2 − 1/3) = 4/7
    assert C.adjusted_rand([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7)
    assert C.adjusted_rand([5, 5, 2, 2, 9], [0, 0, 1, 1, 2]) == pytest.approx(1.0)


# -- views --------------------------------------------------------------------------------------------------------
def test_viewing_directions_are_the_relion_last_row():
    rt = [(30, 50), (200, 120), (10, 0), (300, 170)]
    d = C.viewing_directions(torch.as_tensor(poses(rt)))
    r, t = np.radians(np.array(rt, float)).T
    np.testing.assert_allclose(d, np.stack([np.sin(t) * np.cos(r), np.sin(t) * np.sin(r), np.cos(t)], 1), atol=1e-12)


def test_view_angles_known_vectors():
    z, x = np.array([0, 0, 2.0]), np.array([3.0, 0, 0])
    a170 = np.array([math.sin(math.radians(170)), 0, math.cos(math.radians(170))])
    np.testing.assert_allclose(C.view_angles_deg(z, x), 90.0)
    np.testing.assert_allclose(C.view_angles_deg(z, a170), 10.0, atol=1e-9)
    np.testing.assert_allclose(C.view_angles_deg(z, a170, mirror=False), 170.0, atol=1e-9)
    np.testing.assert_allclose(C.view_angles_deg(np.stack([z, x]), np.stack([a170, -x])), [10.0, 0.0], atol=1e-6)


# six views (rot, tilt): three in class 0 within 20° of each other only with the mirror (tilt 0, tilt 10, and
# tilt 175 = the mirror of tilt 5 at rot 180), two in class 1 30° apart, one alone in class 2
SIX = [(0, 0), (0, 10), (0, 175), (0, 90), (0, 60), (90, 45)]
SIX_LABELS = [0, 0, 0, 1, 1, 2]


def test_same_class_pairs_within_constructed_set():
    R = poses(SIX)
    # class 0 pairs: 10°, 5° (175° without mirror), 15° (165°); class 1: 30°; class 2 has no pair
    assert C.same_class_pairs_within(SIX_LABELS, R, 20) == pytest.approx(3 / 4)
    assert C.same_class_pairs_within(SIX_LABELS, R, 20, mirror=False) == pytest.approx(1 / 4)
    assert C.same_class_pairs_within(SIX_LABELS, R, 30) == pytest.approx(4 / 4)
    # all 15 pairs: only the three of class 0 are within 20° (the next closest are 30° and 45°)
    assert C.pairs_within(R, 20) == pytest.approx(3 / 15)
    assert C.pairs_within(R, 20, mirror=False) == pytest.approx(1 / 15)
    assert math.isnan(C.same_class_pairs_within(np.arange(6), R))


def test_pairs_within_uniform_views_at_the_cap_fraction(monkeypatch):
    """Uniform viewing directions: a pair is within θ (mirror-aware) with probability 1 − cos θ (two caps);
    labels that ignore the view score the same; the random-pair estimate agrees with the exact count."""
    from scipy.spatial.transform import Rotation
    R = Rotation.random(1500, random_state=1).as_matrix()
    want = 1 - math.cos(math.radians(20))
    se = math.sqrt(want * (1 - want) / 1500)  # pairs share images: use the per-image count as a safe bound
    exact = C.pairs_within(R, 20)
    assert abs(exact - want) < 4 * se
    labels = np.random.default_rng(2).integers(0, 5, 1500)
    assert abs(C.same_class_pairs_within(labels, R, 20) - want) < 6 * se
    monkeypatch.setattr(C, "_EXACT_PAIRS", 400_000)
    monkeypatch.setattr(C, "_CHUNK", 100_000)
    assert abs(C.pairs_within(R, 20) - exact) < 4 * math.sqrt(want * (1 - want) / 400_000)


def test_neighbours_within_constructed_set():
    R = poses(SIX)
    nb = np.array([[0, 1, 2], [1, 0, 3], [2, 0, -1], [3, 4, 5], [4, 3, 0], [5, 0, 1]])
    # counted pairs (self and −1 skipped): 0-1 10°, 0-2 5°, 1-0, 1-3 80°, 2-0 5°, 3-4 30°, 3-5 90°, 4-3, 4-0 60°,
    # 5-0 45°, 5-1 45.9° → within 10°: 0-1, 0-2, 1-0, 2-0 = 4 of 11
    assert C.neighbours_within(nb, R, 10) == pytest.approx(4 / 11)
    assert C.neighbours_within(nb, R, 10, mirror=False) == pytest.approx(2 / 11)
    with pytest.raises(ValueError):
        C.neighbours_within(nb + 1, R)


# -- class average vs clean reference -----------------------------------------------------------------------------
D, APIX = 32, 2.0
# Gaussian blobs of the reference: x, y, σ (px), weight
BLOBS = np.array([[0.0, 0.0, 2.0, 1.0], [-6.0, 3.0, 1.5, 0.8], [5.0, 7.0, 1.2, 0.6], [4.0, -6.0, 1.8, -0.4]])


def blob_image(psi=0.0, shift_px=(0.0, 0.0), mirror=False):
    """Gaussian blobs drawn analytically at the positions a reference's blobs take under ``shift(rotate(M^m(ref),
    psi))``: ``rotate`` maps content at ``q`` to ``Q(psi)ᵀ q`` (``out(p) = img(Q p)``), ``M`` is ``x → −x``."""
    c, s = math.cos(psi), math.sin(psi)
    Q = np.array([[c, -s], [s, c]])
    y, x = np.mgrid[:D, :D] - D // 2
    img = np.zeros((D, D))
    for bx, by, sig, w in BLOBS:
        q = np.array([-bx if mirror else bx, by])
        px, py = Q.T @ q + np.asarray(shift_px)
        img += w * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sig ** 2))
    return img


def test_mirror_keeps_the_centre_column():
    img = torch.arange(D * D, dtype=torch.float64).reshape(D, D)
    m = C.mirror_images(img)
    assert torch.equal(m[:, D // 2], img[:, D // 2]) and torch.equal(m[:, D // 2 + 3], img[:, D // 2 - 3])
    assert torch.equal(C.mirror_images(m), img)


@pytest.mark.parametrize("psi_deg, shift_px, mirror", [(37.0, (2.3, -1.6), True), (-121.0, (-3.0, 0.7), False)])
def test_alignment_recovers_rotation_shift_mirror(psi_deg, shift_px, mirror):
    ref = blob_image()
    image = blob_image(math.radians(psi_deg), shift_px, mirror)
    fit = C.align_to_reference(image, ref, APIX)
    assert fit.mirror == mirror
    assert abs((fit.psi - math.radians(psi_deg) + math.pi) % (2 * math.pi) - math.pi) < math.radians(0.5)
    np.testing.assert_allclose(np.asarray(fit.shift_A) / APIX, shift_px, atol=0.1)
    assert fit.correlation > 0.99


def test_class_frc_vs_clean_itself_and_noise():
    ref = blob_image()
    image = blob_image(math.radians(63.0), (1.4, -2.2), True)
    frc, res = C.class_frc_vs_clean(image, ref, APIX)
    assert frc.shape == (D // 2,)
    assert frc[: D // 4].min() > 0.99  # the same object: FRC ≈ 1 to half Nyquist (interpolation loses a little)
    assert res == pytest.approx(2 * APIX)  # never below 0.5: Nyquist

    # an average made of the object plus white noise of variance σ²: the FRC at the true alignment, computed
    # here with numpy on the transforms; on average over realisations FRC = sqrt(S / (S + N)) per shell with
    # S = Σ |F_obj|² and N = (number of points) · D² σ² (unnormalised FFT)
    rng = np.random.default_rng(4)
    sigma = 0.15
    noisy = image + rng.normal(0, sigma, (D, D))
    frc_noisy, res_noisy = C.class_frc_vs_clean(noisy, ref, APIX)
    F, G = (np.fft.rfft2(np.fft.ifftshift(a)) for a in (image, noisy))
    ky, kx = np.fft.fftfreq(D) * D, np.fft.rfftfreq(D) * D
    shell = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int).ravel()
    wgt = np.broadcast_to(np.where((kx == 0) | (kx == D // 2), 1.0, 2.0), F.shape).ravel()

    def shell_sum(v):
        return np.bincount(shell, (v.ravel() * wgt), D)[: D // 2]
    at_truth = shell_sum((G * F.conj()).real) / np.sqrt(shell_sum(np.abs(G) ** 2) * shell_sum(np.abs(F) ** 2))
    np.testing.assert_allclose(frc_noisy[: D // 4], at_truth[: D // 4], atol=0.02)
    S, Nn = shell_sum(np.abs(F) ** 2), shell_sum(np.ones(F.shape)) * D * D * sigma ** 2
    assert np.abs(frc_noisy[1:12] - np.sqrt(S / (S + Nn))[1:12]).mean() < 0.08
    assert 7 < res_noisy < 13  # 9.0 Å measured; sqrt(S / (S + N)) crosses 0.5 between shells 6 and 7 (≈ 10 Å)

    # unrelated white noise: beyond the low shells that the alignment itself fits (it picks, out of ~10⁶ trial
    # transforms, the one that best matches the reference; shells 1–5 read 0.3–0.65 on average, measured), the FRC
    # is centred on 0 with a spread ~ 1/sqrt(points per shell); averaged over 4 noise images, shells D/4.. → ≈ 0
    runs = [C.class_frc_vs_clean(rng.normal(0, 1, (D, D)), ref, APIX) for _ in range(4)]
    assert abs(np.mean([frc_n[D // 4:] for frc_n, _ in runs])) < 0.08
    assert min(res_n for _, res_n in runs) > 2 * res_noisy  # 26–120 Å measured
