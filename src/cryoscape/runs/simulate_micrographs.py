"""``simulate-micrographs``: simulated micrographs with their ground truth, written as one run folder.

The data layer (:mod:`cryoscape.data.micrographs`) plans and renders one micrograph at a time; this module reads
the inputs, writes the folder and resumes an interrupted run. The folder holds (``NAME`` = ``mic_00000``, …):

- ``micrographs/NAME.mrc``: the noisy micrographs, ``(H, W)`` float32, pixel size in the header;
- ``frames/NAME.mrcs`` (``save_frames``): the ``T`` movie frames of each micrograph (noise2noise halves are the
  means of the even and odd frames);
- ``micrographs_ctf.star``: RELION 3.1+ micrographs STAR (``data_optics`` + ``data_micrographs``: name and CTF
  of every micrograph; :func:`cryoscape.io.star.write_micrographs_star`);
- ``truth/particles.star``: one row per particle (``data_optics`` + ``data_particles``): rlnMicrographName,
  rlnCoordinateX/Y, rlnAngleRot/Tilt/Psi (the particle's pose, RELION's ZYZ), rlnDefocusU/V, rlnDefocusAngle,
  rlnPhaseShift, rlnCtfBfactor (the micrograph's CTF) and ``_cryoscapeConformation`` (the input frame);
- ``truth/junk.star``: one row per junk object (same layout: rlnMicrographName, rlnCoordinateX/Y,
  ``_cryoscapeJunkKind`` = ice, aggregate, second or carbon, ``_cryoscapeJunkRadiusAngst``);
- ``truth/clean/NAME.mrc`` (``save_clean``): the noiseless micrographs;
- ``previews/micrograph.png``: the first micrograph with circles at the particles (green) and junk (red);
- ``config.yaml``, ``versions.txt``, ``run.log`` and ``metrics.json`` (:mod:`cryoscape.runs.folder`).

Micrograph names in the STAR files are paths relative to the run folder (``micrographs/NAME.mrc``), as RELION
names them relative to its project folder. Coordinates are RELION's: ``rlnCoordinateX`` the column and
``rlnCoordinateY`` the row, in pixels from the centre of pixel 0 (RELION extracts the box whose centre pixel is
at the coordinate's integer part, 0-based: ``preprocessing.cpp``), i.e. our ``(x, y)`` unchanged, as
:mod:`cryoscape.io.coords` reads and writes them. The two truth tables carry more columns than a coordinate file
(poses, defocus, kinds), so they are written with :func:`cryoscape.io.star.write_star`; both read as
``relion-multi`` coordinate files (:func:`cryoscape.io.coords.read_coordinates`).

Work happens in ``.NAME.part`` with a checkpoint after every micrograph (``progress.json`` and the micrograph's
truth in ``.parts/NAME.npz``): the same command with the same options and inputs continues after the last
finished micrograph, also after a hard kill, and writes the same bytes as an uninterrupted run (micrograph ``m``
depends only on the seed and ``m``).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..data.micrographs import MicrographConfig, MicrographSimulator
from ..io.errors import InputError
from .folder import ProgressFile, RunFolder

__all__ = ["run_simulate_micrographs", "simulate_micrographs_to_folder", "micrograph_name", "DEFAULT_APIX"]

DEFAULT_APIX = 1.2  # Å/px for atomic models when --apix is not given (a map brings its own voxel size)


def micrograph_name(m: int) -> str:
    """The file stem of micrograph ``m``: ``mic_00000``."""
    return f"mic_{m:05d}"


def run_simulate_micrographs(cfg: MicrographConfig, out: Path, n_micrographs: int, *,
                             input_path: Path | None = None, topology: Path | None = None, atoms: str = "ca",
                             frames=None, stride: int = 1, sigma: float = 3.0, projection: str = "auto",
                             second_path: Path | None = None, second_topology: Path | None = None,
                             save_frames: bool = False, save_clean: bool = False, overwrite: bool = False,
                             show_progress: bool = True, threads: int | None = None) -> dict:
    """The ``simulate-micrographs`` command: check the options, read the sources, simulate into ``out``.

    ``cfg.apix`` None: the map's voxel size, or :data:`DEFAULT_APIX` for atoms. ``second_path``: the second
    molecule (junk kind ``second``; all its frames, the same ``atoms`` and ``sigma``). Every refusal
    (:class:`InputError`: options, an existing ``out``, unreadable inputs, a field too small, particles or junk
    that do not fit) comes before anything is written. Returns :func:`simulate_micrographs_to_folder`'s summary.
    """
    from ..data.simulate import PROJECTIONS
    from ..io.atomic import check_can_write
    from ..utils.devices import set_threads
    from .simulate import load_source

    check_can_write(out, overwrite)
    if n_micrographs < 1:
        raise InputError("--n-micrographs", f"must be ≥ 1, got {n_micrographs}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise InputError("--sigma", f"must be > 0 Å, got {sigma}")
    if projection not in PROJECTIONS:
        raise InputError("--projection", f"must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    replace(cfg, apix=DEFAULT_APIX if cfg.apix is None else cfg.apix).check()
    set_threads(threads)
    source, frame_ids, _, info = load_source(input_path, topology, atoms, frames, stride, sigma, cfg.apix,
                                             projection)
    if cfg.apix is None:
        cfg = replace(cfg, apix=float(info.get("apix", DEFAULT_APIX)))
    second, second_info = None, None
    if second_path is not None:
        second, _, _, second_info = load_source(second_path, second_topology, atoms, None, 1, sigma, cfg.apix,
                                                projection)
    return simulate_micrographs_to_folder(out, source, cfg, n_micrographs, second_source=second,
                                          source_info=info, second_info=second_info, frame_ids=frame_ids,
                                          save_frames=save_frames, save_clean=save_clean, overwrite=overwrite,
                                          show_progress=show_progress)


def _fingerprint(cfg: MicrographConfig, n: int, source, second, frame_ids, save_frames: bool,
                 save_clean: bool) -> str:
    """A hash of everything that determines the output bytes (a resumed run continues only when it matches)."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True, default=str).encode())
    h.update(f"{n} {save_frames} {save_clean}".encode())
    h.update(source.fingerprint_bytes())
    h.update(b"-" if second is None else second.fingerprint_bytes())
    h.update(np.ascontiguousarray(frame_ids).tobytes())
    return h.hexdigest()


class _Checkpoint(ProgressFile):
    """``progress.json`` of a partial run: the number of finished micrographs."""

    INITIAL = {"done": 0}


def simulate_micrographs_to_folder(out_dir: str | Path, source, cfg: MicrographConfig, n_micrographs: int, *,
                                   second_source=None, source_info: dict | None = None,
                                   second_info: dict | None = None, frame_ids: np.ndarray | None = None,
                                   save_frames: bool = False, save_clean: bool = False, overwrite: bool = False,
                                   show_progress: bool = True, preview: bool = True) -> dict:
    """Simulate ``n_micrographs`` micrographs of ``source`` into ``out_dir`` (module docstring for the layout);
    the folder appears only when complete, and an interrupted run resumes when called again with the same
    options and sources. ``frame_ids``: the input frame number of each conformation (``_cryoscapeConformation``).

    Returns:
        A summary dict: ``n_micrographs``, ``n_particles``, ``n_junk``, ``box_px``, ``apix_A``, ``radius_A``,
        ``snr_field`` and ``snr_particles`` (measured, means over the micrographs), ``wall_s``,
        ``micrographs_per_s``.
    """
    from ..io.atomic import check_can_write
    from ..utils.progress import progress_bar

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    check_can_write(out_dir, overwrite)
    if n_micrographs < 1:
        raise InputError("--n-micrographs", f"must be ≥ 1, got {n_micrographs}")
    cfg = replace(cfg, keep_frames=bool(save_frames))
    sim = MicrographSimulator(source, cfg, second_source)
    for m in range(n_micrographs):  # every draw up front: a jam is refused before anything is written
        sim.plan(m)
    frame_ids = np.arange(source.n_conformations) if frame_ids is None else np.asarray(frame_ids)
    fingerprint = _fingerprint(cfg, n_micrographs, source, second_source, frame_ids, save_frames, save_clean)
    H, W = sim.shape
    resolved = {"shape": [H, W], "box": sim.box, "radius_A": sim.radius_A, "n_particles": sim.n,
                "n_junk": sim.n_junk, "junk_kinds": list(sim.kinds), "p_ref": sim.p_ref,
                "projection": source.projection_used(cfg.apix)}
    config = {"command": "simulate-micrographs", "source": source_info or {}, "second": second_info,
              "n_micrographs": n_micrographs, "save_frames": save_frames, "save_clean": save_clean, **asdict(cfg),
              "resolved": resolved}
    inputs = {"source": source_info or {}, "second": second_info or {}, "kind": source.kind,
              "n_conformations": int(source.n_conformations)}
    run = RunFolder(out_dir, "simulate-micrographs", config, overwrite=overwrite, resume=True, inputs=inputs)
    ck = _Checkpoint.load(run.dir, fingerprint) if run.dir.is_dir() else None
    if ck is None:  # no partial run of these options and inputs: start afresh
        shutil.rmtree(run.dir, ignore_errors=True)
    with run:
        log = run.log
        if ck is None:
            ck = _Checkpoint(run.dir, fingerprint)
            ck.save()
            log.info("simulate %d micrographs of %d × %d px, apix %.4f, %d particles and %d junk objects each",
                     n_micrographs, H, W, cfg.apix, sim.n, sim.n_junk)
        else:
            log.info("resuming after %d micrographs", ck.state["done"])
        parts = run.dir / ".parts"
        parts.mkdir(exist_ok=True)
        with progress_bar(n_micrographs, "simulating micrographs", show_progress) as bar:
            bar.advance(ck.state["done"])
            for m in range(ck.state["done"], n_micrographs):
                _write_micrograph(run, parts, sim.micrograph(m), cfg.apix, save_frames, save_clean)
                ck.state["done"] = m + 1
                ck.save()
                bar.advance(1)
        truth = [_load_truth(parts / f"{micrograph_name(m)}.npz") for m in range(n_micrographs)]
        _write_tables(run, truth, cfg, sim, frame_ids)
        if preview:
            _write_preview(run.file("previews/micrograph.png"), run.dir / "micrographs" /
                           f"{micrograph_name(0)}.mrc", truth[0], cfg.apix, sim.radius_A)
        wall = time.perf_counter() - t0
        snr_f = np.array([float(t["snr_field"]) for t in truth])
        snr_p = np.array([float(t["snr_particles"]) for t in truth])
        summary = {"n_micrographs": n_micrographs, "n_particles": int(sum(len(t["coords"]) for t in truth)),
                   "n_junk": int(sum(len(t["junk_kind"]) for t in truth)), "box_px": sim.box, "apix_A": cfg.apix,
                   "radius_A": round(sim.radius_A, 3),
                   "snr_field": float(np.nanmean(snr_f)) if np.isfinite(snr_f).any() else math.nan,
                   "snr_particles": float(np.nanmean(snr_p)) if np.isfinite(snr_p).any() else math.nan,
                   "wall_s": round(wall, 3), "micrographs_per_s": round(n_micrographs / wall, 3)}
        log.info("done: %s", summary)
        shutil.rmtree(parts)
        ck.path.unlink()
        run.metrics.update({k: v for k, v in summary.items() if k != "wall_s" and math.isfinite(v)})
    return summary


def _write_micrograph(run: RunFolder, parts: Path, g, apix: float, save_frames: bool, save_clean: bool) -> None:
    """One micrograph's files (each written atomically), then its truth in ``.parts/NAME.npz``."""
    from ..io.mrc import write_micrograph, write_stack

    name = micrograph_name(g.index)
    write_micrograph(run.file(f"micrographs/{name}.mrc"), g.noisy.numpy(), apix)
    if save_frames:
        write_stack(run.file(f"frames/{name}.mrcs"), g.frames.numpy(), apix)
    if save_clean:
        write_micrograph(run.file(f"truth/clean/{name}.mrc"), g.clean.numpy(), apix)
    c = g.ctf
    truth = {"coords": g.coords, "rotations": g.rotations, "conformation": g.conformation,
             "junk_kind": np.asarray(g.junk_kind, dtype=str), "junk_xy": g.junk_xy, "junk_radius_A": g.junk_radius_A,
             "defocus_u": c.defocus_u.numpy(), "defocus_v": c.defocus_v.numpy(), "angle_ast": c.angle_ast.numpy(),
             "noise_sigma": np.float64(g.noise_sigma), "snr_field": np.float64(g.snr_field),
             "snr_particles": np.float64(g.snr_particles)}
    path = parts / f"{name}.npz"
    tmp = parts / f".{name}.tmp.npz"
    np.savez(tmp, **truth)
    tmp.replace(path)


def _load_truth(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _write_tables(run: RunFolder, truth: list, cfg: MicrographConfig, sim, frame_ids: np.ndarray) -> None:
    """``micrographs_ctf.star``, ``truth/particles.star`` and ``truth/junk.star`` from the per-micrograph truth."""
    import pandas as pd
    import torch

    from ..geometry.rotations import matrix_to_euler
    from ..io.star import write_micrographs_star, write_star

    names = [f"micrographs/{micrograph_name(m)}.mrc" for m in range(len(truth))]
    dfu = np.concatenate([t["defocus_u"] for t in truth])
    dfv = np.concatenate([t["defocus_v"] for t in truth])
    ang = np.concatenate([t["angle_ast"] for t in truth])
    phase, bfac = math.radians(cfg.phase_shift_deg), float(cfg.bfactor)
    ctf = {"defocus_u": dfu, "defocus_v": dfv, "angle_ast": ang, "voltage_kv": cfg.voltage_kv, "cs_mm": cfg.cs_mm,
           "amp_contrast": cfg.amp_contrast, "phase_shift": phase, "bfactor": bfac}
    write_micrographs_star(run.file("micrographs_ctf.star"), names, ctf, cfg.apix)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnVoltage": [cfg.voltage_kv], "rlnSphericalAberration": [cfg.cs_mm],
                           "rlnAmplitudeContrast": [cfg.amp_contrast], "rlnMicrographPixelSize": [cfg.apix],
                           "rlnImagePixelSize": [cfg.apix], "rlnImageSize": [sim.box],
                           "rlnImageDimensionality": [2]})
    counts = [len(t["coords"]) for t in truth]
    per = lambda values: np.repeat(np.asarray(values, dtype=np.float64), counts)  # noqa: E731
    coords = np.concatenate([t["coords"].reshape(-1, 2) for t in truth])
    rots = np.concatenate([t["rotations"].reshape(-1, 3, 3) for t in truth])
    euler = np.rad2deg(matrix_to_euler(torch.from_numpy(rots)).numpy()) if len(rots) else np.zeros((0, 3))
    conf = np.concatenate([t["conformation"] for t in truth]).astype(np.int64)
    parts = pd.DataFrame({
        "rlnMicrographName": np.repeat(names, counts).astype(object),
        "rlnCoordinateX": coords[:, 0], "rlnCoordinateY": coords[:, 1],
        "rlnAngleRot": euler[:, 0], "rlnAngleTilt": euler[:, 1], "rlnAnglePsi": euler[:, 2],
        "rlnDefocusU": per(dfu), "rlnDefocusV": per(dfv), "rlnDefocusAngle": per(np.rad2deg(ang)),
        "rlnPhaseShift": np.full(len(coords), cfg.phase_shift_deg, dtype=np.float64),
        "rlnCtfBfactor": np.full(len(coords), bfac), "rlnOpticsGroup": np.ones(len(coords), dtype=int),
        "cryoscapeConformation": frame_ids[conf].astype(np.int64),
    })
    write_star(run.file("truth/particles.star"), parts, optics)
    jcounts = [len(t["junk_kind"]) for t in truth]
    jxy = np.concatenate([t["junk_xy"].reshape(-1, 2) for t in truth])
    junk = pd.DataFrame({
        "rlnMicrographName": np.repeat(names, jcounts).astype(object),
        "rlnCoordinateX": jxy[:, 0], "rlnCoordinateY": jxy[:, 1],
        "cryoscapeJunkKind": np.concatenate([t["junk_kind"] for t in truth]).astype(object),
        "cryoscapeJunkRadiusAngst": np.concatenate([t["junk_radius_A"] for t in truth]).astype(np.float64),
        "rlnOpticsGroup": np.ones(len(jxy), dtype=int),
    })
    write_star(run.file("truth/junk.star"), junk, optics)


def _write_preview(path: Path, mrc: Path, truth: dict, apix: float, radius_A: float, size: int = 768) -> None:
    """The micrograph (percentile-scaled, shrunk to at most ``size`` px) with a green circle of the particle
    radius at every particle, a red circle of its radius at every junk object and a red square where a carbon
    edge crosses the field (Pillow: no matplotlib)."""
    from PIL import Image, ImageDraw

    from ..io.mrc import read_micrograph

    img, _ = read_micrograph(mrc)
    H, W = img.shape
    lo, hi = np.percentile(img, [0.5, 99.5])
    grey = (np.clip((img - lo) / max(hi - lo, 1e-30), 0, 1) * 255).astype(np.uint8)
    scale = min(1.0, size / max(H, W))
    pic = Image.fromarray(grey).convert("RGB")
    if scale < 1:
        pic = pic.resize((max(1, round(W * scale)), max(1, round(H * scale))), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(pic)
    r = radius_A / apix * scale
    for x, y in truth["coords"].reshape(-1, 2):
        cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(0, 220, 0), width=2)
    for kind, (x, y), rad in zip(truth["junk_kind"], truth["junk_xy"].reshape(-1, 2), truth["junk_radius_A"]):
        cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
        if kind == "carbon":  # the point where the carbon edge crosses the field: a square marker
            draw.rectangle([cx - 6, cy - 6, cx + 6, cy + 6], outline=(230, 0, 0), width=2)
            continue
        rr = rad / apix * scale
        draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], outline=(230, 0, 0), width=2)
    pic.save(path, format="PNG")
