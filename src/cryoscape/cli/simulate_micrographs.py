"""``cryoscape simulate-micrographs``: micrographs with many particles, junk, CTF, noise and ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import microscope as mic

__all__ = ["simulate_micrographs_cmd", "parse_size", "parse_kinds"]


def parse_size(text: str) -> int | tuple[int, int]:
    """``"1024"`` → 1024; ``"768x1024"``, ``"768,1024"`` or ``"768 1024"`` → ``(H, W) = (768, 1024)``."""
    from ..io.errors import InputError
    parts = [p for p in text.replace("x", " ").replace("X", " ").replace(",", " ").split() if p]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2):
        raise InputError("--size", f"cannot parse {text!r} (use H, or HxW for a non-square field)")
    return vals[0] if len(vals) == 1 else (vals[0], vals[1])


def parse_kinds(text: str | None):
    """``"ice,aggregate"`` → ``("ice", "aggregate")`` (None passes through)."""
    if text is None:
        return None
    return tuple(k.strip() for k in text.split(",") if k.strip())


def simulate_micrographs_cmd(
    input_path: Optional[Path] = typer.Argument(None, metavar="[INPUT]",
        help="Trajectory (DCD/XTC/TRR, with --topology), PDB/mmCIF (multi-model = conformations) or .mrc map. "
             "Default: the embedded AdK closed→open trajectory."),
    out: Path = typer.Option(Path("cryoscape_micrographs"), "-o", "--out", help="Output folder (must not exist)."),
    topology: Optional[Path] = typer.Option(None, "--topology", help="Topology for a trajectory (PSF/PDB/GRO)."),
    frames: Optional[str] = typer.Option(None, "--frames", help="Frames to use: '0,5,9' or 'start:stop:step'."),
    stride: int = typer.Option(1, "--stride", help="Use every k-th frame."),
    atoms: str = typer.Option("ca", "--atoms", help="Atoms drawn as Gaussians: ca, heavy or all."),
    sigma: float = typer.Option(3.0, "--sigma", help="Gaussian atom width, Å."),
    projection: str = typer.Option("auto", "--projection", help="Atoms → image: exact, splat or auto."),
    n_micrographs: int = typer.Option(10, "-n", "--n-micrographs", help="Number of micrographs."),
    size: str = typer.Option("1024", "--size", help="Field size, px: H (square) or HxW (e.g. 768x1024)."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å (default 1.2, or the map's voxel "
                                                             "size)."),
    n_particles: Optional[int] = typer.Option(None, "--n-particles", help="Particles per micrograph "
                                              "(default: from --coverage)."),
    coverage: float = typer.Option(0.2, "--coverage", help="Share of the field covered by particle discs when "
                                   "--n-particles is not given."),
    min_distance: Optional[float] = typer.Option(None, "--min-distance", help="Least distance between particle "
                                                 "centres, Å (default: the particle's diameter)."),
    edge_margin: Optional[float] = typer.Option(None, "--edge-margin", help="Least distance of a centre from "
                                                "the field's edges, Å (default: the particle's radius)."),
    snr: Optional[float] = typer.Option(None, "--snr", help="Gaussian noise at this SNR (variance ratio; default "
                                        "0.1). Not with --dose."),
    snr_region: str = typer.Option("field", "--snr-region", help="Where the SNR's signal variance is measured: "
                                   "field (every pixel) or particles (the particles' own signal in their boxes)."),
    dose: Optional[float] = typer.Option(None, "--dose", help="Poisson shot noise at this dose, e/Å² (the whole "
                                         "exposure, split over the frames) instead of Gaussian noise."),
    peak_phase: float = typer.Option(0.1, "--peak-phase", help="With --dose: phase shift (rad) of the particle's "
                                     "densest projection (sets the contrast)."),
    n_frames: int = typer.Option(2, "--n-frames", help="Movie frames per micrograph (even)."),
    save_frames: bool = typer.Option(False, "--save-frames", help="Write the frames to frames/NAME.mrcs."),
    save_clean: bool = typer.Option(False, "--save-clean", help="Write the noiseless micrographs to "
                                    "truth/clean/NAME.mrc."),
    junk_fraction: float = typer.Option(0.0, "--junk-fraction", help="Share of the objects that are junk "
                                        "(0.1: one in ten)."),
    junk_kinds: Optional[str] = typer.Option(None, "--junk-kinds", help="Junk kinds, comma-separated: ice, "
                                             "aggregate, second (default: ice,aggregate[,second])."),
    second_model: Optional[Path] = typer.Option(None, "--second-model", help="A second molecule (model, "
                                                "trajectory or map) for junk of kind 'second'."),
    second_topology: Optional[Path] = typer.Option(None, "--second-topology", help="Topology for "
                                                   "--second-model."),
    ice_contrast: float = typer.Option(6.0, "--ice-contrast", help="Ice blobs' peak density / the particle's."),
    absorption: float = typer.Option(0.3, "--absorption", help="Amplitude contrast of thick objects (ice, "
                                     "carbon)."),
    carbon_edge: float = typer.Option(0.0, "--carbon-edge", help="Probability of a carbon edge per micrograph."),
    carbon_contrast: float = typer.Option(3.0, "--carbon-contrast", help="Carbon film density / the particle's "
                                          "peak."),
    gradient: float = typer.Option(0.0, "--gradient", help="Background gradient amplitude / the particle's peak."),
    mtf: bool = typer.Option(False, "--mtf", help="Apply the detector model (MTF to the signal, DQE-shaped "
                             "noise)."),
    mtf_width: float = typer.Option(1.0, "--mtf-width", help="Detector MTF Gaussian width, fraction of Nyquist."),
    dqe0: float = typer.Option(0.8, "--dqe0", help="Detector DQE at zero frequency."),
    defocus_min: float = mic.DEFOCUS_MIN,
    defocus_max: float = mic.DEFOCUS_MAX,
    astigmatism: float = mic.ASTIGMATISM,
    voltage: float = mic.VOLTAGE,
    cs: float = mic.CS,
    amp_contrast: float = mic.AMP_CONTRAST,
    bfactor: float = mic.BFACTOR,
    phase_shift_deg: float = mic.PHASE_SHIFT,
    ctf_pad: int = typer.Option(2, "--ctf-pad", help="Apply the CTF on a canvas this many times the field "
                                "(2: fringes leave the field instead of wrapping around)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed → identical files)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder if it exists."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: the usable cores)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
):
    """Simulate micrographs: particles at random positions and poses, junk, CTF, noise, frames and ground truth."""
    from ..data.micrographs import MicrographConfig
    from ..io.errors import InputError
    from ..runs.simulate_micrographs import run_simulate_micrographs
    from .simulate import parse_frames

    if snr is not None and dose is not None:
        raise InputError("--snr/--dose", "give one noise model: Gaussian at --snr or Poisson at --dose, not both")
    cfg = MicrographConfig(
        size=parse_size(size), apix=apix, n_particles=n_particles, coverage=coverage, min_distance_A=min_distance,
        edge_margin_A=edge_margin, snr=0.1 if snr is None else snr, snr_region=snr_region, dose=dose,
        peak_phase_rad=peak_phase, n_frames=n_frames, junk_fraction=junk_fraction,
        junk_kinds=parse_kinds(junk_kinds), ice_contrast=ice_contrast, absorption=absorption,
        carbon_edge=carbon_edge, carbon_contrast=carbon_contrast, gradient=gradient, mtf=mtf, mtf_width=mtf_width,
        dqe0=dqe0, defocus_min_um=defocus_min, defocus_max_um=defocus_max, astigmatism_um=astigmatism,
        voltage_kv=voltage, cs_mm=cs, amp_contrast=amp_contrast, bfactor=bfactor, phase_shift_deg=phase_shift_deg,
        ctf_pad=ctf_pad, seed=seed)
    summary = run_simulate_micrographs(
        cfg, out, n_micrographs, input_path=input_path, topology=topology, atoms=atoms,
        frames=parse_frames(frames), stride=stride, sigma=sigma, projection=projection, second_path=second_model,
        second_topology=second_topology, save_frames=save_frames, save_clean=save_clean, overwrite=overwrite,
        show_progress=not no_progress, threads=threads)
    typer.echo(json.dumps(summary))
    typer.echo(f"wrote {out}/micrographs/, micrographs_ctf.star, truth/particles.star, truth/junk.star, previews/, "
               "metrics.json")
