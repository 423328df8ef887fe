"""A planar test case of the spectral method: chains in 2-D, seen through 1-D projections.

Small enough for unit tests of the whole method (graph → model → fit) in a second, with the same
structure as the 3-D case:

- a chain of ``L`` points in the plane, bond lengths ``d_i`` and turning angles ``τ_i`` (``i = 0 … L−3``)
  between consecutive bonds; bond ``i`` points along ``a_i = a_r + Σ_{r ≤ j < i} τ_j`` (and backwards
  for ``i < r``), rebuilt from the reference point ``x_r`` and the direction ``a_r`` of bond ``r``;
- a "pose" is an in-plane angle ``α``: the image is the 1-D projection of 2-D Gaussian atoms onto the
  direction ``e_α = (cos α, sin α)``, ``I(u) = Σ_a (2πσ²)^{-1/2} exp(−(u − x_a·e_α)² / 2σ²)``, sampled at
  ``u_j = (j − D//2)·apix``;
- the model: ``τ_n = τ⁰ + Γ v_n`` with ``v_n`` the spectral coordinates, ``Γ`` zero-initialised.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["planar_to_internal", "internal_to_planar", "project_planar", "PlanarModel"]


def planar_to_internal(x: torch.Tensor, ref: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions ``(B, L, 2)`` → ``(turns (B, L−2), bonds (B, L−1), ref_pos (B, 2), ref_dir (B,))``."""
    v = x[:, 1:] - x[:, :-1]
    a = torch.atan2(v[..., 1], v[..., 0])
    turns = torch.remainder(a[:, 1:] - a[:, :-1] + math.pi, 2 * math.pi) - math.pi
    return turns, v.norm(dim=-1), x[:, ref], a[:, ref]


def internal_to_planar(turns: torch.Tensor, bonds: torch.Tensor, ref: int, ref_pos: torch.Tensor,
                       ref_dir: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`planar_to_internal` → ``(B, L, 2)``."""
    B, n_bonds = bonds.shape
    ahead = ref_dir[:, None] + torch.cumsum(turns[:, ref:], dim=1)  # a_{r+1} …
    behind = ref_dir[:, None] - torch.flip(torch.cumsum(torch.flip(turns[:, :ref], [1]), dim=1), [1])  # a_0 … a_{r−1}
    a = torch.cat([behind, ref_dir[:, None], ahead], dim=1)[:, :n_bonds]
    steps = bonds[..., None] * torch.stack([torch.cos(a), torch.sin(a)], -1)
    fwd = ref_pos[:, None] + torch.cumsum(steps[:, ref:], dim=1)
    bwd = ref_pos[:, None] - torch.flip(torch.cumsum(torch.flip(steps[:, :ref], [1]), dim=1), [1])
    return torch.cat([bwd, ref_pos[:, None], fwd], dim=1)


def project_planar(x: torch.Tensor, alpha: torch.Tensor, sigma: float, D: int, apix: float) -> torch.Tensor:
    """1-D projections ``(B, D)`` of chains ``(B, L, 2)`` along directions ``alpha (B,)``."""
    u = x[..., 0] * torch.cos(alpha)[:, None] + x[..., 1] * torch.sin(alpha)[:, None]  # (B, L)
    grid = (torch.arange(D, dtype=x.dtype, device=x.device) - D // 2) * apix
    g = torch.exp(-(grid[None, None, :] - u[..., None]) ** 2 / (2 * sigma ** 2)).sum(1)
    return g / math.sqrt(2 * math.pi * sigma ** 2)


class PlanarModel(nn.Module):
    """``τ_n = τ⁰ + Γ v_n`` around a reference planar chain (anchor and bonds of the reference)."""

    def __init__(self, reference: torch.Tensor, ref: int, k: int):
        super().__init__()
        turns, bonds, pos, direction = planar_to_internal(reference[None], ref)
        self.turns0, self.bonds, self.ref = turns, bonds, ref
        self.ref_pos, self.ref_dir = pos, direction
        self.gamma = nn.Parameter(torch.zeros(turns.shape[1], k, dtype=reference.dtype))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        n = v.shape[0]
        turns = self.turns0 + v @ self.gamma.T
        return internal_to_planar(turns, self.bonds.expand(n, -1), self.ref, self.ref_pos.expand(n, -1),
                                  self.ref_dir.expand(n))
