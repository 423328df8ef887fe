"""``cryoscape demo``: options → :func:`cryoscape.runs.demo.run_demo`."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo_out"), "-o", "--out", help="Output folder."),
    n_images: int = typer.Option(1000, "-n", "--n-images", help="Number of particle images."),
    overwrite: bool = typer.Option(True, "--overwrite/--no-overwrite", help="Replace an earlier demo output."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
):
    """Run the main job on the embedded AdK dataset: simulate a heterogeneous particle dataset, reconstruct
    its consensus map with half maps and FSC, and recover a Cα model per particle (spectral method)."""
    from ..runs.demo import run_demo

    run_demo(out, n_images, overwrite, not no_progress, echo=typer.echo)
