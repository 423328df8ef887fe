"""``cryoscape filter``: keep the particles of a STAR selected in a latent space, an embedding or by 2-D class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["filter_cmd"]


def filter_cmd(
    particles: Path = typer.Argument(..., help="Particle .star file to filter."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .star (its indices go to <out>_indices.pkl)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Cluster label per particle (.npy, .pkl, text)."),
    clusters: Optional[str] = typer.Option(None, "--clusters", help="With --labels: clusters to keep, e.g. 0,2."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Keep these 2-D classes (the STAR's "
                                                                  "rlnClassNumber, 1-based), e.g. 1,3."),
    embedding: Optional[Path] = typer.Option(None, "--embedding", help="(N, 2) embedding per particle (.npy, .pkl, "
                                                                       "text), e.g. UMAP or two PCs."),
    box: Optional[str] = typer.Option(None, "--box", help="With --embedding: keep xmin,xmax,ymin,ymax."),
    polygon: Optional[Path] = typer.Option(None, "--polygon", help="With --embedding: keep inside this polygon "
                                                                    "(text: x y per line; or JSON [[x, y], ...])."),
    ind: Optional[Path] = typer.Option(None, "--ind", help="Particle indices to keep (.pkl, .npy or text)."),
    invert: bool = typer.Option(False, "--invert", help="Keep the particles NOT selected."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks the STAR refers to."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
):
    """Write the selected particles as a new RELION 3.1 .star (image paths kept resolvable) and a cryoDRGN
    index .pkl, selecting by cluster label, by 2-D class (rlnClassNumber), by a box or polygon in a 2-D
    embedding, or by an index file."""
    from ..runs.filter import filter_run

    summary = filter_run(particles, out, labels=labels, clusters=clusters, classes=classes, embedding=embedding,
                         box=box, polygon=polygon, ind=ind, invert=invert, datadir=datadir, overwrite=overwrite)
    if summary["unresolved_stacks"]:
        typer.echo(f"warning: {summary['unresolved_stacks']} image stack(s) not found; their names were kept "
                   "as written (use --datadir)", err=True)
    typer.echo(json.dumps(summary))
