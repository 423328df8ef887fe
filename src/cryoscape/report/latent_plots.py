"""Plots of a latent space (PNG, matplotlib object API through :mod:`.plots`; no pyplot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import new_figure, save_figure

__all__ = ["latent_scatter", "latent_density", "loss_curves"]


def _points(points2d) -> np.ndarray:
    p = np.asarray(points2d, np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"points must be (N, 2), got shape {p.shape}")
    return p[:, :2]


def latent_scatter(path: str | Path, points2d, color=None, clusters=None, centres=None, xlabel: str = "PC1",
                   ylabel: str = "PC2", title: str = "", color_label: str = "") -> Path:
    """Scatter of ``points2d`` (N, 2), e.g. PCA or UMAP coordinates.

    Colour by a continuous ``color`` (N,) (with a colour bar labelled ``color_label``) or by integer
    ``clusters`` (N,) (tab10/tab20 colours, legend); ``centres`` (k, 2) are drawn as numbered black
    crosses (cluster ``i`` labelled ``i``).
    """
    p = _points(points2d)
    fig, ax = new_figure(figsize=(5, 4.5))
    size = float(np.clip(2e4 / max(len(p), 1), 0.5, 12))
    if clusters is not None:
        lab = np.asarray(clusters).ravel()
        names = np.unique(lab)
        from matplotlib import colormaps
        cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
        for j, c in enumerate(names):
            m = lab == c
            ax.scatter(p[m, 0], p[m, 1], s=size, color=cmap(j % cmap.N), label=str(c), linewidths=0)
        if len(names) <= 20:
            ax.legend(fontsize=7, markerscale=max(1.0, 12 / size) ** 0.5, title="cluster", title_fontsize=7)
    elif color is not None:
        sc = ax.scatter(p[:, 0], p[:, 1], s=size, c=np.asarray(color).ravel(), cmap="viridis", linewidths=0)
        fig.colorbar(sc, ax=ax, label=color_label)
    else:
        ax.scatter(p[:, 0], p[:, 1], s=size, color="tab:blue", alpha=0.5, linewidths=0)
    if centres is not None:
        c = _points(centres)
        ax.scatter(c[:, 0], c[:, 1], marker="x", s=40, color="black")
        for i, (x, y) in enumerate(c):
            ax.annotate(str(i), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8, weight="bold",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path, 110)


def latent_density(path: str | Path, points2d, gridsize: int = 60, xlabel: str = "PC1", ylabel: str = "PC2",
                   title: str = "") -> Path:
    """Hexagonal-bin density of ``points2d`` (N, 2), counts on a log colour scale."""
    p = _points(points2d)
    fig, ax = new_figure(figsize=(5, 4.5))
    hb = ax.hexbin(p[:, 0], p[:, 1], gridsize=gridsize, bins="log", cmap="magma", mincnt=1)
    fig.colorbar(hb, ax=ax, label="particles per bin")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path, 110)


def loss_curves(path: str | Path, history: list, keys=None, log: bool = False) -> Path:
    """Per-epoch values from ``history`` (a list of dicts with ``"epoch"`` and numbers, e.g.
    ``{"epoch": 3, "loss": 0.91, "kld": 2.1}``), one panel per key in ``keys`` (default: every numeric key
    but ``epoch``), log y-axis when ``log``."""
    if not history:
        raise ValueError("history is empty")
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    if keys is None:
        keys = [k for k, v in history[0].items() if k != "epoch" and isinstance(v, (int, float))]
    if not keys:
        raise ValueError("history has no numeric values to plot")
    fig, axes = new_figure(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot(epochs, [h.get(k, np.nan) for h in history], marker="o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(k)
        if log:
            ax.set_yscale("log")
    return save_figure(fig, path, 100)
