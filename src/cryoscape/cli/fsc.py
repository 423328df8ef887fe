"""``cryoscape fsc``: Fourier shell correlation of two maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["fsc_cmd"]


def fsc_cmd(
    map1: Path = typer.Argument(..., help="First map (.mrc)."),
    map2: Path = typer.Argument(..., help="Second map (.mrc), same box."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Real-space mask (.mrc) applied to both maps."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Voxel size, Å (default: from the headers)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the curve and figures as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the FSC plot (PNG)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing -o/--plot files."),
):
    """Fourier shell correlation of two maps: resolution at 0.143 and 0.5, FSC-AUC, real-space correlation."""
    from ..runs.reconstruct import compare_maps

    res = compare_maps(map1, map2, mask=mask, apix=apix, out=out, plot=plot, overwrite=overwrite)
    typer.echo(json.dumps(res))
