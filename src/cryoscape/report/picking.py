"""Overlay of picks on a micrograph (PNG): picks as circles of the particle radius, the truth (when known) as
small crosses, so missed particles and false picks are seen at a glance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .denoise import _display
from .plots import new_figure, save_figure

__all__ = ["pick_overlay"]


def pick_overlay(path: str | Path, micrograph, picks_xy, radius_px: float, truth_xy=None, title: str = "",
                 lowpass_px: float | None = None) -> Path:
    """Draw ``micrograph (H, W)`` (y up, as every image figure of the project; block-averaged to ≤ 512 px and,
    with ``lowpass_px``, Gaussian-blurred by that σ first so particles show at low SNR) with a circle of
    ``radius_px`` around each pick ``picks_xy (n, 2)`` ``(x, y)`` px and a cross on each true centre
    ``truth_xy (m, 2)``. Returns ``path``."""
    img = np.asarray(micrograph, dtype=np.float64)
    if lowpass_px:
        from scipy.ndimage import gaussian_filter
        img = gaussian_filter(img, lowpass_px)
    shown = _display(img)
    f = img.shape[0] / shown.shape[0] if shown.shape[0] else 1.0
    f = max(1, int(round(f)))

    def to_display(xy):
        return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) - (f - 1) / 2) / f

    h, w = shown.shape
    fig, ax = new_figure(1, 1, figsize=(7.0 * w / max(h, w) + 0.4, 7.0 * h / max(h, w) + 0.4))
    lo, hi = np.percentile(shown, [1, 99])
    ax.imshow(shown, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1)
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    p = to_display(picks_xy)
    ax.add_collection(PatchCollection([Circle((x, y), radius_px / f) for x, y in p], facecolor="none",
                                      edgecolor="#ffb000", linewidth=0.8))
    if truth_xy is not None and len(truth_xy):
        t = to_display(truth_xy)
        ax.plot(t[:, 0], t[:, 1], "+", color="#00c0ff", markersize=4, markeredgewidth=0.8)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(-0.5, h - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    label = f"{len(p)} picks (circles)" + (f", {len(truth_xy)} true centres (+)" if truth_xy is not None else "")
    ax.set_title(f"{title}\n{label}" if title else label, fontsize=8)
    return save_figure(fig, path, 100)
