"""``cryoscape simulate`` and ``cryoscape demo``: particle datasets from models, trajectories or maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import microscope as mic

__all__ = ["simulate", "parse_frames"]


def parse_frames(text: str | None):
    """``"0,5,9"`` or ``"start:stop[:step]"`` → list of ints (None passes through)."""
    if text is None:
        return None
    from ..io.errors import InputError
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            return list(range(*parts))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError("--frames", f"cannot parse {text!r} (use 0,5,9 or start:stop:step)") from None


def simulate(
    input_path: Optional[Path] = typer.Argument(None, metavar="[INPUT]",
        help="Trajectory (DCD/XTC/TRR, with --topology), PDB/mmCIF (multi-model = conformations) or .mrc "
             "map. Default: the embedded AdK closed→open trajectory."),
    out: Path = typer.Option(Path("cryoscape_sim"), "-o", "--out", help="Output folder (must not exist)."),
    topology: Optional[Path] = typer.Option(None, "--topology", help="Topology for a trajectory (PSF/PDB/GRO)."),
    frames: Optional[str] = typer.Option(None, "--frames", help="Frames to use: '0,5,9' or 'start:stop:step'."),
    stride: int = typer.Option(1, "--stride", help="Use every k-th frame."),
    atoms: str = typer.Option("ca", "--atoms", help="Atoms drawn as Gaussians: ca, heavy or all."),
    n_images: int = typer.Option(1000, "-n", "--n-images", help="Number of particle images."),
    box: Optional[int] = typer.Option(None, "--box", help="Box size, px (default 64, or the map's)."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å (default: from the model's extent "
                                                             "or the map header)."),
    snr: float = typer.Option(0.1, "--snr", help="Signal-to-noise ratio (variance ratio); 'inf' = no noise."),
    sigma: float = typer.Option(3.0, "--sigma", help="Gaussian atom width, Å."),
    projection: str = typer.Option("auto", "--projection", help="Atoms → image: exact (each Gaussian sampled at "
                                   "the pixels), splat (B-spline splat + Gaussian applied in Fourier space, "
                                   "faster; error ~3e-4 at σ = 1.5 px) or auto (splat when σ ≥ 1.5 px)."),
    defocus_min: float = mic.DEFOCUS_MIN,
    defocus_max: float = mic.DEFOCUS_MAX,
    defocus_groups: int = typer.Option(0, "--defocus-groups", help="0: continuous defocus; K: K values evenly "
                                       "spaced between min and max (defocus groups, as in CWF benchmarks)."),
    astigmatism: float = mic.ASTIGMATISM,
    voltage: float = mic.VOLTAGE,
    cs: float = mic.CS,
    amp_contrast: float = mic.AMP_CONTRAST,
    bfactor: float = mic.BFACTOR,
    phase_shift_deg: float = mic.PHASE_SHIFT,
    shift_max: float = typer.Option(0.0, "--shift-max", help="Random particle offsets up to this radius, Å."),
    view_cone_deg: float = typer.Option(180.0, "--view-cone-deg", help="Viewing directions within this angle "
                                        "of +z (180: uniform on the sphere); in-plane angle always uniform."),
    sampling: str = typer.Option("random", "--sampling", help="Conformations per image: random (with "
                                 "replacement), balanced (each frame equally often) or sequential."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed → identical files)."),
    chunk: int = typer.Option(1024, "--chunk", help="Images per chunk (bounds memory)."),
    no_ctf: bool = typer.Option(False, "--no-ctf", help="Do not apply the CTF."),
    ctf_pad: int = typer.Option(1, "--ctf-pad", help="Apply the CTF on a canvas this many times the box and cut "
                                                     "the box out (2: no wrap-around of delocalised signal)."),
    save_clean: bool = typer.Option(False, "--save-clean", help="Also write noiseless images to truth/ "
                                    "(clean.mrcs with the CTF; clean_noctf.mrcs without)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder if it exists."),
    device: str = typer.Option("cpu", "--device", help="Where images are formed: cpu (the same bytes on every "
                               "machine), cuda, cuda:N or auto (a GPU when torch sees one; last bits differ)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the cores this "
                                          "process may use, from its affinity and cgroup quota)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
):
    """Simulate particle images with ground truth: projection, shift, CTF and noise."""
    from ..data.simulate import SimulationConfig
    from ..runs.simulate import run_simulate

    cfg = SimulationConfig(
        n_images=n_images, box=box, apix=apix, snr=snr, sigma=sigma,
        defocus_min_um=defocus_min, defocus_max_um=defocus_max, defocus_groups=defocus_groups,
        astigmatism_um=astigmatism,
        voltage_kv=voltage, cs_mm=cs, amp_contrast=amp_contrast, bfactor=bfactor,
        phase_shift_deg=phase_shift_deg, shift_max_A=shift_max, view_cone_deg=view_cone_deg, sampling=sampling, seed=seed, chunk=chunk,
        ctf=not no_ctf, ctf_pad=ctf_pad, save_clean=save_clean)
    summary = run_simulate(cfg, out, input_path=input_path, topology=topology, atoms=atoms,
                           frames=parse_frames(frames), stride=stride, projection=projection, overwrite=overwrite,
                           show_progress=not no_progress, device=device, threads=threads)
    typer.echo(json.dumps(summary))
    typer.echo(f"wrote {out}/particles.star, particles.mrcs, truth/, previews/, metrics.json")

