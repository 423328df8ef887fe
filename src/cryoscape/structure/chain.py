"""Cα chains in internal coordinates: the discrete Frenet frame parametrisation and its inverse.

For Cα positions ``x_0 … x_{L−1}`` (Esteve-Yagüe, Diepeveen, Öktem & Schönlieb 2023, Inverse Problems 39):

- bonds ``d_i = |x_{i+1} − x_i|`` and tangents ``t_i = (x_{i+1} − x_i)/d_i``, ``i = 0 … L−2``;
- binormals ``b_i ∝ t_{i−1} × t_i`` (``i ≥ 1``), ``b_0 := b_1``; normals ``n_i = b_i × t_i``;
- frames ``F_i`` with rows ``(n_i, b_i, t_i)``;
- transitions ``R_i = F_{i+1} F_iᵀ = Y(ψ_i) · Z(θ_i)``, ``i = 0 … L−3``, with

      Z(θ) = [[cos θ, −sin θ, 0], [sin θ, cos θ, 0], [0, 0, 1]]      (torsion about the tangent)
      Y(ψ) = [[cos ψ, 0, sin ψ], [0, 1, 0], [−sin ψ, 0, cos ψ]]      (bend about the binormal)

  so ``ψ_i`` is the angle between consecutive bonds and ``θ_i`` the torsion (``θ_0 = 0`` since ``b_0 = b_1``).

A conformation is ``(ψ, θ) ∈ R^{L−2} × R^{L−2}``, the bond lengths ``d ∈ R^{L−1}``, and the pose of one
reference frame ``r`` (its atom ``x_r`` and frame ``F_r``); rebuilding runs forward and backward from it:
``F_{i+1} = R_i F_i``, ``x_{i+1} = x_i + d_i t_i`` and ``F_i = R_iᵀ F_{i+1}``, ``x_i = x_{i+1} − d_i t_i``.
Everything is batched over a leading dimension and differentiable; the only loop runs along the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ChainCoordinates", "chain_to_internal", "internal_to_chain", "transition", "central_index"]


@dataclass
class ChainCoordinates:
    """Internal coordinates of a batch of chains of ``L`` atoms.

    Attributes:
        psi, theta: ``(B, L−2)`` bend and torsion angles, radians.
        bonds: ``(B, L−1)`` bond lengths, Å.
        ref: index ``r`` of the reference frame (``0 … L−2``); ``ref_pos`` ``(B, 3)`` is ``x_r`` (Å) and
            ``ref_frame`` ``(B, 3, 3)`` is ``F_r`` (rows n, b, t).
    """

    psi: torch.Tensor
    theta: torch.Tensor
    bonds: torch.Tensor
    ref: int
    ref_pos: torch.Tensor
    ref_frame: torch.Tensor


def central_index(x: torch.Tensor) -> int:
    """Index of the frame whose atom is nearest the centroid of the first chain (a good reference)."""
    c = x[0] if x.dim() == 3 else x
    dist = (c[:-1] - c.mean(0)).norm(dim=-1)
    return int(dist.argmin())


def _frames(x: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Bond lengths ``(B, L−1)`` and frames ``(B, L−1, 3, 3)`` of chains ``(B, L, 3)``."""
    v = x[:, 1:] - x[:, :-1]
    d = v.norm(dim=-1)
    t = v / d.clamp_min(eps)[..., None]
    b = torch.cross(t[:, :-1], t[:, 1:], dim=-1)  # b_1 … b_{L−2}
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = torch.cat([b[:, :1], b], dim=1)  # b_0 := b_1
    n = torch.cross(b, t, dim=-1)
    return d, torch.stack([n, b, t], dim=-2)


def chain_to_internal(x: torch.Tensor, ref: int | None = None) -> ChainCoordinates:
    """Positions ``(B, L, 3)`` (or ``(L, 3)``) → :class:`ChainCoordinates` (``L ≥ 3``).

    ``ref`` defaults to :func:`central_index`.
    """
    if x.dim() == 2:
        x = x[None]
    if x.shape[1] < 3:
        raise ValueError(f"a chain needs at least 3 atoms, got {x.shape[1]}")
    d, F = _frames(x)
    R = F[:, 1:] @ F[:, :-1].transpose(-1, -2)  # (B, L−2, 3, 3)
    theta = torch.atan2(R[..., 1, 0], R[..., 1, 1])
    psi = torch.atan2(R[..., 0, 2], R[..., 2, 2])
    r = central_index(x) if ref is None else int(ref)
    if not 0 <= r <= x.shape[1] - 2:
        raise ValueError(f"reference frame index must be in 0..{x.shape[1] - 2}, got {r}")
    return ChainCoordinates(psi, theta, d, r, x[:, r], F[:, r])


def transition(psi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``Y(ψ) · Z(θ)`` for any batch shape → ``(..., 3, 3)``."""
    cp, sp, ct, st = torch.cos(psi), torch.sin(psi), torch.cos(theta), torch.sin(theta)
    z = torch.zeros_like(psi)
    rows = [cp * ct, -cp * st, sp,
            st, ct, z,
            -sp * ct, sp * st, cp]
    return torch.stack(rows, -1).reshape(*psi.shape, 3, 3)


def internal_to_chain(c: ChainCoordinates) -> torch.Tensor:
    """:class:`ChainCoordinates` → positions ``(B, L, 3)``, rebuilt forward and backward from ``ref``."""
    R = transition(c.psi, c.theta)  # (B, L−2, 3, 3)
    n_frames = c.bonds.shape[1]
    r = c.ref
    frames: list = [None] * n_frames
    frames[r] = c.ref_frame
    for i in range(r, n_frames - 1):
        frames[i + 1] = R[:, i] @ frames[i]
    for i in range(r - 1, -1, -1):
        frames[i] = R[:, i].transpose(-1, -2) @ frames[i + 1]
    t = torch.stack([f[:, 2] for f in frames], dim=1)  # (B, L−1, 3) tangents
    steps = c.bonds[..., None] * t
    # x_{i+1} = x_i + d_i t_i forward; x_i = x_{i+1} − d_i t_i backward (cumulative sums from x_r)
    fwd = c.ref_pos[:, None] + torch.cumsum(steps[:, r:], dim=1)  # x_{r+1} … x_{L−1}
    bwd = c.ref_pos[:, None] - torch.flip(torch.cumsum(torch.flip(steps[:, :r], [1]), dim=1), [1])  # x_0 … x_{r−1}
    return torch.cat([bwd, c.ref_pos[:, None], fwd], dim=1)
