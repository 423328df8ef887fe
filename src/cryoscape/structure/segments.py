"""A model as chains of continuous segments: where a Cα trace may carry bonds and where it may not.

Real models come as several chains, with loops missing and residue numbers that restart. Internal coordinates
(:mod:`cryoscape.structure.chain`) and bond terms only make sense along a continuous stretch, so a model's
``A`` Cα atoms (in file order) are cut into segments. A new segment starts at atom ``i`` when

- its chain identifier differs from atom ``i − 1``'s (a new chain), or its segment identifier does (MD
  topologies: PSF/GRO segids), or
- its residue number is not larger than atom ``i − 1``'s (a numbering restart: a second copy written under the
  same chain letter), or
- its distance to atom ``i − 1`` exceeds ``max_bond_A`` in any frame (a gap: missing residues). Consecutive Cα
  atoms of a peptide are 3.8 Å apart (3.0 Å for a cis-proline), and one missing residue already leaves at least
  ~4.5 Å; the default 4.2 Å separates the two.

Segments are contiguous ranges of atom indices, so a model's coordinates ``(…, A, 3)`` split by plain slicing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.errors import InputError

__all__ = ["Segment", "find_segments", "segments_by_chain", "check_segments", "MAX_BOND_A"]

MAX_BOND_A = 4.2  # Å: longest Cα–Cα distance still counted as a bond


@dataclass(frozen=True)
class Segment:
    """Atoms ``start … stop − 1`` of a model, one continuous stretch of chain ``chain`` (residues
    ``first_resid … last_resid``)."""

    chain: str
    start: int
    stop: int
    first_resid: int
    last_resid: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def atoms(self) -> slice:
        """The segment's atoms as a slice of the model's atom axis."""
        return slice(self.start, self.stop)


def find_segments(coords, chains, resids, segids=None, max_bond_A: float = MAX_BOND_A) -> list[Segment]:
    """Cut a model into continuous segments (module docstring).

    Args:
        coords: ``(A, 3)`` or ``(F, A, 3)`` Cα positions in Å (a gap in any frame cuts).
        chains: ``(A,)`` chain identifiers; resids: ``(A,)`` residue numbers; segids: ``(A,)`` segment
            identifiers or None.
        max_bond_A: the longest distance between consecutive atoms of one segment.
    Returns:
        The segments in atom order; together they cover every atom once.
    """
    x = np.asarray(coords, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise InputError("coords", f"expected (A, 3) or (F, A, 3) positions, got shape {np.shape(coords)}")
    A = x.shape[1]
    chains = np.asarray(chains).astype(str)
    resids = np.asarray(resids).astype(np.int64)
    if len(chains) != A or len(resids) != A or (segids is not None and len(segids) != A):
        raise InputError("model", f"{A} atoms but {len(chains)} chain ids, {len(resids)} residue numbers")
    if A == 0:
        return []
    starts = np.zeros(A, dtype=bool)
    starts[0] = True
    if A > 1:
        step = np.linalg.norm(np.diff(x, axis=1), axis=-1).max(axis=0)          # (A − 1,) worst frame
        cut = (chains[1:] != chains[:-1]) | (resids[1:] <= resids[:-1]) | (step > max_bond_A)
        if segids is not None:
            s = np.asarray(segids).astype(str)
            cut |= s[1:] != s[:-1]
        starts[1:] = cut
    first = np.flatnonzero(starts)
    last = np.append(first[1:], A)
    return [Segment(str(chains[a]), int(a), int(b), int(resids[a]), int(resids[b - 1])) for a, b in zip(first, last)]


def segments_by_chain(segments: list[Segment]) -> dict[str, list[Segment]]:
    """The segments grouped by chain identifier, chains in order of first appearance."""
    out: dict[str, list[Segment]] = {}
    for s in segments:
        out.setdefault(s.chain, []).append(s)
    return out


def check_segments(segments: list[Segment], where, min_length: int = 3) -> None:
    """Raise :class:`InputError` naming ``where`` when a segment has fewer than ``min_length`` residues (a bend
    angle needs three atoms)."""
    for s in segments:
        if len(s) < min_length:
            raise InputError(where, f"chain {s.chain} residues {s.first_resid}–{s.last_resid} form a segment of "
                                    f"{len(s)} residue(s), fewer than {min_length}; remove them or join the gap")
