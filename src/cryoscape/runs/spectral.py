"""Run folder of ``cryoscape spectral`` (and the demo's spectral step): per-particle Cα models.

:func:`spectral_run` reads the inputs (particles from a RELION STAR, a cryoSPARC ``.cs`` or a stack with
cryoDRGN pickles; the given model; optionally the true models of a simulated set), runs the method
(:func:`cryoscape.methods.spectral.run.run_spectral`) and writes, besides ``config.yaml``, ``versions.txt``,
``run.log`` and ``metrics.json`` (:mod:`cryoscape.runs.folder`):

- ``models.pdb`` (one model per particle; ``models.cif`` past 62 chains), or with ``models_format`` "dcd"
  ``models.dcd`` + ``models_topology.pdb`` (``.cif`` past 62 chains);
- ``embedding.npy`` ``(N, k)``, ``test_index.npy`` (held-out particles), ``training.json`` (per-epoch history);
- ``embedding.png``, ``training.png``, ``projections.png`` (three held-out particles: the given model, the
  truth, the prediction and the observed image) and, with the truth, ``structures.png``;
- with the truth, ``errors.json``: the errors of the held-out particles before and after training
  (:func:`cryoscape.analysis.pointcloud.pointcloud_errors`, with per-residue errors), whose averages are
  also in ``metrics.json`` (``test_initial_avg_error_A``, ``test_trained_avg_error_A``, …).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..io.atomic import check_can_write
from ..io.errors import InputError
from .folder import RunFolder

__all__ = ["spectral_run", "spectral_to_folder", "held_out_errors", "truth_for_particles", "check_same_chains",
           "ERROR_KEYS"]

#: errors of :func:`cryoscape.analysis.pointcloud.pointcloud_errors` copied into metrics.json (all in Å)
ERROR_KEYS = ("avg_error_A", "avg_max_error_A", "max_error_A", "rmsd_aligned_mean_A")


def _echo(msg: str) -> None:
    import sys
    print(msg, file=sys.stderr, flush=True)


def truth_for_particles(truth_models: Path, particles: Path, n_atoms: int,
                        reference=None) -> tuple[np.ndarray, np.ndarray]:
    """The true Cα model of every particle of a simulated set: ``(truth (N, L, 3), conformation (N,))``, by the
    STAR's ``cryoscapeConformation`` column and ``truth/frame_ids.npy`` beside ``truth_models`` (models in
    frame order when absent). :class:`InputError` when they do not match, or when ``reference`` (the given
    model's :class:`~cryoscape.io.models.Conformations`) has other chains (:func:`check_same_chains`)."""
    from ..io.models import read_model
    from ..io.star import read_star
    truth_models, particles = Path(truth_models), Path(particles)
    models = read_model(truth_models, "ca")
    if models.n_atoms != n_atoms:
        raise InputError(truth_models, f"has {models.n_atoms} Cα but the reference has {n_atoms}")
    if reference is not None:
        check_same_chains(reference, models, truth_models)
    if particles.suffix.lower() != ".star":
        raise InputError(particles, "--truth-models needs a STAR with the cryoscapeConformation column")
    table = read_star(particles)
    table.require(["cryoscapeConformation"], "--truth-models")
    ids_file = truth_models.parent / "frame_ids.npy"
    frame_ids = np.load(ids_file) if ids_file.exists() else np.arange(models.n_frames)
    lookup = {int(f): i for i, f in enumerate(frame_ids)}
    conf = table.particles["cryoscapeConformation"].to_numpy(dtype=np.int64)
    missing = [c for c in np.unique(conf) if int(c) not in lookup]
    if missing or len(frame_ids) != models.n_frames:
        raise InputError(truth_models, "its models do not match the particles' cryoscapeConformation values")
    return models.coords[[lookup[int(c)] for c in conf]], conf


def check_same_chains(reference, truth, where) -> None:
    """The true models' chains and residue numbers must be the reference's, atom for atom (a model whose
    chains are ordered or numbered differently would be scored against the wrong atoms): else
    :class:`InputError` naming ``where`` and the first differing atom."""
    from ..structure.segments import find_segments
    cut_ref = [(s.start, s.stop) for s in find_segments(reference.coords[:1], reference.chains, reference.resids,
                                                        max_bond_A=float("inf"))]
    cut_true = [(s.start, s.stop) for s in find_segments(truth.coords[:1], truth.chains, truth.resids,
                                                         max_bond_A=float("inf"))]
    differ = np.nonzero(np.asarray(reference.resids) != np.asarray(truth.resids))[0]
    if len(differ):
        a = int(differ[0])
        raise InputError(where, f"atom {a + 1} is residue {int(truth.resids[a])} of chain {truth.chains[a]}, "
                                f"the reference's is residue {int(reference.resids[a])} of chain {reference.chains[a]}")
    if cut_ref != cut_true:
        raise InputError(where, f"its chains ({len(cut_true)}) do not match the reference's ({len(cut_ref)}) "
                                "atom for atom")


def held_out_errors(result) -> dict:
    """Errors of the held-out particles against the truth, ``{"test_initial": {...}, "test_trained": {...}}``
    (:func:`~cryoscape.analysis.pointcloud.pointcloud_errors`, plus ``per_chain`` and ``per_segment`` average
    errors when the model has several segments; empty dicts without a truth)."""
    from ..analysis.pointcloud import pointcloud_errors, segment_errors
    if result.truth is None or not len(result.test_index):
        return {"test_initial": {}, "test_trained": {}}
    import torch
    test = torch.as_tensor(result.test_index)
    truth = result.truth[test]
    out = {}
    for stage, pred in (("test_initial", result.initial_models[test]), ("test_trained", result.models[test].detach())):
        out[stage] = pointcloud_errors(pred, truth)
        if len(result.segments) > 1:
            out[stage].update(segment_errors(pred, truth, result.segments))
    return out


def _write(run: RunFolder, result, meta, color, models_format: str) -> dict:
    """Files, plots and metrics of a finished :class:`SpectralResult` into ``run``; returns :func:`held_out_errors`."""
    from ..io.models import Conformations, models_filename, write_dcd, write_models
    from ..report.plots import embedding_plot, structures_plot, training_plot, views_plot
    models = result.models.detach().cpu().numpy()
    conf = Conformations(models, meta.names, meta.resnames, meta.resids, meta.chains, meta.elements,
                         "cryoscape spectral", np.arange(len(models)))
    if models_format == "dcd":
        write_dcd(run.file("models.dcd"), conf)
    else:
        write_models(run.file(models_filename(conf)), conf)  # models.cif past 62 chains
    embedding = result.embedding.cpu().numpy()
    np.save(run.file("embedding.npy"), embedding)
    np.save(run.file("test_index.npy"), result.test_index)
    run.file("training.json").write_text(json.dumps(result.history, indent=1))
    embedding_plot(run.file("embedding.png"), embedding, color)
    training_plot(run.file("training.png"), result.history)
    if result.views:
        views_plot(run.file("projections.png"), result.views)
    errors = held_out_errors(result)
    if errors["test_trained"]:
        run.file("errors.json").write_text(json.dumps(errors, indent=1))
        idx = result.test_index[:3]
        structures_plot(run.file("structures.png"), result.initial_models[idx].numpy(), result.truth[idx].numpy(),
                        models[idx])
    last = result.history[-1]
    run.metrics.update({"n_particles": int(len(models)), "n_test": int(len(result.test_index)),
                        "n_atoms": int(models.shape[1]), "k": int(embedding.shape[1]), "epochs": int(last["epoch"]),
                        "final_loss": float(last["loss"]), "method_s": float(result.wall_s),
                        "n_chains": len({s.chain for s in result.segments}), "n_segments": len(result.segments)})
    for stage, values in errors.items():
        for key in ERROR_KEYS:
            if key in values:
                run.metrics[f"{stage}_{key}"] = float(values[key])
    return errors


def spectral_to_folder(out: str | Path, data, reference: np.ndarray, meta, cfg, *, truth: np.ndarray | None = None,
                       color: np.ndarray | None = None, models_format: str = "pdb", config: dict | None = None,
                       inputs: dict | None = None, command: str = "spectral", overwrite: bool = False,
                       show_progress: bool = True) -> dict | None:
    """Run the method on loaded particles and write the run folder ``out``; returns the ``metrics.json`` payload
    (None on the ranks other than 0 under ``torchrun``: every rank trains, rank 0 writes).

    The per-epoch checkpoints (``fit.pt``, ``refine.pt``) are written in the working folder ``.NAME.part``; an
    interrupted run leaves it, and the same command resumes from them. They stay in the finished folder.

    Args:
        data: :class:`~cryoscape.data.particles.ParticleData`. reference: ``(L, 3)`` Cα of the given model,
            centred. meta: the reference's :class:`~cryoscape.io.models.Conformations` (atom names, residues).
        cfg: :class:`~cryoscape.methods.spectral.run.SpectralConfig`. truth: ``(N, L, 3)`` or None.
        color: per-particle values for the embedding plot (e.g. the true conformation).
        config, inputs: extra entries of ``config.yaml`` and of metrics.json's "inputs".
    """
    from ..methods.spectral.run import check_inputs, model_segments, run_spectral, training_items
    from ..utils import devices
    from ..utils.progress import progress_bar
    if models_format not in ("pdb", "dcd"):
        raise InputError("--models-format", f"must be pdb or dcd, got {models_format!r}")
    segments = check_inputs(len(data), reference, cfg, truth, segments=model_segments(reference, meta, truth))
    device = devices.resolve_device(cfg.fit.device)  # "cuda" without a GPU: one line, nothing written
    check_can_write(out, overwrite)
    world = devices.dist_info().world_size
    full_config = {"command": command, **(config or {}), "models_format": models_format, "world_size": world,
                   **asdict(cfg)}
    full_inputs = {"n_particles": len(data), "box_px": data.D, "apix_A": data.apix, "n_atoms": int(reference.shape[0]),
                   "ctf_free": data.ctf is None, "truth": truth is not None, **(inputs or {})}
    folder = RunFolder(out, command, full_config, overwrite=overwrite, resume=True, inputs=full_inputs)
    if not devices.is_main():
        run_spectral(data, reference, cfg, truth, checkpoint_dir=folder.dir, segments=segments)
        return None
    with folder as run:
        run.log.info("%d particles from %s, %d px, %.4g Å/px; %d Cα in %d chain(s), %d segment(s); %s model, "
                     "k = %d, %s features; %s, %d thread(s), world size %d", len(data), data.source, data.D,
                     data.apix, reference.shape[0], len({s.chain for s in segments}), len(segments), cfg.model,
                     cfg.k, cfg.features, device, torch_threads(), world)
        for note in data.notes:
            run.log.info("note: %s", note)
        with progress_bar(training_items(len(data), cfg), "spectral model", show_progress) as bar:
            result = run_spectral(data, reference, cfg, truth, bar, checkpoint_dir=run.dir, log=run.log,
                                  segments=segments)
        errors = _write(run, result, meta, color, models_format)
        run.metrics["world_size"] = int(world)
        for stage, values in errors.items():
            if values:
                run.log.info("%s: average %.3f Å, average max %.3f Å, max %.3f Å", stage, values["avg_error_A"],
                             values["avg_max_error_A"], values["max_error_A"])
    return run.summary


def torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def spectral_run(particles: str | Path, reference: str | Path, out: str | Path, cfg, *, topology=None,
                 frame: int = 0, poses=None, ctf=None, datadir=None, apix: float | None = None,
                 truth_models=None, models_format: str = "pdb", overwrite: bool = False, threads: int | None = None,
                 show_progress: bool = True, echo=_echo) -> dict | None:
    """``cryoscape spectral``: read the particles (STAR, ``.cs``, or a stack with ``--poses``/``--ctf``
    pickles; every image checked for NaN/inf), the given model (frame ``frame`` of a PDB/mmCIF or of a
    trajectory with ``topology``; coordinates that are not finite numbers are refused) and, optionally, the
    true models; run and write ``out`` (:func:`spectral_to_folder`). Every refusal comes before anything is
    written. A set without CTF runs CTF-free and ``echo`` says so in one line. ``threads``: torch threads
    (default: the cores this process may use, shared among torchrun's processes). Returns the
    ``metrics.json`` payload (None on ranks other than 0)."""
    from ..data.particles import load_particles
    from ..io.models import read_structure
    from ..methods.spectral.run import check_inputs, model_segments
    from ..utils import devices
    particles, reference, out = Path(particles), Path(reference), Path(out)
    cfg.check()
    if models_format not in ("pdb", "dcd"):
        raise InputError("--models-format", f"must be pdb or dcd, got {models_format!r}")
    devices.resolve_device(cfg.fit.device)
    check_can_write(out, overwrite)
    ref = read_structure(reference, topology, "ca", frames=[frame])
    coords = ref.coords[0] - ref.coords[0].mean(0)
    data = load_particles(particles, poses, ctf, datadir, apix, check_finite=True)
    truth = conf = None
    if truth_models is not None:
        truth, conf = truth_for_particles(Path(truth_models), particles, ref.n_atoms, ref)
    check_inputs(len(data), coords, cfg, truth, reference, model_segments(coords, ref, truth))
    n_threads = devices.set_threads(threads)
    if devices.is_main():
        for note in data.notes:
            echo(f"note: {note}")
    config = {"particles": particles, "reference": reference, "topology": topology, "frame": frame, "poses": poses,
              "ctf": ctf, "datadir": datadir, "apix": data.apix, "truth_models": truth_models, "threads": n_threads}
    inputs = {"particles": str(particles), "reference": str(reference),
              "truth_models": None if truth_models is None else str(truth_models)}
    return spectral_to_folder(out, data, coords, ref, cfg, truth=truth, color=conf, models_format=models_format,
                              config=config, inputs=inputs, overwrite=overwrite, show_progress=show_progress)
