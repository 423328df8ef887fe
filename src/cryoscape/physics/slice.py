"""Projection of a voxel map by the Fourier slice theorem, in pure torch.

The transform of a projection is the central slice of the volume's transform:

    P̂(kx, ky) = apix · V̂(Rᵀ (kx, ky, 0)ᵀ)

with ``V̂`` the (unnormalised) DFT of the voxel map and ``P`` the projection ``∫ V(Rᵀ r) dz`` sampled
on the image grid. ``V̂`` is precomputed once on a grid padded ``pad`` times (finer frequency sampling,
smaller interpolation error) and sampled by trilinear interpolation. Trilinear interpolation in Fourier
space multiplies real space by the transform of the tent kernel, ``sinc²(x/Dp)`` on each axis (``Dp`` the
padded size), so the volume is divided by that product before the transform (gridding correction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fourier import fft3_centered

__all__ = ["FourierSliceProjector"]


class FourierSliceProjector:
    """Projects one ``(D, D, D)`` map at many poses.

    Args:
        volume: ``(D, D, D)`` real map indexed ``[z, y, x]``, origin at voxel ``D // 2``.
        apix: voxel size, Å (projections are line integrals in Å × map units).
        pad: padding factor of the Fourier grid (2 is accurate to ~1e-3 for smooth maps).

    ``project(R)`` returns real images ``(N, D, D)``; ``project_fourier(R)`` the ``rfft2`` half plane
    ``(N, D, D//2+1)`` in the layout of :func:`cryoscape.physics.fourier.rfft2_centered`.
    """

    def __init__(self, volume: torch.Tensor, apix: float = 1.0, pad: int = 2):
        D = volume.shape[-1]
        if volume.shape != (D, D, D):
            raise ValueError(f"volume must be cubic (D, D, D), got {tuple(volume.shape)}")
        self.D, self.apix = D, float(apix)
        Dp = pad * D + (1 - (pad * D) % 2)  # odd: a symmetric centred grid, exact Hermitian symmetry
        self.Dp = Dp
        c = Dp // 2
        vp = volume.new_zeros((Dp, Dp, Dp))
        lo = c - D // 2
        vp[lo:lo + D, lo:lo + D, lo:lo + D] = volume
        r = (torch.arange(Dp, dtype=volume.dtype, device=volume.device) - c) / Dp
        s2 = torch.sinc(r) ** 2
        vp = vp / (s2[:, None, None] * s2[None, :, None] * s2[None, None, :])
        vhat = fft3_centered(vp)
        # (1, 2, Dp, Dp, Dp): real and imaginary parts as channels for grid_sample.
        self._vhat = torch.stack([vhat.real, vhat.imag], 0)[None].contiguous()
        self.dtype, self.device = volume.dtype, volume.device
        H, W = D, D // 2 + 1
        ky = torch.fft.fftfreq(D, d=1.0 / D, dtype=volume.dtype, device=volume.device)  # index units
        kx = torch.arange(W, dtype=volume.dtype, device=volume.device)
        kyy, kxx = torch.meshgrid(ky, kx, indexing="ij")
        plane = torch.stack([kxx, kyy, torch.zeros_like(kxx)], -1).reshape(H * W, 3)
        # Only frequencies inside the Nyquist circle |k| ≤ D/2 are sampled (77 % of the half plane);
        # the corners beyond it are set to 0, as a band limit of the map to its Nyquist sphere.
        self._inside = plane[:, :2].norm(dim=-1) <= D / 2
        self._plane = plane[self._inside]
        # Image frequency index k (units 1/(D apix)) → padded-grid index c + k·Dp/D, c = (Dp − 1)/2,
        # → grid_sample's [-1, 1] (align_corners): (index − c) · 2/(Dp − 1).
        self._scale = (Dp / D) * 2.0 / (Dp - 1)

    def project_fourier(self, R: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` poses → ``(N, D, D//2+1)`` complex slices (DFT of the projections)."""
        N, D = R.shape[0], self.D
        W = D // 2 + 1
        # Points Rᵀ k for row vectors k: k @ R; grid_sample wants (x, y, z) = (kx, ky, kz) ordering.
        M = self._plane.shape[0]
        pts = torch.matmul(self._plane.to(R.dtype), R).to(self.dtype) * self._scale
        grid = pts.reshape(1, 1, N * M, 1, 3)
        out = F.grid_sample(self._vhat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out.reshape(2, N, M) * self.apix
        full = torch.zeros(N, D * W, dtype=torch.complex64 if self.dtype == torch.float32 else torch.complex128,
                           device=self.device)
        full[:, self._inside] = torch.complex(out[0], out[1])
        return full.reshape(N, D, W)

    def project(self, R: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` poses → ``(N, D, D)`` real projections, origin at pixel ``D // 2``."""
        return torch.fft.fftshift(torch.fft.irfft2(self.project_fourier(R), s=(self.D, self.D)),
                                  dim=(-2, -1))
