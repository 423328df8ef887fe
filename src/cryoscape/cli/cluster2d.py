"""``cryoscape cluster2d``: cluster particle images by conformation on rotation-invariant features, optionally
refined by 2-D EM (options → :mod:`cryoscape.runs.cluster2d`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["cluster2d_cmd"]


def cluster2d_cmd(
    particles: Path = typer.Argument(..., help="Particle RELION .star file (poses not needed)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder (must not exist)."),
    clusters: int = typer.Option(..., "-K", "--clusters", help="Number of clusters."),
    features: str = typer.Option("acf", "--features", help="Rotation-invariant features: acf (autocorrelation; "
                                 "also shift-invariant), power (steerable power spectrum) or bispectrum."),
    method: str = typer.Option("kmeans", "--method", help="kmeans or gmm (Gaussian mixture)."),
    n_features: int = typer.Option(32, "--n-features", help="Bispectrum features kept after its PCA."),
    refine_iterations: int = typer.Option(0, "--refine-iterations", help="Refine the clusters by this many "
                                          "2-D EM iterations (0: features only)."),
    phase_flip: bool = typer.Option(True, "--phase-flip/--no-phase-flip", help="Flip phases by the CTF's sign "
                                    "before computing the features."),
    shift_range: float = typer.Option(3.0, "--shift-range", help="Refinement: largest offset searched, px."),
    starts: int = typer.Option(1, "--starts", help="Independent EM runs (seeds seed, seed+1, …); the one with the "
                               "highest log-likelihood is kept (4 gave 0.90–1.0 on 5 close conformations)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="Refinement device: cpu, cuda, cuda:N or auto."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks the STAR refers to."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Cluster particle images (e.g. conformations seen along one direction) on rotation-invariant features
    of the phase-flipped images, optionally refined by 2-D EM. Writes labels.npy/.txt, embedding.npy,
    embedding_pca.npy, embedding.png and particles.star (rlnClassNumber = label + 1)."""
    from ..methods.class2d.em import Class2DConfig
    from ..runs.cluster2d import cluster2d_run

    cfg = Class2DConfig(shift_range_px=shift_range, n_starts=starts, device=device)
    summary = cluster2d_run(particles, out, n_clusters=clusters, features=features, method=method,
                            refine_iterations=refine_iterations, phase_flip=phase_flip, n_features=n_features,
                            seed=seed, refine_cfg=cfg, datadir=datadir, overwrite=overwrite, threads=threads,
                            progress=not no_progress, echo=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps(summary["metrics"]))
    typer.echo(f"wrote {out}/labels.npy, labels.txt, embedding.npy, embedding_pca.npy, embedding.png, "
               "particles.star, metrics.json")
