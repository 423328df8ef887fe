"""``cryoscape backproject``, ``cryoscape fsc`` and ``cryoscape downsample``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

__all__ = ["backproject", "fsc_cmd", "downsample"]


def backproject(
    particles: Path = typer.Argument(..., help="Particles: RELION .star (poses and CTF from its columns) or an "
                                              ".mrcs stack with --poses/--ctf cryoDRGN pickles."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (must not exist)."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="cryoDRGN poses .pkl (overrides the STAR's)."),
    ctf: Optional[Path] = typer.Option(None, "--ctf", help="cryoDRGN CTF .pkl (overrides the STAR's)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks a STAR refers to."),
    ind: Optional[Path] = typer.Option(None, "--ind", help="Particle indices to use (.pkl, .npy or text)."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å, when no file states it."),
    reg: float = typer.Option(0.01, "--reg", help="Regulariser λ = reg × mean CTF² weight."),
    wiener: bool = typer.Option(False, "--wiener", help="Per-shell λ from the half-map FSC instead (RELION-style "
                                                       "Wiener filter; MSE-optimal amplitudes)."),
    no_half_maps: bool = typer.Option(False, "--no-half-maps", help="Skip the half maps."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random half split."),
    interp: str = typer.Option("trilinear", "--interp", help="Insertion: trilinear (default) or nearest (faster, "
                                                               "coarser)."),
    pad: int = typer.Option(1, "--pad", help="Fourier padding factor (1: best FSC with a CTF; 2: accurate "
                                            "amplitudes for data without CTF)."),
    no_ctf: bool = typer.Option(False, "--no-ctf", help="Ignore the CTF."),
    mask_radius: float = typer.Option(0.9, "--mask-radius", help="Soft mask radius, fraction of half the box "
                                                                "(0: no mask)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="A reference map: also report the FSC to it."),
    chunk: int = typer.Option(64, "--chunk", help="Images per chunk."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder if it exists."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Reconstruct a map by direct Fourier inversion (CTF-weighted, regularised) with half maps and FSC."""
    from ..data.particles import load_particles, read_indices
    from ..io.atomic import check_can_write
    from ..io.errors import InputError
    from ..io.mrc import read_map
    from ..methods.backproject import BackprojectConfig, backproject as run, write_result
    from ..utils.progress import progress_bar
    from .checks import at_least, one_of

    check_can_write(out, overwrite)
    at_least("--pad", pad, 1)
    at_least("--chunk", chunk, 1)
    one_of("--interp", interp, ("trilinear", "nearest"))
    at_least("--reg", reg, 0)
    data = load_particles(particles, poses, ctf, datadir, apix)
    if ind is not None:
        data = data.subset(read_indices(ind))
    ref = None
    if truth is not None:
        ref, _ = read_map(truth)
        if ref.shape != (data.D,) * 3:
            raise InputError(truth, f"map is {ref.shape}, the particles need ({data.D},)*3")
    cfg = BackprojectConfig(pad=pad, reg=reg, wiener=wiener, half_maps=not no_half_maps, seed=seed, chunk=chunk,
                            ctf=not no_ctf, mask_radius=mask_radius, interp=interp)
    with progress_bar(len(data), "backprojecting", not no_progress) as bar:
        result = run(data, cfg, bar)
    config = {"command": "backproject", "particles": str(particles), "poses": poses, "ctf": ctf,
              "datadir": datadir, "ind": ind, "apix": data.apix, "truth": truth, **cfg.__dict__}
    summary = write_result(out, result, config, overwrite=overwrite, truth=ref)
    brief = {k: summary[k] for k in ("n_images", "box_px", "apix_A", "wall_s", "resolution_fsc0.143_A",
                                     "resolution_fsc0.5_A") if k in summary}
    if "resolution_truth_fsc0.143_A" in summary:
        brief["resolution_truth_fsc0.143_A"] = summary["resolution_truth_fsc0.143_A"]
    typer.echo(json.dumps(brief))
    typer.echo(f"wrote {out}/map.mrc" + (", half_map_A/B.mrc" if not no_half_maps else "") + ", fsc.json, fsc.png")


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
    from ..analysis.fsc import fsc, fsc_auc, real_space_correlation, resolution_at, shell_frequencies
    from ..io.atomic import atomic_path, check_can_write
    from ..io.errors import InputError
    from ..io.mrc import read_map

    if apix is not None and not (apix > 0 and math.isfinite(apix)):
        raise InputError("--apix", f"must be > 0, got {apix}")
    for p in (out, plot):
        if p is not None:
            check_can_write(p, overwrite)
    v1, a1 = read_map(map1)
    v2, a2 = read_map(map2)
    for p, v in ((map1, v1), (map2, v2)):
        if len(set(v.shape)) != 1:
            raise InputError(p, f"map is not cubic: {v.shape}")
    if v1.shape != v2.shape:
        raise InputError(map2, f"shape {v2.shape} differs from {map1.name}'s {v1.shape}")
    a = apix or a1 or a2
    if not a:
        raise InputError(map1, "no voxel size in the headers; give --apix")
    if apix is None and a1 and a2 and abs(a1 - a2) > 0.01 * a1:
        raise InputError(map2, f"voxel size {a2:.4g} Å differs from {map1.name}'s {a1:.4g} Å")
    m = None
    if mask is not None:
        m, _ = read_map(mask)
        if m.shape != v1.shape:
            raise InputError(mask, f"mask shape {m.shape} differs from the maps' {v1.shape}")
    D = v1.shape[0]
    curve = fsc(v1, v2, m)
    res = {"apix_A": a, "box_px": D, "resolution_fsc0.143_A": resolution_at(curve, D, a, 0.143),
           "resolution_fsc0.5_A": resolution_at(curve, D, a, 0.5), "fsc_auc": fsc_auc(curve, D),
           "real_space_correlation": real_space_correlation(v1, v2, m)}
    if out is not None:
        full = {**res, "fsc": [float(x) for x in curve],
                "frequency_per_shell_inv_A": [float(x) for x in shell_frequencies(D, a)]}
        with atomic_path(out) as tmp:
            Path(tmp).write_text(json.dumps(full, indent=1))
    if plot is not None:
        from ..report.plots import fsc_plot
        with atomic_path(plot) as tmp:
            fsc_plot(tmp, {f"{map1.name} vs {map2.name}": curve}, D, a)
    typer.echo(json.dumps(res))


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
    from ..io.atomic import check_can_write
    from ..io.errors import InputError
    from ..methods.downsample import downsample_map_file, downsample_stack_file, downsample_star_file
    from .checks import at_least
    check_can_write(out, overwrite)
    at_least("--chunk", chunk, 1)
    suffix = input_path.suffix.lower()
    if suffix == ".star":
        summary = downsample_star_file(input_path, box, out, datadir, chunk, not no_progress, overwrite)
    elif suffix == ".mrcs":
        summary = downsample_stack_file(input_path, box, out, chunk, not no_progress)
    elif suffix in (".mrc", ".map"):
        summary = downsample_map_file(input_path, box, out)
    else:
        raise InputError(input_path, f"unknown file type {suffix!r} (expected .mrcs, .mrc or .star)")
    typer.echo(json.dumps(summary))
