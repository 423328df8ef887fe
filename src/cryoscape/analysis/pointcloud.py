"""Errors between predicted and true atomic models (point clouds with corresponding atoms).

The three errors of Esteve-Yagüe et al. (2023), for test image ``n`` and atom ``i``,
``e_ni = |x̂_ni − x_ni|`` with both models seen at the true pose (a rotation does not change distances,
so the model frame gives the same numbers):

- average error ``mean_{n,i} e_ni``; average maximum ``mean_n max_i e_ni``; maximum ``max_{n,i} e_ni``;

plus the Cα RMSD after Kabsch superposition (mean over images), the fraction of atoms within 3 Å (as
placed, and after superposition), and the error of each residue along the chain (mean over images).
"""

from __future__ import annotations

import torch

from ..structure.align import align

__all__ = ["pointcloud_errors", "segment_errors"]


def pointcloud_errors(pred: torch.Tensor, true: torch.Tensor, within: float = 3.0) -> dict:
    """Errors of ``pred`` against ``true``, both ``(N, A, 3)`` (or ``(A, 3)``) in Å.

    Returns a dict of floats (``avg_error_A``, ``avg_max_error_A``, ``max_error_A``,
    ``rmsd_aligned_mean_A``, ``frac_within_3A``, ``frac_within_3A_aligned``) and ``per_residue_error_A``
    (a list of ``A`` floats).
    """
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(true.shape)}")
    if pred.dim() == 2:
        pred, true = pred[None], true[None]
    p, t = pred.to(torch.float64), true.to(torch.float64)
    e = (p - t).norm(dim=-1)  # (N, A)
    ea = (align(p, t) - t).norm(dim=-1)
    return {
        "avg_error_A": float(e.mean()),
        "avg_max_error_A": float(e.max(dim=1).values.mean()),
        "max_error_A": float(e.max()),
        "rmsd_aligned_mean_A": float((ea ** 2).mean(dim=1).sqrt().mean()),
        f"frac_within_{within:g}A": float((e <= within).double().mean()),
        f"frac_within_{within:g}A_aligned": float((ea <= within).double().mean()),
        "per_residue_error_A": e.mean(dim=0).tolist(),
    }


def segment_errors(pred: torch.Tensor, true: torch.Tensor, segments) -> dict:
    """Average error ``mean_{n, i ∈ part} |x̂_ni − x_ni|`` (Å) of each chain and each continuous segment of
    ``pred`` against ``true`` ``(N, A, 3)``: ``{"per_chain": {chain: Å}, "per_segment": [{"chain",
    "first_resid", "last_resid", "n_atoms", "avg_error_A"}]}`` (segments:
    :class:`~cryoscape.structure.segments.Segment` list)."""
    from ..structure.segments import segments_by_chain
    e = (pred.to(torch.float64) - true.to(torch.float64)).norm(dim=-1)
    e = e[None] if e.dim() == 1 else e
    per_segment = [{"chain": s.chain, "first_resid": s.first_resid, "last_resid": s.last_resid,
                    "n_atoms": len(s), "avg_error_A": float(e[:, s.atoms].mean())} for s in segments]
    per_chain = {c: float(torch.cat([e[:, s.atoms] for s in segs], 1).mean())
                 for c, segs in segments_by_chain(segments).items()}
    return {"per_chain": per_chain, "per_segment": per_segment}
