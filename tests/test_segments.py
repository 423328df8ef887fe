"""Cutting models into chains of continuous segments (structure/segments.py), on known gapped, restarted and
multi-chain inputs built from the embedded AdK trajectory."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.io.errors import InputError
from cryoscape.structure.segments import check_segments, find_segments, segments_by_chain


def _adk(adk):
    return adk.coords[:3], adk.chains.astype(str), adk.resids.astype(np.int64)


def test_one_continuous_chain_is_one_segment(adk):
    x, chains, resids = _adk(adk)
    segs = find_segments(x, chains, resids)
    assert len(segs) == 1 and len(segs[0]) == adk.n_atoms and segs[0].first_resid == resids[0]


def test_a_removed_loop_cuts_at_the_gap(adk):
    """AdK without residues 120–129 (10 residues): two segments, split exactly where the loop was."""
    x, chains, resids = _adk(adk)
    keep = ~((resids >= 120) & (resids <= 129))
    segs = find_segments(x[:, keep], chains[keep], resids[keep])
    assert [(s.first_resid, s.last_resid) for s in segs] == [(resids[0], 119), (130, resids[-1])]
    assert sum(len(s) for s in segs) == int(keep.sum())


def test_homodimer_by_chain_letters_and_by_numbering_restart(adk):
    """Two copies side by side: chain letters A/B give two chains; the same letter with the numbering restarting
    still gives two segments; a segment id change cuts too."""
    x, chains, resids = _adk(adk)
    shifted = x + np.array([80.0, 0.0, 0.0])
    both = np.concatenate([x, shifted], axis=1)
    r2 = np.concatenate([resids, resids])
    lettered = find_segments(both, np.r_[np.full(len(chains), "A"), np.full(len(chains), "B")], r2)
    assert [s.chain for s in lettered] == ["A", "B"] and list(segments_by_chain(lettered)) == ["A", "B"]
    same_letter = find_segments(both, np.full(2 * len(chains), "A"), r2)
    assert [(s.start, s.stop) for s in same_letter] == [(0, len(chains)), (len(chains), 2 * len(chains))]
    near = np.concatenate([x, x[:, -1:] + np.array([3.8, 0, 0]) + (x - x[:, :1])], axis=1)  # bonded end to end
    r_cont = np.arange(2 * len(chains))
    assert len(find_segments(near, np.full(2 * len(chains), "A"), r_cont)) == 1
    segid = np.r_[np.full(len(chains), "PROA"), np.full(len(chains), "PROB")]
    assert len(find_segments(near, np.full(2 * len(chains), "A"), r_cont, segids=segid)) == 2


def test_a_gap_in_one_frame_cuts_and_the_threshold_is_the_bond_length():
    """Consecutive atoms 3.8 Å apart form one segment; one pair stretched past 4.2 Å in a single frame of three
    cuts there."""
    L = 8
    line = np.zeros((3, L, 3))
    line[..., 0] = 3.8 * np.arange(L)
    chains, resids = np.full(L, "A"), np.arange(1, L + 1)
    assert len(find_segments(line, chains, resids)) == 1
    line[1, 5:, 0] += 0.5          # atoms 4 → 5: 4.3 Å in frame 1 only
    segs = find_segments(line, chains, resids)
    assert [(s.start, s.stop) for s in segs] == [(0, 5), (5, 8)]
    assert len(find_segments(line, chains, resids, max_bond_A=4.4)) == 1


def test_short_segment_is_refused_with_one_line():
    x = np.zeros((5, 3))
    x[:, 0] = [0, 3.8, 7.6, 20, 23.8]
    segs = find_segments(x, np.full(5, "A"), np.arange(5))
    assert [len(s) for s in segs] == [3, 2]
    with pytest.raises(InputError, match=r"ref.pdb: chain A residues 3–4 form a segment of 2"):
        check_segments(segs, "ref.pdb")
    check_segments(segs[:1], "ref.pdb")
