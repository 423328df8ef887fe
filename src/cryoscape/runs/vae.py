"""Run folders of the VAE commands: ``train-vae``, ``eval-vol`` and ``analyze``.

``train-vae`` (:func:`train_vae_run`) writes, besides ``config.yaml``, ``versions.txt``, ``run.log`` and
``metrics.json`` (:mod:`cryoscape.runs.folder`):

- ``checkpoint.pt``: model, optimiser, generators, history and configuration, written after every epoch in
  the hidden ``.NAME.part`` folder; an interrupted run leaves that folder and the same command resumes from
  it (:class:`~cryoscape.runs.folder.RunFolder` ``resume=True``). It stays in the finished folder for
  ``eval-vol`` and ``analyze``;
- ``z.npy`` / ``z_logvar.npy``: ``(N, zdim)`` latent means and log variances, input order;
- ``z.pkl``: the means as cryoDRGN writes them (a pickled ``(N, zdim)`` float32 array), for its tools;
- ``history.json`` and ``loss.png``: per-epoch loss, reconstruction error, KL and images/s.

``eval-vol`` (:func:`eval_vol_run`): ``vol_000.mrc …`` at given latents, k-means centres or along a principal
component, ``z_values.txt`` (and ``centres_ind.txt``). ``analyze`` (:func:`analyze_run`): PCA, k-means,
UMAP, principal-component trajectories, maps and plots of a train-vae folder.

Under ``torchrun`` every rank trains; only rank 0 makes the folder and writes files.
"""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..io.atomic import check_can_write
from ..io.errors import InputError
from .folder import RunFolder

__all__ = ["train_vae_run", "eval_vol_run", "analyze_run", "read_latents", "parse_latent"]

CHECKPOINT = "checkpoint.pt"


def _echo(msg: str) -> None:
    import sys
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# train-vae
# --------------------------------------------------------------------------------------------------------

def _write_training_outputs(run: RunFolder, result) -> None:
    """Latents, history and loss plot of a finished training into ``run``; its metrics."""
    from ..report.latent_plots import loss_curves
    np.save(run.file("z.npy"), result.z_mu.astype(np.float32))
    np.save(run.file("z_logvar.npy"), result.z_logvar.astype(np.float32))
    with open(run.file("z.pkl"), "wb") as f:
        pickle.dump(result.z_mu.astype(np.float32), f)
    run.file("history.json").write_text(json.dumps(result.history, indent=1))
    loss_curves(run.file("loss.png"), result.history, keys=("loss", "mse", "kl", "images_per_s"))
    last = result.history[-1]
    run.metrics.update({
        "n_images": int(len(result.z_mu)), "zdim": int(result.z_mu.shape[1]), "epochs": int(last["epoch"]),
        "final_loss": float(last["loss"]), "final_mse": float(last["mse"]), "final_kl": float(last["kl"]),
        "images_per_s": float(np.median([h["images_per_s"] for h in result.history])),
        "train_s": float(sum(h["wall_s"] for h in result.history)), "world_size": int(result.world_size)})


def _check_extension(out: Path, cfg, data) -> None:
    """``out`` is a finished train-vae run: it may be continued with more ``--epochs`` and otherwise the
    same options and particles; anything else is refused as an existing folder."""
    import torch

    from ..methods.vae.train import checkpoint_signature
    try:
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
        signature, done = state["signature"], int(state["epoch"])
    except Exception:
        raise InputError(out, "already exists (pass --overwrite to replace it)") from None
    if signature != checkpoint_signature(cfg, data):
        raise InputError(out, "already exists with other options (pass --overwrite to replace it; the same "
                              "options with more --epochs continue it)")
    if done >= cfg.epochs:
        raise InputError(out, f"already exists and holds {done} epochs (pass more --epochs to continue it or "
                              "--overwrite to replace it)")


def train_vae_run(particles: str | Path, out: str | Path, cfg, *, poses=None, ctf=None, datadir=None, ind=None,
                  apix: float | None = None, overwrite: bool = False, threads: int | None = None,
                  show_progress: bool = True, echo=_echo) -> dict | None:
    """``cryoscape train-vae``: load the particles (STAR, ``.cs``, or a stack with ``--poses``/``--ctf``
    pickles; every image checked for NaN/inf first), train (:func:`cryoscape.methods.vae.train_vae`) and write
    the run folder ``out``. Returns the ``metrics.json`` payload on rank 0 (None on the other ranks).

    Every check that can fail on the input (options, the device, an existing ``out``, the files, non-finite
    pixels) runs before anything is created. ``echo``: where one-line notes go (e.g. that the set is
    CTF-free). An interrupted run resumes from ``.NAME.part``; a finished run ``out`` given more ``epochs``
    and otherwise the same options continues from its checkpoint in a new ``.NAME.part`` (the cosine
    schedule stretched to the new length), which replaces ``out`` only when it is complete.
    """
    from ..data.particles import load_particles, read_indices
    from ..methods.vae import train_vae
    from ..utils import devices
    from ..utils.progress import progress_bar

    out = Path(out)
    cfg.check()
    device = devices.resolve_device(cfg.device)  # "cuda" without a GPU: one line, nothing written
    devices.autocast_dtype(device, cfg.precision())  # bf16 on a GPU without it: likewise, before any folder
    extend = out.is_dir() and (out / CHECKPOINT).is_file() and not overwrite
    if not extend:
        check_can_write(out, overwrite)
    data = load_particles(particles, poses, ctf, datadir, apix, check_finite=True)
    if ind is not None:
        data = data.subset(read_indices(ind))
    if extend:
        _check_extension(out, cfg, data)
    main = devices.is_main()
    n_threads = devices.set_threads(threads)
    if main:
        for note in data.notes:
            echo(f"note: {note}")
    config = {"command": "train-vae", "particles": particles, "poses": poses, "ctf": ctf, "datadir": datadir,
              "ind": ind, "apix": data.apix, "box": data.D, "threads": n_threads,
              "world_size": devices.dist_info().world_size, **asdict(cfg)}
    inputs = {"particles": str(particles), "poses": None if poses is None else str(poses),
              "ctf": None if ctf is None else str(ctf), "n_particles": len(data), "box_px": data.D,
              "apix_A": data.apix, "ctf_free": data.ctf is None or not cfg.use_ctf}
    folder = RunFolder(out, "train-vae", config, overwrite=overwrite or extend, resume=True, inputs=inputs)
    if extend and main and not folder.dir.exists():  # continue the finished run in a copy of it (.part): what
        # the user keeps there (analyze/, notes) survives; training rewrites its own outputs
        shutil.copytree(out, folder.dir, ignore=shutil.ignore_patterns("metrics.json"))
    if not main:
        train_vae(data, cfg, folder.dir / CHECKPOINT)
        return None
    with folder as run:
        run.log.info("%d particles from %s, %d px, %.4g Å/px, %s, %d thread(s), world size %d", len(data),
                     data.source, data.D, data.apix, device, n_threads, devices.dist_info().world_size)
        for note in data.notes:
            run.log.info("note: %s", note)
        with progress_bar(len(data) * cfg.epochs, "training", show_progress) as bar:
            result = train_vae(data, cfg, run.file(CHECKPOINT), bar, run.log)
        _write_training_outputs(run, result)
    return run.summary


# --------------------------------------------------------------------------------------------------------
# latents and maps
# --------------------------------------------------------------------------------------------------------

def read_latents(path: str | Path) -> np.ndarray:
    """Latents ``(N, zdim)`` from a run folder (its ``z.npy``), a ``.npy``, a cryoDRGN ``z.pkl`` or a text
    file (one row per particle)."""
    path = Path(path)
    if path.is_dir():
        path = path / "z.npy"
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        if path.suffix == ".npy":
            z = np.load(path)
        elif path.suffix == ".pkl":
            with open(path, "rb") as f:
                z = np.asarray(pickle.load(f))
        else:
            z = np.loadtxt(path, ndmin=2)
    except Exception as exc:
        raise InputError(path, f"cannot read latents ({type(exc).__name__})") from None
    z = np.asarray(z, dtype=np.float32)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or not np.isfinite(z).all():
        raise InputError(path, "latents must be a finite (N, zdim) array")
    return z


def parse_latent(text: str) -> np.ndarray:
    """``"0.1,-0.5 2"`` → ``(1, k)`` float32 (commas or spaces); :class:`InputError` on ``--z``."""
    try:
        values = np.array([float(v) for v in text.replace(",", " ").split()], dtype=np.float32)[None]
    except ValueError:
        raise InputError("--z", f"not a list of numbers: {text!r}") from None
    if values.size == 0 or not np.isfinite(values).all():
        raise InputError("--z", f"need finite numbers, got {text!r}")
    return values


def _write_maps(run: RunFolder, folder: str, model, z: np.ndarray, apix: float, prefix: str = "vol") -> list[str]:
    """Decode ``z (k, zdim)`` and write ``folder/{prefix}_{i:03d}.mrc`` in the run folder."""
    from ..io.mrc import write_map
    from ..methods.vae import decode_volumes
    names = []
    for i in range(len(z)):
        name = f"{folder}/{prefix}_{i:03d}.mrc" if folder else f"{prefix}_{i:03d}.mrc"
        write_map(run.file(name), decode_volumes(model, z[i:i + 1])[0], apix)
        names.append(name)
    return names


def _run_dir(run: Path) -> Path:
    return run if run.is_dir() else run.parent


def eval_vol_run(run: str | Path, out: str | Path, *, z: str | None = None, zfile=None, kmeans: int = 0,
                 pc: int = 0, n_points: int = 10, apix: float | None = None, seed: int = 0,
                 overwrite: bool = False, device: str = "cpu") -> dict:
    """``cryoscape eval-vol``: maps from a train-vae run (folder or its ``checkpoint.pt``) at the latent
    ``z``, at the latents of ``zfile``, at ``kmeans`` k-means centres of the run's latents (the particle
    nearest each centre) or at ``n_points`` along principal component ``pc`` (1-based). Exactly one source.
    Returns the ``metrics.json`` payload."""
    from ..analysis.latent import kmeans as run_kmeans, nearest_to, pc_trajectory
    from ..methods.vae import load_model
    from ..utils import devices
    from ..utils.checks import at_least

    run, out = Path(run), Path(out)
    if sum([z is not None or zfile is not None, kmeans > 0, pc > 0]) != 1 or (z is not None and zfile is not None):
        raise InputError("--z/--zfile/--kmeans/--pc", "give exactly one of them")
    at_least("--n-points", n_points, 1)
    if apix is not None and not (np.isfinite(apix) and apix > 0):
        raise InputError("--apix", f"must be a finite number > 0, got {apix}")
    check_can_write(out, overwrite)
    model, state = load_model(run, devices.resolve_device(device))
    info = {}
    if z is not None or zfile is not None:
        values, where = (parse_latent(z), "--z") if z is not None else (read_latents(zfile), zfile)
        if values.shape[1] != model.zdim:
            raise InputError(where, f"z has {values.shape[1]} dimensions but the model's zdim is {model.zdim}")
        source = "given"
    else:
        zs = read_latents(_run_dir(run))
        if zs.shape[1] != model.zdim:
            raise InputError(run, f"latents have {zs.shape[1]} dimensions, the model {model.zdim}")
        if kmeans > 0:
            if kmeans > len(zs):
                raise InputError("--kmeans", f"more clusters than particles ({len(zs)})")
            _, centres = run_kmeans(zs, kmeans, seed)
            info["particles"] = nearest_to(zs, centres)
            values, source = zs[info["particles"]], f"kmeans{kmeans}"
        else:
            if pc > model.zdim:
                raise InputError("--pc", f"the latent has {model.zdim} components")
            values, source = pc_trajectory(zs, pc - 1, n_points), f"pc{pc}"
    a = float(apix or state["apix"])
    config = {"command": "eval-vol", "run": run, "z": z, "zfile": zfile, "kmeans": kmeans, "pc": pc,
              "n_points": n_points, "apix": a, "seed": seed, "source": source, "device": device}
    with RunFolder(out, "eval-vol", config, overwrite=overwrite, inputs={"run": str(run)}) as folder:
        np.savetxt(folder.file("z_values.txt"), values, fmt="%.6g")
        if "particles" in info:
            np.savetxt(folder.file("centres_ind.txt"), info["particles"], fmt="%d")
        names = _write_maps(folder, "", model, values, a)
        folder.log.info("%d maps (%s) at %.4g Å/px", len(names), source, a)
        folder.metrics.update({"n_maps": len(names), "apix_A": a})
    return folder.summary


def analyze_run(run: str | Path, out: str | Path | None = None, *, k: int = 20, pcs: int = 2, n_points: int = 10,
                umap: bool = True, maps: bool = True, seed: int = 0, overwrite: bool = False,
                device: str = "cpu", echo=_echo) -> dict:
    """``cryoscape analyze``: PCA, k-means (the particle nearest each centre), UMAP (when umap-learn is
    installed), maps at the centres and along the first ``pcs`` principal components, and plots (latent
    scatter and density, PC trajectories, loss curves) of a train-vae run folder, in ``out`` (default
    ``RUN/analyze``). Returns the ``metrics.json`` payload."""
    from ..analysis.latent import kmeans as run_kmeans, nearest_to, pc_trajectory, pca, umap_embed
    from ..methods.vae import load_model
    from ..report.latent_plots import latent_density, latent_scatter, loss_curves
    from ..utils import devices
    from ..utils.checks import at_least

    run = Path(run)
    at_least("--k", k, 1)
    at_least("--pcs", pcs, 0)
    at_least("--n-points", n_points, 2)
    out = Path(out) if out is not None else run / "analyze"
    check_can_write(out, overwrite)
    zs = read_latents(run)
    model, state = load_model(run, devices.resolve_device(device)) if maps else (None, None)
    if k > len(zs):
        raise InputError("--k", f"more clusters than particles ({len(zs)})")
    config = {"command": "analyze", "run": run, "k": k, "pcs": pcs, "n_points": n_points, "umap": umap,
              "maps": maps, "seed": seed, "device": device}
    with RunFolder(out, "analyze", config, overwrite=overwrite,
                   inputs={"run": str(run), "n_particles": len(zs), "zdim": int(zs.shape[1])}) as folder:
        f = folder.file
        proj, comps, ratio, _ = pca(zs)
        for j, r in enumerate(ratio[:3]):
            folder.metrics[f"pc{j + 1}_explained_variance_ratio"] = float(r)
        labels, centres = run_kmeans(zs, k, seed)
        idx = nearest_to(zs, centres)
        np.save(f("kmeans_labels.npy"), labels)
        np.savetxt(f("kmeans_centres_ind.txt"), idx, fmt="%d")
        np.savetxt(f("kmeans_centres_z.txt"), zs[idx], fmt="%.6g")
        sizes = np.bincount(labels, minlength=k)
        (f("kmeans_sizes.json")).write_text(json.dumps(sizes.tolist()))
        folder.metrics.update({"n_clusters": k, "smallest_cluster": int(sizes.min()),
                               "largest_cluster": int(sizes.max())})
        p2 = proj[:, :2] if proj.shape[1] > 1 else np.column_stack([proj[:, 0], np.zeros(len(proj))])
        np.save(f("z_pca.npy"), p2.astype(np.float32))  # (N, 2): PC1, PC2, for plots and `filter --embedding`
        latent_scatter(f("z_pca.png"), p2, clusters=labels, centres=p2[idx], xlabel="PC1", ylabel="PC2")
        latent_density(f("z_pca_density.png"), p2, xlabel="PC1", ylabel="PC2")
        if umap and zs.shape[1] > 1:
            try:
                emb = umap_embed(zs, seed)
            except ImportError as exc:
                echo(f"note: {exc}; skipping UMAP")
                folder.log.info("UMAP skipped: %s", exc)
            else:
                np.save(f("umap.npy"), emb)
                latent_scatter(f("umap.png"), emb, clusters=labels, centres=emb[idx], xlabel="UMAP1",
                               ylabel="UMAP2")
                latent_density(f("umap_density.png"), emb, xlabel="UMAP1", ylabel="UMAP2")
        traj = {}
        for j in range(min(pcs, zs.shape[1])):
            traj[j] = pc_trajectory(zs, j, n_points)
            np.savetxt(f(f"pc{j + 1}_z.txt"), traj[j], fmt="%.6g")
            t_proj = (traj[j] - zs.mean(0)) @ comps[: min(2, len(comps))].T
            t2 = t_proj if t_proj.shape[1] > 1 else np.column_stack([t_proj[:, 0], np.zeros(len(t_proj))])
            latent_scatter(f(f"pc{j + 1}_trajectory.png"), p2, centres=t2, xlabel="PC1", ylabel="PC2")
        history_file = _run_dir(run) / "history.json"
        if history_file.exists():
            loss_curves(f("loss.png"), json.loads(history_file.read_text()), keys=("loss", "mse", "kl"))
        n_maps = 0
        if maps:
            a = float(state["apix"])
            n_maps += len(_write_maps(folder, "kmeans", model, zs[idx], a))
            for j, values in traj.items():
                n_maps += len(_write_maps(folder, f"pc{j + 1}", model, values, a))
        folder.metrics["n_maps"] = n_maps
    return folder.summary
