"""Gallery of 2-D class averages (PNG, matplotlib object API through :mod:`.plots`; no pyplot)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .plots import new_figure, save_figure

__all__ = ["gallery_order", "class_gallery"]


def gallery_order(counts) -> np.ndarray:
    """Class indices ``(K,)`` (0-based) by decreasing particle count ``counts (K,)``; equal counts keep the
    class order (a stable sort), so the order is a pure function of the counts."""
    c = np.asarray(counts).ravel()
    return np.argsort(-c, kind="stable").astype(np.int64)


def class_gallery(path: str | Path, averages, counts, resolution_A=None, ncols: int | None = None,
                  title: str = "") -> Path:
    """Grid of class averages ``(K, D, D)`` (``[y, x]``, drawn with y up as the other image figures), largest
    class first (:func:`gallery_order`). Each panel is titled ``#k  n=count`` with ``k`` the 1-based class
    number (RELION's ``rlnClassNumber``) and, when ``resolution_A (K,)`` is given and finite, the class's
    resolution in Å. Every panel has its own grey scale (min to max of that average); an empty class is
    drawn blank. ``ncols``: panels per row (default ``ceil(sqrt(K))``, at most 10). Returns ``path``."""
    avg = np.asarray(averages, dtype=np.float64)
    if avg.ndim != 3 or avg.shape[-1] != avg.shape[-2]:
        raise ValueError(f"averages must be (K, D, D), got shape {avg.shape}")
    K = avg.shape[0]
    counts = np.asarray(counts).ravel()
    if counts.shape != (K,):
        raise ValueError(f"counts must be ({K},), got shape {counts.shape}")
    res = None if resolution_A is None else np.asarray(resolution_A, dtype=np.float64).ravel()
    ncols = int(ncols or min(10, max(1, math.ceil(math.sqrt(K)))))
    nrows = math.ceil(K / ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows + (0.3 if title else 0)),
                           squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for slot, k in enumerate(gallery_order(counts)):
        ax = axes.ravel()[slot]
        img = avg[k]
        lo, hi = float(img.min()), float(img.max())
        ax.imshow(img, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1)
        label = f"#{k + 1}  n={int(counts[k])}"
        if res is not None and np.isfinite(res[k]):
            label += f"\n{res[k]:.1f} Å"
        ax.set_title(label, fontsize=7, pad=2)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, 100)
