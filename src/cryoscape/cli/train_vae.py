"""``cryoscape train-vae``: the VAE with known poses (options → :class:`VAEConfig` → :mod:`cryoscape.runs.vae`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["train_vae_cmd"]


def train_vae_cmd(
    particles: Path = typer.Argument(..., help="Particles with poses (and CTF): RELION .star, cryoSPARC .cs with "
                                              "--poses, or an .mrcs stack with --poses and --ctf (cryoDRGN "
                                              "pickles)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder (must not exist). An interrupted run resumes "
                                                      "when the same command is run again."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="cryoDRGN poses .pkl (overrides the file's)."),
    ctf: Optional[Path] = typer.Option(None, "--ctf", help="cryoDRGN CTF .pkl (overrides the file's)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks a STAR or .cs refers to."),
    ind: Optional[Path] = typer.Option(None, "--ind", help="Particle indices to use (.pkl, .npy or text)."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å, when no file states it."),
    zdim: int = typer.Option(8, "--zdim", help="Latent dimension."),
    epochs: int = typer.Option(20, "-n", "--epochs", help="Epochs (passes over the data)."),
    enc_dim: int = typer.Option(256, "--enc-dim", help="Encoder width."),
    enc_layers: int = typer.Option(3, "--enc-layers", help="Encoder residual hidden layers (counted as cryoDRGN does)."),
    dec_dim: int = typer.Option(256, "--dec-dim", help="Decoder width."),
    dec_layers: int = typer.Option(3, "--dec-layers", help="Decoder residual hidden layers (counted as cryoDRGN does)."),
    encoder: str = typer.Option("mlp", "--encoder", help="mlp (on the pixels inside the circle) or cnn."),
    pe_type: str = typer.Option("gaussian", "--pe-type", help="Positional encoding: gaussian (random Fourier "
                                "features; measured better) or geom (geometric frequencies per axis)."),
    pe_dim: Optional[int] = typer.Option(None, "--pe-dim", help="Frequencies per axis (default: box / 2)."),
    pe_sigma: float = typer.Option(0.5, "--pe-sigma", help="Width of the gaussian features (× box)."),
    output: str = typer.Option("complex", "--output", help="Decoder output: complex (real, imaginary; half "
                               "space) or hartley (one value; two evaluations per frequency)."),
    batch_size: int = typer.Option(16, "-b", "--batch-size", help="Images per step (all processes together "
                                                                   "under torchrun)."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (of the first epoch with --schedule cosine)."),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine (the step falls to 0 by the last epoch) or "
                                 "constant."),
    beta: Optional[float] = typer.Option(None, "--beta", help="KL weight (default 1/zdim)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation, shuffling and sampling."),
    lazy: bool = typer.Option(False, "--lazy", help="Read images batch by batch each epoch instead of keeping "
                              "them in memory (the default when they would take over 4 GB)."),
    chunk: int = typer.Option(1024, "--chunk", help="Images read at a time when lazy."),
    buffer: Optional[int] = typer.Option(None, "--buffer", help="Lazy: shuffle within a buffer of this many "
                                         "images, reading whole chunks in file order (default: full shuffle)."),
    no_ctf: bool = typer.Option(False, "--no-ctf", help="Ignore the CTF."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="Decoder products in bfloat16 (default: "
                                        "on where the device has bfloat16 hardware; 1.5–2.3× faster on a CPU, same "
                                        "accuracy measured; docs/benchmarks.md)."),
    device: str = typer.Option("auto", "--device", help="auto (a GPU when torch sees one), cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use, shared among torchrun's processes)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Train a VAE (cryoDRGN-class) on particles with known poses: a latent per particle and a decoder of maps.
    Runs under torchrun (one process per GPU or per group of cores; --batch-size is the global batch)."""
    from ..methods.vae import VAEConfig
    from ..runs.vae import train_vae_run

    cfg = VAEConfig(zdim=zdim, enc_dim=enc_dim, enc_layers=enc_layers, dec_dim=dec_dim, dec_layers=dec_layers,
                    encoder=encoder, pe_type=pe_type, pe_dim=pe_dim, pe_sigma=pe_sigma, output=output,
                    epochs=epochs, batch_size=batch_size, lr=lr, beta=beta, seed=seed,
                    in_memory=False if lazy else None, chunk=chunk, buffer=buffer, use_ctf=not no_ctf, bf16=bf16,
                    schedule=schedule, device=device)
    summary = train_vae_run(particles, out, cfg, poses=poses, ctf=ctf, datadir=datadir, ind=ind, apix=apix,
                            overwrite=overwrite, threads=threads, show_progress=not no_progress,
                            echo=lambda m: typer.echo(m, err=True))
    if summary is not None:  # rank 0
        typer.echo(json.dumps(summary["metrics"]))
        typer.echo(f"wrote {out}/z.npy, z.pkl, checkpoint.pt, history.json, loss.png, metrics.json")
