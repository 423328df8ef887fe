"""Fourier shell correlation between two maps, and the figures read off it.

``FSC(r) = Re Σ_{|k|∈r} F1 F2* / sqrt(Σ |F1|² · Σ |F2|²)`` over integer shells ``r = 0 .. D//2 − 1``
(in pixels of frequency; shell ``r`` holds ``r − ½ ≤ |k| < r + ½``), frequency ``r / (D · apix)``. The
shell sums are :func:`cryoscape.physics.likelihood.shell_correlation` on the shells of
:func:`cryoscape.physics.imaging.shell_index_3d` (the core every method shares); this module takes and gives
numpy arrays and adds the resolution, the FSC-AUC and the real-space correlation.
"""

from __future__ import annotations

import numpy as np
import torch

from ..physics.imaging import shell_index_3d
from ..physics.likelihood import shell_correlation

__all__ = ["fsc", "shell_frequencies", "resolution_at", "fsc_auc", "real_space_correlation"]


def fsc(map1, map2, mask=None) -> np.ndarray:
    """FSC per shell, ``(D//2,)`` float64 for two ``(D, D, D)`` maps (numpy or torch, any scale), optionally
    both multiplied by ``mask`` (real space) first.

    The sums run over the ``rfftn`` half space with Friedel weights (2 for a point that stands for itself
    and its mirror ``−k``, 1 on the planes ``kx = 0`` and, for even ``D``, ``kx = D/2``, which hold both), the
    same sums as over the whole transform at half the cost."""
    a, b = (torch.as_tensor(np.asarray(m, np.float64)) for m in (map1, map2))
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"maps must be cubic and equal in shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask, np.float64))
        if m.shape != a.shape:
            raise ValueError(f"mask shape {tuple(m.shape)} differs from the maps' {tuple(a.shape)}")
        a, b = a * m, b * m
    D = a.shape[0]
    fa, fb = (torch.fft.rfftn(torch.fft.ifftshift(v)) for v in (a, b))
    friedel = torch.full((D // 2 + 1,), 2.0, dtype=torch.float64)
    friedel[0] = 1.0
    if D % 2 == 0:
        friedel[-1] = 1.0
    return shell_correlation(fa, fb, shell_index_3d(D, rfft=True), D // 2, friedel).numpy()


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
