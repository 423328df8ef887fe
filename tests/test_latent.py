"""Latent-space tools and heterogeneity metrics against planted truths."""

import sys

import numpy as np
import pytest
import torch

from cryoscape.analysis.fsc import fsc, fsc_auc
from cryoscape.analysis.heterogeneity import neighborhood_similarity, per_image_fsc_auc, per_state_fsc_auc
from cryoscape.analysis.latent import kmeans, nearest_to, pc_trajectory, pca, umap_embed


def _random_rotation(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_pca_recovers_planted_directions_and_variances():
    rng = np.random.default_rng(0)
    Q = _random_rotation(5, rng)
    sd = np.array([5.0, 2.0, 1.0, 0.5, 0.1])
    z = (rng.normal(size=(20000, 5)) * sd) @ Q.T + np.arange(5)  # column j of Q has std sd[j]
    proj, comps, ratio, mean = pca(z)
    assert np.allclose(mean, np.arange(5), atol=0.1)
    for j in range(5):
        assert abs(abs(comps[j] @ Q[:, j]) - 1) < 1e-3, j
    assert np.allclose(ratio, sd ** 2 / (sd ** 2).sum(), rtol=0.05)
    assert np.allclose(proj @ comps + mean, z)  # all components: exact reconstruction
    p2, c2, r2, _ = pca(z, n_components=2)
    assert p2.shape == (20000, 2) and c2.shape == (2, 5) and np.allclose(r2, ratio[:2])


def test_pc_trajectory_spans_the_percentiles_at_the_mean():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5000, 3)) * [3.0, 1.0, 0.2]
    traj = pc_trajectory(z, 0, 7, (5, 95))
    proj, comps, _, mean = pca(z)
    t = (traj - mean) @ comps.T
    assert traj.shape == (7, 3)
    assert np.allclose(t[:, 1:], 0, atol=1e-12)  # other PCs at the mean
    assert np.allclose(t[:, 0], np.linspace(*np.percentile(proj[:, 0], [5, 95]), 7))
    assert abs(t[0, 0] + 1.645 * 3) < 0.3 and abs(t[-1, 0] - 1.645 * 3) < 0.3  # ±1.645 σ of a normal


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    rng = np.random.default_rng(2)
    true_c = rng.normal(size=(5, 4)) * 20
    truth = rng.integers(0, 5, 3000)
    z = true_c[truth] + rng.normal(size=(3000, 4))
    labels, centres = kmeans(z, 5, seed=0)
    # the same partition up to a permutation of the labels
    pairs = set(zip(labels.tolist(), truth.tolist()))
    assert len(pairs) == 5 and len({a for a, _ in pairs}) == 5
    for a, b in pairs:
        assert np.linalg.norm(centres[a] - true_c[b]) < 0.2
    l2, c2 = kmeans(z, 5, seed=0)
    assert np.array_equal(labels, l2) and np.array_equal(centres, c2)
    # on-data centres: the particle nearest each centre, checked by brute force
    near = nearest_to(z, centres, chunk=700)
    brute = ((z[:, None] - centres[None]) ** 2).sum(-1).argmin(0)
    assert np.array_equal(near, brute)


def test_kmeans_depends_on_seed_on_ambiguous_data():
    z = np.random.default_rng(3).normal(size=(500, 2))
    runs = {tuple(kmeans(z, 6, seed=s, n_init=1)[0][:50]) for s in range(5)}
    assert len(runs) > 1


def test_umap_import_error_is_clear(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # makes "import umap" raise ImportError
    with pytest.raises(ImportError, match="pip install umap-learn"):
        umap_embed(np.zeros((50, 3)))


@pytest.mark.slow
def test_umap_embed_separates_clusters():
    pytest.importorskip("umap")
    rng = np.random.default_rng(4)
    truth = np.repeat([0, 1], 200)
    z = np.array([[0.0] * 8, [10.0] * 8])[truth] + rng.normal(size=(400, 8))
    e = umap_embed(z, seed=0)
    assert e.shape == (400, 2)
    assert np.array_equal(e, umap_embed(z, seed=0))
    labels, _ = kmeans(e, 2)
    assert len(set(zip(labels.tolist(), truth.tolist()))) == 2


def _brute_similarity(z, t, k):
    def knn(x):
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1)[:, :k]
    a, b = knn(z), knn(t)
    return np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(z))])


def test_neighborhood_similarity_matches_brute_force_and_extremes():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(300, 3))
    z = np.tanh(t @ rng.normal(size=(3, 6))) + 0.3 * rng.normal(size=(300, 6))  # distorted, noisy copy
    res = neighborhood_similarity(z, t, k_values=[3, 10, 40], block=37)
    for k, s in zip(res["k"], res["similarity"]):
        assert s == pytest.approx(_brute_similarity(z, t, k), abs=1e-12)

    # 5,000 points: an isometric copy scores 1, a random pairing scores chance k/(N−1)
    t = rng.normal(size=(5000, 4))
    z = t @ _random_rotation(4, rng) * 3.0 + 7.0
    iso = neighborhood_similarity(z, t)
    assert iso["k"] == list(range(50, 501, 50)) and np.allclose(iso["similarity"], 1.0) and iso["mean"] == 1.0
    rnd = neighborhood_similarity(rng.normal(size=(5000, 8)), t)
    assert np.allclose(rnd["similarity"], rnd["chance"], rtol=0.15, atol=0.003)
    one_d = neighborhood_similarity(t[:, 0] * 2, t[:, 0])  # (N,) truth accepted
    assert np.allclose(one_d["similarity"], 1.0)
    sub = neighborhood_similarity(z, t, subsets=5)
    assert sub["n_points"] == 1000 and np.allclose(sub["similarity"], 1.0) and np.allclose(sub["std"], 0)


@pytest.fixture(scope="module")
def state_maps():
    """Four (24, 24, 24) maps of Gaussian atoms, the states moved apart."""
    from cryoscape.physics import atoms_to_volume
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 3, generator=g, dtype=torch.float64) * 5
    maps = []
    for s in range(4):
        c = base.clone()
        c[:20, 0] += 2.0 * s
        maps.append(atoms_to_volume(c, 2.0, 24, 1.5).numpy())
    return np.stack(maps)


def test_fsc_auc_metrics_with_true_and_noisy_decoders(state_maps):
    D = 24
    perfect = (D // 2 - 1) / D  # |FSC| = 1 in every shell
    assert fsc_auc(fsc(state_maps[0], state_maps[0]), D) == pytest.approx(perfect)
    rng = np.random.default_rng(6)
    state_of = rng.integers(0, 4, 200)
    z = np.stack([state_of, rng.normal(size=200) * 0.01], 1)  # z[:, 0] is the state

    def exact(zk):
        return state_maps[np.rint(zk[:, 0]).astype(int)]

    def noisy(zk):
        m = exact(zk)
        return m + rng.normal(size=m.shape) * m.std()

    res = per_image_fsc_auc(exact, z, state_maps, state_of, n_sample=30, seed=1)
    assert len(res["values"]) == 30 and len(set(res["indices"])) == 30
    assert np.allclose(res["values"], perfect) and res["mean"] == pytest.approx(perfect)
    assert res["indices"] == per_image_fsc_auc(exact, z, state_maps, state_of, n_sample=30, seed=1)["indices"]
    worse = per_image_fsc_auc(noisy, z, state_maps, state_of, n_sample=30, seed=1)
    assert worse["mean"] < perfect - 0.05
    wrong = per_image_fsc_auc(lambda zk: state_maps[(np.rint(zk[:, 0]).astype(int) + 2) % 4], z, state_maps,
                              state_of, n_sample=30, seed=1)
    assert wrong["mean"] < perfect - 0.01
    per_state = per_state_fsc_auc(exact, z, state_maps, state_of)
    assert per_state["states"] == [0, 1, 2, 3] and np.allclose(per_state["values"], perfect)
    mask = np.ones((D,) * 3)
    assert per_state_fsc_auc(noisy, z, state_maps, state_of, mask=mask)["mean"] < perfect - 0.05


def test_latent_plots(tmp_path):
    from cryoscape.report.latent_plots import latent_density, latent_scatter, loss_curves
    rng = np.random.default_rng(7)
    p = rng.normal(size=(500, 2))
    labels, centres = kmeans(p, 3)
    history = [{"epoch": i, "loss": 1 / (i + 1), "kld": 0.1 * i} for i in range(5)]
    for path in (latent_scatter(tmp_path / "a.png", p, clusters=labels, centres=centres),
                 latent_scatter(tmp_path / "b.png", p, color=p[:, 0], color_label="x"),
                 latent_density(tmp_path / "c.png", p),
                 loss_curves(tmp_path / "d.png", history)):
        assert path.stat().st_size > 2000
