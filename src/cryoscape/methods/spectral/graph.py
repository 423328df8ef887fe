"""Spectral embedding of particles: a Gaussian-kernel graph on per-particle features, its normalised
Laplacian, and the eigenvectors of its smallest eigenvalues.

``W_ij = exp(−|f_i − f_j|² / 2σ²)`` (``W_ii = 0``), ``L = I − D^{−1/2} W D^{−1/2}`` with ``D = diag(Σ_j W_ij)``.
The eigenvectors of the ``k`` smallest eigenvalues of ``L`` are the embedding ``v_n ∈ R^k`` (the first is
``∝ D^{1/2} 1``, the graph's trivial mode). The graph is dense up to 20,000 particles: all eigenvectors by
``torch.linalg.eigh`` up to 5,000 (float64), and above, the ``k`` wanted ones by Lanczos
(``scipy.sparse.linalg.eigsh`` on ``D^{−1/2} W D^{−1/2}``, whose largest eigenvalues are ``1 − λ`` of ``L``)
on a float32 affinity (1.6 GB at 20,000; ``eigh`` would need minutes there). Above 20,000, a
k-nearest-neighbour sparse graph and the same Lanczos solver.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["gaussian_affinity", "normalized_laplacian", "spectral_embedding", "DENSE_LIMIT", "EIGH_LIMIT"]

DENSE_LIMIT = 20_000  # dense graph up to here (k-nearest-neighbour sparse above)
EIGH_LIMIT = 5_000  # full dense eigendecomposition up to here (Lanczos above)
_MEDIAN_PAIRS = 2_000_000  # random pairs that estimate the median distance of a large set


def _sq_distances(f: torch.Tensor) -> torch.Tensor:
    n2 = (f * f).sum(-1)
    return (n2[:, None] + n2[None, :] - 2 * f @ f.T).clamp_min(0)


def _pair_distances(f: torch.Tensor, i: torch.Tensor, j: torch.Tensor, block_bytes: int = 2 ** 26) -> torch.Tensor:
    """``|f_i − f_j|`` for index pairs ``(i, j)``, computed in blocks of pairs of about ``block_bytes`` of
    differences (the whole ``(pairs, F)`` array would take 65 GB for 2,000 particles of 16³ features)."""
    step = max(1, block_bytes // (f.shape[1] * f.element_size()))
    return torch.cat([(f[i[s:s + step]] - f[j[s:s + step]]).norm(dim=-1) for s in range(0, len(i), step)])


def gaussian_affinity(features: torch.Tensor, sigma: float | None = None,
                      dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, float]:
    """Dense ``(N, N)`` Gaussian kernel with a zero diagonal, in ``dtype``; ``sigma`` defaults to the median
    pairwise distance (exact up to :data:`EIGH_LIMIT` particles, else over 2 million random pairs, seeded).
    Returns ``(W, sigma)``."""
    f = features.reshape(features.shape[0], -1).to(torch.float64)
    N = len(f)
    if sigma is None:
        if N <= EIGH_LIMIT:
            iu = torch.triu_indices(N, N, 1)
            i, j = iu[0], iu[1]
        else:
            g = torch.Generator().manual_seed(0)
            i, j = torch.randint(0, N, (2, _MEDIAN_PAIRS), generator=g)
            i, j = i[i != j], j[i != j]
        sigma = float(_pair_distances(f, i, j).median())
    W = _sq_distances(f.to(dtype))
    W.mul_(-1 / (2 * sigma ** 2)).exp_()  # in place: one N² array
    W.fill_diagonal_(0)
    return W, sigma


def normalized_laplacian(W: torch.Tensor) -> torch.Tensor:
    """``I − D^{−1/2} W D^{−1/2}`` of a dense affinity."""
    dinv = W.sum(1).clamp_min(1e-300).rsqrt()
    return torch.eye(len(W), dtype=W.dtype, device=W.device) - dinv[:, None] * W * dinv[None, :]


def spectral_embedding(features: torch.Tensor, k: int, sigma: float | None = None, method: str = "auto",
                       n_neighbors: int = 30) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Eigenvectors of the ``k`` smallest eigenvalues of the normalised graph Laplacian.

    Args:
        features: ``(N, ...)`` per-particle features (flattened). k: number of eigenvectors.
        sigma: kernel width (default: median pairwise distance, or of the neighbour distances when sparse).
        method: "dense" (every eigenvector by ``eigh``), "dense-lanczos", "knn" or "auto" (dense up to
            :data:`EIGH_LIMIT` particles, dense-lanczos up to :data:`DENSE_LIMIT`, knn above).
        n_neighbors: neighbours per particle in the sparse graph (symmetrised).
    Returns:
        ``(V (N, k), eigenvalues (k,), sigma)``; columns have unit norm, signs fixed so that each column's
        largest-magnitude entry is positive.
    """
    N = features.shape[0]
    if not 1 <= k < N:
        raise ValueError(f"k must be in 1..{N - 1}, got {k}")
    if method == "auto":
        method = "dense" if N <= EIGH_LIMIT else "dense-lanczos" if N <= DENSE_LIMIT else "knn"
    if method == "dense":
        W, sigma = gaussian_affinity(features, sigma)
        evals, evecs = torch.linalg.eigh(normalized_laplacian(W))
        V, lam = evecs[:, :k], evals[:k]
    elif method == "dense-lanczos":
        W, sigma = gaussian_affinity(features, sigma, torch.float32)
        dinv = W.sum(1, dtype=torch.float64).clamp_min(1e-300).rsqrt().to(W.dtype)
        W.mul_(dinv[:, None]).mul_(dinv[None, :])  # D^{-1/2} W D^{-1/2}, in place
        V, lam = _top_eigenvectors(W.numpy(), k)
    elif method == "knn":
        V, lam, sigma = _knn_embedding(features, k, sigma, n_neighbors)
    else:
        raise ValueError(f"unknown method {method!r}")
    idx = V.abs().argmax(0)
    V = V * torch.sign(V[idx, torch.arange(k)])[None]
    return V, lam, sigma


def _knn_embedding(features: torch.Tensor, k: int, sigma: float | None, n_neighbors: int):
    from scipy.sparse import csr_matrix, diags
    f = features.reshape(features.shape[0], -1).to(torch.float64)
    N = len(f)
    rows, cols, d2s = [], [], []
    for s in range(0, N, 2048):  # exact neighbours by blocks: memory O(block · N)
        blk = f[s:s + 2048]
        d2 = ((blk * blk).sum(-1)[:, None] + (f * f).sum(-1)[None] - 2 * blk @ f.T).clamp_min(0)
        d2[torch.arange(len(blk)), torch.arange(s, s + len(blk))] = float("inf")
        val, ind = torch.topk(d2, n_neighbors, largest=False)
        rows.append(torch.arange(s, s + len(blk)).repeat_interleave(n_neighbors))
        cols.append(ind.reshape(-1))
        d2s.append(val.reshape(-1))
    r, c, d2 = torch.cat(rows).numpy(), torch.cat(cols).numpy(), torch.cat(d2s).numpy()
    if sigma is None:
        sigma = float(np.median(np.sqrt(d2)))
    W = csr_matrix((np.exp(-d2 / (2 * sigma ** 2)), (r, c)), shape=(N, N))
    W = W.maximum(W.T)
    dinv = diags(1 / np.sqrt(np.asarray(W.sum(1)).ravel()))
    V, lam = _top_eigenvectors(dinv @ W @ dinv, k)
    return V, lam, sigma


def _top_eigenvectors(M, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lanczos: the ``k`` largest eigenpairs of the normalised affinity ``M`` (dense array or sparse) →
    ``(V (N, k) float64, λ = 1 − eigenvalue (k,))``, i.e. the smallest of the Laplacian, in order."""
    from scipy.sparse.linalg import eigsh
    evals, evecs = eigsh(M, k=k, which="LA", v0=np.ones(M.shape[0], dtype=M.dtype))
    order = np.argsort(-evals)
    return torch.as_tensor(evecs[:, order], dtype=torch.float64), torch.as_tensor(1 - evals[order], dtype=torch.float64)
