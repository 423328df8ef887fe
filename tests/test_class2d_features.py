"""Rotation-invariant features, nearest neighbours and clustering (methods/class2d/features.py, cluster.py).

Truths: invariants are unchanged by exact rotations (coefficient phases e^{imψ}, exact 90° pixel
rotations by the index formula of ``out(p) = img(Q(ψ) p)``) and, for the ACF, by integer circular shifts;
arbitrary-angle pixel rotations (analytically rotated Gaussians) change them far less than the difference
between templates; a hand-written bispectrum entry and a brute-force correlation-distance neighbour search;
the known partition of rotated, noisy copies of 3 templates (adjusted Rand index).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from cryoscape.io.errors import InputError
from cryoscape.methods.class2d.cluster import cluster_features, embed
from cryoscape.methods.class2d.features import (acf_features, autocorrelation, bispectrum_features,
                                                bispectrum_triples, nearest_neighbours, power_spectrum_features)
from cryoscape.physics.steerable import FourierBessel, steerable_pca

from test_steerable import gaussians, rot90_exact

D = 32
CENTRES = [[(0, 6), (5, -3), (-5, -3)], [(-6, 0), (0, 0), (6, 0)], [(-4, 4), (4, 4), (4, -4), (-4, -4)]]
WEIGHTS = [[1, 1, 1], [1, 0.6, 1], [1, 0.5, 1, 0.5]]


def rotated_template(k: int, psi: float) -> torch.Tensor:
    """Template k rotated analytically: out(p) = img(Q(ψ) p) moves a centre c to Qᵀ c."""
    cs, sn = math.cos(psi), math.sin(psi)
    return gaussians([(cs * x + sn * y, -sn * x + cs * y) for x, y in CENTRES[k]], sigma=2.0, weights=WEIGHTS[k])


@pytest.fixture(scope="module")
def fb():
    return FourierBessel(D)


@pytest.fixture(scope="module")
def noisy_set(fb):
    """60 images per template (D = 32), random coefficient rotations, white noise at SNR 1 (box variance)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(60)
    a = fb.expand(torch.stack([rotated_template(k, 0.0) for k in range(3)]))[labels]
    psi = torch.rand(labels.numel(), generator=g, dtype=torch.float64) * 2 * math.pi
    clean = fb.evaluate(fb.rotate(a, psi))
    sigma = float(clean.std())
    imgs = clean + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    return imgs, labels.numpy(), sigma ** 2, g


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_power_spectrum_invariant_to_coefficient_rotation(fb):
    g = torch.Generator().manual_seed(1)
    a = fb.expand(torch.randn(20, D, D, generator=g, dtype=torch.float64))
    psi = torch.rand(20, generator=g, dtype=torch.float64) * 2 * math.pi
    ar = fb.rotate(a, psi)
    for cross in (False, True):
        f, fr = power_spectrum_features(a, fb, cross=cross), power_spectrum_features(ar, fb, cross=cross)
        assert rel(fr, f) < 1e-5  # measured ~1e-16
    f = power_spectrum_features(a, fb)
    assert torch.allclose(f, a.real ** 2 + a.imag ** 2)
    fc = power_spectrum_features(a, fb, cross=True)
    p = torch.bincount(fb.m)
    assert fc.shape[1] == int((p ** 2).sum())
    # first entries: block m = 0, pair (q1, q2) = (1, 1), (1, 2): a_{0,1}², a_{0,1} a_{0,2}
    assert torch.allclose(fc[:, 0], a[:, 0].real ** 2) and torch.allclose(fc[:, 1], (a[:, 0] * a[:, 1].conj()).real)


def test_bispectrum_triples_and_value(fb):
    m = torch.tensor([0, 1, 1, 2, 3, 0])
    t = bispectrum_triples(m)
    assert bool((m[t[:, 0]] + m[t[:, 1]] == m[t[:, 2]]).all()) and bool((t[:, 0] <= t[:, 1]).all())
    # brute force count of (i ≤ j, l) with m_i + m_j = m_l
    n = sum(1 for i in range(6) for j in range(i, 6) for l in range(6) if m[i] + m[j] == m[l])
    assert t.shape[0] == n
    w = torch.tensor([1.0, 5, 4, 3, 2, 0.1])
    top = bispectrum_triples(m, weight=w, max_triples=3)
    scores = sorted((float(w[i] * w[j] * w[l]) for i, j, l in t.tolist()), reverse=True)
    assert sorted((float(w[i] * w[j] * w[l]) for i, j, l in top.tolist()), reverse=True) == scores[:3]


def test_bispectrum_invariant_to_rotation(fb, noisy_set):
    imgs, _, noise_var, g = noisy_set
    a = fb.expand(imgs[::3])
    N = a.shape[0]
    psi = torch.rand(N, generator=g, dtype=torch.float64) * 2 * math.pi
    # one call on the stack [images; rotated images]: row i and row N + i must agree
    f = bispectrum_features(torch.cat([a, fb.rotate(a, psi)]), fb, n_features=16, noise_var=noise_var)
    assert rel(f[N:], f[:N]) < 1e-5  # measured ~1e-13
    # exact pixel rotation by 90° through the images
    x = torch.cat([imgs[::3], rot90_exact(imgs[::3], 1)])
    for kind in ("bispectrum", "power"):
        e = embed(x, kind, n_features=16)
        assert rel(e[N:], e[:N]) < 1e-5, kind
    # sPCA route by hand: one bispectrum entry b_i b_j conj(b_l) from the Wiener coefficients
    spca = steerable_pca(torch.cat([a, fb.rotate(a, psi)]), fb, n_components=40, noise_var=noise_var)
    b = spca.wiener()
    (i, j, l), = bispectrum_triples(spca.m, weight=spca.eigenvalues, max_triples=1).tolist()
    B = b[:, i] * b[:, j] * b[:, l].conj()
    assert int(spca.m[i] + spca.m[j]) == int(spca.m[l])
    assert float((B[N:] - B[:N]).abs().max() / B.abs().max()) < 1e-10


def rot90_periodic(img: torch.Tensor, k: int = 1) -> torch.Tensor:
    """90° rotation about D//2 on the periodic grid: torch.rot90 over (y, x), then a roll of 1 along y (even D)."""
    for _ in range(k % 4):
        img = torch.roll(torch.rot90(img, 1, dims=(-2, -1)), 1, dims=-2)
    return img


def test_invariants_under_arbitrary_pixel_rotation(fb):
    """Analytically rotated templates: features move far less than between templates."""
    angles = [0.0, 0.4, 1.9, 3.7]
    imgs = torch.stack([rotated_template(k, p) for k in range(3) for p in angles])
    ratios = {}
    for name, f in [("acf", acf_features(imgs, circular=False)), ("acf circular", acf_features(imgs)),
                    ("power", power_spectrum_features(fb.expand(imgs), fb, cross=True))]:
        f = f.reshape(3, len(angles), -1)
        within = max(float((f[k, 1:] - f[k, :1]).norm(dim=1).max() / f[k, 0].norm()) for k in range(3))
        between = min(float((f[k] - f[l]).norm(dim=1).min() / f[k, 0].norm())
                      for k in range(3) for l in range(3) if k != l)
        ratios[name] = within / between
    # measured within/between: acf 0.010, acf circular 0.092 (the ACF wraps around the box), power 5.5e-7
    assert ratios["acf"] < 0.03 and ratios["acf circular"] < 0.15 and ratios["power"] < 1e-4, ratios


def test_acf_invariant_to_shift_and_rot90(noisy_set):
    imgs = noisy_set[0][:12]
    # circular ACF: exact for circular shifts and periodic 90° rotations of noisy images
    f = acf_features(imgs, circular=True)
    shifted = torch.stack([torch.roll(im, shifts=(s, -2 * s), dims=(0, 1)) for s, im in enumerate(imgs, -6)])
    assert rel(acf_features(shifted, circular=True), f) < 1e-10
    for k in (1, 2, 3):
        assert rel(acf_features(rot90_periodic(imgs, k), circular=True), f) < 1e-10
    # linear ACF: shifts that keep the particle in the box and exact 90° rotations of clean particles
    clean = torch.stack([rotated_template(k, 0.3) for k in range(3)])
    f = acf_features(clean, circular=False)
    moved = torch.stack([torch.roll(im, shifts=(2 - k, k + 1), dims=(0, 1)) for k, im in enumerate(clean)])
    assert rel(acf_features(moved, circular=False), f) < 1e-3  # measured 1.1e-4 (Gaussian tails reach the box edge)
    for k in (1, 2, 3):  # measured 3.7e-7: the edge row a quarter turn brings in from outside the box is 0
        assert rel(acf_features(rot90_exact(clean, k), circular=False), f) < 1e-6
    # the ACF itself: zero lag at D//2 holds the variance of the mean-free image
    acf = autocorrelation(imgs, circular=True)
    x = imgs - imgs.mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(acf[:, D // 2, D // 2], (x ** 2).mean(dim=(1, 2)))
    # a lag (1, 0) by hand, periodic and linear
    assert torch.allclose(acf[:, D // 2, D // 2 + 1], (x * torch.roll(x, -1, dims=2)).mean(dim=(1, 2)))
    lin = autocorrelation(clean, circular=False)
    by_hand = (clean[:, :-2, :-1] * clean[:, 2:, 1:]).sum(dim=(1, 2)) / D ** 2  # lag (x, y) = (1, 2)
    assert torch.allclose(lin[:, D // 2 + 2, D // 2 + 1], by_hand)


def test_nearest_neighbours_brute_force():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 7))
    nn = nearest_neighbours(X, 4)
    Xc = X - X.mean(1, keepdims=True)
    corr = (Xc @ Xc.T) / np.outer(np.linalg.norm(Xc, axis=1), np.linalg.norm(Xc, axis=1))
    np.fill_diagonal(corr, -np.inf)
    truth = np.argsort(-corr, axis=1, kind="stable")[:, :4]
    assert np.array_equal(nn, truth)
    nn_e = nearest_neighbours(torch.as_tensor(X), 2, metric="euclidean")
    d = np.linalg.norm(X[:, None] - X[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert np.array_equal(nn_e, np.argsort(d, axis=1, kind="stable")[:, :2])
    with pytest.raises(InputError):
        nearest_neighbours(X, 40)


def test_mirror_aware_neighbours_brute_force():
    """With ``mirrored`` features each neighbour is ranked by the nearer of its two hands (brute force)."""
    rng = np.random.default_rng(5)
    X, Xm = rng.normal(size=(30, 6)), rng.normal(size=(30, 6))
    nn = nearest_neighbours(X, 5, mirrored=Xm)

    def unit(a):
        a = a - a.mean(1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    U, Um = unit(X), unit(Xm)
    corr = np.maximum(U @ U.T, U @ Um.T)  # the nearer hand
    np.fill_diagonal(corr, -np.inf)
    assert np.array_equal(nn, np.argsort(-corr, axis=1, kind="stable")[:, :5])


def test_image_neighbours_find_the_mirrored_copy():
    """A set holding images and their mirror images: with mirrors each image's nearest neighbour is its own
    mirrored copy (the same bispectrum in the other hand); without, it usually is not."""
    from cryoscape.methods.class2d.cluster import image_neighbours
    from cryoscape.physics.transform2d import mirror_images

    gen = torch.Generator().manual_seed(0)
    base = torch.stack([gaussians([(3 * math.cos(a), 5 * math.sin(2 * a)), (-4, 2 * math.sin(a))], D=32)
                        for a in torch.rand(20, generator=gen).tolist()])
    images = torch.cat([base, mirror_images(base)])
    nb = image_neighbours(images, 1, n_features=32, n_components=30)[:, 0]
    assert np.array_equal(nb, np.r_[np.arange(20, 40), np.arange(20)])


@pytest.mark.parametrize("kind,method", [("acf", "kmeans"), ("power", "kmeans"), ("bispectrum", "kmeans"),
                                         ("bispectrum", "gmm")])
def test_clustering_recovers_templates(noisy_set, kind, method):
    imgs, labels, noise_var, _ = noisy_set
    f = embed(imgs, kind, noise_var=noise_var)
    pred = cluster_features(f, 3, method=method, seed=0)
    assert adjusted_rand_score(labels, pred) > 0.9
    assert np.array_equal(pred, cluster_features(f, 3, method=method, seed=0))  # deterministic


def test_acf_clustering_with_rot90_and_shifts(noisy_set):
    """Pixel rotations by 90° multiples and integer circular shifts (±3 px): the ACF embedding ignores both."""
    imgs, labels, _, g = noisy_set
    k = torch.randint(0, 4, (imgs.shape[0],), generator=g)
    s = torch.randint(-3, 4, (imgs.shape[0], 2), generator=g)
    moved = torch.stack([torch.roll(rot90_exact(im, int(kk)), (int(a), int(b)), dims=(0, 1))
                         for im, kk, (a, b) in zip(imgs, k, s)])
    pred = cluster_features(embed(moved, "acf"), 3, seed=1)
    assert adjusted_rand_score(labels, pred) > 0.9


def test_bad_input():
    X = np.zeros((5, 3))
    with pytest.raises(InputError):
        cluster_features(X, 6)
    with pytest.raises(InputError):
        cluster_features(np.full((5, 3), np.nan), 2)
    with pytest.raises(InputError):
        cluster_features(X, 2, method="spectral")
    with pytest.raises(InputError):
        embed(torch.zeros(3, 8, 9))
    with pytest.raises(InputError):
        embed(torch.full((3, 8, 8), float("nan")))
    with pytest.raises(InputError):
        embed(torch.zeros(3, 8, 8), kind="pixels")
