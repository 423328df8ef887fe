"""Backprojection by direct Fourier inversion: the adjoint of :mod:`cryoscape.physics.slice`.

Each image is zero-padded to ``pad·D`` pixels, so its transform samples frequencies as finely as the 3-D
grid (padded ``pad`` times) holds them; the transform, multiplied by its CTF, is inserted at its central
slice ``q = Rᵀ (kx, ky, 0)`` with trilinear weights, and the CTF² goes into a weight grid:

    N(q) = Σ_i Σ_k t(q − q_ik) c_ik F_ik / apix,      W(q) = Σ_i Σ_k t(q − q_ik) c_ik²

(``t`` the trilinear tent, ``F`` the DFT of the centred, zero-padded image, ``c`` its CTF). The Wiener
estimate of the map's transform is ``V̂ = N / (W + λ)``; ``λ`` per frequency shell comes from the data (half-map FSC, see
:func:`wiener_lambda`) or is given. Only the half plane ``kx ≥ 0`` inside the Nyquist disc is inserted;
Hermitian symmetry ``V̂(−q) = conj V̂(q)`` fills the rest (the ``kx = 0`` line, present twice, has weight ½).

Why the images are padded too: normalised trilinear insertion (``N / W`` voxel by voxel) averages the
samples within one voxel; with samples two voxels apart (padded volume, unpadded images) that average is
biased where ``V̂`` curves — measured on analytic data, 14 % of the mass lost near the origin and a lower
FSC at high frequency. Sampling images as finely as the volume removes the bias (mass within 1 %).
"""

from __future__ import annotations

import torch

from .fourier import ifft3_centered

__all__ = ["FourierInserter", "shell_index_padded", "wiener_lambda", "invert", "soft_sphere_mask"]


class FourierInserter:
    """Accumulates ``N`` and ``W`` for a ``D``-pixel box on a ``(Dp, Dp, Dp)`` grid (``Dp`` odd ≈ pad·D).

    ``insert`` takes transforms of images zero-padded to ``Do = pad·D`` (``(n, Do, Do//2+1)``, see
    :meth:`pad_images`).

    Args:
        D: image size. pad: padding factor. dtype: float32 or float64 accumulation.
    """

    def __init__(self, D: int, pad: int = 2, dtype: torch.dtype = torch.float32, device=None,
                 interp: str = "trilinear"):
        if interp not in ("trilinear", "nearest"):
            raise ValueError(f"interp must be 'trilinear' or 'nearest', got {interp!r}")
        self.D, self.pad, self.interp = D, pad, interp
        Dp = pad * D + (1 - (pad * D) % 2)
        self.Dp, self.c = Dp, (Dp - 1) // 2
        self.dtype, self.device = dtype, device
        # Flat accumulators over the Dp³ voxels: complex numerator N and real weight W.
        self.num = torch.zeros(Dp ** 3, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64,
                               device=device)
        self.weight = torch.zeros(Dp ** 3, dtype=dtype, device=device)
        Do = pad * D
        self.Do = Do
        ky = torch.fft.fftfreq(Do, d=1.0 / Do, dtype=torch.float64)
        kx = torch.arange(Do // 2 + 1, dtype=torch.float64)
        kyy, kxx = torch.meshgrid(ky, kx, indexing="ij")
        plane = torch.stack([kxx, kyy], -1).reshape(-1, 2)  # units 1/(Do apix)
        self.inside = torch.nonzero(plane.norm(dim=-1) <= pad * (D / 2 - 1))[:, 0].to(device)  # (M,) of Do(Do//2+1)
        self.plane = plane[self.inside.cpu()].to(device=device, dtype=dtype)
        half = torch.where(self.plane[:, 0] == 0, 0.5, 1.0)
        self.line_weight = half.to(dtype)
        self.n_images = 0

    def insert(self, f: torch.Tensor, ctf: torch.Tensor | None, R: torch.Tensor, apix: float) -> None:
        """Insert ``f`` ``(n, Do, Do//2+1)`` transforms of the padded, centred images (``rfft`` layout) with
        their CTFs on the same grid (None: no CTF) at poses ``R (n, 3, 3)``."""
        n = f.shape[0]
        dt = self.dtype
        fv = f.reshape(n, -1).index_select(1, self.inside).to(self.num.dtype) / apix  # (n, M)
        lw = self.line_weight
        if ctf is None:
            c = lw.expand(n, -1)
            w = c
        else:
            c0 = ctf.reshape(n, -1).index_select(1, self.inside).to(dt)
            c, w = c0 * lw, c0 * c0 * lw
        fc = torch.view_as_real(fv * c).reshape(-1, 2)  # (n·M, 2): real and imaginary parts of N's terms
        w = w.reshape(-1)
        # q = Rᵀ (kx, ky, 0), one contiguous (n·M,) vector per axis; the plane has no z component.
        Rs = R.to(self.plane.dtype) * (self.Dp / self.Do)
        kx, ky = self.plane[:, 0], self.plane[:, 1]
        x, y, z = (torch.addcmul(Rs[:, 0, j, None] * kx, Rs[:, 1, j, None], ky).add_(self.c).reshape(-1)
                   for j in range(3))
        Dp = self.Dp
        if self.interp == "nearest":
            ix, iy, iz = (torch.round(v).to(torch.int64) for v in (x, y, z))
            self._scatter((iz * Dp + iy) * Dp + ix, fc, w)
            self.n_images += n
            return
        x0, y0, z0 = torch.floor(x), torch.floor(y), torch.floor(z)
        fx, fy, fz = (x - x0).to(dt), (y - y0).to(dt), (z - z0).to(dt)
        base = (z0.to(torch.int64) * Dp + y0.to(torch.int64)) * Dp + x0.to(torch.int64)
        gx, gy, gz = 1 - fx, 1 - fy, 1 - fz
        for dz, wz in ((0, gz), (1, fz)):
            for dy, wy in ((0, gy), (1, fy)):
                wzy = wz * wy
                for dx, wx in ((0, gx), (1, fx)):
                    t = wzy * wx
                    self._scatter(base, fc * t[:, None], w * t, (dz * Dp + dy) * Dp + dx)
        self.n_images += n

    def _scatter(self, index: torch.Tensor, num: torch.Tensor, w: torch.Tensor, offset: int = 0) -> None:
        """Add numerator terms ``num (P, 2)`` (real, imaginary) and weights ``w (P,)`` at voxel ``index + offset``.

        1-D scatters, measured 3× faster than a row-wise ``index_add_`` on a ``(V, 3)`` array; the offset
        is a view into the accumulators, which saves adding it to every index. The complex terms are kept
        as real pairs until here because torch multiplies complex by real by first copying the real to
        complex (measured: half of the insertion time)."""
        self.num[offset:].scatter_add_(0, index, torch.view_as_complex(num))
        self.weight[offset:].scatter_add_(0, index, w)

    def pad_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, D, D)`` → ``(n, Do, Do)`` with the image centred (pixel ``D//2`` → ``Do//2``), zeros around."""
        D, Do = self.D, self.Do
        if Do == D:
            return images
        out = images.new_zeros(images.shape[0], Do, Do)
        lo = Do // 2 - D // 2
        out[:, lo:lo + D, lo:lo + D] = images
        return out

    def grids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Hermitian-completed ``(N complex (Dp,)*3, W real (Dp,)*3)`` on the centred padded grid."""
        Dp = self.Dp
        num, w = self.num.reshape(Dp, Dp, Dp), self.weight.reshape(Dp, Dp, Dp)
        # index i → Dp−1−i is q → −q on the odd, centred grid
        return num + torch.flip(num, dims=(0, 1, 2)).conj(), w + torch.flip(w, dims=(0, 1, 2))


def shell_index_padded(Dp: int, D: int, device=None) -> torch.Tensor:
    """Shell of each padded-grid voxel in image-frequency pixels: ``round(|q − c| · D / Dp)``."""
    r = torch.arange(Dp, dtype=torch.float64, device=device) - (Dp - 1) / 2
    rr = torch.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) * (D / Dp)
    return torch.round(rr).to(torch.int64)


def wiener_lambda(num_a, w_a, num_b, w_b, D: int, split_factor: float = 2.0):
    """Per-shell regulariser from two independent half sets (RELION-style, Scheres 2012).

    ``FSC(r)`` of the unregularised half estimates gives ``SSNR_half = FSC / (1 − FSC)``; the regulariser
    for a reconstruction whose weights are ``W`` is ``λ(r) = mean_{q∈r} W(q) / SSNR(r)`` with
    ``SSNR = split_factor · SSNR_half`` (2 for the full set, 1 for a half set).

    Returns:
        ``(fsc (D//2,), lam_of_shell (D//2 + ...))``: the half-set FSC and a function ``W → λ grid``.
    """
    Dp = num_a.shape[0]
    shells = shell_index_padded(Dp, D, num_a.device)
    n = D // 2
    has = (w_a > 0) & (w_b > 0) & (shells < n)
    va = torch.where(has, num_a / w_a.clamp_min(1e-30), torch.zeros_like(num_a))
    vb = torch.where(has, num_b / w_b.clamp_min(1e-30), torch.zeros_like(num_b))
    s = shells[has]
    cross = torch.bincount(s, (va[has] * vb[has].conj()).real, minlength=n)
    pa = torch.bincount(s, va[has].abs() ** 2, minlength=n)
    pb = torch.bincount(s, vb[has].abs() ** 2, minlength=n)
    fsc = cross / torch.sqrt((pa * pb).clamp_min(1e-300))
    fsc_c = fsc.clamp(1e-4, 1 - 1e-7)
    ssnr_half = fsc_c / (1 - fsc_c)

    def lam_for(W: torch.Tensor, factor: float = split_factor) -> torch.Tensor:
        keep = (W > 0) & (shells < n)
        mean_w = torch.bincount(shells[keep], W[keep], minlength=n) / \
            torch.bincount(shells[keep], minlength=n).clamp_min(1)
        lam_shell = mean_w / (factor * ssnr_half)
        big = torch.full_like(W, float("inf"))  # beyond Nyquist: no data, nothing kept
        return torch.where(shells < n, lam_shell[shells.clamp_max(n - 1)], big)

    return fsc, lam_for


def invert(num: torch.Tensor, W: torch.Tensor, lam: torch.Tensor | float, D: int,
           gridding: bool = False) -> torch.Tensor:
    """``V̂ = N / (W + λ)`` → real ``(D, D, D)`` map (crop of the padded inverse transform).

    With ``gridding``, divide by ``sinc²(x/Dp)`` on each axis (the real-space footprint of trilinear
    weights); measured on analytic data, plain normalised insertion is as accurate, so it is off by default.
    """
    Dp = num.shape[0]
    denom = W + lam
    vhat = torch.where(denom > 0, num / torch.where(denom > 0, denom, torch.ones_like(denom)),
                       torch.zeros_like(num))
    vhat = torch.where(torch.isfinite(denom), vhat, torch.zeros_like(vhat))
    vol = ifft3_centered(vhat).real
    c = (Dp - 1) // 2
    lo = c - D // 2
    vol = vol[lo:lo + D, lo:lo + D, lo:lo + D]
    if gridding:
        r = (torch.arange(D, dtype=vol.dtype, device=vol.device) - D // 2) / Dp
        s2 = torch.sinc(r) ** 2
        vol = vol / (s2[:, None, None] * s2[None, :, None] * s2[None, None, :])
    return vol.contiguous()


def soft_sphere_mask(D: int, radius: float, edge: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """1 inside ``radius`` (px, from the centre ``D//2``), a raised-cosine fall to 0 over ``edge`` px."""
    r = torch.arange(D, dtype=dtype, device=device) - D // 2
    rr = torch.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
    t = ((rr - radius) / max(edge, 1e-6)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(torch.pi * t))
