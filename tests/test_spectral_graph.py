"""Spectral embedding against known structure: a 1-D conformational path and a two-state mixture."""

import numpy as np
import pytest
import torch

from cryoscape.analysis.pointcloud import pointcloud_errors
from cryoscape.methods.spectral import gaussian_affinity, normalized_laplacian, spectral_embedding


def _path_features(adk, n=600, noise=1.0, seed=0):
    """Noisy Cα coordinates of particles drawn from the AdK closed→open path: (features, frame index)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, adk.n_frames, n)
    x = adk.coords[frames] + rng.normal(0, noise, (n, *adk.coords.shape[1:]))
    return torch.as_tensor(x.reshape(n, -1)), frames


def test_first_nontrivial_eigenvector_follows_the_path(adk):
    f, frames = _path_features(adk)
    V, lam, sigma = spectral_embedding(f, 4)
    assert abs(float(lam[0])) < 1e-10 and (lam[1:] > 0).all()
    r = np.corrcoef(V[:, 1].numpy(), frames)[0, 1]
    assert abs(r) > 0.9, r
    # the trivial eigenvector is D^{1/2} 1, normalised
    W, _ = gaussian_affinity(f, sigma)
    d = W.sum(1).sqrt()
    assert torch.allclose(V[:, 0].abs(), d / d.norm(), atol=1e-8)


def test_sparse_knn_embedding_agrees_with_dense_on_the_path(adk):
    f, frames = _path_features(adk, n=500, seed=1)
    Vk, lamk, _ = spectral_embedding(f, 3, method="knn", n_neighbors=40)
    r = np.corrcoef(Vk[:, 1].numpy(), frames)[0, 1]
    assert abs(r) > 0.9, r
    assert abs(float(lamk[0])) < 1e-8


def test_laplacian_properties():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(50, 5, generator=g, dtype=torch.float64)
    W, _ = gaussian_affinity(f, 1.0)
    L = normalized_laplacian(W)
    ev = torch.linalg.eigvalsh(L)
    assert torch.allclose(L, L.T) and ev.min() > -1e-10 and ev.max() < 2 + 1e-10


def test_pointcloud_errors_on_known_displacements():
    g = torch.Generator().manual_seed(3)
    true = torch.randn(4, 20, 3, generator=g, dtype=torch.float64) * 10
    shift = torch.zeros_like(true)
    shift[:, :, 0] = torch.arange(20, dtype=torch.float64) * 0.25  # atom i off by 0.25·i Å along x
    m = pointcloud_errors(true + shift, true)
    assert np.isclose(m["avg_error_A"], 0.25 * 19 / 2)
    assert np.isclose(m["avg_max_error_A"], 0.25 * 19) and np.isclose(m["max_error_A"], 0.25 * 19)
    assert np.isclose(m["frac_within_3A"], 13 / 20)  # 0.25·i ≤ 3 for i ≤ 12
    assert np.allclose(m["per_residue_error_A"], 0.25 * np.arange(20))
    # a rigid motion alone costs nothing after superposition
    rigid = pointcloud_errors(true + torch.tensor([5.0, 0, 0], dtype=torch.float64), true)
    assert rigid["avg_error_A"] == 5.0 and rigid["rmsd_aligned_mean_A"] < 1e-10


def test_oracle_map_features_embed_the_path(adk):
    from cryoscape.methods.spectral import oracle_maps
    rng = np.random.default_rng(4)
    frames = rng.integers(0, adk.n_frames, 300)
    x = torch.as_tensor(adk.coords[frames] - adk.coords[frames].mean(axis=1, keepdims=True))
    f = oracle_maps(x, 24, 4.0, blur=6.0, noise_std=0.5, seed=1)
    assert f.shape == (300, 24 ** 3)
    V, _, _ = spectral_embedding(f, 3)
    assert abs(np.corrcoef(V[:, 1].numpy(), frames)[0, 1]) > 0.9


def test_variability_coordinates_from_images_follow_the_path(tmp_path):
    """Image-only features (poses and CTF known, no truth): the embedding's first eigenvector follows the
    AdK closed→open path."""
    from cryoscape.cli.main import main
    from cryoscape.data.particles import load_particles
    from cryoscape.methods.spectral import variability_coordinates
    import pytest
    with pytest.raises(SystemExit):
        main(["simulate", "-n", "1000", "--box", "48", "--apix", "2.5", "--snr", "0.5", "--no-progress",
              "-o", str(tmp_path / "s")])
    data = load_particles(tmp_path / "s" / "particles.star")
    z = variability_coordinates(data, box=24, k=2)
    V, _, _ = spectral_embedding(z, 3)
    frames = np.load(tmp_path / "s" / "truth" / "conformation.npy")
    assert abs(np.corrcoef(V[:, 1].numpy(), frames)[0, 1]) > 0.9


def test_dense_lanczos_embedding_agrees_with_full_eigh(adk):
    """The solver used for 5,000–20,000 particles (float32 dense graph, Lanczos) against ``eigh``."""
    f, frames = _path_features(adk, n=400, seed=2)
    Vd, lamd, sd = spectral_embedding(f, 4, method="dense")
    Vl, laml, sl = spectral_embedding(f, 4, method="dense-lanczos")
    assert sl == pytest.approx(sd)
    torch.testing.assert_close(laml, lamd, atol=1e-5, rtol=0)
    for j in range(4):  # same vectors up to float32 round-off (signs fixed by the same rule)
        assert float((Vl[:, j] - Vd[:, j]).abs().max()) < 1e-3, j


def test_median_distance_in_blocks_equals_the_direct_one():
    """The kernel width (median pair distance) is computed over blocks of pairs, so 16³-voxel features of
    thousands of particles fit in memory; it equals the one-array computation bit for bit."""
    from cryoscape.methods.spectral.graph import _pair_distances, gaussian_affinity
    g = torch.Generator().manual_seed(3)
    f = torch.randn(300, 512, generator=g, dtype=torch.float64)
    iu = torch.triu_indices(300, 300, 1)
    direct = (f[iu[0]] - f[iu[1]]).norm(dim=-1)
    assert torch.equal(_pair_distances(f, iu[0], iu[1], block_bytes=50_000), direct)
    assert gaussian_affinity(f)[1] == float(direct.median())
