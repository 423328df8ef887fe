"""Fourier shell correlation between two maps.

``FSC(r) = Re Σ_{|k|∈r} F1 F2* / sqrt(Σ |F1|² · Σ |F2|²)`` over integer shells ``r = 0 .. D//2 − 1``
(in pixels of frequency; shell ``r`` holds ``r − ½ ≤ |k| < r + ½``), frequency ``r / (D · apix)``.
Sums use a shell histogram (``bincount``), so the cost is one FFT per map.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fsc", "shell_frequencies", "resolution_at", "fsc_auc", "real_space_correlation"]


def _shell_index(D: int) -> np.ndarray:
    f = np.fft.fftshift(np.fft.fftfreq(D)) * D  # centred integer frequencies
    r = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    return np.rint(r).astype(np.int64)


def fsc(map1: np.ndarray, map2: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """FSC per shell, ``(D//2,)`` for two ``(D, D, D)`` maps (any scale), optionally both multiplied
    by ``mask`` (real space) first."""
    a, b = np.asarray(map1, np.float64), np.asarray(map2, np.float64)
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"maps must be cubic and equal in shape, got {a.shape} and {b.shape}")
    if mask is not None:
        m = np.asarray(mask, np.float64)
        if m.shape != a.shape:
            raise ValueError(f"mask shape {m.shape} differs from the maps' {a.shape}")
        a, b = a * m, b * m
    D = a.shape[0]
    F1 = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(a)))
    F2 = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(b)))
    shell = _shell_index(D).ravel()
    n = D // 2
    keep = shell < n
    s = shell[keep]
    num = np.bincount(s, (F1 * np.conj(F2)).real.ravel()[keep], minlength=n)
    p1 = np.bincount(s, (np.abs(F1) ** 2).ravel()[keep], minlength=n)
    p2 = np.bincount(s, (np.abs(F2) ** 2).ravel()[keep], minlength=n)
    return num / np.sqrt(np.maximum(p1 * p2, 1e-300))


def shell_frequencies(D: int, apix: float) -> np.ndarray:
    """Spatial frequency (1/Å) of each shell ``r = 0 .. D//2 − 1``: ``r / (D · apix)``."""
    return np.arange(D // 2) / (D * apix)


def resolution_at(curve: np.ndarray, D: int, apix: float, threshold: float = 0.143) -> float:
    """Resolution (Å) where the FSC first drops below ``threshold`` (linear interpolation between
    shells); the Nyquist limit ``2 apix`` when it never does."""
    freqs = shell_frequencies(D, apix)
    below = np.nonzero(curve < threshold)[0]
    below = below[below > 0]
    if len(below) == 0:
        return 2 * apix
    i = below[0]
    f0, f1, c0, c1 = freqs[i - 1], freqs[i], curve[i - 1], curve[i]
    f = f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1) if c0 != c1 else f1
    return 1.0 / f


def fsc_auc(curve: np.ndarray, D: int) -> float:
    """Area under the FSC curve against ``arange(D//2) / D`` (CryoBench's FSC-AUC; perfect ≈ 0.49)."""
    x = np.arange(D // 2) / D
    y = np.asarray(curve, np.float64)[: D // 2]
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def real_space_correlation(map1: np.ndarray, map2: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of voxel values (inside ``mask > 0`` when given)."""
    a, b = np.asarray(map1, np.float64).ravel(), np.asarray(map2, np.float64).ravel()
    if mask is not None:
        keep = np.asarray(mask).ravel() > 0
        a, b = a[keep], b[keep]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
