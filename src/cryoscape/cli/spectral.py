"""``cryoscape spectral``: per-particle atomic models by spectral decomposition (Esteve-Yagüe et al. 2023).

Options → :class:`~cryoscape.methods.spectral.run.SpectralConfig` → :func:`cryoscape.runs.spectral.spectral_run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["spectral"]


def spectral(
    particles: Path = typer.Argument(..., help="Particles with poses (and CTF): RELION .star, cryoSPARC .cs with "
                                              "--poses, or an .mrcs stack with --poses and --ctf (cryoDRGN "
                                              "pickles). Without CTF parameters the fit runs CTF-free."),
    reference: Path = typer.Option(..., "--reference", help="The given model: PDB/mmCIF, or a trajectory with "
                                                           "--topology and --frame."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (must not exist)."),
    topology: Optional[Path] = typer.Option(None, "--topology", help="Topology of a trajectory reference."),
    frame: int = typer.Option(0, "--frame", help="Frame (or model) of the reference to use."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="cryoDRGN poses .pkl (overrides the file's)."),
    ctf: Optional[Path] = typer.Option(None, "--ctf", help="cryoDRGN CTF .pkl (overrides the file's)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks a STAR or .cs refers to."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å, when no file states it."),
    features: str = typer.Option("images", "--features", help="Feature source of the graph: images (main modes "
                                 "of 3-D variability from the images, poses and CTF) or oracle (the paper's "
                                 "low-resolution maps of the true conformations; needs --truth-models)."),
    truth_models: Optional[Path] = typer.Option(None, "--truth-models", help="True models of a simulated set "
                                                "(truth/models.pdb; particles mapped by the STAR's "
                                                "cryoscapeConformation and truth/frame_ids.npy): scores the result."),
    model: str = typer.Option("cartesian", "--model", help="cartesian (default, measured best: positions linear "
                              "in the eigenvectors, smooth along the chain) or angles (the paper's: bend and "
                              "torsion angles linear in the eigenvectors; the paper used --k 10)."),
    k: int = typer.Option(3, "--k", help="Number of eigenvectors (3 measured best with the cartesian model)."),
    variability_modes: int = typer.Option(1, "--variability-modes", help="Image features: modes of 3-D "
                                          "variability per particle (1 measured best on AdK's one-path motion)."),
    epochs: int = typer.Option(30, "--epochs", help="Epochs per stage (the cartesian model's refit is a second "
                               "stage)."),
    batch_size: int = typer.Option(100, "--batch-size", help="Images per step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Step size (default: 1.0 for the cartesian model, "
                                       "0.01 for the angle model; the loss is relative to the images' mean "
                                       "square, so SGD needs ~5 where Adam takes 0.01 on the angle model)."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam (default; robust) or sgd (momentum 0.9, "
                                                             "as in the paper)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Step schedule: constant or cosine (default: "
                                           "cosine for the cartesian model, constant for the angle model)."),
    smooth_modes: int = typer.Option(20, "--smooth-modes", help="Cartesian: cosines along the chain per axis."),
    refine_modes: int = typer.Option(60, "--refine-modes", help="Cartesian: then refit with this many cosines "
                                     "from the first fit, at a tenth of the step (60 measured best; 0: no refit)."),
    hidden: int = typer.Option(0, "--hidden", help="Cartesian: units of a small MLP term beside the linear one "
                               "(0: linear only)."),
    bias: bool = typer.Option(False, "--bias", help="Angle model: learn a constant angle offset too."),
    bonds: str = typer.Option("constant", "--bonds", help="Angle model: constant (the paper) or given (the "
                                                          "reference's own bond lengths)."),
    sigma: float = typer.Option(3.0, "--sigma", help="Gaussian atom width, Å (as in the simulation)."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Particles held out for the metrics."),
    seed: int = typer.Option(0, "--seed"),
    models_format: str = typer.Option("pdb", "--models-format", help="pdb (one model per particle) or dcd "
                                      "(models.dcd + models_topology.pdb: 12 bytes per atom and particle); past 62 "
                                      "chains models.cif or models_topology.cif."),
    device: str = typer.Option("auto", "--device", help="auto (a GPU when torch sees one), cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use, shared among torchrun's processes)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    no_progress: bool = typer.Option(False, "--no-progress"),
):
    """Recover a Cα model per particle from images with known poses (spectral graph + linear model). Runs
    under torchrun (--batch-size is the global batch); an interrupted run resumes when run again."""
    from ..methods.spectral.run import SpectralConfig, default_fit
    from ..runs.spectral import spectral_run

    model = "angles" if model == "angle" else model
    fit = default_fit(model, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                      sigma=sigma, seed=seed, device=device)
    cfg = SpectralConfig(features=features, k=k, bias=bias, bonds=bonds, model=model, smooth_modes=smooth_modes,
                         refine_modes=refine_modes, hidden=hidden, variability_modes=variability_modes,
                         test_fraction=test_fraction, fit=fit)
    summary = spectral_run(particles, reference, out, cfg, topology=topology, frame=frame, poses=poses, ctf=ctf,
                           datadir=datadir, apix=apix, truth_models=truth_models, models_format=models_format,
                           overwrite=overwrite, threads=threads, show_progress=not no_progress,
                           echo=lambda m: typer.echo(m, err=True))
    if summary is None:  # a rank other than 0 under torchrun
        return
    m = summary["metrics"]
    brief = {key: round(m[key], 3) for key in ("n_particles", "test_initial_avg_error_A", "test_trained_avg_error_A",
                                     "test_trained_avg_max_error_A", "test_trained_max_error_A") if key in m}
    typer.echo(json.dumps({**brief, "wall_s": round(summary["wall_s"], 1)}))
    models_files = " + ".join(f for f in summary.get("files", []) if f.startswith("models"))
    typer.echo(f"wrote {out}/{models_files}, embedding.npy, metrics.json, embedding.png, training.png")
