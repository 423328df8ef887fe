"""Ground-truth metrics of heterogeneous reconstruction, as CryoBench defines them (Jeon et al. 2024,
"CryoBench: diverse and challenging datasets for the heterogeneity problem in cryo-EM", NeurIPS D&B;
reference code github.com/ml-struct-bio/CryoBench, ``metrics/fsc`` and ``metrics/neighborhood_similarity``).

- Per-image FSC-AUC: for sampled images ``i``, decode the map at the image's own latent ``z_i`` and
  compare it with the true map of the image's state: ``AUC_i = ∫ |FSC(f)| df`` over ``f = r / D``,
  ``r = 0 .. D//2 − 1`` (trapezoid rule; CryoBench integrates ``|FSC|``, perfect maps give
  ``(D/2 − 1)/D ≈ 0.49``). CryoBench samples every ``N // n``-th image; here a seeded random sample (or
  given indices).
- Per-state FSC-AUC: the map decoded at the mean latent of each state against that state's true map.
- Neighbourhood similarity: for every point, the fraction of its ``k`` nearest neighbours in latent space
  that are also among its ``k`` nearest neighbours in ground-truth space,
  ``s(k) = mean_i |N_k^z(i) ∩ N_k^truth(i)| / k`` (Euclidean; the point itself excluded). CryoBench plots
  it against the "neighbourhood radius" ``k / N`` from 1 % to 10 % of the points (``k`` = 200 .. 2,000 by
  200 on 20,000-point subsets, averaged over 5 interleaved subsets); the defaults here follow that. A random
  latent space scores about ``k / (N − 1)``, a perfect one 1. (CryoBench counts the point itself, giving
  ``(m + 1)/k``; the difference is ``1/k``.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .fsc import fsc, fsc_auc

__all__ = ["per_image_fsc_auc", "per_state_fsc_auc", "neighborhood_similarity", "map_auc"]


def map_auc(pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None, absolute: bool = True) -> float:
    """FSC-AUC of one ``(D, D, D)`` map against another: :func:`fsc_auc` of ``|FSC|`` (``absolute``, as
    CryoBench) or of the signed FSC."""
    curve = fsc(pred, true, mask)
    return fsc_auc(np.abs(curve) if absolute else curve, pred.shape[0])


def _summary(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "values": [float(x) for x in v]}


def _decode(decode_map: Callable, z: np.ndarray, batch: int):
    for s in range(0, len(z), batch):
        maps = np.asarray(decode_map(z[s:s + batch]))
        if maps.ndim != 4 or len(maps) != len(z[s:s + batch]):
            raise ValueError(f"decode_map must return (k, D, D, D) maps, got shape {maps.shape}")
        yield from maps


def per_image_fsc_auc(decode_map: Callable, z, true_maps_by_state, state_of, n_sample: int = 1000, seed: int = 0,
                      mask: np.ndarray | None = None, indices=None, batch: int = 8, absolute: bool = True) -> dict:
    """CryoBench's per-image FSC-AUC.

    Args:
        decode_map: ``z (k, d) → (k, D, D, D)`` maps (numpy or array-like).
        z: ``(N, d)`` latents. true_maps_by_state: ``maps[s]`` is the ``(D, D, D)`` true map of state ``s``
            (an ``(S, D, D, D)`` array, a list or a dict). state_of: ``(N,)`` state of each image.
        n_sample: images drawn without replacement by ``numpy.random.default_rng(seed)`` (all if ≥ N);
            ``indices`` overrides the draw. mask: real-space mask applied to both maps.
    Returns:
        ``{"mean", "std", "median", "values" (per image), "indices", "states", "per_state_mean"}``.
    """
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    state_of = np.asarray(state_of)
    if len(state_of) != len(z):
        raise ValueError(f"state_of has {len(state_of)} entries, z has {len(z)} rows")
    if indices is None:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(len(z), size=min(n_sample, len(z)), replace=False))
    indices = np.asarray(indices, np.int64)
    values = [map_auc(m, np.asarray(true_maps_by_state[state_of[i]]), mask, absolute)
              for i, m in zip(indices, _decode(decode_map, z[indices], batch))]
    states = state_of[indices]
    per_state = {s.item(): float(np.mean([v for v, t in zip(values, states) if t == s])) for s in np.unique(states)}
    return {**_summary(values), "indices": indices.tolist(), "states": states.tolist(), "per_state_mean": per_state}


def per_state_fsc_auc(decode_map: Callable, z, true_maps_by_state, state_of, mask: np.ndarray | None = None,
                      batch: int = 8, absolute: bool = True) -> dict:
    """FSC-AUC of the map decoded at each state's mean latent ``mean_{i: state_i = s} z_i`` against the
    state's true map. Returns ``{"mean", "std", "median", "values" (per state), "states"}``."""
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    state_of = np.asarray(state_of)
    if len(state_of) != len(z):
        raise ValueError(f"state_of has {len(state_of)} entries, z has {len(z)} rows")
    states = np.unique(state_of)
    zmean = np.stack([z[state_of == s].mean(0) for s in states])
    values = [map_auc(m, np.asarray(true_maps_by_state[s]), mask, absolute)
              for s, m in zip(states, _decode(decode_map, zmean, batch))]
    return {**_summary(values), "states": states.tolist()}


def _knn(tree, x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """``(len(rows), k)`` indices of the ``k`` nearest other points of ``x[rows]`` (self removed, even
    when duplicates make it come later than first)."""
    _, idx = tree.query(x[rows], k=k + 1, workers=-1)
    self_hit = idx == rows[:, None]
    self_hit[~self_hit.any(1), -1] = True  # self not among the k+1: drop the farthest instead
    return idx[~self_hit].reshape(len(rows), k)


def _matches(a: np.ndarray, b: np.ndarray, n: int, k_max: int) -> np.ndarray:
    """Over the rows of two ``(B, k_max)`` neighbour lists (nearest first) of points among ``n``:
    ``out[k − 1]`` = total number of indices in both ``a[:, :k]`` and ``b[:, :k]``, for ``k = 1 .. k_max``.

    A shared neighbour at rank ``r_a`` in ``a`` and ``r_b`` in ``b`` counts for every ``k > max(r_a, r_b)``:
    a ``(B, n)`` table of ranks in ``b`` gives ``r_b`` for each entry of ``a``.
    """
    rows = np.arange(len(a))[:, None]
    rank_b = np.full((len(a), n), k_max, dtype=np.int32)
    rank_b[rows, b] = np.arange(k_max, dtype=np.int32)
    r = np.maximum(rank_b[rows, a], np.arange(k_max, dtype=np.int32))
    return np.cumsum(np.bincount(r.ravel(), minlength=k_max + 1)[:k_max])


def _similarity(z: np.ndarray, t: np.ndarray, ks: np.ndarray, block: int) -> np.ndarray:
    from scipy.spatial import cKDTree
    n, k_max = len(z), int(ks.max())
    tz, tt = cKDTree(z), cKDTree(t)
    total = np.zeros(k_max)
    for s in range(0, n, block):
        rows = np.arange(s, min(n, s + block))
        total += _matches(_knn(tz, z, rows, k_max), _knn(tt, t, rows, k_max), n, k_max)
    return total[ks - 1] / (n * ks)


def neighborhood_similarity(z, truth, k_values=None, subsets: int = 1, block: int | None = None) -> dict:
    """CryoBench's neighbourhood similarity between latents ``z`` (N, d) and ground truth ``truth``
    ((N,) or (N, m), e.g. the true conformation coordinate or flattened atom positions).

    Args:
        k_values: neighbourhood sizes; default 1 %, 2 %, … 10 % of the points of a subset (CryoBench's range).
        subsets: split the points into this many interleaved subsets (``start::subsets``), score each and
            report the mean and std over them (CryoBench uses 5 on 100,000 images).
        block: rows per block (default: at most 4 million neighbour entries and 16 million ranks). Memory is
            ``O(block × (N + max k))``: no N × N matrix (neighbours from scipy's cKDTree).
    Returns:
        ``{"k": [...], "fraction_of_points": [k / n], "similarity": [...], "std": [...] (over subsets),
        "chance": [k / (n − 1)], "mean": mean over k, "n_points": n per subset}``.
    Ties (equal distances, e.g. discrete state labels as truth) are broken by the KD-tree's order.
    """
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    t = np.asarray(truth, np.float64).reshape(len(truth), -1)
    if len(z) != len(t):
        raise ValueError(f"z has {len(z)} rows, truth has {len(t)}")
    if subsets < 1 or len(z) // subsets < 2:
        raise ValueError(f"need at least 2 points per subset ({len(z)} points, {subsets} subsets)")
    n = len(z) // subsets
    if k_values is None:
        ks = np.unique(np.clip(np.rint(np.arange(1, 11) * n / 100).astype(np.int64), 1, n - 1))
    else:
        ks = np.unique(np.asarray(k_values, np.int64))
    if ks.min() < 1 or ks.max() > n - 1:
        raise ValueError(f"k must be in 1..{n - 1} (points per subset − 1), got {ks.tolist()}")
    block = block or max(1, min(4_000_000 // int(ks.max()), 16_000_000 // n))
    scores = np.stack([_similarity(z[s::subsets][:n], t[s::subsets][:n], ks, block) for s in range(subsets)])
    sim = scores.mean(0)
    return {"k": ks.tolist(), "fraction_of_points": (ks / n).tolist(), "similarity": sim.tolist(),
            "std": scores.std(0).tolist(), "chance": (ks / (n - 1)).tolist(), "mean": float(sim.mean()),
            "n_points": n}
