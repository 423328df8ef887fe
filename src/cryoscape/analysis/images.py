"""Image-quality metrics of a denoised image against its clean truth: MSE, PSNR, SSIM, FRC, correlation.

All take ``estimate`` and ``clean`` as arrays of the same shape ``(N, H, W)`` (or one ``(H, W)`` image) and
score image by image; the summary is the mean over images.

- ``MSE_i = mean_p (x̂_i(p) − x_i(p))²`` (pixel value²).
- ``PSNR_i = 10 · log10(range(x_i)² / MSE_i)`` dB with ``range(x_i) = max x_i − min x_i`` of the clean
  image (CONVENTIONS.md: per image, then averaged — seed 004's definition).
- ``SSIM_i``: scikit-image's structural similarity with ``data_range = range(x_i)`` (Wang et al. 2004,
  7×7 uniform window).
- ``FRC_i(r) = Re Σ_{|k|∈r} X̂ X* / sqrt(Σ|X̂|² Σ|X|²)`` over the integer shells of
  :class:`~cryoscape.physics.imaging.ImagingGrid` (square images), via
  :func:`cryoscape.physics.likelihood.shell_correlation`.
- Pearson correlation ``ρ_i`` of the pixel values (micrographs: the figure Topaz-Denoise is compared by).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["mse", "psnr", "ssim", "frc", "frc_resolution_A", "pearson", "image_scores"]


def _pair(estimate, clean) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 ``(N, H, W)`` arrays of the same shape, or ValueError naming the mismatch."""
    a = np.asarray(estimate.detach().cpu() if isinstance(estimate, torch.Tensor) else estimate, np.float64)
    b = np.asarray(clean.detach().cpu() if isinstance(clean, torch.Tensor) else clean, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"estimate {a.shape} and clean {b.shape} differ in shape")
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"expected (N, H, W) images with N ≥ 1, got {a.shape}")
    return a, b


def mse(estimate, clean) -> np.ndarray:
    """Mean squared error of every image, ``(N,)`` float64."""
    a, b = _pair(estimate, clean)
    return ((a - b) ** 2).mean(axis=(1, 2))


def psnr(estimate, clean) -> np.ndarray:
    """``10 log10(range(clean_i)² / MSE_i)`` dB of every image, ``(N,)``; ``inf`` where the MSE is 0."""
    a, b = _pair(estimate, clean)
    err = ((a - b) ** 2).mean(axis=(1, 2))
    rng = b.max(axis=(1, 2)) - b.min(axis=(1, 2))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(rng ** 2 / err)


def ssim(estimate, clean) -> np.ndarray:
    """scikit-image's SSIM of every image with ``data_range = range(clean_i)``, ``(N,)`` (a 7×7 window, smaller
    for images under 7 px; NaN below 3 px, where it is undefined)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(estimate, clean)
    side = min(a.shape[1:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return np.full(a.shape[0], np.nan)  # undefined below a 3×3 window
    return np.array([structural_similarity(x, y, data_range=float(y.max() - y.min()) or 1.0, win_size=win)
                     for x, y in zip(a, b)])


def frc(estimate, clean) -> np.ndarray:
    """FRC of every image against its clean image, ``(N, D//2)`` float64 (square images of side D)."""
    from ..physics.fourier import rfft2_centered
    from ..physics.imaging import ImagingGrid
    from ..physics.likelihood import shell_correlation

    a, b = _pair(estimate, clean)
    if a.shape[1] != a.shape[2]:
        raise ValueError(f"the FRC needs square images, got {a.shape[1]}×{a.shape[2]}")
    D = a.shape[-1]
    grid = ImagingGrid(D, 1.0, dtype=torch.float64)
    fa, fb = rfft2_centered(torch.from_numpy(a)), rfft2_centered(torch.from_numpy(b))
    return np.stack([shell_correlation(x, y, grid.shell, grid.n_shells, grid.friedel).numpy()
                     for x, y in zip(fa, fb)])


def frc_resolution_A(estimate, clean, apix: float, threshold: float = 0.5) -> float:
    """Resolution (Å) where the mean FRC over the images first drops below ``threshold`` (0.5: against a
    noiseless reference), by :func:`cryoscape.analysis.fsc.resolution_at`."""
    from .fsc import resolution_at

    curve = frc(estimate, clean).mean(axis=0)
    return float(resolution_at(curve, np.asarray(clean).shape[-1], apix, threshold))


def pearson(estimate, clean) -> np.ndarray:
    """Pearson correlation of the pixel values of every image with its clean image, ``(N,)``."""
    a, b = _pair(estimate, clean)
    a = a - a.mean(axis=(1, 2), keepdims=True)
    b = b - b.mean(axis=(1, 2), keepdims=True)
    den = np.sqrt((a * a).sum(axis=(1, 2)) * (b * b).sum(axis=(1, 2)))
    return (a * b).sum(axis=(1, 2)) / np.maximum(den, 1e-300)


def image_scores(estimate, clean, with_ssim: bool = True) -> dict[str, float]:
    """Means over the images: ``mse``, ``psnr_dB``, ``ssim`` (when ``with_ssim``) and ``pearson``."""
    out = {"mse": float(mse(estimate, clean).mean()), "psnr_dB": float(psnr(estimate, clean).mean()),
           "pearson": float(pearson(estimate, clean).mean())}
    if with_ssim:
        out["ssim"] = float(ssim(estimate, clean).mean())
    return out
