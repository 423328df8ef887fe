"""``simulate``: a particle dataset with its ground truth, written as one run folder.

The data layer (:mod:`cryoscape.data.simulate`) plans the draws and renders images; this module reads the
inputs, writes the folder and resumes an interrupted run. The folder holds:

- ``particles.mrcs`` (noisy images) and ``particles.star`` (RELION 3.1, plus ``_cryoscapeConformation``);
- ``truth/``: ``conformation.npy``, ``frame_ids.npy``, ``rotations.npy``, ``offsets_A.npy``, cryoDRGN
  ``poses.pkl`` and (with a CTF) ``ctf.pkl``, ``models.pdb`` (atoms; ``models.cif`` past 62 chains) or
  ``volume.mrc`` (map), and with ``save_clean`` the noiseless ``clean.mrcs`` (and, with a CTF, the CTF-free ``clean_noctf.mrcs``);
- ``previews/stages.png`` and ``previews/ctf.png``;
- ``config.yaml``, ``versions.txt``, ``run.log`` and ``metrics.json`` (:mod:`cryoscape.runs.folder`).

Work happens in ``.NAME.part`` with a checkpoint (``progress.json``) after every chunk: the same command with
the same options and inputs continues from the last finished chunk and writes the same bytes as an
uninterrupted run (the noise of every image depends only on the seed and the image's index).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..data.simulate import (AtomSource, MapSource, SimulationConfig, add_dataset_noise, clean_variance,
                             plan_simulation, render_chunks, render_images, simulation_fingerprint)
from ..data.simulate.plan import SimulationPlan
from ..io.errors import InputError
from ..physics.noise import RunningVariance, noise_sigma
from .folder import ProgressFile, RunFolder

__all__ = ["run_simulate", "simulate_to_folder", "load_source", "particle_table"]

_MAP_SUFFIXES = {".mrc", ".map", ".mrcs"}


def load_source(input_path: Path | None, topology: Path | None, atoms: str, frames, stride: int,
                sigma: float, apix: float | None, projection: str = "auto"):
    """Build the simulator's source from the inputs (default: the embedded AdK trajectory).

    Returns ``(source, frame_ids, conformations or None, info dict)``. Raises :class:`InputError` naming the
    file for an unreadable or non-cubic map, a map without a voxel size, or a bad model.
    """
    from ..data.embedded import adk_files
    from ..io.models import read_structure

    if input_path is None:
        topology, input_path = adk_files()
    input_path = Path(input_path)
    if input_path.suffix.lower() in _MAP_SUFFIXES:
        from ..io.mrc import read_map
        vol, header_apix = read_map(input_path)
        if vol.shape[0] != vol.shape[1] or vol.shape[1] != vol.shape[2]:
            raise InputError(input_path, f"map must be cubic, found {vol.shape}")
        a = apix or header_apix
        if not a:
            raise InputError(input_path, "header has no voxel size; give --apix")
        return MapSource(vol, a), np.zeros(1, dtype=np.int64), None, {"map": str(input_path), "apix": a}
    conf = read_structure(input_path, topology, atoms, frames, stride)
    info = {"model": str(input_path), "topology": str(topology) if topology else None, "atoms": atoms,
            "n_frames": conf.n_frames, "n_atoms": conf.n_atoms, "projection": projection}
    centred = conf.coords - conf.coords.mean(axis=1, keepdims=True)
    conf.coords = centred
    return AtomSource(centred, sigma, projection=projection), conf.frames, conf, info


def run_simulate(cfg: SimulationConfig, out: Path, *, input_path: Path | None = None, topology: Path | None = None,
                 atoms: str = "ca", frames=None, stride: int = 1, projection: str = "auto",
                 overwrite: bool = False, show_progress: bool = True, device: str = "cpu",
                 threads: int | None = None) -> dict:
    """The ``simulate`` command: check the options, read the source, simulate into ``out``.

    ``device``: ``cpu`` (the numba splat kernel; the same bytes on every machine), ``cuda``, ``cuda:N`` or
    ``auto`` (:func:`~cryoscape.utils.devices.resolve_device`). Every refusal (:class:`InputError`: options,
    the device, an existing ``out``, unreadable inputs, a box too small) comes before anything is written.
    ``threads``: torch threads (None: the cores this process may use). Returns :func:`simulate_to_folder`'s summary.
    """
    from ..data.simulate import PROJECTIONS
    from ..io.atomic import check_can_write
    from ..utils.devices import resolve_device, set_threads

    check_can_write(out, overwrite)
    cfg.validate()
    device = resolve_device(device)
    set_threads(threads)
    if projection not in PROJECTIONS:
        raise InputError("--projection", f"must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    source, frame_ids, conf, info = load_source(input_path, topology, atoms, frames, stride, cfg.sigma, cfg.apix,
                                                projection)
    return simulate_to_folder(out, source, cfg, source_info=info, frame_ids=frame_ids, truth_models=conf,
                              overwrite=overwrite, show_progress=show_progress, device=device)


class _Checkpoint(ProgressFile):
    """``progress.json`` of a partial run: what is done, and the running statistics needed to go on."""

    INITIAL = {"sigma": None, "chunks_done": 0, "stack_stats": None, "clean_stats": None, "noctf_stats": None,
               "rv_clean": None, "rv_noise": None}


def _rv_state(rv: RunningVariance) -> list:
    return [rv.n, rv.mean, rv.m2]


def _rv_from(state) -> RunningVariance:
    rv = RunningVariance()
    if state:
        rv.n, rv.mean, rv.m2 = state
    return rv


def simulate_to_folder(out_dir: str | Path, source, cfg: SimulationConfig, *, source_info: dict | None = None,
                       frame_ids: np.ndarray | None = None, truth_models=None, overwrite: bool = False,
                       show_progress: bool = True, previews: bool = True, device=None) -> dict:
    """Simulate a dataset of ``source`` (an :class:`~cryoscape.data.simulate.AtomSource` or
    :class:`~cryoscape.data.simulate.MapSource`) into ``out_dir``; it appears only when complete.

    ``frame_ids``: the input frame number of each conformation (STAR ``_cryoscapeConformation``);
    ``truth_models``: a :class:`~cryoscape.io.models.Conformations` whose atom names go into ``models.pdb``.
    An interrupted run resumes when called again with the same options, source and device (module docstring).
    ``device``: where the images are formed (None: the CPU).

    Returns:
        A summary dict: ``n_images``, ``box_px``, ``apix_A``, ``noise_sigma``, ``snr_requested``,
        ``snr_measured`` (``inf`` when noiseless), ``wall_s``, ``images_per_s``.
    """
    from ..io.atomic import check_can_write
    from ..utils.progress import progress_bar

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    check_can_write(out_dir, overwrite)
    plan = plan_simulation(cfg, source, frame_ids)
    n, D, apix = cfg.n_images, plan.box, plan.apix
    device = torch.device(device or "cpu")
    fingerprint = simulation_fingerprint(cfg, source, plan, device)
    resolved = {"box": D, "apix": apix, "projection": source.projection_used(apix), "device": str(device)}
    config = {"command": "simulate", "source": source_info or {}, **asdict(cfg), "resolved": resolved}
    inputs = {"source": source_info or {}, "kind": source.kind, "n_conformations": int(source.n_conformations)}
    run = RunFolder(out_dir, "simulate", config, overwrite=overwrite, resume=True, inputs=inputs)
    ck = _Checkpoint.load(run.dir, fingerprint) if run.dir.is_dir() else None
    if ck is None:  # no partial run of these options and inputs: start afresh
        shutil.rmtree(run.dir, ignore_errors=True)
    with run:
        log = run.log
        if ck is None:
            run.file("truth").mkdir(exist_ok=True)
            ck = _Checkpoint(run.dir, fingerprint)
            ck.save()
            log.info("simulate %d images, box %d, apix %.4f, source %s", n, D, apix, source_info)
        else:
            log.info("resuming after %d chunks", ck.state["chunks_done"])
        sigma, rv_clean, rv_noise = _write_images(run.dir, plan, source, cfg, ck, log, show_progress, device,
                                                  progress_bar)
        _write_truth(run.dir, plan, source, cfg, truth_models)
        noisy = math.isfinite(cfg.snr)
        wall = time.perf_counter() - t0
        summary = {
            "n_images": n, "box_px": D, "apix_A": apix, "noise_sigma": sigma, "snr_requested": cfg.snr,
            "snr_measured": (rv_clean.variance / rv_noise.variance) if noisy else float("inf"),
            "wall_s": round(wall, 3), "images_per_s": round(n / wall, 1),
        }
        if previews:
            _write_previews(run.dir / "previews", plan, source, cfg, sigma, device)
        log.info("done: %s", summary)
        ck.path.unlink()
        run.metrics.update({k: v for k, v in summary.items() if k != "wall_s" and math.isfinite(v)})
        run.metrics["n_conformations"] = int(source.n_conformations)
    return summary


def _write_images(folder: Path, plan: SimulationPlan, source, cfg: SimulationConfig, ck: _Checkpoint, log,
                  show_progress: bool, device, progress_bar):
    """The two passes: the clean variance (→ noise σ), then the images chunk by chunk, each chunk followed by a
    checkpoint. Returns ``(σ, running variance of the clean images, of the noise)``."""
    from ..io.mrc import StackFile

    n, D, apix = cfg.n_images, plan.box, plan.apix
    st = ck.state
    noisy = math.isfinite(cfg.snr)
    if noisy and st["sigma"] is None:
        with progress_bar(n, "measuring signal", show_progress) as bar:
            var = clean_variance(plan, source, cfg, bar, device=device)
        st["sigma"] = noise_sigma(var, cfg.snr)
        ck.save()
        log.info("noise sigma %.6g (SNR %s)", st["sigma"], cfg.snr)
    sigma = st["sigma"] or 0.0
    rv_clean, rv_noise = _rv_from(st["rv_clean"]), _rv_from(st["rv_noise"])
    fresh = st["chunks_done"] == 0
    stacks = [StackFile(folder / "particles.mrcs", n, D, apix, create=fresh, stats=st["stack_stats"])]
    if cfg.save_clean:
        stacks.append(StackFile(folder / "truth" / "clean.mrcs", n, D, apix, create=fresh, stats=st["clean_stats"]))
    noctf = cfg.save_clean and cfg.ctf
    if noctf:
        stacks.append(StackFile(folder / "truth" / "clean_noctf.mrcs", n, D, apix, create=fresh,
                                stats=st.get("noctf_stats")))
    try:
        with progress_bar(n, "simulating", show_progress) as bar:
            bar.advance(min(n, st["chunks_done"] * cfg.chunk))
            for ci, sl, clean in render_chunks(plan, source, cfg, first_chunk=st["chunks_done"], device=device):
                img = add_dataset_noise(clean, sigma, cfg.seed, sl.start) if noisy else clean
                rv_clean.update(clean)
                rv_noise.update(img - clean)
                stacks[0].write_at(sl.start, img.numpy())
                if cfg.save_clean:
                    stacks[1].write_at(sl.start, clean.numpy())
                if noctf:
                    stacks[2].write_at(sl.start, render_images(plan, source, sl, apply_ctf=False, device=device).numpy())
                for s_ in stacks:
                    s_.flush()
                st.update(chunks_done=ci + 1, stack_stats=stacks[0].stats, rv_clean=_rv_state(rv_clean),
                          rv_noise=_rv_state(rv_noise), clean_stats=stacks[1].stats if cfg.save_clean else None,
                          noctf_stats=stacks[2].stats if noctf else None)
                ck.save()
                bar.advance(sl.stop - sl.start)
    except BaseException:
        for s_ in stacks:
            s_.close()
        log.info("interrupted after %d chunks", st["chunks_done"])
        raise
    for s_ in stacks:
        s_.finish()
    return sigma, rv_clean, rv_noise


def particle_table(plan: SimulationPlan, cfg: SimulationConfig):
    """The RELION 3.1 tables of a simulation: ``(particles, optics)`` DataFrames. Origins are ``−offsets``
    (RELION's meaning); without a CTF the CTF columns are left out rather than listing what was not applied."""
    import pandas as pd

    from ..geometry.rotations import matrix_to_euler

    n, D, apix = len(plan.conformation), plan.box, plan.apix
    euler = np.rad2deg(matrix_to_euler(plan.rotations).numpy())
    origin = plan.poses.relion_origin_A().numpy()
    c = plan.ctf
    parts = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(n)],
        "rlnDefocusU": c.defocus_u.numpy(), "rlnDefocusV": c.defocus_v.numpy(),
        "rlnDefocusAngle": np.rad2deg(c.angle_ast.numpy()), "rlnPhaseShift": np.rad2deg(c.phase_shift.numpy()),
        "rlnCtfBfactor": c.bfactor.numpy(),
        "rlnAngleRot": euler[:, 0], "rlnAngleTilt": euler[:, 1], "rlnAnglePsi": euler[:, 2],
        "rlnOriginXAngst": origin[:, 0], "rlnOriginYAngst": origin[:, 1],
        "rlnOpticsGroup": np.ones(n, dtype=int),
        "cryoscapeConformation": plan.frame_ids[plan.conformation],
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnVoltage": [cfg.voltage_kv], "rlnSphericalAberration": [cfg.cs_mm],
                           "rlnAmplitudeContrast": [cfg.amp_contrast], "rlnImagePixelSize": [apix],
                           "rlnImageSize": [D], "rlnImageDimensionality": [2]})
    if not cfg.ctf:
        parts = parts.drop(columns=["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift",
                                    "rlnCtfBfactor"])
    return parts, optics


def _write_truth(folder: Path, plan: SimulationPlan, source, cfg: SimulationConfig, truth_models) -> None:
    """STAR, numpy truth, cryoDRGN pickles, and the truth models (atoms) or map."""
    from ..io.cryodrgn_pkl import write_ctf_pkl, write_poses_pkl
    from ..io.models import models_filename, write_models
    from ..io.mrc import write_map
    from ..io.star import write_star

    n, D, apix = len(plan.conformation), plan.box, plan.apix
    write_star(folder / "particles.star", *particle_table(plan, cfg))
    truth = folder / "truth"
    np.save(truth / "conformation.npy", plan.frame_ids[plan.conformation])
    np.save(truth / "frame_ids.npy", plan.frame_ids)  # model k of models.pdb is frame frame_ids[k]
    np.save(truth / "rotations.npy", plan.rotations.numpy())
    np.save(truth / "offsets_A.npy", plan.offsets_A)
    write_poses_pkl(truth / "poses.pkl", *plan.poses.to_cryodrgn(D, apix))
    if cfg.ctf:
        c = plan.ctf
        write_ctf_pkl(truth / "ctf.pkl", np.stack([
            np.full(n, D), np.full(n, apix), c.defocus_u.numpy(), c.defocus_v.numpy(),
            np.rad2deg(c.angle_ast.numpy()), c.voltage_kv.numpy(), c.cs_mm.numpy(), c.amp_contrast.numpy(),
            np.rad2deg(c.phase_shift.numpy())], -1))
    if isinstance(source, MapSource):
        write_map(truth / "volume.mrc", source.volume.numpy(), source.apix)
    else:
        models = source.truth_models(truth_models, plan.frame_ids)
        write_models(truth / models_filename(models), models)  # models.cif past 62 chains


def _write_previews(folder: Path, plan: SimulationPlan, source, cfg: SimulationConfig, sigma: float, device,
                    n_show: int = 4) -> None:
    """``stages.png`` of the dataset's first particles (the same noise as in ``particles.mrcs``) and
    ``ctf.png`` at three defoci spanning the range."""
    from ..physics.ctf import CTFParams
    from ..report.previews import simulation_previews

    k = min(n_show, cfg.n_images)
    clean, proj = render_images(plan, source, slice(0, k), cfg.ctf, stages=True, ctf_pad=cfg.ctf_pad,
                                device=device)
    noisy = add_dataset_noise(clean, sigma, cfg.seed, 0)
    defoci = np.linspace(cfg.defocus_min_um, cfg.defocus_max_um, 3) * 1e4
    examples = CTFParams(defoci, defoci, np.zeros(3), cfg.voltage_kv, cfg.cs_mm, cfg.amp_contrast,
                         np.deg2rad(cfg.phase_shift_deg), cfg.bfactor)
    simulation_previews(folder, proj, clean, noisy, plan.ctf.defocus_u[:k].numpy(), examples, plan.box,
                        plan.apix, cfg.snr)
