"""Plots written as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["fsc_plot"]


def fsc_plot(path: str | Path, curves: dict, D: int, apix: float) -> Path:
    """FSC curves against spatial frequency with the 0.143 and 0.5 thresholds; x-axis labelled in 1/Å
    with resolution (Å) on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..analysis.fsc import resolution_at, shell_frequencies
    f = shell_frequencies(D, apix)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        c = np.asarray(c)
        ax.plot(f, c, label=f"{name} (0.143: {resolution_at(c, D, apix, 0.143):.2f} Å)")
    for t in (0.143, 0.5):
        ax.axhline(t, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.02)
    ax.set_xlim(0, f[-1])
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    nice = [r for r in (50, 30, 20, 15, 10, 8, 6, 5, 4, 3.5, 3, 2.5, 2, 1.5, 1.2, 1) if 1 / r <= f[-1]]
    top.set_xticks([1 / r for r in nice])
    top.set_xticklabels([f"{r:g}" for r in nice], fontsize=7)
    top.set_xlabel("resolution (Å)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
