"""Plots written as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["new_figure", "save_figure", "fsc_plot", "embedding_plot", "training_plot", "views_plot",
           "structures_plot"]


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots`` makes them, but from ``matplotlib.figure`` directly: no
    pyplot (measured ~0.3 s of import, the larger part of a short command's plotting), no global state."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig, path: str | Path, dpi: int = 100, tight: bool = True) -> Path:
    """Write ``fig`` as PNG (Agg), laid out by ``tight_layout`` unless ``tight`` is False (the caller set
    fixed margins: saves ~0.2 s on one small figure)."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)


def fsc_plot(path: str | Path, curves: dict, D: int, apix: float) -> Path:
    """FSC curves against spatial frequency with the 0.143 and 0.5 thresholds; x-axis labelled in 1/Å
    with resolution (Å) on top. Drawn with Pillow (:mod:`.lineplot`): this plot is on the path of quick
    commands, where importing matplotlib would cost more than the reconstruction of a small job."""
    from ..analysis.fsc import resolution_at, shell_frequencies
    from .lineplot import Axis, Curve, line_plot_png, nice_ticks
    f = shell_frequencies(D, apix)
    lines = [Curve(f, np.asarray(c), f"{name} (0.143: {resolution_at(np.asarray(c), D, apix, 0.143):.2f} Å)")
             for name, c in curves.items()]
    xt = nice_ticks(0, float(f[-1]))
    x = Axis("spatial frequency (1/Å)", 0.0, float(f[-1]), xt, [f"{v:g}" for v in xt])
    yt = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    y = Axis("FSC", -0.1, 1.02, yt, [f"{v:.1f}" for v in yt])
    nice = [r for r in (50, 30, 20, 15, 10, 8, 6, 5, 4, 3.5, 3, 2.5, 2, 1.5, 1.2, 1) if 1 / r <= f[-1]]
    top = Axis("resolution (Å)", x.lo, x.hi, [1 / r for r in nice], [f"{r:g}" for r in nice])
    return line_plot_png(path, lines, x, y, top, hlines=(0.143, 0.5))


def embedding_plot(path: str | Path, v: np.ndarray, color: np.ndarray | None = None) -> Path:
    """Point clouds of the spectral coordinates: (v1, v2), (v1, v3), (v2, v3) (the trivial v0 left out)."""
    pairs = [(1, 2), (1, 3), (2, 3)]
    pairs = [(a, b) for a, b in pairs if b < v.shape[1]] or [(0, min(1, v.shape[1] - 1))]
    fig, axes = new_figure(1, len(pairs), figsize=(4 * len(pairs), 3.6), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        sc = ax.scatter(v[:, a], v[:, b], s=6, **({} if color is None else {"c": color, "cmap": "viridis"}))
        ax.set_xlabel(f"eigenvector {a}")
        ax.set_ylabel(f"eigenvector {b}")
    if color is not None:
        fig.colorbar(sc, ax=axes[0, -1], label="true conformation")
    return save_figure(fig, path, 100)


def training_plot(path: str | Path, history: list) -> Path:
    """Training loss per epoch (relative to the images' mean square)."""
    fig, ax = new_figure(figsize=(5, 3.5))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("relative squared error")
    return save_figure(fig, path, 100)


def views_plot(path: str | Path, views: dict) -> Path:
    """Rows: particles; columns: the images in ``views`` (name → ``(n, D, D)``), e.g. observed, initial,
    truth, prediction."""
    names = list(views)
    n = len(next(iter(views.values())))
    fig, axes = new_figure(n, len(names), figsize=(2.2 * len(names), 2.2 * n), squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(views[name][i], cmap="gray", origin="lower")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    return save_figure(fig, path, 90)


def structures_plot(path: str | Path, initial: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> Path:
    """Cα traces ``(n, L, 3)`` of a few particles seen along z: the given model, the truth and the
    prediction overlaid, one panel per particle."""
    n = len(truth)
    fig, axes = new_figure(1, n, figsize=(4 * n, 4), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        for c, name, style in ((initial, "initial", ":"), (truth, "truth", "-"), (prediction, "prediction", "--")):
            ax.plot(c[i, :, 0], c[i, :, 1], style, lw=1, label=name)
        ax.set_aspect("equal")
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
        if i == 0:
            ax.legend(fontsize=8)
    return save_figure(fig, path, 90)
