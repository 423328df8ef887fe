"""Run folders of the 2-D commands: ``class2d`` (EM classification) and the shared pieces ``cluster2d`` uses.

``class2d`` (:func:`class2d_run`) classifies a particle STAR by expectation-maximisation
(:func:`cryoscape.methods.class2d.em.fit`) and writes, besides ``config.yaml``, ``versions.txt``, ``run.log``
and ``metrics.json`` (:mod:`cryoscape.runs.folder`):

- ``class_averages.mrcs``: ``(K, D, D)`` float32, pixel size in the header, image ``k`` (1-based in the
  stack) is class ``k`` (``rlnClassNumber``); in the EM's class order, never re-sorted. The averages are
  made again from the EM's final hard assignments by :class:`~cryoscape.physics.transform2d.Averager2D`
  (:func:`class_averages`): every image moved back by its shift, rotated into its class frame by ``−ψ``,
  CTF-weighted, half sets by particle index parity (even / odd rows), and Wiener-filtered with a per-class,
  per-shell signal prior taken from the half-set FRC (below);
- ``particles.star``: the input particles, every column and the optics block kept, with
  ``rlnClassNumber`` (``k + 1``), ``rlnAnglePsi`` (degrees of ψ, in (−180, 180]), ``rlnOriginXAngst`` /
  ``rlnOriginYAngst`` ``= −shift_A`` (RELION's meaning: the shift that centres the particle; RELION 3.0's
  pixel origins are dropped) and ``rlnMaxValueProbDistribution``; image names rewritten so they resolve
  from the run folder (:func:`cryoscape.analysis.selection.write_star_subset`). Other pose columns
  (``rlnAngleRot``/``rlnAngleTilt``) are carried over as read;
- ``class_counts.json``: per class its number, particle count and half-set FRC resolution (Å, 0.143;
  ``null`` for a class with fewer than 2 particles), the classes by size and the shell frequencies;
  ``frc.npy``: ``(K, D//2)`` half-set FRC per class (shells ``0 … D//2 − 1``, frequency ``r / (D apix)``);
- ``gallery.png``: the averages largest class first (:func:`cryoscape.report.gallery.class_gallery`);
- ``history.json``: one dict per EM iteration; ``checkpoint.pt``: the EM's state after every iteration,
  written in the hidden ``.NAME.part`` folder; an interrupted run leaves that folder and the same command
  resumes from it (:class:`~cryoscape.runs.folder.RunFolder` ``resume=True``).

Wiener prior of the final averages. For class ``k`` the half-set FRC ``F(r)`` (both halves averaged with
the negligible default regulariser of ``Averager2D``) gives the spectral SNR of the full average
``SSNR(r) = 2 F / (1 − F)`` (the two halves together double the SNR of one; ``F`` clipped to
``[0, 1 − 1e−6]``). The averager's denominator is ``den(q) = Σ_i C_i(Q_iᵀ q)²``, so the per-image signal to
noise ratio it takes as ``tau2`` is ``τ²(r) = SSNR(r) / ⟨den⟩_r`` (``⟨⟩_r`` the mean over shell ``r``),
floored at ``SSNR = 1e−6`` (a shell without signal is suppressed, not divided by zero). This is the
estimate ``ĉ = Σ C z / (Σ C² + 1/τ²)``: frequencies with FRC ≈ 0 fade out, resolved ones are untouched.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..io.errors import InputError
from .folder import RunFolder

__all__ = ["class2d_run", "class_averages", "write_class_star", "load_for_2d", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"
SSNR_FLOOR = 1e-6
FRC_THRESHOLD = 0.143


def _echo(msg: str) -> None:
    import sys
    print(msg, file=sys.stderr, flush=True)


def load_for_2d(particles: str | Path, datadir=None):
    """The particle STAR ``particles`` for a 2-D command: ``(ParticleData, ParticleTable)``, every image
    checked finite and the box square (:class:`InputError` otherwise, before anything is written). Poses are
    not needed; the STAR's rows and the data's particles are in the same order."""
    from ..data.particles import load_particles
    from ..io.star import read_star

    particles = Path(particles)
    if particles.suffix.lower() != ".star":
        raise InputError(particles, "need a RELION .star particle file (the output STAR keeps its columns)")
    data = load_particles(particles, datadir=datadir, need_poses=False, check_finite=True)
    table = read_star(particles)
    if len(table) != len(data):
        raise InputError(particles, f"{len(table)} rows but {len(data)} images")
    return data, table


def read_images(data, chunk: int = 4096) -> torch.Tensor:
    """All images of ``data`` as one ``(N, D, D)`` float32 tensor (read in chunks of ``chunk``)."""
    out = torch.empty(len(data), data.D, data.D, dtype=torch.float32)
    for s in range(0, len(data), chunk):
        out[s:s + chunk] = torch.from_numpy(data.images(slice(s, s + chunk)))
    return out


def class_averages(images: torch.Tensor, ctf, apix: float, labels, psi, shift_A, n_classes: int,
                   device="cpu", batch: int = 256) -> dict:
    """Wiener class averages of ``images (N, D, D)`` at their hard assignments (module docstring).

    ``labels (N,)`` 0-based, ``psi (N,)`` rad, ``shift_A (N, 2)`` Å (the particle's position from the box
    centre, ``x ≈ shift(rotate(c, ψ), s)``); ``ctf``: :class:`~cryoscape.physics.ctf.CTFParams` or None.
    Half sets by index parity. Returns ``averages (K, D, D)`` float32 numpy, ``frc (K, D//2)`` float64
    (half sets, default regulariser), ``resolution_A (K,)`` (FRC 0.143; NaN for classes with < 2 particles),
    ``tau2 (K, D//2)`` (the prior used), ``counts (K,)`` int64."""
    from ..physics.transform2d import Averager2D

    N, D = images.shape[0], images.shape[-1]
    labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
    psi = torch.as_tensor(psi).to(torch.float64).reshape(-1)
    shift_A = torch.as_tensor(shift_A).to(torch.float64).reshape(N, 2)
    avg = Averager2D(n_classes, D, apix, device=device)
    for s in range(0, N, batch):
        idx = torch.arange(s, min(N, s + batch))
        avg.add(images[idx], None if ctf is None else ctf.subset(idx).to(avg.device), labels[idx], psi[idx],
                shift_A[idx], half=idx % 2)
    frc = avg.frc().cpu()  # (K, n_shells), default (negligible) regulariser
    res = avg.resolution_A(FRC_THRESHOLD).cpu().numpy()
    g = avg.grid
    n_shells = g.n_shells
    shells = g.shell.clamp_max(n_shells - 1)
    disc = g.disc
    den = avg.den.sum(0)  # (K, D, W)
    # mean of den over each shell of the disc: (K, n_shells)
    flat_shell = shells[disc]
    sums = torch.zeros(n_classes, n_shells, dtype=den.dtype, device=den.device)
    sums.index_add_(1, flat_shell, den[:, disc])
    cnt = torch.bincount(flat_shell, minlength=n_shells).to(den.dtype).clamp_min(1)
    den_mean = (sums / cnt).cpu()
    F = frc.clamp(0.0, 1.0 - 1e-6)
    ssnr = (2 * F / (1 - F)).clamp_min(SSNR_FLOOR)
    tau2 = ssnr / den_mean.clamp_min(1e-30)
    averages = avg.averages(tau2=tau2).float().cpu().numpy()
    counts = torch.bincount(labels, minlength=n_classes).numpy().astype(np.int64)
    res = np.where(counts >= 2, res, np.nan)
    return {"averages": averages, "frc": frc.numpy(), "resolution_A": res, "tau2": tau2.numpy(), "counts": counts}


def write_class_star(table, path: Path, labels, *, psi=None, shift_A=None, max_prob=None, datadir=None) -> dict:
    """Write ``table`` (the input :class:`~cryoscape.io.star.ParticleTable`, all rows) to ``path`` with
    ``rlnClassNumber = labels + 1`` and, when given, ``rlnAnglePsi`` (degrees of ``psi`` wrapped to
    (−180, 180]), ``rlnOriginXAngst``/``rlnOriginYAngst = −shift_A`` (replacing any origin columns) and
    ``rlnMaxValueProbDistribution``; image names made resolvable from ``path``'s folder. Returns the summary
    of :func:`~cryoscape.analysis.selection.write_star_subset`."""
    from ..analysis.selection import write_star_subset
    from ..io.star import ParticleTable

    parts = table.particles.copy()
    parts["rlnClassNumber"] = np.asarray(labels, dtype=np.int64).ravel() + 1
    if psi is not None:
        deg = np.degrees(np.asarray(psi, dtype=np.float64).ravel())
        parts["rlnAnglePsi"] = 180.0 - np.mod(180.0 - deg, 360.0)  # (−180, 180]
    if shift_A is not None:
        s = np.asarray(shift_A, dtype=np.float64).reshape(-1, 2)
        parts = parts.drop(columns=[c for c in ("rlnOriginX", "rlnOriginY") if c in parts.columns])
        parts["rlnOriginXAngst"] = -s[:, 0]
        parts["rlnOriginYAngst"] = -s[:, 1]
    if max_prob is not None:
        parts["rlnMaxValueProbDistribution"] = np.asarray(max_prob, dtype=np.float64).ravel()
    new = ParticleTable(parts, table.optics, table.path, table.extra_blocks)
    return write_star_subset(new, np.arange(len(parts)), path, datadir, overwrite=True)


def _finite_or_none(v) -> float | None:
    v = float(v)
    return round(v, 4) if math.isfinite(v) else None


def write_class_outputs(run: RunFolder, table, images, ctf, apix: float, result, datadir=None,
                        title: str = "", device="cpu") -> dict:
    """The files of a 2-D classification ``result`` (a :class:`~cryoscape.methods.class2d.em.Class2DResult`)
    into ``run`` (module docstring): averages (accumulated on ``device``), STAR, counts, FRC, gallery,
    history. Returns the
    :func:`class_averages` dict; adds the class metrics to ``run.metrics``."""
    from ..io.mrc import write_stack
    from ..report.gallery import class_gallery, gallery_order

    K = int(result.counts.numel())
    D = images.shape[-1]
    ca = class_averages(images, ctf, apix, result.labels, result.psi, result.shift_A, K, device=device)
    write_stack(run.file("class_averages.mrcs"), ca["averages"], apix)
    star = write_class_star(table, run.file("particles.star"), result.labels.numpy(), psi=result.psi.numpy(),
                            shift_A=result.shift_A.numpy(), max_prob=result.max_prob.numpy(), datadir=datadir)
    if star["unresolved_stacks"]:
        run.log.info("%d image stack(s) not found; their names were kept as written", star["unresolved_stacks"])
    np.save(run.file("frc.npy"), ca["frc"])
    order = gallery_order(ca["counts"])
    freqs = np.arange(ca["frc"].shape[1]) / (D * apix)
    counts_doc = {
        "classes": [{"class": k + 1, "count": int(ca["counts"][k]),
                     "resolution_frc0.143_A": _finite_or_none(ca["resolution_A"][k])} for k in range(K)],
        "by_size": [int(k) + 1 for k in order],
        "frequency_per_shell_inv_A": [round(float(f), 6) for f in freqs]}
    run.file("class_counts.json").write_text(json.dumps(counts_doc, indent=1))
    run.file("history.json").write_text(json.dumps(result.history, indent=1))
    class_gallery(run.file("gallery.png"), ca["averages"], ca["counts"], ca["resolution_A"], title=title)
    res = ca["resolution_A"][np.isfinite(ca["resolution_A"])]
    n = int(ca["counts"].sum())
    run.metrics.update({
        "n_classes": K, "n_particles": n, "n_empty_classes": int((ca["counts"] == 0).sum()),
        "largest_class_fraction": float(ca["counts"].max() / max(n, 1)),
        "mean_max_prob": float(result.max_prob.mean()), "box_px": int(D), "apix_A": float(apix)})
    if len(res):
        run.metrics["median_class_resolution_A"] = float(np.median(res))
        run.metrics["best_class_resolution_A"] = float(res.min())
    if result.history:
        run.metrics["iterations"] = int(result.history[-1]["iteration"])
        ll = result.history[-1].get("loglik_per_image")
        if ll is not None and math.isfinite(ll):
            run.metrics["final_loglik_per_image"] = float(ll)
    return ca


def class2d_run(particles: str | Path, out: str | Path, *, cfg, datadir=None, overwrite: bool = False,
                threads: int | None = None, progress: bool = True, echo=_echo) -> dict:
    """``cryoscape class2d``: read and check the particles, classify them
    (:func:`cryoscape.methods.class2d.em.fit`) and write the run folder ``out`` (module docstring).

    Every check that can fail on the input runs before anything is created: the output path, the device, the
    STAR and its stacks (square box, every image finite), then ``cfg.check(N, D)`` (e.g. more classes than
    particles). An interrupted run resumes from ``.NAME.part`` when the same command is run again.
    ``threads``: torch threads (None: the cores this process may use). ``echo``: where one-line notes go.
    Returns the ``metrics.json`` payload."""
    from ..io.atomic import check_can_write
    from ..methods.class2d.em import fit
    from ..utils import devices

    out = Path(out)
    check_can_write(out, overwrite)
    device = devices.resolve_device(cfg.device)
    cfg.device = str(device)
    data, table = load_for_2d(particles, datadir)
    cfg.check(len(data), data.D)
    n_threads = devices.set_threads(threads)
    for note in data.notes:
        echo(f"note: {note}")
    config = {"command": "class2d", "particles": particles, "datadir": datadir, "apix": data.apix, "box": data.D,
              "threads": n_threads, **asdict(cfg)}
    inputs = {"particles": str(particles), "n_particles": len(data), "box_px": data.D, "apix_A": data.apix,
              "ctf_free": data.ctf is None}
    images = read_images(data)
    with RunFolder(out, "class2d", config, overwrite=overwrite, resume=True, inputs=inputs) as run:
        run.log.info("%d particles from %s, %d px, %.4g Å/px, %d classes, %d iterations, %s, %d thread(s)",
                     len(data), data.source, data.D, data.apix, cfg.n_classes, cfg.n_iterations, device, n_threads)
        for note in data.notes:
            run.log.info("note: %s", note)
        result = fit(images, data.ctf, data.apix, cfg, checkpoint=run.file(CHECKPOINT), progress=progress)
        run.log.info("classified: %s", ", ".join(f"{k + 1}:{int(c)}" for k, c in enumerate(result.counts)))
        write_class_outputs(run, table, images, data.ctf, data.apix, result, datadir,
                            title=f"{cfg.n_classes} classes, {len(data)} particles", device=device)
    return run.summary
