"""``cryoscape train-vae``, ``cryoscape eval-vol`` and ``cryoscape analyze``: the VAE with known poses and
its latent space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["train_vae_cmd", "eval_vol", "analyze"]


def _prepare_run_folder(out: Path, overwrite: bool) -> bool:
    """Create ``out`` or reuse it to resume (it holds a checkpoint); ``--overwrite`` starts afresh.
    Returns True when resuming."""
    import shutil

    from ..io.errors import InputError
    from ..methods.vae.train import CHECKPOINT
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if out.exists():
        if (out / CHECKPOINT).exists():
            return True
        if any(out.iterdir()):
            raise InputError(out, "exists and holds no checkpoint to resume (pass --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    return False


def train_vae_cmd(
    particles: Path = typer.Argument(..., help="Particles with poses and CTF: RELION .star, or an .mrcs stack "
                                              "with --poses and --ctf (cryoDRGN pickles)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder. If it holds a checkpoint of the same "
                                                      "configuration, training resumes from it."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="cryoDRGN poses .pkl (overrides the STAR's)."),
    ctf: Optional[Path] = typer.Option(None, "--ctf", help="cryoDRGN CTF .pkl (overrides the STAR's)."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", help="Folder of the stacks a STAR refers to."),
    ind: Optional[Path] = typer.Option(None, "--ind", help="Particle indices to use (.pkl, .npy or text)."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Pixel size, Å, when no file states it."),
    zdim: int = typer.Option(8, "--zdim", help="Latent dimension."),
    epochs: int = typer.Option(20, "-n", "--epochs", help="Epochs (passes over the data)."),
    enc_dim: int = typer.Option(256, "--enc-dim", help="Encoder width."),
    enc_layers: int = typer.Option(3, "--enc-layers", help="Encoder residual hidden layers (counted as cryoDRGN does)."),
    dec_dim: int = typer.Option(256, "--dec-dim", help="Decoder width."),
    dec_layers: int = typer.Option(3, "--dec-layers", help="Decoder residual hidden layers (counted as cryoDRGN does)."),
    encoder: str = typer.Option("mlp", "--encoder", help="mlp (on the pixels inside the circle) or cnn."),
    pe_type: str = typer.Option("gaussian", "--pe-type", help="Positional encoding: gaussian (random Fourier "
                                "features; measured better) or geom (geometric frequencies per axis)."),
    pe_dim: Optional[int] = typer.Option(None, "--pe-dim", help="Frequencies per axis (default: box / 2)."),
    pe_sigma: float = typer.Option(0.5, "--pe-sigma", help="Width of the gaussian features (× box)."),
    output: str = typer.Option("complex", "--output", help="Decoder output: complex (real, imaginary; half "
                               "space) or hartley (one value; two evaluations per frequency)."),
    batch_size: int = typer.Option(16, "-b", "--batch-size", help="Images per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (of the first epoch with --schedule cosine)."),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine (the step falls to 0 by the last epoch) or "
                                 "constant."),
    beta: Optional[float] = typer.Option(None, "--beta", help="KL weight (default 1/zdim)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation, shuffling and sampling."),
    lazy: bool = typer.Option(False, "--lazy", help="Read images chunk by chunk each epoch instead of keeping "
                              "them in memory (the default when they would take over 4 GB)."),
    chunk: int = typer.Option(1024, "--chunk", help="Images read at a time when lazy."),
    no_ctf: bool = typer.Option(False, "--no-ctf", help="Ignore the CTF."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="Decoder products in bfloat16 (default: "
                                        "on where the CPU has bfloat16 hardware; 1.5–2.3× faster, same accuracy "
                                        "measured; docs/benchmarks.md)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the run folder and start afresh."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
):
    """Train a VAE (cryoDRGN-class) on particles with known poses: a latent per particle and a decoder of maps."""
    from ..data.particles import load_particles, read_indices
    from ..io.rundir import close_logger, run_logger
    from ..methods.vae import VAEConfig, train_vae
    from ..methods.vae.outputs import write_training_outputs
    from ..utils.progress import progress_bar

    cfg = VAEConfig(zdim=zdim, enc_dim=enc_dim, enc_layers=enc_layers, dec_dim=dec_dim, dec_layers=dec_layers,
                    encoder=encoder, pe_type=pe_type, pe_dim=pe_dim, pe_sigma=pe_sigma, output=output,
                    epochs=epochs, batch_size=batch_size, lr=lr, beta=beta, seed=seed,
                    in_memory=False if lazy else None, chunk=chunk, use_ctf=not no_ctf, bf16=bf16,
                    schedule=schedule)
    cfg.check()
    data = load_particles(particles, poses, ctf, datadir, apix)
    if ind is not None:
        data = data.subset(read_indices(ind))
    created = not out.exists()
    resuming = _prepare_run_folder(out, overwrite)
    log = run_logger(out, "cryoscape.vae", "run.log")
    log.info("%s %d particles from %s, %d px, %.4g Å/px", "resuming:" if resuming else "training:", len(data),
             data.source, data.D, data.apix)
    try:
        with progress_bar(len(data) * epochs, "training", not no_progress) as bar:
            result = train_vae(data, cfg, out, bar, log)
    except BaseException:
        close_logger(log)
        if created and not (out / "checkpoint.pt").exists():  # failed before the first epoch ended:
            import shutil                                     # leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    try:
        config = {"command": "train-vae", "particles": str(particles), "poses": poses, "ctf": ctf,
                  "datadir": datadir, "ind": ind, "apix": data.apix, "box": data.D, **cfg.__dict__}
        summary = write_training_outputs(out, result, config)
        log.info("done: %s", json.dumps(summary))
    finally:
        close_logger(log)
    typer.echo(json.dumps(summary))
    typer.echo(f"wrote {out}/z.npy, z.pkl, checkpoint.pt, history.json, loss.png")


def _parse_z(z: Optional[str], zfile: Optional[Path], zdim: int):
    import numpy as np

    from ..io.errors import InputError
    from ..methods.vae.outputs import read_latents
    if (z is None) == (zfile is None):
        return None
    if z is not None:
        try:
            values = np.array([float(v) for v in z.replace(",", " ").split()], dtype=np.float32)[None]
        except ValueError:
            raise InputError("--z", f"not a list of numbers: {z!r}") from None
        where = "--z"
    else:
        values, where = read_latents(zfile), zfile
    if values.shape[1] != zdim:
        raise InputError(where, f"z has {values.shape[1]} dimensions but the model's zdim is {zdim}")
    return values


def _write_maps(folder: Path, model, z, apix: float, prefix: str = "vol") -> list[str]:
    """Decode ``z (k, zdim)`` and write ``{prefix}_{i:03d}.mrc`` (atomically) in ``folder``."""
    from ..io.mrc import write_map
    from ..methods.vae import decode_volumes
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(len(z)):
        vol = decode_volumes(model, z[i:i + 1])[0]
        name = f"{prefix}_{i:03d}.mrc"
        write_map(folder / name, vol, apix)
        names.append(name)
    return names


def eval_vol(
    run: Path = typer.Argument(..., help="A train-vae run folder (or its checkpoint.pt)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder for the maps (must not exist)."),
    z: Optional[str] = typer.Option(None, "--z", help="One latent, e.g. '0.1,-0.5,...' (zdim values)."),
    zfile: Optional[Path] = typer.Option(None, "--zfile", help="Latents, one per row (.txt, .npy or .pkl)."),
    kmeans: int = typer.Option(0, "--kmeans", help="Maps at k-means centres of the run's latents (the "
                                                   "particle nearest each centre)."),
    pc: int = typer.Option(0, "--pc", help="Maps along this principal component of the run's latents (1-based)."),
    n_points: int = typer.Option(10, "--n-points", help="Maps along the principal component."),
    apix: Optional[float] = typer.Option(None, "--apix", help="Voxel size, Å (default: the training data's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder."),
):
    """Maps from a trained VAE at given latents, at k-means centres or along a principal component."""
    import numpy as np

    from ..analysis.latent import kmeans as run_kmeans, nearest_to, pc_trajectory
    from ..io.atomic import atomic_dir
    from ..io.errors import InputError
    from ..methods.vae import load_model
    from ..methods.vae.outputs import read_latents

    model, state = load_model(run)
    given = _parse_z(z, zfile, model.zdim)
    chosen = [given is not None, kmeans > 0, pc > 0]
    if sum(chosen) != 1:
        raise InputError("--z/--zfile/--kmeans/--pc", "give exactly one of them")
    a = apix or state["apix"]
    with atomic_dir(out, overwrite) as tmp:
        if given is not None:
            values, info = given, {"source": "given"}
        else:
            zs = read_latents(run if Path(run).is_dir() else Path(run).parent)
            if zs.shape[1] != model.zdim:
                raise InputError(run, f"latents have {zs.shape[1]} dimensions, the model {model.zdim}")
            if kmeans > 0:
                _, centres = run_kmeans(zs, kmeans, seed)
                idx = nearest_to(zs, centres)
                values, info = zs[idx], {"source": f"kmeans{kmeans}", "particles": idx.tolist()}
                np.savetxt(tmp / "centres_ind.txt", idx, fmt="%d")
            else:
                if pc > model.zdim:
                    raise InputError("--pc", f"the latent has {model.zdim} components")
                values, info = pc_trajectory(zs, pc - 1, n_points), {"source": f"pc{pc}"}
        np.savetxt(tmp / "z_values.txt", values, fmt="%.6g")
        names = _write_maps(tmp, model, values, a)
    typer.echo(json.dumps({"maps": len(names), "apix_A": a, **{k: v for k, v in info.items() if k != "particles"}}))
    typer.echo(f"wrote {out}/vol_000.mrc … {names[-1]}, z_values.txt")


def analyze(
    run: Path = typer.Argument(..., help="A train-vae run folder."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output folder (default: RUN/analyze)."),
    k: int = typer.Option(20, "--k", help="k-means clusters (a map at each centre)."),
    pcs: int = typer.Option(2, "--pcs", help="Principal components to traverse (a map series along each)."),
    n_points: int = typer.Option(10, "--n-points", help="Maps along each principal component."),
    umap: bool = typer.Option(True, "--umap/--no-umap", help="Also a UMAP embedding (needs umap-learn)."),
    maps: bool = typer.Option(True, "--maps/--no-maps", help="Decode maps at the centres and along the PCs."),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means and UMAP."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output folder."),
):
    """Latent-space analysis: PCA, UMAP, k-means with the particles nearest each centre, maps at the centres
    and along principal components, and plots (latent scatter and density, PC trajectories, loss curves)."""
    import numpy as np

    from ..analysis.latent import kmeans as run_kmeans, nearest_to, pc_trajectory, pca, umap_embed
    from ..io.atomic import atomic_dir
    from ..io.errors import InputError
    from ..methods.vae import load_model
    from ..methods.vae.outputs import read_latents
    from ..report.latent_plots import latent_density, latent_scatter, loss_curves
    from .checks import at_least

    at_least("--k", k, 1)
    at_least("--pcs", pcs, 0)
    at_least("--n-points", n_points, 2)
    out = out or run / "analyze"
    zs = read_latents(run)
    model, state = load_model(run) if maps else (None, None)
    if k > len(zs):
        raise InputError("--k", f"more clusters than particles ({len(zs)})")
    summary = {"n_particles": len(zs), "zdim": int(zs.shape[1])}
    with atomic_dir(out, overwrite) as tmp:
        proj, comps, ratio, _ = pca(zs)
        summary["pca_explained_variance_ratio"] = [float(r) for r in ratio]
        labels, centres = run_kmeans(zs, k, seed)
        idx = nearest_to(zs, centres)
        np.save(tmp / "kmeans_labels.npy", labels)
        np.savetxt(tmp / "kmeans_centres_ind.txt", idx, fmt="%d")
        np.savetxt(tmp / "kmeans_centres_z.txt", zs[idx], fmt="%.6g")
        summary["kmeans_sizes"] = np.bincount(labels, minlength=k).tolist()
        p2 = proj[:, :2] if proj.shape[1] > 1 else np.column_stack([proj[:, 0], np.zeros(len(proj))])
        np.save(tmp / "z_pca.npy", p2.astype(np.float32))  # (N, 2): PC1, PC2, for plots and `filter --embedding`
        latent_scatter(tmp / "z_pca.png", p2, clusters=labels, centres=p2[idx], xlabel="PC1", ylabel="PC2")
        latent_density(tmp / "z_pca_density.png", p2, xlabel="PC1", ylabel="PC2")
        if umap and zs.shape[1] > 1:
            try:
                emb = umap_embed(zs, seed)
            except ImportError as exc:
                typer.echo(f"note: {exc}; skipping UMAP", err=True)
            else:
                np.save(tmp / "umap.npy", emb)
                latent_scatter(tmp / "umap.png", emb, clusters=labels, centres=emb[idx], xlabel="UMAP1",
                               ylabel="UMAP2")
                latent_density(tmp / "umap_density.png", emb, xlabel="UMAP1", ylabel="UMAP2")
                summary["umap"] = True
        traj = {}
        for j in range(min(pcs, zs.shape[1])):
            traj[j] = pc_trajectory(zs, j, n_points)
            np.savetxt(tmp / f"pc{j + 1}_z.txt", traj[j], fmt="%.6g")
            t_proj = (traj[j] - zs.mean(0)) @ comps[: min(2, len(comps))].T
            t2 = t_proj if t_proj.shape[1] > 1 else np.column_stack([t_proj[:, 0], np.zeros(len(t_proj))])
            latent_scatter(tmp / f"pc{j + 1}_trajectory.png", p2, centres=t2, xlabel="PC1", ylabel="PC2")
        history = json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else None
        if history:
            loss_curves(tmp / "loss.png", history, keys=("loss", "mse", "kl"))
        if maps:
            a = state["apix"]
            _write_maps(tmp / "kmeans", model, zs[idx], a)
            for j, values in traj.items():
                _write_maps(tmp / f"pc{j + 1}", model, values, a)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
    typer.echo(json.dumps({k_: v for k_, v in summary.items() if k_ != "kmeans_sizes"}))
    typer.echo(f"wrote {out}/ (z_pca, kmeans, pc trajectories{', maps' if maps else ''}, plots)")
