"""Centred Fourier transforms and frequency grids (image and volume axes only).

Layout (CONVENTIONS.md, "Fourier space"): in a *centred* transform the DC term sits at index ``D // 2``;
the frequency of index ``i`` is ``(i - D//2) / (D · apix)`` in 1/Å. Real-space arrays have their origin
(the rotation centre) at index ``D // 2`` too, so ``fft2_centered`` of a centred, symmetric object is real.

The ``rfft`` helpers return the non-redundant half ``(..., D, D//2 + 1)`` in torch's *unshifted* layout
(DC at ``[0, 0]``) of an image whose origin is at pixel ``D // 2``; they are what the fast paths use.
Unnormalised forward transforms, ``1/D²`` on the inverse (torch's default "backward" norm).
"""

from __future__ import annotations

import torch

__all__ = [
    "fft2_centered", "ifft2_centered", "fft3_centered", "ifft3_centered",
    "rfft2_centered", "irfft2_centered", "freq_grid_2d", "rfreq_grid_2d", "freq_1d", "half_box_shift_sign",
    "rfft_radius_px", "nyquist_disc",
]


def fft2_centered(x: torch.Tensor) -> torch.Tensor:
    """``(..., D, D)`` real/complex image(s), origin at ``D//2`` → centred 2-D transform, DC at ``D//2``."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), dim=dims), dim=dims)


def ifft2_centered(f: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2_centered` (complex output; take ``.real`` for real images)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(f, dim=dims), dim=dims), dim=dims)


def fft3_centered(v: torch.Tensor) -> torch.Tensor:
    """``(..., D, D, D)`` volume(s), origin at ``D//2`` → centred 3-D transform, DC at ``D//2``."""
    dims = (-3, -2, -1)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(v, dim=dims), dim=dims), dim=dims)


def ifft3_centered(f: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft3_centered` (complex output)."""
    dims = (-3, -2, -1)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(f, dim=dims), dim=dims), dim=dims)


def rfft2_centered(x: torch.Tensor) -> torch.Tensor:
    """``(..., D, D)`` real images, origin at ``D//2`` → half transform ``(..., D, D//2+1)``, DC at [0, 0]."""
    return torch.fft.rfft2(torch.fft.ifftshift(x, dim=(-2, -1)))


def irfft2_centered(f: torch.Tensor, D: int) -> torch.Tensor:
    """Inverse of :func:`rfft2_centered`: half transform → real ``(..., D, D)`` images, origin at ``D//2``."""
    return torch.fft.fftshift(torch.fft.irfft2(f, s=(D, D)), dim=(-2, -1))


def half_box_shift_sign(D: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(−1)^(i+j)`` on the ``rfft2`` half plane ``(D, D//2+1)`` of an even box ``D``.

    Multiplying a transform by it shifts the image by ``D/2`` pixels on both axes, which for even ``D`` is
    both ``fftshift`` and ``ifftshift``: ``irfft2(f · sign) = fftshift(irfft2(f))`` and
    ``rfft2(x) · sign = rfft2(ifftshift(x))``, with no copy of the image.
    """
    if D % 2:
        raise ValueError(f"half_box_shift_sign needs an even box, got {D}")
    i = torch.arange(D, device=device)[:, None] + torch.arange(D // 2 + 1, device=device)[None, :]
    return (1 - 2 * (i % 2)).to(dtype)


def freq_1d(D: int, apix: float = 1.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """Centred frequencies ``(i - D//2) / (D apix)`` for ``i = 0..D-1`` (1/Å)."""
    return (torch.arange(D, dtype=dtype, device=device) - D // 2) / (D * apix)


def freq_grid_2d(D: int, apix: float = 1.0, dtype=torch.float32, device=None):
    """Centred 2-D frequency grid: ``(ky, kx)``, each ``(D, D)``, in 1/Å, DC at ``[D//2, D//2]``."""
    f = freq_1d(D, apix, dtype, device)
    return torch.meshgrid(f, f, indexing="ij")


def rfreq_grid_2d(D: int, apix: float = 1.0, dtype=torch.float32, device=None):
    """Frequencies of the ``rfft2`` half plane: ``(ky, kx)``, each ``(D, D//2+1)``, 1/Å, DC at [0, 0]."""
    ky = torch.fft.fftfreq(D, d=apix, dtype=dtype, device=device)
    kx = torch.fft.rfftfreq(D, d=apix, dtype=dtype, device=device)
    return torch.meshgrid(ky, kx, indexing="ij")


def rfft_radius_px(D: int, pad: int = 1, device=None) -> torch.Tensor:
    """``|k|`` in pixels of image frequency ``1/(D apix)`` on the ``rfft2`` half plane of a canvas of
    ``Dp = pad · D`` pixels: ``(Dp, Dp//2 + 1)`` float64 (exact for the integer lattice)."""
    Dp = pad * D
    i = torch.arange(Dp, dtype=torch.float64, device=device)
    ky = torch.where(i < (Dp + 1) // 2, i, i - Dp)[:, None]  # fftfreq · Dp, as exact integers
    kx = torch.arange(Dp // 2 + 1, dtype=torch.float64, device=device)[None, :]
    return torch.sqrt(kx * kx + ky * ky) / pad


def nyquist_disc(radius_px: torch.Tensor, D: int) -> torch.Tensor:
    """THE Nyquist-disc convention of a ``D``-pixel image: ``|k| ≤ D/2`` (``radius_px`` from
    :func:`rfft_radius_px`), the circle through the Nyquist frequency included. :class:`~cryoscape.physics.
    imaging.ImagingGrid` (``disc``, ``points``) and the Fourier-slice projector's default use it."""
    return radius_px <= D / 2
