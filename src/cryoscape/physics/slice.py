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

from .fourier import fft3_centered, nyquist_disc, rfft_radius_px

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
        # Image frequency index k (units 1/(D apix)) → padded-grid index c + k·Dp/D, c = (Dp − 1)/2,
        # → grid_sample's [-1, 1] (align_corners): (index − c) · 2/(Dp − 1).
        self._scale = (Dp / D) * 2.0 / (Dp - 1)
        self._points = None  # the default points, made on first use
        self._plane_of = (None, None)  # (points, their plane): the last points sampled

    def default_points(self) -> torch.Tensor:
        """Flat indices into the ``(D, D//2+1)`` half plane of the Nyquist disc
        (:func:`~cryoscape.physics.fourier.nyquist_disc`, the convention of
        :class:`~cryoscape.physics.imaging.ImagingGrid`, whose ``points`` are the same for ``pad`` 1)."""
        return torch.nonzero(nyquist_disc(rfft_radius_px(self.D, 1, self.device), self.D).reshape(-1))[:, 0]

    def _plane(self, points: torch.Tensor) -> torch.Tensor:
        """``(kx, ky, 0)`` at the flat half-plane ``points``, exact integers in pixels of image frequency,
        ``(P, 3)`` in the volume's dtype (kept for the last ``points`` tensor seen)."""
        if self._plane_of[0] is not points:
            W = self.D // 2 + 1
            p = points.to(self.device)
            row, kx = p // W, p % W
            ky = torch.where(row < (self.D + 1) // 2, row, row - self.D)
            self._plane_of = (points, torch.stack([kx, ky, torch.zeros_like(kx)], -1).to(self.dtype))
        return self._plane_of[1]

    def sample(self, q: torch.Tensor) -> torch.Tensor:
        """``apix · V̂(q)`` at points ``q (..., 3)`` = ``(qx, qy, qz)`` in pixels of image frequency, by
        trilinear interpolation of the padded transform (0 outside it) → ``(...)`` complex."""
        shape = q.shape[:-1]
        grid = (q.to(self.dtype) * self._scale).reshape(1, 1, -1, 1, 3)
        out = F.grid_sample(self._vhat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out.reshape(2, *shape) * self.apix
        return torch.complex(out[0], out[1])

    def project_fourier(self, R: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 3, 3)`` poses → ``(N, D, D//2+1)`` complex slices (DFT of the projections).

        ``points``: flat indices into the half plane of the frequencies to sample (an
        :class:`~cryoscape.physics.imaging.ImagingGrid`'s ``points``, pad 1); the rest is 0. Default: the
        Nyquist disc :meth:`default_points` (the same set)."""
        N, D = R.shape[0], self.D
        W = D // 2 + 1
        if points is None:
            if self._points is None:
                self._points = self.default_points()
            points = self._points
        plane = self._plane(points)
        # Points Rᵀ k for row vectors k: k @ R; grid_sample wants (x, y, z) = (kx, ky, kz) ordering.
        values = self.sample(torch.matmul(plane.to(R.dtype), R))
        full = torch.zeros(N, D * W, dtype=values.dtype, device=self.device)
        full[:, points.to(self.device)] = values
        return full.reshape(N, D, W)

    def project(self, R: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 3, 3)`` poses → ``(N, D, D)`` real projections, origin at pixel ``D // 2``."""
        return torch.fft.fftshift(torch.fft.irfft2(self.project_fourier(R, points), s=(self.D, self.D)),
                                  dim=(-2, -1))
