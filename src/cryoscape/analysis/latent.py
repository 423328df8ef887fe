"""Latent-space tools: PCA, k-means, UMAP and principal-component trajectories.

Latent codes are ``z`` of shape ``(N, d)`` (one row per particle, any units). Everything here is plain
numpy except :func:`umap_embed`, which needs the optional ``umap-learn`` package.

- PCA: ``z − mean = U S Vᵀ`` (thin SVD); components are the rows of ``Vᵀ``, the projection is
  ``(z − mean) Vᵀᵀ = U S`` and the explained-variance ratio of component ``j`` is ``S_j² / Σ S²``.
- k-means: Lloyd's iterations minimising the inertia ``Σ_i |z_i − c_{label_i}|²``, started by k-means++
  (Arthur & Vassilvitskii 2007: each next centre drawn with probability ∝ squared distance to the nearest
  centre already chosen); the best of ``n_init`` seeded starts is kept.
- "On-data" centres (cryoDRGN's ``analyze``): the particle whose ``z`` is nearest each centre.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pca", "kmeans", "nearest_to", "umap_embed", "pc_trajectory"]


def _as_2d(z, name: str = "z") -> np.ndarray:
    a = np.asarray(z, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or len(a) == 0:
        raise ValueError(f"{name} must be (N, d) with N ≥ 1, got shape {np.shape(z)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def pca(z, n_components: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of ``z`` (N, d).

    Returns ``(projected (N, d'), components (d', d), explained_variance_ratio (d',), mean (d,))`` with
    ``d' = n_components`` (default ``min(N, d)``), components ordered by decreasing variance and each
    component's sign fixed so that its largest-magnitude entry is positive (a reproducible choice).
    ``z ≈ projected @ components + mean`` (exact when ``d' = min(N, d)``).
    """
    a = _as_2d(z)
    mean = a.mean(axis=0)
    U, S, Vt = np.linalg.svd(a - mean, full_matrices=False)
    sign = np.sign(Vt[np.arange(len(Vt)), np.abs(Vt).argmax(axis=1)])
    sign[sign == 0] = 1
    U, Vt = U * sign, Vt * sign[:, None]
    var = S ** 2
    total = var.sum()
    ratio = var / total if total > 0 else np.zeros_like(var)
    k = len(S) if n_components is None else int(n_components)
    if not 1 <= k <= len(S):
        raise ValueError(f"n_components must be in 1..{len(S)}, got {n_components}")
    return (U * S)[:, :k], Vt[:k], ratio[:k], mean


def _sq_dist(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``(N, k)`` squared Euclidean distances ``|a|² − 2 a·c + |c|²`` (clipped at 0)."""
    d = (a * a).sum(1)[:, None] - 2 * a @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_pp(a: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = len(a)
    centres = np.empty((k, a.shape[1]))
    centres[0] = a[rng.integers(n)]
    d2 = _sq_dist(a, centres[:1])[:, 0]
    for j in range(1, k):
        total = d2.sum()
        i = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres[j] = a[i]
        d2 = np.minimum(d2, _sq_dist(a, centres[j:j + 1])[:, 0])
    return centres


def _assign(a: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre: ``argmin_c (|c|² − 2 a·c)`` (``|a|²`` is the same for every centre)."""
    return ((centres * centres).sum(1)[None, :] - 2 * a @ centres.T).argmin(1)


def _lloyd(a: np.ndarray, centres: np.ndarray, max_iter: int, tol: float):
    k, labels = len(centres), None
    for _ in range(max_iter):
        new_labels = _assign(a, centres)
        if labels is not None and np.array_equal(new_labels, labels):
            break  # a fixed point: the centres cannot move any more
        labels = new_labels
        counts = np.bincount(labels, minlength=k)
        new = np.stack([np.bincount(labels, weights=a[:, j], minlength=k) for j in range(a.shape[1])], 1)
        empty = counts == 0
        new[~empty] /= counts[~empty, None]
        if empty.any():  # re-seed an empty cluster at the points farthest from their centres
            far = np.argsort(-((a - centres[labels]) ** 2).sum(1))[: int(empty.sum())]
            new[empty] = a[far]
        shift = ((new - centres) ** 2).sum()
        centres = new
        if shift <= tol:
            break
    labels = _assign(a, centres)
    return labels, centres, float(((a - centres[labels]) ** 2).sum())


def kmeans(z, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300,
           tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """k-means clustering of ``z`` (N, d) into ``k`` clusters.

    k-means++ starts, ``n_init`` of them from ``numpy.random.default_rng(seed)`` (so the result is a
    function of the seed), each refined by Lloyd's iterations until the sum of the centres' squared moves
    is at most ``tol`` × the mean variance of the coordinates (scikit-learn's criterion) or ``max_iter``
    iterations; the start with the lowest inertia wins.
    Returns ``(labels (N,) int64 in 0..k−1, centres (k, d))``.
    """
    a = _as_2d(z)
    if not 1 <= k <= len(a):
        raise ValueError(f"k must be in 1..{len(a)}, got {k}")
    if n_init < 1 or max_iter < 1:
        raise ValueError("n_init and max_iter must be ≥ 1")
    rng = np.random.default_rng(seed)
    scale = a.var(0).mean() or 1.0
    best = None
    for _ in range(n_init):
        labels, centres, inertia = _lloyd(a, _kmeans_pp(a, k, rng), max_iter, tol * scale)
        if best is None or inertia < best[2]:
            best = (labels, centres, inertia)
    return best[0].astype(np.int64), best[1]


def nearest_to(z, points, chunk: int = 4096) -> np.ndarray:
    """For each row of ``points`` (m, d), the index of the row of ``z`` (N, d) nearest to it (Euclidean):
    ``(m,)`` int64. Computed in chunks of ``chunk`` rows of ``z`` (memory ``chunk × m``)."""
    a, p = _as_2d(z), _as_2d(points, "points")
    if a.shape[1] != p.shape[1]:
        raise ValueError(f"z has {a.shape[1]} dimensions, points have {p.shape[1]}")
    best_d = np.full(len(p), np.inf)
    best_i = np.zeros(len(p), dtype=np.int64)
    for s in range(0, len(a), chunk):
        d2 = _sq_dist(a[s:s + chunk], p)  # (chunk, m)
        i = d2.argmin(0)
        d = d2[i, np.arange(len(p))]
        better = d < best_d
        best_d[better], best_i[better] = d[better], i[better] + s
    return best_i


def umap_embed(z, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """2-D UMAP embedding ``(N, 2)`` float32 of ``z`` (N, d) with ``umap-learn`` (McInnes et al. 2018).

    A fixed ``seed`` makes the result reproducible (umap-learn then runs single-threaded). The first call
    in a process compiles umap-learn's numba code (tens of seconds on a laptop). Raises ImportError with
    the install command when umap-learn is missing.
    """
    try:
        import umap
    except ImportError:
        raise ImportError("UMAP needs the optional package umap-learn: pip install umap-learn "
                          "(or pip install 'cryoscape[umap]')") from None
    import warnings
    a = _as_2d(z).astype(np.float32)
    if len(a) <= n_neighbors:
        raise ValueError(f"UMAP needs more than n_neighbors={n_neighbors} points, got {len(a)}")
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": expected with a seed
        warnings.simplefilter("ignore", UserWarning)
        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, n_components=2, random_state=seed)
        return np.asarray(reducer.fit_transform(a), dtype=np.float32)


def pc_trajectory(z, pc_index: int, n_points: int, percentiles: tuple[float, float] = (5, 95)) -> np.ndarray:
    """Points ``(n_points, d)`` in z space along principal component ``pc_index`` (0-based).

    The projection ``p_j = (z − mean) · v_j`` of the data on component ``j = pc_index`` is traversed from
    its ``percentiles[0]``-th to its ``percentiles[1]``-th percentile in equal steps; the other components
    stay at 0, i.e. at the mean: ``z(t) = mean + t v_j`` (cryoDRGN's ``pc_traversal`` with ``--lim``).
    """
    a = _as_2d(z)
    proj, comps, _, mean = pca(a)
    if not 0 <= pc_index < len(comps):
        raise ValueError(f"pc_index must be in 0..{len(comps) - 1}, got {pc_index}")
    if n_points < 1:
        raise ValueError(f"n_points must be ≥ 1, got {n_points}")
    lo, hi = np.percentile(proj[:, pc_index], percentiles)
    t = np.linspace(lo, hi, n_points)
    return mean[None, :] + t[:, None] * comps[pc_index][None, :]
