#!/usr/bin/env python
"""Heterogeneous reconstruction with known poses: cryoscape's VAE vs ``cryodrgn train_vae``, side by side.

Data: a 1-D continuum, the AdK closed→open trajectory (all 102 frames, Cα as Gaussian atoms of σ 3 Å),
``--per-frame`` images per frame (balanced), 64 px at 2.0 Å, random poses, offsets up to 4 Å, CTF with
defocus 1–2.5 µm, at each SNR of ``--snr`` (0.1 and 0.01). Both tools train on the same stack with the same
poses and CTF (cryoDRGN from ``truth/poses.pkl`` and ``truth/ctf.pkl``), the same encoder and decoder sizes
(cryoDRGN's layer count: ``layers`` residual hidden layers), ``zdim``, batch size, learning rate, KL weight
and epochs. Small networks (``--dim`` wide) keep the whole run within an hour on 2 CPU cores.

Figures per SNR and tool (CryoBench's definitions, ``cryoscape.analysis.heterogeneity``):
- per-image FSC-AUC: maps decoded at the latents of ``--n-eval`` random images against their true maps;
- per-state FSC-AUC: maps at the mean latent of every `--state-stride`-th of the 102 states against their
  true maps (cryoDRGN decodes a map in ~6 s here, so all 102 would cost 10 min per SNR);
- neighbourhood similarity between the latent and the true frame index (k = 1–10 % of the images);
- training images/s (the training loop only; start-up and data loading excluded for both tools);
- the ceiling: per-state backprojection with the true labels, poses and CTF (cryoscape backproject).

Usage: ``.venv/bin/python benchmarks/vae_vs_cryodrgn.py [--snr 0.1 0.01] [--epochs 8] [--dim 128]
[--no-peer]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _figures import print_figures  # noqa: E402
from peers import cryodrgn_vae as peer  # noqa: E402

from cryoscape.analysis.heterogeneity import map_auc, neighborhood_similarity  # noqa: E402
from cryoscape.data.embedded import adk_files  # noqa: E402
from cryoscape.data.particles import load_particles  # noqa: E402
from cryoscape.data.simulate import AtomSource, SimulationConfig  # noqa: E402
from cryoscape.io.models import read_trajectory  # noqa: E402
from cryoscape.io.mrc import read_map  # noqa: E402
from cryoscape.methods.reconstruct import BackprojectConfig, backproject  # noqa: E402
from cryoscape.methods.vae import VAEConfig, decode_volumes, train_vae  # noqa: E402
from cryoscape.physics import atoms_to_volume  # noqa: E402
from cryoscape.utils.hardware import native_bf16  # noqa: E402

try:  # the simulator's run folder moved from data/ to runs/ (issue 11)
    from cryoscape.runs.simulate import simulate_to_folder  # noqa: E402
except ImportError:
    from cryoscape.data.simulate import simulate_to_folder  # noqa: E402

D, APIX, SIGMA = 64, 2.0, 3.0


def simulate(folder: Path, snr: float, per_frame: int, seed: int) -> Path:
    """The benchmark set at ``snr`` (reused when ``folder`` holds the same configuration)."""
    psf, dcd = adk_files()
    conf = read_trajectory(psf, dcd, "ca")
    cfg = SimulationConfig(n_images=per_frame * conf.n_frames, box=D, apix=APIX, snr=snr, sigma=SIGMA,
                           shift_max_A=4.0, defocus_min_um=1.0, defocus_max_um=2.5, sampling="balanced",
                           seed=seed)
    key = hashlib.sha256(repr(cfg).encode()).hexdigest()[:16]
    if (folder / "key.txt").exists() and (folder / "key.txt").read_text() == key:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    simulate_to_folder(folder, AtomSource(conf.coords, SIGMA), cfg, show_progress=False, previews=False)
    (folder / "key.txt").write_text(key)
    return folder


def true_maps(folder: Path) -> np.ndarray:
    """``(102, D, D, D)`` voxel maps of the rendered (centred) frames: the ground truth of each state."""
    from cryoscape.io.models import read_model
    conf = read_model(folder / "truth" / "models.pdb")
    return np.stack([atoms_to_volume(torch.from_numpy(c), SIGMA, D, APIX).numpy().astype(np.float32)
                     for c in conf.coords])


def ceiling(data, state: np.ndarray, truth: np.ndarray, sample: np.ndarray, states: np.ndarray) -> dict:
    """Per-state backprojection with the true labels (cryoscape backproject with its Wiener filter from the
    half-map FSC, the best of its regularisers on 50 noisy images): the per-image value of each sampled
    image is its state's; the per-state mean over ``states``."""
    aucs = {}
    cfg = BackprojectConfig(wiener=True)
    for s in np.unique(state):
        vol = backproject(data.subset(np.nonzero(state == s)[0]), cfg).volume
        aucs[int(s)] = map_auc(vol, truth[s])
    return {"per_state": float(np.mean([aucs[int(s)] for s in states])),
            "per_image": float(np.mean([aucs[int(state[i])] for i in sample]))}


def metrics(decode, z: np.ndarray, state: np.ndarray, truth: np.ndarray, sample: np.ndarray,
            states: np.ndarray) -> dict:
    """Per-image FSC-AUC (images ``sample``), per-state FSC-AUC (``states``) and neighbourhood similarity
    (all images) for latents ``z`` and a decoder ``decode(z (k, zdim)) → (k, D, D, D)``."""
    per_image = [map_auc(m, truth[state[i]]) for i, m in zip(sample, decode(z[sample]))]
    zmean = np.stack([z[state == s].mean(0) for s in states])
    per_state = [map_auc(m, truth[s]) for s, m in zip(states, decode(zmean))]
    ns = neighborhood_similarity(z, state.astype(np.float64))
    return {"per_image_fsc_auc": float(np.mean(per_image)), "per_state_fsc_auc": float(np.mean(per_state)),
            "neighborhood_similarity": float(ns["mean"])}


def run_ours(data, cfg: VAEConfig) -> tuple[dict, callable, np.ndarray]:
    t = time.perf_counter()
    result = train_vae(data, cfg)
    wall = time.perf_counter() - t
    train_s = sum(h["wall_s"] for h in result.history)
    info = {"wall_s": wall, "train_s": train_s, "images_per_s": len(data) * cfg.epochs / train_s}

    def decode(z):
        return decode_volumes(result.model, z)
    return info, decode, result.z_mu


def run_peer(folder: Path, work: Path, cfg: VAEConfig, lr: float) -> tuple[dict, callable, np.ndarray]:
    res = peer.train_vae(folder / "particles.mrcs", folder / "truth" / "poses.pkl", folder / "truth" / "ctf.pkl",
                         work, zdim=cfg.zdim, enc_dim=cfg.enc_dim, enc_layers=cfg.enc_layers, dec_dim=cfg.dec_dim,
                         dec_layers=cfg.dec_layers, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                         lr=lr, beta=cfg.kl_weight(), pe_type=cfg.pe_type, measure_rss=False)
    info = {"wall_s": res["wall_s"], "train_s": res["train_s"], "images_per_s": res["images_per_s"]}
    calls = [0]

    def decode(z):
        calls[0] += 1
        paths = peer.eval_vols(work, None, z, work / f"eval{calls[0]}", APIX)
        return np.stack([read_map(p)[0] for p in paths])
    return info, decode, res["z"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--snr", type=float, nargs="+", default=[0.1, 0.01])
    ap.add_argument("--per-frame", type=int, default=50, help="images per frame (102 frames)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128, help="encoder and decoder width")
    ap.add_argument("--layers", type=int, default=3, help="residual hidden layers of both networks")
    ap.add_argument("--zdim", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="cryoscape's Adam step (default: its default)")
    ap.add_argument("--peer-lr", type=float, default=1e-4, help="cryoDRGN's Adam step (default: its default)")
    ap.add_argument("--pe-type", default="gaussian")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="cryoscape's decoder products in bfloat16 (auto: its default, on where the CPU has it)")
    ap.add_argument("--n-eval", type=int, default=50, help="images sampled for the per-image FSC-AUC")
    ap.add_argument("--state-stride", type=int, default=3, help="per-state FSC-AUC on every k-th of the 102 "
                    "states (cryoDRGN decodes a 64³ map in ~6 s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="cryoscape's device: auto, cpu, cuda or cuda:N")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "vae_vs_cryodrgn")
    a = ap.parse_args()
    use_peer = not a.no_peer and peer.cryodrgn_bin() is not None
    if not a.no_peer and not use_peer:
        print("cryoDRGN not found in .venv-peers/cryodrgn: measuring cryoscape alone")
    cfg = VAEConfig(zdim=a.zdim, enc_dim=a.dim, enc_layers=a.layers, dec_dim=a.dim, dec_layers=a.layers,
                    pe_type=a.pe_type, epochs=a.epochs, batch_size=a.batch_size, seed=a.seed,
                    bf16={"auto": None, "on": True, "off": False}[a.bf16], device=a.device,
                    **({} if a.lr is None else {"lr": a.lr}))
    print(f"networks: {a.dim} wide, {a.layers} residual layers, zdim {a.zdim}; {a.epochs} epochs, batch "
          f"{a.batch_size}, Adam lr {cfg.lr} with {cfg.schedule} steps (cryoscape) / {a.peer_lr} constant "
          f"(cryoDRGN), pe {a.pe_type}"
          f", bf16 {a.bf16} (this CPU has it: {native_bf16()}); device {a.device}; threads {torch.get_num_threads()}")
    fig, t0 = {}, time.perf_counter()
    for snr in a.snr:
        tag = f"snr{snr:g}"
        folder = simulate(a.out / f"data_{tag}", snr, a.per_frame, seed=1)
        data = load_particles(folder / "particles.star")
        state = np.load(folder / "truth" / "conformation.npy")
        truth = true_maps(folder)
        sample = np.sort(np.random.default_rng(a.seed).choice(len(data), a.n_eval, replace=False))
        states = np.unique(state)[:: a.state_stride]
        top = ceiling(data, state, truth, sample, states)
        fig[f"{tag}_ceiling_per_image_fsc_auc"] = top["per_image"]
        fig[f"{tag}_ceiling_per_state_fsc_auc"] = top["per_state"]
        runs = {"cryoscape": lambda: run_ours(data, cfg)}
        if use_peer:
            runs["cryodrgn"] = lambda: run_peer(folder, a.out / f"cryodrgn_{tag}", cfg, a.peer_lr)
        for name, run in runs.items():
            info, decode, z = run()
            m = metrics(decode, z, state, truth, sample, states)
            for k, v in {**m, **info}.items():
                fig[f"{tag}_{name}_{k}"] = v
            print(f"{tag} {name}: " + json.dumps({k: round(v, 4) for k, v in {**m, **info}.items()}), flush=True)
        if use_peer:
            fig[f"{tag}_per_image_auc_gain"] = (fig[f"{tag}_cryoscape_per_image_fsc_auc"]
                                                - fig[f"{tag}_cryodrgn_per_image_fsc_auc"])
            fig[f"{tag}_speed_ratio_vs_cryodrgn"] = (fig[f"{tag}_cryoscape_images_per_s"]
                                                     / fig[f"{tag}_cryodrgn_images_per_s"])
    fig["total_wall_s"] = time.perf_counter() - t0
    print_figures(fig)


if __name__ == "__main__":
    main()
