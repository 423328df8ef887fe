"""Comparison panel of denoising: the same images before and after (and their truth), side by side (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import new_figure, save_figure

__all__ = ["comparison_panel"]

MAX_DISPLAY_PX = 512  # larger images (micrographs) are block-averaged down to at most this for the figure


def _display(img: np.ndarray) -> np.ndarray:
    """``img`` block-averaged by the smallest integer factor that brings both sides to ≤ 512 px."""
    f = max(1, int(np.ceil(max(img.shape) / MAX_DISPLAY_PX)))
    if f == 1:
        return img
    H, W = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:H, :W].reshape(H // f, f, W // f, f).mean(axis=(1, 3))


def comparison_panel(path: str | Path, rows: dict, title: str = "", max_columns: int = 6) -> Path:
    """One row per entry of ``rows`` (label → ``(n, H, W)`` images, the same ``n`` images in every row, e.g.
    ``{"input": noisy, "denoised": out, "truth": clean}``), one column per image (at most ``max_columns``).
    Images are drawn with y up (as every image figure of the project), each panel on its own grey scale
    (1st–99th percentile), micrographs block-averaged to ≤ 512 px. Returns ``path``."""
    named = [(k, np.asarray(v, dtype=np.float64)) for k, v in rows.items() if v is not None]
    if not named:
        raise ValueError("nothing to draw")
    n = min(max_columns, min(v.shape[0] for _, v in named))
    big = max(named[0][1].shape[1:]) > 128
    size = 3.2 if big else 1.4
    fig, axes = new_figure(len(named), n, figsize=(size * n + 0.6, size * len(named) + (0.3 if title else 0)),
                           squeeze=False)
    for r, (label, imgs) in enumerate(named):
        for c in range(n):
            ax = axes[r, c]
            img = _display(imgs[c])
            lo, hi = np.percentile(img, [1, 99])
            ax.imshow(img, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, 100)
