"""Particle-picking metrics: picks matched one-to-one to true particles within a radius (Topaz's evaluation),
then precision, recall, F1, the area under the precision–recall curve, precision at 90 % recall and the share
of duplicate picks.

Matching (per micrograph). A pick ``p`` and a true particle ``t`` may be paired when ``‖p − t‖ ≤ radius``
(pixels). Among all one-to-one pairings (each pick and each particle used at most once) we take one with the
most pairs and, among those, the least ``Σ ‖p − t‖²``: scipy's ``linear_sum_assignment`` on the cost
``c(p, t) = −1 + ε ‖p − t‖² / radius²`` for allowed pairs and ``0`` otherwise, ``ε = 1 / (k + 1)`` with ``k``
the smaller side, so one more pair always outweighs any change of distances. The problem is solved separately on
each connected group of picks and particles linked by allowed pairs (exact: no pairing crosses groups).
Topaz (``topaz/algorithms.py``, ``match_coordinates``) runs the same assignment on ``d² − radius²`` clipped
at 0 and counts pairs with ``d < radius``: it minimises the summed squared distance deficit, which can prefer
one very close pair to two farther ones, and it excludes pairs exactly at the radius. Ours maximises the
number of hits (the optimum for precision and recall) and includes ``d = radius``; on picks from a
non-maximum-suppressed score map with a radius below half the particle spacing the two agree.

Scores, pooled over micrographs (picks ``n``, true particles ``N``, matched picks ``TP``):
- ``precision = TP / n``, ``recall = TP / N``, ``f1 = 2 TP / (n + N)`` (= the harmonic mean), at all picks.
- ``auprc``: Topaz's average precision (``topaz/metrics.py``, ``average_precision``). Picks are sorted by score,
  descending; picks with equal scores form one bucket ``b``. With ``TP_b`` and ``n_b`` the matched and all picks
  with scores ≥ the bucket's, and ``r_b`` the matched picks in the bucket,
  ``AUPRC = Σ_b (TP_b / n_b) · r_b / N`` — the step-wise (non-interpolated) area under the precision–recall
  curve whose recall counts every true particle, including those no pick reaches (so it is at most the final
  recall). It equals scikit-learn's ``average_precision_score`` on the picks' match labels times ``TP / N``.
  The matching is done once, with all picks (as Topaz does), not again at each threshold. Picks without scores
  are one bucket: ``AUPRC = precision · recall``.
- ``precision_at_recall_90``: the interpolated precision at recall 0.9, ``max_b {TP_b / n_b : TP_b / N ≥ 0.9}``
  (the best precision of any score threshold that reaches 90 % recall; PASCAL VOC's interpolation); NaN when
  recall 0.9 is never reached.
- ``duplicate_share``: each pick is attached to its nearest true particle when that particle lies within
  ``radius / 2`` of it; a particle with ``k ≥ 2`` attached picks has ``k − 1`` duplicates (every attached pick but
  one: the best-scored or closest, the count does not depend on which). ``duplicate_share = Σ duplicates / n``.
- ``n_picks``, ``n_true``, ``n_matched``.
0/0 is NaN (precision without picks, recall and AUPRC without true particles, duplicate share without picks).

Micrographs are matched by :func:`cryoscape.io.coords.micrograph_key` (file name without folders and
extension), so picks named ``mic_001`` meet truth named ``Micrographs/mic_001.mrc``. Picks on a micrograph with
no true particle are false positives; true particles on a micrograph without picks are missed.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..io.coords import Coordinates, micrograph_key
from ..io.errors import InputError

__all__ = ["match_picks", "picking_scores", "precision_recall_curve", "average_precision", "duplicate_count"]


def _points(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return a.reshape(0, 2)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{what} must be (n, 2) (x, y) pixels, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} must be finite")
    return a


def _radius(radius) -> float:
    r = float(radius)
    if not np.isfinite(r) or r <= 0:
        raise InputError("radius", f"must be a positive number of pixels, got {radius!r}")
    return r


def match_picks(picks, truth, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of picks to true particles within ``radius`` (module docstring).

    Args:
        picks: ``(n, 2)`` pick centres ``(x, y)`` in pixels.
        truth: ``(m, 2)`` true centres in the same frame.
        radius: largest centre distance of a match (pixels, > 0); a pair at exactly ``radius`` matches.

    Returns:
        ``(i_pick, i_truth)``, int64 ``(k,)`` each, the matched index pairs sorted by ``i_pick``; ``k`` is the
        largest number of disjoint pairs within the radius, and the pairs have the least summed squared
        distance among such matchings.
    """
    p, t, r = _points(picks, "picks"), _points(truth, "truth"), _radius(radius)
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if not len(p) or not len(t):
        return none
    pairs = cKDTree(p).sparse_distance_matrix(cKDTree(t), r, output_type="ndarray")
    pairs = pairs[pairs["v"] <= r]
    if not len(pairs):
        return none
    i, j, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    n, m = len(p), len(t)
    graph = coo_matrix((np.ones(len(i)), (i, n + j)), shape=(n + m, n + m))
    _, label = connected_components(graph, directed=False)
    comp = label[i]
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    out_p, out_t = [], []
    for edges in np.split(order, bounds):
        ei, ej, ed = i[edges], j[edges], d[edges]
        if len(edges) == 1:
            out_p.append(ei), out_t.append(ej)
            continue
        up, li = np.unique(ei, return_inverse=True)
        ut, lj = np.unique(ej, return_inverse=True)
        eps = 1.0 / (min(len(up), len(ut)) + 1)
        cost = np.zeros((len(up), len(ut)))
        cost[li, lj] = -1.0 + eps * (ed / r) ** 2
        rows, cols = linear_sum_assignment(cost)
        ok = cost[rows, cols] < 0
        out_p.append(up[rows[ok]]), out_t.append(ut[cols[ok]])
    ip, it = np.concatenate(out_p), np.concatenate(out_t)
    s = np.argsort(ip, kind="stable")
    return ip[s], it[s]


def _buckets(matched, scores):
    """Picks sorted by score (descending), cut into buckets of equal score: per bucket the score, the cumulative
    number of picks and of matched picks, and the matched picks in it."""
    matched = np.asarray(matched, dtype=bool).reshape(-1)
    scores = np.zeros(len(matched)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape != matched.shape:
        raise ValueError(f"scores {scores.shape} and matches {matched.shape} differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("pick scores must be finite")
    order = np.argsort(-scores, kind="stable")
    s, hit = scores[order], matched[order]
    last = np.append(s[1:] != s[:-1], True) if len(s) else np.zeros(0, dtype=bool)
    n_cum = np.flatnonzero(last) + 1
    tp_cum = np.cumsum(hit)[last]
    hits = np.diff(np.concatenate([[0], tp_cum]))
    return s[last], n_cum, tp_cum, hits


def precision_recall_curve(matched, scores, n_true: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The precision–recall curve of scored picks, one point per distinct score (descending).

    Args:
        matched: ``(n,)`` bool, whether each pick is matched to a true particle.
        scores: ``(n,)`` pick scores (higher first), or None (all equal).
        n_true: number of true particles ``N`` (recall's denominator).

    Returns:
        ``(threshold, precision, recall)``, ``(B,)`` each: keeping the picks with ``score ≥ threshold[b]`` gives
        ``precision[b] = TP_b / n_b`` and ``recall[b] = TP_b / N`` (NaN when ``N = 0``).
    """
    thr, n_cum, tp_cum, _ = _buckets(matched, scores)
    recall = tp_cum / n_true if n_true > 0 else np.full(len(thr), np.nan)
    return thr, tp_cum / n_cum, recall


def average_precision(matched, scores, n_true: int) -> float:
    """Topaz's average precision ``Σ_b (TP_b / n_b) · r_b / N`` (module docstring); 0 without picks, NaN when
    ``n_true = 0``."""
    if n_true <= 0:
        return float("nan")
    _, n_cum, tp_cum, hits = _buckets(matched, scores)
    return float(np.sum(tp_cum / n_cum * hits) / n_true) if len(n_cum) else 0.0


def duplicate_count(picks, truth, radius: float) -> int:
    """Duplicate picks on one micrograph: ``Σ_t max(k_t − 1, 0)``, ``k_t`` the picks whose nearest true particle
    is ``t`` and within ``radius / 2`` (module docstring). ``picks`` ``(n, 2)``, ``truth`` ``(m, 2)``, pixels."""
    p, t, r = _points(picks, "picks"), _points(truth, "truth"), _radius(radius)
    if not len(p) or not len(t):
        return 0
    d, nearest = cKDTree(t).query(p, k=1)
    near = d <= r / 2
    counts = np.bincount(nearest[near], minlength=len(t))
    return int(np.maximum(counts - 1, 0).sum())


def _by_key(c: Coordinates, what: str) -> dict[str, np.ndarray]:
    """Micrograph key → row indices; two different names with one key are ambiguous."""
    groups: dict[str, list] = {}
    first: dict[str, str] = {}
    for name in c.names():
        key = micrograph_key(name)
        if key in first and first[key] != name:
            raise InputError(what, f"micrographs {first[key]!r} and {name!r} have the same name {key!r}")
        first[key] = name
        groups[key] = np.flatnonzero(c.micrograph == name)
    return groups


def picking_scores(picks: Coordinates, truth: Coordinates, radius: float) -> dict:
    """Precision, recall, F1, AUPRC, precision at 90 % recall and duplicate share of ``picks`` against ``truth``.

    Matching per micrograph (:func:`match_picks`), then pooled over all micrographs (module docstring for every
    definition). ``truth``'s scores are ignored; ``picks.score`` None means all picks rank equal.

    Args:
        picks: the picks (:class:`~cryoscape.io.coords.Coordinates`, pixels, our convention).
        truth: the true particle centres, same frame.
        radius: match radius in pixels (> 0).

    Returns:
        dict with ``precision``, ``recall``, ``f1``, ``auprc``, ``precision_at_recall_90``, ``duplicate_share``
        (floats, NaN where undefined) and ``n_picks``, ``n_true``, ``n_matched`` (ints).
    """
    r = _radius(radius)
    if picks.score is not None and not np.isfinite(picks.score).all():
        raise ValueError("pick scores must be finite")
    pk, tk = _by_key(picks, "picks"), _by_key(truth, "truth")
    matched = np.zeros(len(picks), dtype=bool)
    duplicates = 0
    for key, ip in pk.items():
        it = tk.get(key)
        if it is None:
            continue
        a, _ = match_picks(picks.xy[ip], truth.xy[it], r)
        matched[ip[a]] = True
        duplicates += duplicate_count(picks.xy[ip], truth.xy[it], r)
    n, big_n, tp = len(picks), len(truth), int(matched.sum())
    nan = float("nan")
    precision = tp / n if n else nan
    recall = tp / big_n if big_n else nan
    f1 = 2 * tp / (n + big_n) if n + big_n else nan
    _, prec, rec = precision_recall_curve(matched, picks.score, big_n)
    reach = rec >= 0.9 - 1e-12 if big_n else np.zeros(len(rec), dtype=bool)
    p90 = float(prec[reach].max()) if reach.any() else nan
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "auprc": average_precision(matched, picks.score, big_n), "precision_at_recall_90": p90,
            "duplicate_share": duplicates / n if n else nan,
            "n_picks": int(n), "n_true": int(big_n), "n_matched": tp}
