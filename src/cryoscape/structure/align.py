"""Rigid alignment (Kabsch) and RMSD of point sets, batched.

Kabsch (1976): for centred point sets ``P`` and ``Q`` (``N × 3``), ``H = Pᵀ W Q`` (``W`` the weights),
``H = U S Vᵀ``; the proper rotation minimising ``Σ w |R p − q|²`` is ``R = V diag(1, 1, det(V Uᵀ)) Uᵀ``.
"""

from __future__ import annotations

import torch

__all__ = ["kabsch", "align", "rmsd", "aligned_rmsd"]


def kabsch(P: torch.Tensor, Q: torch.Tensor, weights: torch.Tensor | None = None):
    """Best rigid motion of ``P`` onto ``Q``.

    Args:
        P, Q: ``(..., N, 3)`` corresponding points. weights: ``(N,)`` or ``(..., N)`` non-negative.
    Returns:
        ``(R (..., 3, 3), t (..., 3))`` with ``P Rᵀ + t ≈ Q``; ``R`` proper (det +1).
    """
    if weights is None:
        weights = torch.ones(P.shape[:-1], dtype=P.dtype, device=P.device)
    w = (weights / weights.sum(-1, keepdim=True))[..., None]
    cp, cq = (w * P).sum(-2), (w * Q).sum(-2)
    H = ((P - cp[..., None, :]) * w).transpose(-1, -2) @ (Q - cq[..., None, :])
    U, _, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = V @ D @ U.transpose(-1, -2)
    t = cq - (R @ cp[..., None])[..., 0]
    return R, t


def align(P: torch.Tensor, Q: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``P`` moved rigidly onto ``Q`` (Kabsch)."""
    R, t = kabsch(P, Q, weights)
    return P @ R.transpose(-1, -2) + t[..., None, :]


def rmsd(P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``sqrt(mean_i |p_i − q_i|²)`` over the last two axes ``(N, 3)`` (no alignment), Å."""
    return ((P - Q) ** 2).sum(-1).mean(-1).sqrt()


def aligned_rmsd(P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """RMSD after the best rigid alignment of ``P`` onto ``Q``."""
    return rmsd(align(P, Q), Q)
