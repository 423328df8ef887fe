"""``backproject``, ``fsc`` and ``downsample``: reconstruction and the files and figures around it.

- :func:`backproject_run` reads a particle set (RELION STAR, cryoSPARC ``.cs``, or a stack with cryoDRGN
  pickles), checks it before any output exists (poses, pixel size, NaN/inf pixels, the reference map), and
  :func:`backproject_to_folder` reconstructs it (:func:`cryoscape.methods.reconstruct.backproject`) into a
  run folder (:class:`~cryoscape.runs.folder.RunFolder`):

  ``map.mrc``, ``half_map_A.mrc`` / ``half_map_B.mrc``, ``fsc.json`` (curves and figures), ``fsc.png``,
  ``config.yaml``, ``versions.txt``, ``run.log`` and ``metrics.json`` with ``n_images``, ``box_px``,
  ``apix_A``, ``reconstruct_s``, ``images_per_s`` and, with half maps, ``resolution_fsc0.143_A``,
  ``resolution_fsc0.5_A``, ``fsc_auc`` (half maps); with a reference map ``resolution_truth_fsc0.143_A``
  and ``fsc_auc_truth``.

  The FSC of the half maps is computed here (:mod:`cryoscape.analysis.fsc`), not in the method.
- :func:`compare_maps` is ``cryoscape fsc``: two maps (and a mask) read and checked, their FSC, resolution at
  0.143 and 0.5, FSC-AUC and real-space correlation; optionally the curve as JSON and the plot as PNG.
- :func:`downsample_run` is ``cryoscape downsample``: a stack, a map or a particle STAR Fourier-cropped by
  :mod:`cryoscape.methods.downsample`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from ..analysis.fsc import fsc, fsc_auc, real_space_correlation, resolution_at, shell_frequencies
from ..io.atomic import atomic_path, check_can_write
from ..io.errors import InputError
from ..io.mrc import read_map, write_map
from ..methods.reconstruct import BackprojectConfig, BackprojectResult, backproject, check_config
from ..utils.devices import resolve_device
from .folder import RunFolder

__all__ = ["backproject_run", "backproject_to_folder", "half_map_figures", "compare_maps", "downsample_run"]


def half_map_figures(result: BackprojectResult, truth: np.ndarray | None = None) -> tuple[dict, dict]:
    """FSC curves and figures of a reconstruction: ``(curves, figures)``.

    ``curves``: ``"half maps"`` (FSC of the two half maps, when made) and ``"map vs truth"`` (with ``truth``),
    each ``(D//2,)``. ``figures``: ``resolution_fsc0.143_A``, ``resolution_fsc0.5_A``, ``fsc_auc`` of the
    half maps; ``resolution_truth_fsc0.143_A``, ``fsc_auc_truth`` of the map against the truth."""
    D, apix = result.volume.shape[0], result.apix
    curves, figures = {}, {}
    if result.half_a is not None:
        c = fsc(result.half_a, result.half_b)
        curves["half maps"] = c
        figures.update({"resolution_fsc0.143_A": resolution_at(c, D, apix, 0.143),
                        "resolution_fsc0.5_A": resolution_at(c, D, apix, 0.5), "fsc_auc": fsc_auc(c, D)})
    if truth is not None:
        c = fsc(result.volume, truth)
        curves["map vs truth"] = c
        figures.update({"resolution_truth_fsc0.143_A": resolution_at(c, D, apix, 0.143),
                        "fsc_auc_truth": fsc_auc(c, D)})
    return curves, figures


def _rounded(curve) -> list:
    return [round(float(v), 5) for v in curve]


def backproject_to_folder(data, out: str | Path, cfg: BackprojectConfig, config: dict, *, overwrite: bool = False,
                          truth: np.ndarray | None = None, inputs: dict | None = None, progress: bool = True,
                          command: str = "backproject") -> dict:
    """Reconstruct ``data`` (a checked :class:`~cryoscape.data.particles.ParticleData`) into the run folder
    ``out`` (module docstring). ``config``: the options written to ``config.yaml``.

    Returns the ``fsc.json`` summary: ``n_images``, ``box_px``, ``apix_A``, ``wall_s`` (the reconstruction),
    the figures of :func:`half_map_figures`, the method's ``info``, the curves and their frequencies."""
    from ..report.plots import fsc_plot
    from ..utils.progress import progress_bar

    D = data.D
    inputs = {"n_images": len(data), "box_px": D, "apix_A": data.apix, **(inputs or {})}
    with RunFolder(out, command, config, overwrite=overwrite, inputs=inputs) as run:
        for note in data.notes:
            run.log.info(note)
        run.log.info("device %s", resolve_device(cfg.device))
        with progress_bar(len(data), "backprojecting", progress) as bar:
            result = backproject(data, cfg, bar)
        run.log.info("reconstructed %d images in %.2f s", result.n_images, result.wall_s)
        write_map(run.file("map.mrc"), result.volume, result.apix)
        if result.half_a is not None:
            write_map(run.file("half_map_A.mrc"), result.half_a, result.apix)
            write_map(run.file("half_map_B.mrc"), result.half_b, result.apix)
        curves, figures = half_map_figures(result, truth)
        info = {k: v for k, v in result.info.items() if k != "fsc_halves_unregularised"}
        summary = {"n_images": result.n_images, "box_px": D, "apix_A": result.apix,
                   "wall_s": round(result.wall_s, 3), **figures, **info}
        if "half maps" in curves:
            summary["fsc_halves"] = _rounded(curves["half maps"])
        if "map vs truth" in curves:
            summary["fsc_truth"] = _rounded(curves["map vs truth"])
        summary["frequency_per_shell_inv_A"] = [round(float(v), 6) for v in shell_frequencies(D, result.apix)]
        run.file("fsc.json").write_text(json.dumps(summary, indent=1))
        if curves:
            fsc_plot(run.file("fsc.png"), curves, D, result.apix)
        run.metrics.update({"n_images": result.n_images, "box_px": D, "apix_A": result.apix,
                            "reconstruct_s": round(result.wall_s, 3),
                            "images_per_s": result.n_images / max(result.wall_s, 1e-9), **figures})
    return summary


def backproject_run(particles: Path, out: Path, cfg: BackprojectConfig, *, poses: Path | None = None,
                    ctf: Path | None = None, datadir: Path | None = None, ind: Path | None = None,
                    apix: float | None = None, truth: Path | None = None, overwrite: bool = False,
                    progress: bool = True, say: Callable[[str], None] | None = None,
                    threads: int | None = None) -> dict:
    """``cryoscape backproject``: read and check everything, then :func:`backproject_to_folder`.

    Every check happens before the run folder is made: the options (:func:`check_config`, the device), the
    output path, the particle files (poses required, pixel sizes consistent, every image finite), ``--ind``
    and the reference map (its box must match). ``say`` receives the one-line notes about the data (e.g. a
    STAR without CTF columns runs CTF-free). ``threads``: torch threads (None: the cores this process may
    use, :func:`~cryoscape.utils.devices.set_threads`). Returns the summary of :func:`backproject_to_folder`."""
    from ..data.particles import load_particles, read_indices
    from ..utils.devices import set_threads

    check_config(cfg)
    check_can_write(out, overwrite)
    data = load_particles(particles, poses, ctf, datadir, apix)
    if ind is not None:
        data = data.subset(read_indices(ind))
    data.check_finite()
    set_threads(threads)
    ref = None
    if truth is not None:
        ref, _ = read_map(truth)
        if ref.shape != (data.D,) * 3:
            raise InputError(truth, f"map is {ref.shape}, the particles need {(data.D,) * 3}")
    for note in data.notes:
        if say is not None:
            say(note)
    config = {"command": "backproject", "particles": particles, "poses": poses, "ctf": ctf, "datadir": datadir,
              "ind": ind, "apix": data.apix, "truth": truth, **asdict(cfg)}
    inputs = {"particles": str(particles), "device": str(resolve_device(cfg.device)),
              **({"truth": str(truth)} if truth is not None else {})}
    return backproject_to_folder(data, out, cfg, config, overwrite=overwrite, truth=ref, inputs=inputs,
                                 progress=progress)


def compare_maps(map1: Path, map2: Path, *, mask: Path | None = None, apix: float | None = None,
                 out: Path | None = None, plot: Path | None = None, overwrite: bool = False) -> dict:
    """``cryoscape fsc``: FSC of two maps (both times ``mask`` when given), resolution at 0.143 and 0.5,
    FSC-AUC and real-space correlation. The voxel size is ``apix`` or the headers' (which must agree within
    1 %). ``out``: also write the curve and its frequencies as JSON; ``plot``: the FSC plot (PNG).
    Returns the figures (``apix_A``, ``box_px``, ``resolution_fsc0.143_A``, ``resolution_fsc0.5_A``,
    ``fsc_auc``, ``real_space_correlation``)."""
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
        raise InputError(map2, f"shape {v2.shape} differs from {Path(map1).name}'s {v1.shape}")
    a = apix or a1 or a2
    if not a:
        raise InputError(map1, "no voxel size in the headers; give --apix")
    if apix is None and a1 and a2 and abs(a1 - a2) > 0.01 * a1:
        raise InputError(map2, f"voxel size {a2:.4g} Å differs from {Path(map1).name}'s {a1:.4g} Å")
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
            fsc_plot(tmp, {f"{Path(map1).name} vs {Path(map2).name}": curve}, D, a)
    return res


def downsample_run(input_path: Path, box: int, out: Path, *, datadir: Path | None = None, chunk: int = 1000,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """``cryoscape downsample``: Fourier-crop a stack (``.mrcs``), a map (``.mrc``/``.map``) or the images of
    a particle ``.star`` (into one new stack beside the new STAR) to ``box`` pixels. Returns the summary of
    :mod:`cryoscape.methods.downsample`'s writer."""
    from ..methods.downsample import downsample_map_file, downsample_stack_file, downsample_star_file

    check_can_write(out, overwrite)
    if not chunk >= 1:
        raise InputError("--chunk", f"must be ≥ 1, got {chunk}")
    suffix = Path(input_path).suffix.lower()
    if suffix == ".star":
        return downsample_star_file(input_path, box, out, datadir, chunk, progress, overwrite)
    if suffix == ".mrcs":
        return downsample_stack_file(input_path, box, out, chunk, progress)
    if suffix in (".mrc", ".map"):
        return downsample_map_file(input_path, box, out)
    raise InputError(input_path, f"unknown file type {suffix!r} (expected .mrcs, .mrc or .star)")
