#!/usr/bin/env python
"""The seed method's protocol (issue 3) on AdK, with correct physics: errors before and after training.

Protocol as the issue states it (docs/seed_notebook_protocol.md records what the public notebook really
ran): AdK from MDAnalysisTests (PSF + DCD2, 102 frames, Cα), 400 images of 64 px drawn from the frames with
replacement, Gaussian atoms σ = 3 Å, SNR 0.058, defocus 1.5–2.5 µm, Haar-uniform poses, no shifts; the
"oracle" graph (16³ noisy low-resolution maps of each particle's true conformation, Gaussian kernel,
normalised Laplacian, 10 eigenvectors including the trivial one, all 400 particles in the graph); the
paper's model (angles linear in the eigenvectors, zero-initialised, frame 0 as the given model, one constant
bond length = frame 0's mean; each particle's true reference atom and frame given, as in the notebook);
SGD with momentum 0.9, batch 100, 30 epochs; 90/10 split. Our loss is the mean squared error divided by
the images' mean square (so that steps do not depend on units), so the notebook's lr 0.1, which applies to
its unnormalised loss, does not carry over: lr 5 is the default here (``--lr 0.1`` runs the literal value).

Physics and conventions are cryoscape's (RELION CTF sign, no modulus, defocus in Å): the notebook's own
departures are listed in docs/seed_notebook_protocol.md. Two splits are reported: random over images (test
images share frames with training images, as in the notebook) and held out by frame. Errors are the paper's
three (lab frame, true pose) on the test images. Usage: ``.venv/bin/python benchmarks/seed_notebook.py
[--epochs 30] [--seed 0]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _figures import print_figures  # noqa: E402

from cryoscape.analysis.pointcloud import pointcloud_errors  # noqa: E402
from cryoscape.data.embedded import adk_files  # noqa: E402
from cryoscape.data.simulate import AtomSource, SimulationConfig, plan_simulation, render_images  # noqa: E402
from cryoscape.io.models import read_trajectory  # noqa: E402
from cryoscape.methods.spectral import (FitConfig, LinearAngleModel, CartesianModel,  # noqa: E402
                                        fit_model, oracle_maps, refine_cartesian, spectral_embedding)
from cryoscape.physics import add_noise, noise_sigma  # noqa: E402
from cryoscape.structure import chain_to_internal  # noqa: E402


def run_split(name, train, test, v, images, plan, coords, anchors, ref, ref_xyz, args, fig):
    """Fit on ``train``, report the three errors on ``test`` before and after."""
    R = plan.rotations
    offsets = torch.as_tensor(plan.offsets_A)
    if args.model == "cartesian":
        model = CartesianModel(ref_xyz, v.shape[1], float(v.pow(2).mean().sqrt()),
                               args.smooth_modes or None, args.bond_weight, args.hidden, args.seed)
    else:
        model = LinearAngleModel(ref, v.shape[1], bias=args.bias)

    def errors():
        with torch.no_grad():
            pred = model(v[test], anchors[0][test], anchors[1][test])
        return pointcloud_errors(pred, coords[test])

    e0 = errors()
    t = time.perf_counter()
    fit_model(model, v[train], images[train], R[train], offsets[train], plan.ctf.subset(torch.as_tensor(train)),
              plan.box, plan.apix, FitConfig(epochs=args.epochs, batch_size=100, lr=args.lr, momentum=0.9,
                                             optimizer=args.optimizer, schedule=args.schedule, seed=args.seed,
                                             device=args.device),
              anchors=(anchors[0][train], anchors[1][train]))
    if args.model == "cartesian" and args.refine_modes > (args.smooth_modes or 0):
        # coarse to fine: the same fit again with more cosines, starting from the coarse solution
        model = refine_cartesian(model, args.refine_modes)
        fit_model(model, v[train], images[train], R[train], offsets[train], plan.ctf.subset(torch.as_tensor(train)),
                  plan.box, plan.apix, FitConfig(epochs=args.epochs, batch_size=100, lr=args.lr * args.refine_lr,
                                                 optimizer=args.optimizer, schedule=args.schedule, seed=args.seed,
                                                 device=args.device))
    wall = time.perf_counter() - t
    model = model.cpu()
    e1 = errors()
    with torch.no_grad():
        pred = model(v[test], anchors[0][test], anchors[1][test])
    bonds = (pred[:, 1:] - pred[:, :-1]).norm(dim=-1)
    true_bonds = (coords[test][:, 1:] - coords[test][:, :-1]).norm(dim=-1)
    fig[f"{name}_bond_length_abs_dev_mean_A_trained"] = float((bonds - true_bonds).abs().mean())
    for k in ("avg_error_A", "avg_max_error_A", "max_error_A"):
        fig[f"{name}_{k}_epoch0"] = e0[k]
        fig[f"{name}_{k}_trained"] = e1[k]
    fig[f"{name}_rmsd_aligned_mean_A_trained"] = e1["rmsd_aligned_mean_A"]
    fig[f"{name}_train_wall_s"] = wall
    fig[f"{name}_n_train"], fig[f"{name}_n_test"] = len(train), len(test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=5.0, help="SGD step on the normalised loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--k", type=int, default=10, help="eigenvectors")
    ap.add_argument("--features", choices=("oracle", "images"), default="oracle",
                    help="graph features: the paper's oracle maps, or variability coordinates from the images")
    ap.add_argument("--var-modes", type=int, default=1, help="images features: modes of 3-D variability")
    ap.add_argument("--var-resolution", type=float, default=10.0, help="images features: resolution limit, Å")
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    ap.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    ap.add_argument("--bias", action="store_true", help="learn a constant angle offset too")
    ap.add_argument("--bonds", choices=("constant", "given"), default="constant",
                    help="one mean bond length (the paper's model) or the given model's per-bond lengths")
    ap.add_argument("--model", choices=("angles", "cartesian"), default="angles",
                    help="the paper's angle model, or positions linear in the eigenvectors")
    ap.add_argument("--smooth-modes", type=int, default=40,
                    help="cosines along the chain per axis for the cartesian model (0: every atom free)")
    ap.add_argument("--refine-modes", type=int, default=0,
                    help="cartesian model: then refit with this many cosines, from the coarse fit")
    ap.add_argument("--refine-lr", type=float, default=0.1, help="refit step, relative to --lr")
    ap.add_argument("--hidden", type=int, default=0, help="cartesian model: units of the small MLP term (0: none)")
    ap.add_argument("--bond-weight", type=float, default=0.0, help="bond-length penalty of the cartesian model")
    ap.add_argument("--device", default="cpu", help="where the fit runs: cpu (default, the figures below), auto, cuda")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t_all = time.perf_counter()
    psf, dcd = adk_files()
    traj = read_trajectory(psf, dcd, "ca")
    xyz = torch.as_tensor(traj.coords - traj.coords.mean(axis=1, keepdims=True))  # (102, 214, 3), centred
    source = AtomSource(xyz.numpy(), 3.0)
    cfg = SimulationConfig(n_images=args.n, box=64, snr=0.058, sigma=3.0, defocus_min_um=1.5, defocus_max_um=2.5,
                           sampling="random", seed=args.seed)
    plan = plan_simulation(cfg, source)
    clean = render_images(plan, source, slice(0, args.n)).to(torch.float64)
    sigma = noise_sigma(float(clean.var()), cfg.snr)
    images = add_noise(clean, sigma, torch.Generator().manual_seed(args.seed + 1))
    frames = torch.as_tensor(plan.conformation)
    coords = xyz[frames]  # the true conformation of each particle (model frame; the pose is known)

    # the given model: frame 0, one constant bond length (the paper's model)
    ref = chain_to_internal(xyz[:1])
    if args.bonds == "constant":
        ref.bonds = torch.full_like(ref.bonds, float(ref.bonds.mean()))
    true_int = chain_to_internal(coords, ref=ref.ref)
    anchors = (true_int.ref_pos, true_int.ref_frame)  # each particle's true anchor, as in the notebook

    t = time.perf_counter()
    if args.features == "oracle":
        feats = oracle_maps(coords, 16, 6.0, blur=3.0, noise_std=0.5, seed=args.seed)
    else:  # from the images, poses and CTF only
        from cryoscape.data.particles import ParticleData
        from cryoscape.methods.spectral import variability_coordinates
        data = ParticleData({"mem": args.n}, np.array(["mem"] * args.n, dtype=object), np.arange(args.n),
                            plan.rotations, -plan.offsets_A, plan.ctf, plan.apix, plan.box, "in memory")
        data._cache._maps["mem"] = images.to(torch.float32).numpy()
        feats = variability_coordinates(data, k=args.var_modes, resolution_A=args.var_resolution)
    v, _, _ = spectral_embedding(feats, args.k)
    fig: dict = {"n_images": args.n, "box_px": plan.box, "apix_A": plan.apix, "snr": cfg.snr,
                 "epochs": args.epochs, "lr": args.lr, "optimizer": args.optimizer, "k": args.k,
                 "bias": args.bias, "bonds": args.bonds, "features": args.features, "model": args.model, "schedule": args.schedule,
                 "bond_weight": args.bond_weight, "smooth_modes": args.smooth_modes, "hidden": args.hidden,
                 "graph_wall_s": time.perf_counter() - t}
    fig["corr_eigvec1_vs_frame"] = float(abs(np.corrcoef(v[:, 1].numpy(), frames.numpy())[0, 1]))

    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(args.n)
    n_test = args.n // 10
    run_split("random_split", np.sort(perm[n_test:]), np.sort(perm[:n_test]), v, images, plan, coords, anchors,
              ref, xyz[0], args, fig)
    held = rng.choice(102, size=10, replace=False)
    is_test = np.isin(plan.conformation, held)
    run_split("frame_split", np.nonzero(~is_test)[0], np.nonzero(is_test)[0], v, images, plan, coords, anchors,
              ref, xyz[0], args, fig)
    fig["wall_s_total"] = time.perf_counter() - t_all
    fig["conventions"] = "cryoscape physics: RELION CTF sign, defocus in Å, no modulus; Haar poses; exact SNR"
    print_figures(fig)


if __name__ == "__main__":
    main()
