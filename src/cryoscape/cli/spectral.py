"""``cryoscape spectral``: per-particle atomic models by spectral decomposition (Esteve-Yagüe et al. 2023)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["spectral"]


def spectral(
    particles: Path = typer.Argument(..., help="Particles with poses and CTF: RELION .star (or .mrcs with --poses)."),
    reference: Path = typer.Option(..., "--reference", help="The given model: PDB/mmCIF, or a trajectory with "
                                                           "--topology and --frame."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (must not exist)."),
    topology: Optional[Path] = typer.Option(None, "--topology", help="Topology of a trajectory reference."),
    frame: int = typer.Option(0, "--frame", help="Frame (or model) of the reference to use."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="cryoDRGN poses .pkl (with a .mrcs input)."),
    ctf: Optional[Path] = typer.Option(None, "--ctf", help="cryoDRGN CTF .pkl (with a .mrcs input)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks a STAR refers to."),
    features: str = typer.Option("images", "--features", help="Feature source of the graph: images (main modes "
                                 "of 3-D variability from the images, poses and CTF) or oracle (the paper's "
                                 "low-resolution maps of the true conformations; needs --truth-models)."),
    truth_models: Optional[Path] = typer.Option(None, "--truth-models", help="True models of a simulated set "
                                                "(truth/models.pdb; particles mapped by the STAR's "
                                                "cryoscapeConformation and truth/frame_ids.npy)."),
    k: int = typer.Option(10, "--k", help="Number of eigenvectors."),
    variability_modes: int = typer.Option(1, "--variability-modes", help="Image features: modes of 3-D "
                                          "variability per particle (1 measured best on AdK's one-path motion)."),
    epochs: int = typer.Option(30, "--epochs"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Step size (default: Adam 0.01 for the angle model, "
                                       "1.0 with a cosine schedule for the cartesian; the loss is relative to the "
                                       "images' mean square, so SGD needs ~5 where Adam takes 0.01 on the angle "
                                       "model)."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam (default; robust) or sgd (momentum 0.9, "
                                                             "as in the paper)."),
    model: str = typer.Option("angles", "--model", help="angles (the paper's: bend and torsion angles linear "
                              "in the eigenvectors) or cartesian (positions linear in the eigenvectors, smooth "
                              "along the chain; best measured with --k 3 or 4, see docs/benchmarks.md)."),
    smooth_modes: int = typer.Option(20, "--smooth-modes", help="Cosines along the chain per axis (cartesian)."),
    refine_modes: int = typer.Option(0, "--refine-modes", help="Cartesian: then refit with this many cosines from "
                                     "the first fit, at a tenth of the step (0: no refit; 60 measured best)."),
    hidden: int = typer.Option(0, "--hidden", help="Cartesian: units of a small MLP term beside the linear one "
                               "(0: linear only)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Step schedule: constant or cosine (default: "
                                           "cosine for the cartesian model, constant for the angle model)."),
    bias: bool = typer.Option(False, "--bias", help="Learn a constant angle offset too."),
    bonds: str = typer.Option("constant", "--bonds", help="constant (the paper) or given (the reference's own)."),
    sigma: float = typer.Option(3.0, "--sigma", help="Gaussian atom width, Å (as in the simulation)."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Particles held out for the metrics."),
    seed: int = typer.Option(0, "--seed"),
    models_format: str = typer.Option("pdb", "--models-format", help="pdb (one model per particle) or dcd "
                                      "(models.dcd + models_topology.pdb: 12 bytes per atom and particle)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    no_progress: bool = typer.Option(False, "--no-progress"),
):
    """Recover a Cα model per particle from images with known poses (spectral graph + linear angle model)."""
    import numpy as np

    from ..data.particles import load_particles
    from ..io.atomic import check_can_write
    from ..io.errors import InputError
    from .checks import at_least, one_of
    from ..io.models import read_model, read_structure
    from ..io.star import read_star
    from dataclasses import asdict

    from ..methods.spectral.model import FitConfig
    from ..methods.spectral.run import SpectralConfig, run_spectral, write_spectral
    from ..utils.progress import progress_bar

    check_can_write(out, overwrite)
    one_of("--features", features, ("images", "oracle"))
    for name, value in (("--k", k), ("--epochs", epochs), ("--variability-modes", variability_modes)):
        at_least(name, value, 1)
    at_least("--hidden", hidden, 0)
    at_least("--seed", seed, 0)
    one_of("--models-format", models_format, ("pdb", "dcd"))
    one_of("--optimizer", optimizer, ("sgd", "adam"))
    ref = read_structure(reference, topology, "ca", frames=[frame])
    coords = ref.coords[0] - ref.coords[0].mean(0)
    data = load_particles(particles, poses, ctf, datadir)
    truth = conf = None
    if truth_models is not None:
        models = read_model(truth_models, "ca")
        if models.n_atoms != ref.n_atoms:
            raise InputError(truth_models, f"has {models.n_atoms} Cα but the reference has {ref.n_atoms}")
        if particles.suffix.lower() != ".star":
            raise InputError(particles, "--truth-models needs a STAR with the cryoscapeConformation column")
        table = read_star(particles)
        table.require(["cryoscapeConformation"], "--truth-models")
        ids_file = truth_models.parent / "frame_ids.npy"
        frame_ids = np.load(ids_file) if ids_file.exists() else np.arange(models.n_frames)
        lookup = {int(f): i for i, f in enumerate(frame_ids)}
        conf = table.particles["cryoscapeConformation"].to_numpy(dtype=np.int64)
        missing = [c for c in np.unique(conf) if int(c) not in lookup]
        if missing or len(frame_ids) != models.n_frames:
            raise InputError(truth_models, "its models do not match the particles' cryoscapeConformation values")
        truth = models.coords[[lookup[int(c)] for c in conf]]
    if ref.n_atoms < 4:
        raise InputError(reference, f"needs at least 4 Cα, has {ref.n_atoms}")
    if lr is None:
        lr = 1.0 if model == "cartesian" else 0.01
    if schedule is None:
        schedule = "cosine" if model == "cartesian" else "constant"
    one_of("--schedule", schedule, ("constant", "cosine"))
    cfg = SpectralConfig(features=features, k=k, bias=bias, bonds=bonds, model=model, smooth_modes=smooth_modes,
                         refine_modes=refine_modes, hidden=hidden, variability_modes=variability_modes,
                         test_fraction=test_fraction,
                         fit=FitConfig(epochs=epochs, lr=lr, optimizer=optimizer, schedule=schedule, sigma=sigma,
                                       seed=seed))
    stages = 2 if model == "cartesian" and refine_modes > smooth_modes else 1
    with progress_bar(epochs * stages, "training", not no_progress) as bar:
        result = run_spectral(data, coords, cfg, truth, bar)
    config = {"command": "spectral", "particles": str(particles), "reference": str(reference), "frame": frame,
              "truth_models": str(truth_models) if truth_models else None, **asdict(cfg)}
    summary = write_spectral(out, result, ref, config, overwrite, color=conf, models_format=models_format)
    brief = {"n_particles": summary["n_particles"], "wall_s": summary["wall_s"]}
    for stage in ("test_initial", "test_trained"):
        if summary[stage]:
            brief[stage] = {m: round(summary[stage][m], 3) for m in ("avg_error_A", "avg_max_error_A",
                                                                    "max_error_A")}
    typer.echo(json.dumps(brief))
    models_files = "models.dcd + models_topology.pdb" if models_format == "dcd" else "models.pdb"
    typer.echo(f"wrote {out}/{models_files}, embedding.npy, metrics.json, embedding.png, training.png")
