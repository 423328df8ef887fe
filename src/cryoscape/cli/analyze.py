"""``cryoscape analyze``: the latent space of a train-vae run (:func:`cryoscape.runs.vae.analyze_run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["analyze"]


def analyze(
    run: Path = typer.Argument(..., help="A train-vae run folder."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output folder (default: RUN/analyze)."),
    k: int = typer.Option(20, "--k", help="k-means clusters (a map at each centre)."),
    pcs: int = typer.Option(2, "--pcs", help="Principal components to traverse (a map series along each)."),
    n_points: int = typer.Option(10, "--n-points", help="Maps along each principal component."),
    umap: bool = typer.Option(True, "--umap/--no-umap", help="Also a UMAP embedding (needs umap-learn)."),
    maps: bool = typer.Option(True, "--maps/--no-maps", help="Decode maps at the centres and along the PCs."),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means and UMAP."),
    device: str = typer.Option("cpu", "--device", help="Where maps are decoded: auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder."),
):
    """Latent-space analysis: PCA, UMAP, k-means with the particles nearest each centre, maps at the centres
    and along principal components, and plots (latent scatter and density, PC trajectories, loss curves)."""
    from ..runs.vae import analyze_run

    summary = analyze_run(run, out, k=k, pcs=pcs, n_points=n_points, umap=umap, maps=maps, seed=seed,
                          overwrite=overwrite, device=device, echo=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps(summary["metrics"]))
    typer.echo(f"wrote {out or run / 'analyze'}/ (z_pca, kmeans, pc trajectories{', maps' if maps else ''}, plots)")
