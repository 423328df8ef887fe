"""``cryoscape pick``: particles on micrographs by the blob, template or learned picker (options → the picker's
config → :mod:`cryoscape.runs.pick`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

__all__ = ["pick_cmd"]


def pick_cmd(
    micrographs: List[Path] = typer.Argument(..., help="Micrographs .mrc (never changed)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder to create (must not exist)."),
    method: str = typer.Option("learned", "--method", "-m", help="learned (trained from --labels, or "
                               "--model), blob (no labels) or template (--template and --ctf)."),
    radius: Optional[float] = typer.Option(None, "--radius", help="Particle radius, Å (required unless "
                                           "--model gives it)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="learned: a coordinate file (RELION STAR, "
                                          ".box, .cbox, Topaz .txt) with a few particles to train from."),
    model: Optional[Path] = typer.Option(None, "--model", help="learned: apply this trained model.pt."),
    template: Optional[Path] = typer.Option(None, "--template", help="template: a map .mrc, an atomic model "
                                            "or class averages .mrcs."),
    ctf: Optional[Path] = typer.Option(None, "--ctf", help="The micrographs' CTFs (a RELION micrographs STAR)."),
    param: List[str] = typer.Option([], "--param", "-p", help="A picker option as KEY=VALUE (repeatable), e.g. "
                                    "-p threshold=1; an unknown key lists the picker's options."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="True particle centres (a coordinate file): "
                                         "adds precision, recall, AUPRC and duplicates to metrics.json."),
    fmt: List[str] = typer.Option([], "--format", help="Also write relion (per micrograph), eman, cryolo or "
                                  "topaz coordinates (repeatable); picks.star is always written."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å (default: the headers)."),
    overlays: int = typer.Option(4, "--overlays", help="Overlay PNGs for the first N micrographs."),
    match_radius: Optional[float] = typer.Option(None, "--match-radius", help="With --truth: a pick matches "
                                                 "a particle within this many pixels (default: radius/2)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bars."),
):
    """Pick particles. Writes picks.star (+ other coordinate formats), overlay PNGs and metrics.json; the
    learned picker also writes model.pt."""
    from ..methods.pick import get
    from ..runs.pick import pick_run
    from .params import parse_config_params

    _, config_cls = get(method).load()
    options = parse_config_params(method, config_cls, param)
    if device is not None and "device" in config_cls.__dataclass_fields__:
        options["device"] = device
    summary = pick_run(micrographs, out, method=method, options=options, radius_A=radius, apix=apix, ctf_star=ctf,
                       labels=labels, model=model, template=template, truth=truth, formats=tuple(fmt),
                       overlays=overlays, match_radius=match_radius, overwrite=overwrite, threads=threads,
                       progress=not no_progress, echo=lambda m: typer.echo(m, err=True))
    if summary is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    typer.echo(json.dumps(summary["metrics"]))
    typer.echo(f"wrote {out}/ ({', '.join(summary['files'][:6])}{', …' if len(summary['files']) > 6 else ''})")
