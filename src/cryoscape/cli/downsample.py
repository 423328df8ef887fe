"""``cryoscape downsample``: Fourier-crop images or a map to a smaller box."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["downsample"]


def downsample(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="A stack (.mrcs), a map (.mrc) or a particle "
                                                               ".star (its stacks are written into one new stack)."),
    box: int = typer.Option(..., "-D", "--box", help="New box size in pixels (smaller than the input's)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output file (.mrcs, .mrc or .star)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks a STAR refers to."),
    chunk: int = typer.Option(1000, "--chunk", help="Images per chunk."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output if it exists."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Fourier-crop images or a map to a smaller box (the pixel size grows by the same factor)."""
    from ..runs.reconstruct import downsample_run

    summary = downsample_run(input_path, box, out, datadir=datadir, chunk=chunk, overwrite=overwrite,
                             progress=not no_progress)
    typer.echo(json.dumps(summary))
