"""Gaussian atoms: analytic projections (real and Fourier space) and voxel maps.

Each atom ``a`` at position ``x_a`` (Å, relative to the box centre) is an isotropic 3-D Gaussian of width
``σ`` and mass ``w_a`` (1 by default):

    ρ(r) = Σ_a w_a (2πσ²)^(-3/2) exp(−|r − x_a|² / 2σ²)            [Å⁻³]

Seen at pose ``R`` (``image(x, y) = ∫ ρ(Rᵀ r) dz``), atom ``a`` sits at ``p_a = (R x_a)_{xy}`` plus the
in-plane shift ``t``, and the projection is exactly

    P(x, y) = Σ_a w_a (2πσ²)^(-1) exp(−|(x, y) − p_a − t|² / 2σ²)     [Å⁻²]

with continuous Fourier transform ``P̂(k) = exp(−2π²σ²|k|²) Σ_a w_a exp(−2πi k·(p_a + t))``. Both are
separable in x and y, so a batch is two small matrix products: no voxel grid, no interpolation.
"""

from __future__ import annotations

import math

import torch

from .fourier import rfreq_grid_2d

__all__ = ["project_atoms_real", "project_atoms_fourier", "atoms_to_volume", "rotate_atoms"]


def rotate_atoms(coords: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Atom positions in the particle's view: ``R x_a``.

    Args:
        coords: ``(A, 3)`` shared by all images, or ``(N, A, 3)``, Å, ``(x, y, z)``.
        R: ``(N, 3, 3)`` pose matrices.
    Returns:
        ``(N, A, 3)``.
    """
    return torch.matmul(coords, R.transpose(-1, -2))


def _projected_xy(coords, R, shifts):
    p = rotate_atoms(coords.to(R.dtype), R)[..., :2]
    if shifts is not None:
        p = p + shifts.to(R.dtype)[:, None, :]
    return p[..., 0], p[..., 1]  # (N, A) each


def _gaussian_rows(p: torch.Tensor, D: int, apix: float, sigma: float, truncate: float) -> torch.Tensor:
    """``exp(−(u_j − p)² / 2σ²)`` on pixel centres ``u_j = (j − D//2)·apix``: ``(..., D)`` for ``p (...)``.

    Only the ``±truncate·σ`` window around each ``p`` is evaluated (the rest is exactly 0; at the default
    6σ the dropped tail is < 2e-8 of the peak, below float32 round-off).
    """
    if not math.isfinite(truncate) or 2 * math.ceil(truncate * sigma / apix) + 1 >= D:  # window as large as the box: evaluate densely
        grid = (torch.arange(D, dtype=p.dtype, device=p.device) - D // 2) * apix
        return torch.exp((grid - p[..., None]) ** 2 * (-0.5 / sigma ** 2))
    K = math.ceil(truncate * sigma / apix)
    offsets = torch.arange(-K, K + 1, device=p.device)
    idx = torch.round(p / apix).to(torch.int64)[..., None] + offsets  # window indices, centred grid
    u = idx.to(p.dtype) * apix - p[..., None]
    vals = torch.exp(u * u * (-0.5 / sigma ** 2))
    idx = idx + (D // 2 + K)  # into a buffer padded by K on each side: no clamping needed
    inside = (idx >= K) & (idx < D + K)
    idx = torch.where(inside, idx, torch.zeros_like(idx))  # outside the box → the dropped pad column 0
    buf = torch.zeros(*p.shape, D + 2 * K, dtype=p.dtype, device=p.device)
    buf.scatter_(-1, idx, vals * inside)
    return buf[..., K:K + D]


def project_atoms_real(coords: torch.Tensor, R: torch.Tensor, sigma: float, D: int, apix: float,
                       shifts: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                       truncate: float = 6.0) -> torch.Tensor:
    """Analytic projections sampled at pixel centres (pixel ``j`` at ``(j − D//2)·apix`` Å).

    ``P = Gyᵀ · diag(w) · Gx`` with ``G[a, j] = exp(−(u_j − p_a)²/2σ²)`` evaluated within ``truncate·σ``
    of each atom, divided by ``2πσ²``.

    Args:
        coords: ``(A, 3)`` or ``(N, A, 3)`` atom positions, Å. R: ``(N, 3, 3)``.
        sigma: Gaussian width, Å. D: box, pixels. apix: Å/pixel.
        shifts: ``(N, 2)`` in-plane shifts ``(tx, ty)``, Å. weights: ``(A,)`` masses (default 1).
        truncate: window half-width in σ (use ``inf`` for no window).
    Returns:
        ``(N, D, D)`` images in Å⁻², indexed ``[y, x]``.
    """
    px, py = _projected_xy(coords, R, shifts)
    gx = _gaussian_rows(px, D, apix, sigma, truncate)  # (N, A, D)
    gy = _gaussian_rows(py, D, apix, sigma, truncate)
    if weights is not None:
        gx = gx * weights.to(R.dtype)[None, :, None]
    return torch.matmul(gy.transpose(-1, -2), gx) / (2 * math.pi * sigma ** 2)


def project_atoms_fourier(coords: torch.Tensor, R: torch.Tensor, sigma: float, D: int, apix: float,
                          shifts: torch.Tensor | None = None,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """Analytic transforms of the projections on the ``rfft2`` half plane.

    The layout is that of :func:`cryoscape.physics.fourier.rfft2_centered` of the sampled image (DC at
    ``[0, 0]``, image origin at pixel ``D // 2``), scaled as a DFT of samples: ``P̂(k) / apix²``. So
    ``irfft2_centered(project_atoms_fourier(...), D)`` ≈ ``project_atoms_real(...)``, the difference being
    aliasing, negligible for ``σ ≳ apix``.

    Returns:
        ``(N, D, D//2 + 1)`` complex (complex64 for float32 input).
    """
    px, py = _projected_xy(coords, R, shifts)
    ky, kx = torch.fft.fftfreq(D, d=apix, dtype=R.dtype, device=R.device), \
        torch.fft.rfftfreq(D, d=apix, dtype=R.dtype, device=R.device)
    ex = torch.polar(torch.ones((), dtype=R.dtype, device=R.device).expand(1),
                     -2 * math.pi * px[..., None] * kx)  # (N, A, W)
    ey = torch.polar(torch.ones((), dtype=R.dtype, device=R.device).expand(1),
                     -2 * math.pi * py[..., None] * ky)  # (N, A, H)
    if weights is not None:
        ex = ex * weights.to(R.dtype)[None, :, None]
    f = torch.matmul(ey.transpose(-1, -2), ex)  # (N, H, W)
    kyy, kxx = rfreq_grid_2d(D, apix, dtype=R.dtype, device=R.device)
    envelope = torch.exp(-2 * math.pi ** 2 * sigma ** 2 * (kxx ** 2 + kyy ** 2)) / apix ** 2
    return f * envelope


def atoms_to_volume(coords: torch.Tensor, sigma: float, D: int, apix: float,
                    weights: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """Voxelise Gaussian atoms: ``ρ`` sampled at voxel centres, ``(D, D, D)`` indexed ``[z, y, x]``, Å⁻³.

    Voxel ``(k, j, i)`` is at ``((i, j, k) − D//2) · apix`` Å. Separable: ``Σ_a gz ⊗ gy ⊗ gx``.
    """
    grid = (torch.arange(D, dtype=coords.dtype, device=coords.device) - D // 2) * apix
    vol = torch.zeros(D * D, D, dtype=coords.dtype, device=coords.device)
    norm = (2 * math.pi * sigma ** 2) ** -1.5
    for s in range(0, coords.shape[0], chunk):
        c = coords[s:s + chunk]
        g = [torch.exp(-(grid[None, :] - c[:, i, None]) ** 2 / (2 * sigma ** 2)) for i in range(3)]
        if weights is not None:
            g[0] = g[0] * weights[s:s + chunk, None].to(coords.dtype)
        zy = (g[2][:, :, None] * g[1][:, None, :]).reshape(c.shape[0], D * D)  # (A, D*D)
        vol += zy.T @ g[0]
    return vol.reshape(D, D, D) * norm
