"""Hierarchical SO(3) grids by the Hopf fibration: HEALPix directions on S² × uniform in-plane angles.

A grid point at level ``l`` is a pair ``(pixel, psi_index)``:
- the viewing direction is the centre of HEALPix pixel ``pixel`` in the *nested* scheme with
  ``nside = 2**l`` (``12 · 4**l`` pixels of equal area, Górski et al. 2005);
- the in-plane angle is ``psi = (psi_index + 1/2) · 2π / n_psi`` with ``n_psi = 6 · 2**l``.

The direction ``(θ, φ)`` becomes RELION angles ``tilt = θ``, ``rot = φ`` so that the last row of the pose
matrix (the viewing direction) is the pixel centre. Level 0 has 72 rotations (≈ 60° spacing); each level
halves the spacing and multiplies the count by 8. The children of ``(p, j)`` at the next level are
``(4p + a, 2j + b)`` for ``a ∈ {0..3}, b ∈ {0, 1}``: nested HEALPix pixels subdivide their parent.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .rotations import euler_to_matrix

__all__ = ["healpix_nest_to_angles", "so3_grid", "so3_grid_children", "so3_grid_size"]

_JRLL = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4])
_JPLL = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7])


def _deinterleave(v: np.ndarray) -> np.ndarray:
    """Take the even bits of ``v`` (Morton order → coordinate)."""
    out = np.zeros_like(v)
    bit = 0
    while (v >> (2 * bit)).any():
        out |= ((v >> (2 * bit)) & 1) << bit
        bit += 1
    return out


def healpix_nest_to_angles(nside: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of nested-scheme HEALPix pixels.

    Args:
        nside: power of two.
        pixels: integer array of pixel indices in ``[0, 12 nside²)``.
    Returns:
        ``(theta, phi)`` in radians: colatitude in ``[0, π]``, longitude in ``[0, 2π)``.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    npface = nside * nside
    face = pixels // npface
    ipf = pixels % npface
    ix, iy = _deinterleave(ipf), _deinterleave(ipf >> 1)
    jrt = ix + iy
    jpt = ix - iy
    jr = _JRLL[face] * nside - jrt - 1
    nl4 = 4 * nside
    fact2 = 1.0 / (3.0 * npface)

    north = jr < nside
    south = jr > 3 * nside
    nr = np.where(north, jr, np.where(south, nl4 - jr, nside))
    z = np.where(north, 1 - nr * nr * fact2,
                 np.where(south, -1 + nr * nr * fact2, (2 * nside - jr) * 2.0 / (3.0 * nside)))
    kshift = np.where(north | south, 0, (jr - nside) & 1)
    jp = (_JPLL[face] * nr + jpt + 1 + kshift) // 2
    jp = np.where(jp > nl4, jp - nl4, jp)
    jp = np.where(jp < 1, jp + nl4, jp)
    phi = (jp - (kshift + 1) * 0.5) * (math.pi / 2 / nr)
    theta = np.arccos(np.clip(z, -1.0, 1.0))
    return theta, np.mod(phi, 2 * math.pi)


def so3_grid_size(level: int) -> int:
    """Number of rotations at a level: ``12 · 4**l · 6 · 2**l``."""
    return 12 * 4 ** level * 6 * 2 ** level


def _grid_matrices(level: int, pixels: np.ndarray, psi_idx: np.ndarray,
                   dtype: torch.dtype) -> torch.Tensor:
    theta, phi = healpix_nest_to_angles(2 ** level, pixels)
    n_psi = 6 * 2 ** level
    psi = (psi_idx + 0.5) * 2 * math.pi / n_psi
    euler = torch.as_tensor(np.stack([phi, theta, psi], -1), dtype=torch.float64)
    return euler_to_matrix(euler).to(dtype)


def so3_grid(level: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, np.ndarray]:
    """All rotations of a level.

    Returns:
        ``R`` ``(M, 3, 3)`` pose matrices and ``index`` ``(M, 2)`` int64 array of ``(pixel, psi_index)``,
        ordered pixel-major.
    """
    npix, n_psi = 12 * 4 ** level, 6 * 2 ** level
    pix, psi = np.meshgrid(np.arange(npix), np.arange(n_psi), indexing="ij")
    index = np.stack([pix.ravel(), psi.ravel()], -1)
    return _grid_matrices(level, index[:, 0], index[:, 1], dtype), index


def so3_grid_children(level: int, index: np.ndarray,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, np.ndarray]:
    """The 8 children at ``level + 1`` of each grid point ``index`` ``(K, 2)`` of ``level``.

    Returns:
        ``R`` ``(K * 8, 3, 3)`` and ``child_index`` ``(K * 8, 2)``; children of point ``k`` are rows
        ``8k .. 8k + 7``.
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1, 2)
    a, b = np.meshgrid(np.arange(4), np.arange(2), indexing="ij")
    pix = (4 * index[:, :1] + a.ravel()[None]).ravel()
    psi = (2 * index[:, 1:] + b.ravel()[None]).ravel()
    child = np.stack([pix, psi], -1)
    return _grid_matrices(level + 1, child[:, 0], child[:, 1], dtype), child
