"""``cryoscape extract``: particle boxes from micrographs at picked coordinates → ``particles.mrcs`` + a RELION
particle STAR (options → :class:`~cryoscape.runs.extract.ExtractConfig` → :func:`~cryoscape.runs.extract.
extract_run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

__all__ = ["extract_cmd"]


def extract_cmd(
    micrographs: List[Path] = typer.Argument(..., help="Micrographs (.mrc, one section each; never changed)."),
    coords: List[Path] = typer.Option(..., "--coords", "-c", help="Coordinate file(s) (repeatable): RELION "
                                      "coordinate STAR (per micrograph or one for all), EMAN .box, Topaz .txt, "
                                      "crYOLO .cbox. Matched to micrographs by file name."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder to create (must not exist)."),
    box: int = typer.Option(..., "--box", "-b", help="Box size in micrograph pixels."),
    bin: int = typer.Option(1, "--bin", help="Bin the boxes by this factor (Fourier cropping; must divide the "
                            "box): output box/bin pixels of bin × apix Å."),
    radius_a: Optional[float] = typer.Option(None, "--radius-A", help="Background radius for the normalisation, "
                                             "Å (default: 37.5 % of the box, RELION's 75 % diameter)."),
    ctf: Optional[Path] = typer.Option(None, "--ctf", help="RELION micrographs STAR with each micrograph's CTF "
                                       "(micrographs_ctf.star): written per particle into particles.star."),
    phase_flip: bool = typer.Option(False, "--phase-flip", help="Flip phases by the micrograph's CTF (needs "
                                    "--ctf; the STAR is marked rlnCtfDataArePhaseFlipped)."),
    invert: bool = typer.Option(False, "--invert", help="Invert contrast (for micrographs with dark particles)."),
    pad: bool = typer.Option(False, "--pad", help="Keep boxes that leave the micrograph, filled with its mean "
                             "(default: skip them and count them in metrics.json)."),
    no_norm: bool = typer.Option(False, "--no-norm", help="Skip the normalisation (background mean 0, std 1)."),
    no_ramp: bool = typer.Option(False, "--no-ramp", help="Normalise by the background's mean only (no plane)."),
    no_subpixel: bool = typer.Option(False, "--no-subpixel", help="Cut at the nearest pixel only (the residual "
                                     "offset goes to rlnOriginX/YAngst)."),
    coords_format: Optional[str] = typer.Option(None, "--coords-format", help="relion, relion-multi, eman, topaz "
                                                "or cryolo (default: from the file)."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Micrograph pixel size, Å, when no header states it."),
    batch: int = typer.Option(256, "--batch", help="Boxes per batch (bounds memory)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Extract particles: sub-pixel centred, optionally phase-flipped, binned, normalised boxes in particles.mrcs
    and a RELION 3.1 particles.star with each particle's micrograph and CTF (for backproject, class2d,
    train-vae)."""
    from ..runs.extract import ExtractConfig, extract_run

    cfg = ExtractConfig(box=box, bin=bin, radius_A=radius_a, subpixel=not no_subpixel, normalize=not no_norm,
                        ramp=not no_ramp, phase_flip=phase_flip, invert=invert, pad=pad, batch=batch, device=device)
    summary = extract_run(micrographs, coords, out, cfg, coords_format=coords_format, ctf_star=ctf, apix=apix,
                          overwrite=overwrite, threads=threads, progress=not no_progress,
                          echo=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps(summary["metrics"]))
    typer.echo(f"wrote {out}/ (particles.mrcs, particles.star, metrics.json)")
