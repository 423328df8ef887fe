"""Preview images of a simulation: the stages of image formation and the CTF of a few defoci."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["simulation_previews"]


def simulation_previews(folder: str | Path, plan, source, cfg, noise_sigma: float, n_show: int = 4) -> list[Path]:
    """Write ``stages.png`` (projection → after CTF → after noise, ``n_show`` particles) and ``ctf.png``.

    The noisy row is the dataset's own first particles (the same noise as in ``particles.mrcs``).

    Returns the paths written.
    """
    from ..data.simulate import add_dataset_noise, render_images
    from ..physics.ctf import CTFParams, ctf_2d
    from ..physics.fourier import freq_grid_2d
    from .plots import new_figure, save_figure
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    k = min(n_show, cfg.n_images)
    clean, proj = render_images(plan, source, slice(0, k), cfg.ctf, stages=True, ctf_pad=cfg.ctf_pad)
    noisy = add_dataset_noise(clean, noise_sigma, cfg.seed, 0)
    rows = [("projection", proj), ("after CTF", clean), ("after noise", noisy)]
    fig, axes = new_figure(3, k, figsize=(2.2 * k, 6.8), squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(imgs[c].numpy(), cmap="gray", origin="lower")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title)
            if r == 0:
                df = float(plan.ctf.defocus_u[c]) / 1e4
                ax.set_title(f"#{c + 1}  Δf {df:.2f} µm", fontsize=8)
    fig.suptitle(f"{plan.box} px, {plan.apix:.3g} Å/px, SNR {cfg.snr:g}", fontsize=10)
    stages = save_figure(fig, folder / "stages.png")

    D, apix = plan.box, plan.apix
    ky, kx = freq_grid_2d(D, apix, dtype=torch.float64)
    defoci = np.linspace(cfg.defocus_min_um, cfg.defocus_max_um, 3) * 1e4
    p = CTFParams(defoci, defoci, np.zeros(3), cfg.voltage_kv, cfg.cs_mm, cfg.amp_contrast,
                  np.deg2rad(cfg.phase_shift_deg), cfg.bfactor)
    ctf = ctf_2d(kx, ky, p.defocus_u, p.defocus_v, p.angle_ast, p.voltage_kv, p.cs_mm, p.amp_contrast,
                 p.phase_shift, p.bfactor)
    fig, axes = new_figure(1, 4, figsize=(12, 3))
    s = torch.linspace(0, 1 / (2 * apix), 600, dtype=torch.float64)  # fine 1-D profile to Nyquist
    prof = ctf_2d(s[None], torch.zeros_like(s)[None], p.defocus_u, p.defocus_v, p.angle_ast, p.voltage_kv,
                  p.cs_mm, p.amp_contrast, p.phase_shift, p.bfactor)[:, 0]
    for i in range(3):
        axes[i].imshow(ctf[i].numpy(), cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
        axes[i].set_title(f"CTF on the {D}² grid, Δf {defoci[i] / 1e4:.2f} µm", fontsize=8)
        axes[i].set_xticks([]), axes[i].set_yticks([])
        axes[3].plot(s.numpy(), prof[i].numpy(), lw=0.8, label=f"{defoci[i] / 1e4:.2f} µm")
    axes[3].set_xlabel("spatial frequency (1/Å)")
    axes[3].axhline(0, color="k", lw=0.5)
    axes[3].legend(fontsize=7)
    ctf_png = save_figure(fig, folder / "ctf.png")
    return [stages, ctf_png]
