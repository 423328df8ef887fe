"""Image shifts as Fourier phase ramps.

Shifting an image by ``t`` (Å) so that content at ``r`` moves to ``r + t`` multiplies its transform by
``exp(−2πi k·t)``, ``k`` in 1/Å.
"""

from __future__ import annotations

import math

import torch

from .fourier import irfft2_centered, rfft2_centered, rfreq_grid_2d

__all__ = ["phase_ramp", "shift_images"]


def phase_ramp(kx: torch.Tensor, ky: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``exp(−2πi (kx tx + ky ty))`` for shifts ``(N, 2)`` = ``(tx, ty)`` in Å → ``(N, H, W)`` complex.

    ``kx``, ``ky``: ``(H, W)`` frequency grids in 1/Å. On a meshgrid (``kx`` constant down columns, ``ky``
    along rows, as from ``rfreq_grid_2d``) the ramp is the outer product ``exp(−2πi ky ty) · exp(−2πi kx tx)``,
    which needs ``H + W`` instead of ``H·W`` complex exponentials per image.
    """
    tx, ty = shifts[:, 0, None], shifts[:, 1, None]
    if kx.ndim == 2 and torch.equal(kx, kx[:1].expand_as(kx)) and torch.equal(ky, ky[:, :1].expand_as(ky)):
        ex, ey = -2 * math.pi * kx[0] * tx, -2 * math.pi * ky[:, 0] * ty  # (N, W), (N, H)
        return torch.polar(torch.ones_like(ey), ey)[:, :, None] * torch.polar(torch.ones_like(ex), ex)[:, None, :]
    phase = -2 * math.pi * (kx[None] * tx[..., None] + ky[None] * ty[..., None])
    return torch.polar(torch.ones_like(phase), phase)


def shift_images(images: torch.Tensor, shifts: torch.Tensor, apix: float = 1.0) -> torch.Tensor:
    """Shift real images ``(N, D, D)`` by ``shifts`` ``(N, 2)`` (Å, ``(x, y)``), periodic boundary."""
    D = images.shape[-1]
    ky, kx = rfreq_grid_2d(D, apix, dtype=images.dtype, device=images.device)
    return irfft2_centered(rfft2_centered(images) * phase_ramp(kx, ky, shifts.to(images.dtype)), D)
