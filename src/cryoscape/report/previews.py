"""Preview images of a simulation: the stages of image formation and the CTF of a few defoci.

Figures only: the images are rendered by the caller (``cryoscape.runs.simulate``) and handed in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["simulation_previews", "stages_figure", "ctf_figure"]


def stages_figure(path: str | Path, rows: list[tuple[str, torch.Tensor]], column_titles: list[str],
                  title: str) -> Path:
    """A grid of images: one row per ``(name, images (k, D, D))`` of ``rows``, one column per particle
    (``column_titles``, ``k`` of them), origin at the lower left. Returns the PNG path."""
    from .plots import new_figure, save_figure
    k = len(column_titles)
    fig, axes = new_figure(len(rows), k, figsize=(2.2 * k, 2.27 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(np.asarray(imgs[c]), cmap="gray", origin="lower")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, Path(path))


def ctf_figure(path: str | Path, params, D: int, apix: float) -> Path:
    """The CTF of each particle of ``params`` (a :class:`~cryoscape.physics.ctf.CTFParams`, a few defoci) on
    the ``D²`` grid of pixel size ``apix`` Å (DC at the centre), and its radial profile up to Nyquist."""
    from ..physics.ctf import ctf_2d
    from ..physics.fourier import freq_grid_2d
    from .plots import new_figure, save_figure
    p = params
    n = len(p)
    ky, kx = freq_grid_2d(D, apix, dtype=torch.float64)
    ctf = ctf_2d(kx, ky, p.defocus_u, p.defocus_v, p.angle_ast, p.voltage_kv, p.cs_mm, p.amp_contrast,
                 p.phase_shift, p.bfactor)
    fig, axes = new_figure(1, n + 1, figsize=(3 * (n + 1), 3))
    s = torch.linspace(0, 1 / (2 * apix), 600, dtype=torch.float64)  # fine 1-D profile to Nyquist
    prof = ctf_2d(s[None], torch.zeros_like(s)[None], p.defocus_u, p.defocus_v, p.angle_ast, p.voltage_kv,
                  p.cs_mm, p.amp_contrast, p.phase_shift, p.bfactor)[:, 0]
    for i in range(n):
        df = float(p.defocus_u[i]) / 1e4
        axes[i].imshow(ctf[i].numpy(), cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
        axes[i].set_title(f"CTF on the {D}² grid, Δf {df:.2f} µm", fontsize=8)
        axes[i].set_xticks([]), axes[i].set_yticks([])
        axes[n].plot(s.numpy(), prof[i].numpy(), lw=0.8, label=f"{df:.2f} µm")
    axes[n].set_xlabel("spatial frequency (1/Å)")
    axes[n].axhline(0, color="k", lw=0.5)
    axes[n].legend(fontsize=7)
    return save_figure(fig, Path(path))


def simulation_previews(folder: str | Path, projections: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor,
                        defocus_A, ctf_examples, box: int, apix: float, snr: float) -> list[Path]:
    """Write ``stages.png`` (projection → after CTF → after noise, one column per particle given) and
    ``ctf.png`` (:func:`ctf_figure` of ``ctf_examples``) into ``folder``.

    Args:
        projections, clean, noisy: ``(k, D, D)`` images of the same ``k`` particles at the three stages.
        defocus_A: ``(k,)`` their defocus (Å), for the column titles.
        ctf_examples: a :class:`~cryoscape.physics.ctf.CTFParams` of a few defoci for ``ctf.png``.
        box, apix, snr: for the titles and the CTF grid.

    Returns the paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    titles = [f"#{c + 1}  Δf {float(df) / 1e4:.2f} µm" for c, df in enumerate(defocus_A)]
    rows = [("projection", projections), ("after CTF", clean), ("after noise", noisy)]
    stages = stages_figure(folder / "stages.png", rows, titles, f"{box} px, {apix:.3g} Å/px, SNR {snr:g}")
    return [stages, ctf_figure(folder / "ctf.png", ctf_examples, box, apix)]
