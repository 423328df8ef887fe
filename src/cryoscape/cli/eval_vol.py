"""``cryoscape eval-vol``: maps from a trained VAE (:func:`cryoscape.runs.vae.eval_vol_run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["eval_vol"]


def eval_vol(
    run: Path = typer.Argument(..., help="A train-vae run folder (or its checkpoint.pt)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder for the maps (must not exist)."),
    z: Optional[str] = typer.Option(None, "--z", help="One latent, e.g. '0.1,-0.5,...' (zdim values)."),
    zfile: Optional[Path] = typer.Option(None, "--zfile", help="Latents, one per row (.txt, .npy or .pkl)."),
    kmeans: int = typer.Option(0, "--kmeans", help="Maps at k-means centres of the run's latents (the "
                                                   "particle nearest each centre)."),
    pc: int = typer.Option(0, "--pc", help="Maps along this principal component of the run's latents (1-based)."),
    n_points: int = typer.Option(10, "--n-points", help="Maps along the principal component."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Voxel size, Å (default: the training data's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder."),
):
    """Maps from a trained VAE at given latents, at k-means centres or along a principal component."""
    from ..runs.vae import eval_vol_run

    summary = eval_vol_run(run, out, z=z, zfile=zfile, kmeans=kmeans, pc=pc, n_points=n_points, apix=apix,
                           seed=seed, overwrite=overwrite, device=device)
    typer.echo(json.dumps(summary["metrics"]))
    typer.echo(f"wrote {out}/vol_000.mrc … vol_{summary['metrics']['n_maps'] - 1:03d}.mrc, z_values.txt")
