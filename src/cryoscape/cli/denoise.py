"""``cryoscape denoise``: a particle stack or micrographs through one denoising method (options → the method's
config → :mod:`cryoscape.runs.denoise`)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

import typer

__all__ = ["denoise_cmd", "parse_params"]


def parse_params(method: str, params: list[str]) -> dict:
    """``KEY=VALUE`` strings → config overrides of denoising ``method`` (:func:`~cryoscape.cli.params.parse_config_params`)."""
    from ..methods.denoise import get
    from .params import parse_config_params

    _, config_cls = get(method).load()
    return parse_config_params(method, config_cls, params)


def denoise_cmd(
    inputs: List[Path] = typer.Argument(..., help="A particle .star, an .mrcs stack, or one or more .mrc "
                                        "micrographs (never changed)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder to create (must not exist)."),
    method: str = typer.Option("auto", "--method", "-m", help="auto (cwf for a stack, unet for micrographs), "
                               "wiener, cwf (stacks), ddtf, ksvd, tv, bilateral, "
                               "wavelet, nlmeans or unet (see docs/denoising.md for measured quality and speed)."),
    param: List[str] = typer.Option([], "--param", "-p", help="A method option as KEY=VALUE (repeatable), e.g. "
                                    "-p epochs=10 for unet; an unknown key lists the method's options."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å (default: from the files)."),
    odd: List[Path] = typer.Option([], "--odd", help="unet noise2noise: the second half (odd frames) of each "
                                   "micrograph, in input order; the inputs are then the first halves."),
    truth: List[Path] = typer.Option([], "--truth", help="Clean images (an .mrcs for a stack, one .mrc per "
                                     "micrograph; CTF-free for wiener/cwf): adds PSNR, SSIM, FRC to metrics."),
    model: Optional[Path] = typer.Option(None, "--model", help="unet: apply this trained model.pt (from an "
                                         "earlier run) instead of training a new one."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks the STAR refers to."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (methods that "
                                         "run in torch: cwf, unet)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Denoise particle images or micrographs. Writes denoised.mrcs (+ particles.star) or denoised/*.mrc,
    comparison.png and metrics.json; the inputs are never altered."""
    from ..methods.denoise import get
    from ..runs.denoise import denoise_run

    from ..runs.denoise import auto_method

    method = auto_method(inputs) if method == "auto" else method
    options = parse_params(method, param)
    if device is not None:
        _, config_cls = get(method).load()
        if "device" in {f.name for f in fields(config_cls)}:
            options["device"] = device
    summary = denoise_run(inputs, out, method=method, options=options, apix=apix, datadir=datadir,
                          odd=odd or None, truth=truth or None, model=model, overwrite=overwrite, threads=threads,
                          progress=not no_progress, echo=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps(summary["metrics"]))
    typer.echo(f"wrote {out}/ ({', '.join(summary['files'][:6])}{', …' if len(summary['files']) > 6 else ''})")
