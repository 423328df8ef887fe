"""``cryoscape class2d``: reference-free 2-D classification (options → :class:`Class2DConfig` →
:mod:`cryoscape.runs.class2d`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["class2d_cmd"]


def class2d_cmd(
    particles: Path = typer.Argument(..., help="Particle RELION .star file (poses not needed)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder (must not exist). An interrupted run resumes "
                                                      "when the same command is run again."),
    classes: int = typer.Option(50, "-K", "--classes", help="Number of classes."),
    iterations: int = typer.Option(20, "-n", "--iterations", help="EM iterations."),
    shift_range: float = typer.Option(3.0, "--shift-range", help="Largest particle offset searched, px."),
    shift_step: float = typer.Option(1.0, "--shift-step", help="Step of the offset search, px."),
    mask_diameter: Optional[float] = typer.Option(None, "--mask-diameter", help="Diameter of the soft circular "
                                                  "mask, px (default: 90 % of the box)."),
    init: str = typer.Option("random", "--init", help="Start: random (random class and rotation per image) or "
                             "features (k-means on rotation-invariant power spectra, each cluster aligned)."),
    mini_batch: Optional[int] = typer.Option(None, "--mini-batch", help="Images per iteration in stochastic "
                                             "mode (default: all images every iteration)."),
    tau_fudge: float = typer.Option(2.0, "--tau-fudge", help="Regularisation: multiplies the signal prior "
                                    "(RELION's T)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per E-step batch (bounds memory)."),
    starts: int = typer.Option(1, "--starts", help="Independent EM runs (seeds seed, seed+1, …); the one with the "
                               "highest log-likelihood is kept (4 gave 0.90–1.0 on 5 close conformations)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, data and threads → same result)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto (a GPU when torch sees one)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks the STAR refers to."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Classify particle images into 2-D classes by expectation-maximisation over classes, in-plane rotations
    and shifts (CTF-aware). Writes class_averages.mrcs, particles.star (rlnClassNumber, rlnAnglePsi, origins,
    rlnMaxValueProbDistribution), class_counts.json, frc.npy, gallery.png and history.json."""
    from ..methods.class2d.em import Class2DConfig
    from ..runs.class2d import class2d_run

    cfg = Class2DConfig(n_classes=classes, n_iterations=iterations, shift_range_px=shift_range,
                        shift_step_px=shift_step, mask_diameter_px=mask_diameter, tau_fudge=tau_fudge,
                        batch_size=batch_size, mini_batch=mini_batch, init=init, n_starts=starts, seed=seed,
                        device=device)
    summary = class2d_run(particles, out, cfg=cfg, datadir=datadir, overwrite=overwrite, threads=threads,
                          progress=not no_progress, echo=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps(summary["metrics"]))
    typer.echo(f"wrote {out}/class_averages.mrcs, particles.star, class_counts.json, frc.npy, gallery.png, "
               "history.json, metrics.json")
