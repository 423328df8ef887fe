"""Picking metrics: Hungarian matching within a radius, precision/recall/F1, Topaz's AUPRC, precision at 90 %
recall and the duplicate share.

Independent truths: hand-built cases worked out on paper (in the comments), brute-force enumeration of every
one-to-one matching of small random point sets, and scikit-learn's ``average_precision_score``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cryoscape.analysis.picking import (average_precision, duplicate_count, match_picks, picking_scores,
                                        precision_recall_curve)
from cryoscape.io.coords import Coordinates
from cryoscape.io.errors import InputError


def _pairs(i, j):
    return sorted(zip(i.tolist(), j.tolist()))


def test_hungarian_beats_greedy_nearest():
    # truth A=(0,0), B=(2,0); radius 1.5. Pick p=(1.2,0) is 1.2 from A and 0.8 from B; pick q=(3.3,0) is 1.3 from
    # B and 3.3 from A. Greedy nearest-first takes p–B (0.8), then q has no free particle within 1.5: 1 match.
    # The optimum pairs p–A and q–B: 2 matches. (Topaz's cost d² − r² would also keep only p–B: −1.61 < −1.37.)
    truth = np.array([[0.0, 0.0], [2.0, 0.0]])
    picks = np.array([[1.2, 0.0], [3.3, 0.0]])
    i, j = match_picks(picks, truth, 1.5)
    assert _pairs(i, j) == [(0, 0), (1, 1)]


def test_radius_boundary_and_coincident_points():
    truth = np.array([[10.0, 10.0], [100.0, 100.0], [200.0, 50.0]])
    picks = np.array([[13.0, 14.0],                       # distance exactly 5: matched (≤ radius)
                      [100.0, 100.0],                     # on the particle: matched
                      [200.0 + 5.0 * (1 + 1e-9), 50.0]])  # just beyond 5: not matched
    i, j = match_picks(picks, truth, 5.0)
    assert _pairs(i, j) == [(0, 0), (1, 1)]
    i, j = match_picks(picks, truth, 5.0 * (1 - 1e-9))
    assert _pairs(i, j) == [(1, 1)]


def test_one_to_one_and_closest_pair_kept():
    # two picks near one particle: only one matched, the closer one (least summed squared distance)
    i, j = match_picks([[3.0, 0.0], [1.0, 0.0]], [[0.0, 0.0]], 4.0)
    assert _pairs(i, j) == [(1, 0)]
    # empty inputs
    for p, t in (([], [[0.0, 0.0]]), ([[0.0, 0.0]], []), ([], [])):
        i, j = match_picks(p, t, 3.0)
        assert len(i) == len(j) == 0


def _brute_force(p, t, r):
    """Largest number of disjoint pairs within r, then least Σd², over every injective pick→particle map."""
    d = np.linalg.norm(p[:, None] - t[None], axis=2)
    best = (0, 0.0)
    n, m = len(p), len(t)
    for k in range(min(n, m), 0, -1):
        found = None
        for ps in itertools.combinations(range(n), k):
            for ts in itertools.permutations(range(m), k):
                dd = d[list(ps), list(ts)]
                if (dd <= r).all():
                    s = float((dd ** 2).sum())
                    found = s if found is None else min(found, s)
        if found is not None:
            return k, found
    return best


def test_matching_equals_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n, m = rng.integers(0, 6), rng.integers(0, 6)
        p, t = rng.uniform(0, 10, (n, 2)), rng.uniform(0, 10, (m, 2))
        i, j = match_picks(p, t, 3.0)
        k, s = _brute_force(p, t, 3.0)
        assert len(i) == k
        assert len(set(i.tolist())) == len(i) and len(set(j.tolist())) == len(j)
        if k:
            assert np.all(np.linalg.norm(p[i] - t[j], axis=1) <= 3.0)
            assert float((np.linalg.norm(p[i] - t[j], axis=1) ** 2).sum()) == pytest.approx(s, rel=1e-9, abs=1e-12)


def _c(name, xy, score=None):
    return Coordinates.for_micrograph(name, xy, score)


def test_precision_recall_f1_auprc_hand_computed():
    # 4 particles far apart; picks by descending score: TP, FP, TP, TP, FP
    truth = _c("m", [[0, 0], [100, 0], [200, 0], [300, 0]])
    picks = _c("m", [[1, 0], [50, 50], [101, 0], [199, 1], [400, 400]], [0.9, 0.8, 0.7, 0.6, 0.5])
    s = picking_scores(picks, truth, 5.0)
    assert (s["n_picks"], s["n_true"], s["n_matched"]) == (5, 4, 3)
    assert s["precision"] == pytest.approx(3 / 5)
    assert s["recall"] == pytest.approx(3 / 4)
    assert s["f1"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    # AP = (1/1 + 2/3 + 3/4) / 4 = 29/48
    assert s["auprc"] == pytest.approx(29 / 48)
    assert math.isnan(s["precision_at_recall_90"])  # recall never exceeds 0.75
    assert s["duplicate_share"] == 0.0
    # without scores: one bucket, AUPRC = precision · recall
    s = picking_scores(_c("m", picks.xy), truth, 5.0)
    assert s["auprc"] == pytest.approx(3 / 5 * 3 / 4)


def test_precision_at_recall_90_is_best_precision_reaching_it():
    # 2 particles; picks TP 0.9, FP 0.8, TP 0.7, FP 0.6: recall 1 first at the third pick (precision 2/3), then
    # 2/4 with the fourth; the best precision at recall ≥ 0.9 is 2/3.
    truth = _c("m", [[0, 0], [100, 0]])
    picks = _c("m", [[0, 1], [50, 50], [100, 1], [70, 70]], [0.9, 0.8, 0.7, 0.6])
    s = picking_scores(picks, truth, 3.0)
    assert s["precision_at_recall_90"] == pytest.approx(2 / 3)
    thr, prec, rec = precision_recall_curve([True, False, True, False], [0.9, 0.8, 0.7, 0.6], 2)
    np.testing.assert_allclose(thr, [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(prec, [1, 1 / 2, 2 / 3, 2 / 4])
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0, 1.0])
    # AP = (1·1 + 2/3·1) / 2 = 5/6
    assert s["auprc"] == pytest.approx(5 / 6)


def test_tied_scores_form_one_bucket():
    # scores 0.9 (TP), 0.5 (TP), 0.5 (FP); N = 3. Buckets: {0.9}: P=1, r=1; {0.5,0.5}: P=2/3, r=1 → AP = (1 + 2/3)/3
    assert average_precision([True, True, False], [0.9, 0.5, 0.5], 3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision([True, False, True], [0.9, 0.5, 0.5], 3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision([], [], 3) == 0.0
    assert math.isnan(average_precision([True], [1.0], 0))


def test_auprc_equals_sklearn_times_reached_recall():
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        matched = rng.random(n) < 0.6
        matched[0] = True
        scores = np.round(rng.random(n), 2)  # some ties
        n_true = int(matched.sum() + rng.integers(0, 10))
        ours = average_precision(matched, scores, n_true)
        ref = average_precision_score(matched.astype(int), scores) * matched.sum() / n_true
        assert ours == pytest.approx(ref, rel=1e-12)


def test_pooled_over_micrographs_and_names_matched_by_key():
    truth = Coordinates(["Micrographs/a.mrc"] * 2 + ["Micrographs/b.mrc"], [[0, 0], [50, 0], [10, 10]])
    picks = Coordinates(["a", "a", "b", "c"],                  # c has no particles: its pick is a false positive
                        [[1, 1], [80, 0], [10, 12], [10, 10]], [0.4, 0.3, 0.9, 0.8])
    s = picking_scores(picks, truth, 4.0)
    assert (s["n_picks"], s["n_true"], s["n_matched"]) == (4, 3, 2)
    # by score: b TP 0.9, c FP 0.8, a TP 0.4, a FP 0.3 → AP = (1 + 2/3) / 3
    assert s["auprc"] == pytest.approx((1 + 2 / 3) / 3)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(2 / 3)


def test_duplicates_hand_built():
    # radius 10 → duplicates within 5 of a particle. T0=(0,0): picks at 0, 2 and 3 px → 3 attached, 2 duplicates.
    # T1=(50,0): picks at 0 px and 6 px (6 > 5: a false positive, not a duplicate). (30,0): far from both.
    truth = _c("m", [[0, 0], [50, 0]])
    picks = _c("m", [[0, 0], [2, 0], [-3, 0], [50, 0], [56, 0], [30, 0]], [0.9, 0.8, 0.7, 0.95, 0.6, 0.5])
    assert duplicate_count(picks.xy, truth.xy, 10.0) == 2
    s = picking_scores(picks, truth, 10.0)
    assert s["duplicate_share"] == pytest.approx(2 / 6)
    assert s["n_matched"] == 2 and s["precision"] == pytest.approx(2 / 6)
    # a pick within radius/2 of two particles is attached only to the nearer one: no duplicate here
    assert duplicate_count([[0, 0], [4, 0]], [[0, 0], [7, 0]], 10.0) == 0


def test_empty_and_bad_input():
    truth = _c("m", [[0, 0]])
    s = picking_scores(_c("m", np.zeros((0, 2))), truth, 3.0)
    assert s["n_picks"] == 0 and s["recall"] == 0.0 and s["auprc"] == 0.0 and s["f1"] == 0.0
    assert math.isnan(s["precision"]) and math.isnan(s["duplicate_share"])
    s = picking_scores(_c("m", [[0, 0]]), _c("m", np.zeros((0, 2))), 3.0)
    assert s["precision"] == 0.0 and math.isnan(s["recall"]) and math.isnan(s["auprc"])
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="radius"):
            match_picks([[0, 0]], [[0, 0]], bad)
    with pytest.raises(ValueError):
        match_picks([[0, 0, 0]], [[0, 0]], 3.0)
    with pytest.raises(InputError, match="same name"):
        picking_scores(Coordinates(["x/a.mrc", "y/a.mrc"], [[0, 0], [1, 1]]), truth, 3.0)
