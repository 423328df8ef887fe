"""``cryoscape backproject``: a map by direct Fourier inversion, with half maps and FSC, in a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["backproject"]


def backproject(
    particles: Path = typer.Argument(..., help="Particles: RELION .star or cryoSPARC .cs (poses and CTF from their "
                                              "columns), or an .mrcs stack with --poses/--ctf cryoDRGN pickles."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (must not exist)."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="cryoDRGN poses .pkl (overrides the file's)."),
    ctf: Optional[Path] = typer.Option(None, "--ctf", help="cryoDRGN CTF .pkl (overrides the file's)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks a STAR or .cs refers to."),
    ind: Optional[Path] = typer.Option(None, "--ind", help="Particle indices to use (.pkl, .npy or text)."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å, when no file states it."),
    reg: float = typer.Option(0.01, "--reg", help="Regulariser λ = reg × mean CTF² weight."),
    wiener: bool = typer.Option(False, "--wiener", help="Per-shell λ from the half-map FSC instead (RELION-style "
                                                       "Wiener filter; MSE-optimal amplitudes)."),
    no_half_maps: bool = typer.Option(False, "--no-half-maps", help="Skip the half maps."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random half split."),
    interp: str = typer.Option("trilinear", "--interp", help="Insertion: trilinear (default) or nearest (faster, "
                                                               "coarser)."),
    pad: int = typer.Option(1, "--pad", help="Fourier padding factor (1: best FSC with a CTF; 2: accurate "
                                            "amplitudes for data without CTF)."),
    no_ctf: bool = typer.Option(False, "--no-ctf", help="Ignore the CTF."),
    mask_radius: float = typer.Option(0.9, "--mask-radius", help="Soft mask radius, fraction of half the box "
                                                                "(0: no mask)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="A reference map: also report the FSC to it."),
    chunk: int = typer.Option(64, "--chunk", help="Images per chunk."),
    device: str = typer.Option("auto", "--device", help="auto (a GPU when torch sees one), cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use, from its affinity and cgroup quota)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder if it exists."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Reconstruct a map by direct Fourier inversion (CTF-weighted, regularised) with half maps and FSC."""
    from ..methods.reconstruct import BackprojectConfig
    from ..runs.reconstruct import backproject_run

    cfg = BackprojectConfig(pad=pad, reg=reg, wiener=wiener, half_maps=not no_half_maps, seed=seed, chunk=chunk,
                            ctf=not no_ctf, mask_radius=mask_radius, interp=interp, device=device)
    summary = backproject_run(particles, out, cfg, poses=poses, ctf=ctf, datadir=datadir, ind=ind, apix=apix,
                              truth=truth, overwrite=overwrite, progress=not no_progress, threads=threads,
                              say=lambda line: typer.echo(line, err=True))
    keys = ("n_images", "box_px", "apix_A", "wall_s", "resolution_fsc0.143_A", "resolution_fsc0.5_A",
            "resolution_truth_fsc0.143_A")
    typer.echo(json.dumps({k: summary[k] for k in keys if k in summary}))
    typer.echo(f"wrote {out}/map.mrc" + (", half_map_A/B.mrc" if not no_half_maps else "")
               + ", fsc.json, fsc.png, metrics.json")
