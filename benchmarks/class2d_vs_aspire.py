#!/usr/bin/env python
"""2D classification and rotation-invariant features: cryoscape beside ASPIRE 0.14.3 on the same files.

    .venv/bin/python benchmarks/class2d_vs_aspire.py --part views          # issue figure 1
    .venv/bin/python benchmarks/class2d_vs_aspire.py --part conformations  # seed 004's clustering problem
    .venv/bin/python benchmarks/class2d_vs_aspire.py --part neighbours     # invariant features, 9 neighbours

- views: 5,000 images of one AdK conformation, 64 px, random views, in-plane angles, shifts ≤ 3 px, CTF,
  SNR 0.1; ``class2d`` with K = 50, 20 iterations; the share of same-class pairs whose viewing directions lie
  within 20° (mirror-aware) and its chance level; ASPIRE's RIRClass2D classes (image + its 9 neighbours) on
  the same STAR, scored the same way (reference-to-member pairs).
- conformations: 5 AdK frames evenly spaced on the closed→open trajectory (in aligned Cα RMSD from the closed
  frame, :func:`evenly_spaced_frames`), 2,000 images all within 5° of one
  direction, 64 px of 1.5 Å (the open state needs the larger box), random in-plane angles and shifts ≤ 3 px,
  CTF; at SNR 1, 0.1, 0.03, 0.01 the Hungarian accuracy of
  k-means on ACF features, on bispectra, and of 2D EM (K = 5, 20 iterations, best of 4 starts by
  log-likelihood) from its random start and from the bispectrum clusters.
- neighbours: 1,000 images of 32 px at SNR 1 (random views, CTF): the share of each image's 9 nearest
  neighbours in bispectrum space within 10° of its view (mirror-aware), ours (phase-flipped images,
  ``image_neighbours`` with its defaults, and ``embed``'s defaults without mirrors) and ASPIRE's.

ASPIRE runs in its own venv (``.venv-peers/aspire``, ``benchmarks/peers/aspire_class2d.py``) in the same
invocation; ``--no-peer`` skips it. Data go to ``benchmarks/out/class2d/`` (ignored). The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "class2d"
ASPIRE_PY = ROOT / ".venv-peers" / "aspire" / "bin" / "python"
CRYOSCAPE = [sys.executable, "-m", "cryoscape.cli.main"]


def simulate(name: str, *args: str) -> Path:
    """A simulated set under OUT/name (made once; reused when its STAR exists)."""
    from cryoscape.data.embedded import adk_files
    folder = OUT / name
    if not (folder / "particles.star").exists():
        psf, dcd = adk_files()
        subprocess.run([*CRYOSCAPE, "simulate", str(dcd), "--topology", str(psf), "-o", str(folder),
                        "--no-progress", "--overwrite", *args], check=True, stdout=subprocess.DEVNULL)
    return folder


def load(folder: Path):
    from cryoscape.data.particles import load_particles
    d = load_particles(folder / "particles.star")
    conf = np.load(folder / "truth" / "conformation.npy")  # the simulator's ground truth
    return d, torch.as_tensor(d.images(slice(0, len(d.ctf)))).float(), conf


def aspire(star: Path, n_classes: int = 0) -> dict:
    """ASPIRE's RIRClass2D (+ averager for the first n_classes classes) on a STAR; its npz and JSON."""
    if not ASPIRE_PY.exists():
        return {}
    npz = star.parent / "aspire.npz"
    t = time.perf_counter()
    proc = subprocess.run([str(ASPIRE_PY), str(ROOT / "benchmarks" / "peers" / "aspire_class2d.py"), str(star),
                           "-o", str(npz), "--n-classes", str(n_classes), "--threads", "2"],
                          check=True, capture_output=True, text=True)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["wall_s"] = time.perf_counter() - t
    info["npz"] = dict(np.load(npz))
    return info


def class_resolutions_vs_clean(folder: Path, res, R: np.ndarray, apix: float) -> np.ndarray:
    """Per class, the FRC-0.5 resolution (Å) of its average against the clean projection (no CTF) of its
    dominant view: the member pose whose viewing direction is closest, mirror-aware, to most of the others
    (the medoid), aligned by :func:`cryoscape.analysis.classes.class_frc_vs_clean`."""
    from cryoscape.analysis.classes import class_frc_vs_clean, viewing_directions
    from cryoscape.data.simulate import AtomSource
    from cryoscape.geometry.poses import Poses
    from cryoscape.io.models import read_model
    from cryoscape.physics.imaging import ImagingGrid, forward_images
    model = read_model(folder / "truth" / "models.pdb")
    atoms = AtomSource(np.asarray(model.coords), sigma=3.0).projector()
    dirs = viewing_directions(R)
    D = res.averages.shape[-1]
    out = []
    for k in range(res.averages.shape[0]):
        members = np.nonzero(res.labels.numpy() == k)[0]
        if len(members) == 0:
            continue
        cos = np.abs(dirs[members] @ dirs[members].T)
        medoid = members[int(np.argmax(cos.sum(1)))]
        clean = forward_images(atoms, Poses(torch.as_tensor(R[medoid:medoid + 1], dtype=torch.float32),
                                            torch.zeros(1, 2)), ImagingGrid(D, apix))[0]
        out.append(class_frc_vs_clean(res.averages[k], clean, apix)[1])
    return np.asarray(out)


def part_views(peer: bool) -> dict:
    from cryoscape.analysis.classes import neighbours_within, pairs_within, same_class_pairs_within
    from cryoscape.methods.class2d.em import Class2DConfig, fit
    folder = simulate("views", "--frames", "0", "--n-images", "5000", "--box", "64", "--apix", "1.2", "--snr", "0.1",
                      "--shift-max", "3.6")
    d, images, _ = load(folder)
    R = d.poses.R.numpy()
    t = time.perf_counter()
    res = fit(images, d.ctf, d.apix, Class2DConfig(n_classes=50, n_iterations=20, seed=0), progress=True)
    wall = time.perf_counter() - t
    frc_res = class_resolutions_vs_clean(folder, res, R, d.apix)
    out = {"views_n_images": images.shape[0], "views_class2d_wall_s": wall,
           "views_class2d_median_class_frc05_vs_clean_A": float(np.median(frc_res)),
           "views_class2d_best_class_frc05_vs_clean_A": float(np.min(frc_res)),
           "views_class2d_same_class_pairs_within_20deg_frac": same_class_pairs_within(res.labels.numpy(), R, 20.0),
           "views_chance_pairs_within_20deg_frac": pairs_within(R, 20.0),
           "views_class2d_n_nonempty_classes": int((res.counts > 0).sum())}
    if peer:
        a = aspire(folder / "particles.star", n_classes=0)
        if a:
            nb = a["npz"]["neighbours"]
            out["views_aspire_wall_s"] = a["wall_s"]
            out["views_aspire_class_pairs_within_20deg_frac"] = neighbours_within(nb[:, 1:], R, 20.0)
    return out


def evenly_spaced_frames(n: int = 5) -> list[int]:
    """The AdK frames closest to ``n`` evenly spaced aligned-Cα RMSDs from the closed frame 0 to the most open
    one (by index the last frames are only 1.2 Å apart: frames 0, 25, 50, 76, 101 are 2.6, 2.6, 2.2, 1.2 Å
    apart)."""
    from cryoscape.data.embedded import adk_files
    from cryoscape.io.models import read_trajectory
    from cryoscape.structure.align import aligned_rmsd
    c = torch.as_tensor(np.asarray(read_trajectory(*adk_files(), "ca").coords), dtype=torch.float64)
    progress = np.array([float(aligned_rmsd(c[i], c[0])) for i in range(len(c))])
    targets = np.linspace(0.0, progress.max(), n)
    return [int(np.argmin(np.abs(progress - t))) for t in targets]


def part_conformations(peer: bool, snrs=(1.0, 0.1, 0.03, 0.01)) -> dict:
    from cryoscape.analysis.classes import hungarian_accuracy
    from cryoscape.methods.class2d.cluster import cluster_features, embed
    from cryoscape.methods.class2d.em import Class2DConfig, fit
    from cryoscape.physics.imaging import ImagingGrid
    from cryoscape.physics.transform2d import phase_flip
    frames = evenly_spaced_frames(5)
    out = {"conf_frames": frames}
    for snr in snrs:
        folder = simulate(f"conformations_rmsd_snr{snr:g}", "--frames", ",".join(map(str, frames)), "--n-images", "2000",
                          "--box", "64", "--apix", "1.5", "--snr", str(snr), "--shift-max", "4.5",
                          "--view-cone-deg", "5", "--sampling", "balanced")
        d, images, conf = load(folder)
        flipped = phase_flip(images, d.ctf, ImagingGrid(images.shape[-1], d.apix))
        key = f"snr{snr:g}"
        t = time.perf_counter()
        acf = cluster_features(embed(flipped, kind="acf", seed=0), 5, seed=0)
        out[f"conf_{key}_acf_hungarian_acc"] = hungarian_accuracy(acf, conf)
        out[f"conf_{key}_acf_wall_s"] = time.perf_counter() - t
        t = time.perf_counter()
        bis = cluster_features(embed(flipped, kind="bispectrum", seed=0), 5, seed=0)
        out[f"conf_{key}_bispectrum_hungarian_acc"] = hungarian_accuracy(bis, conf)
        out[f"conf_{key}_bispectrum_wall_s"] = time.perf_counter() - t
        for name, start in (("em", None), ("em_from_bispectrum", bis)):
            t = time.perf_counter()
            res = fit(images, d.ctf, d.apix, Class2DConfig(n_classes=5, n_iterations=20, n_starts=4, seed=0),
                      progress=False, init_labels=start)
            out[f"conf_{key}_{name}_hungarian_acc"] = hungarian_accuracy(res.labels.numpy(), conf)
            out[f"conf_{key}_{name}_wall_s"] = time.perf_counter() - t
        print(json.dumps({k: v for k, v in out.items() if key in k}), flush=True)
    return out


def part_neighbours(peer: bool) -> dict:
    from cryoscape.analysis.classes import neighbours_within, pairs_within
    from cryoscape.methods.class2d.cluster import embed, image_neighbours
    from cryoscape.methods.class2d.features import nearest_neighbours
    from cryoscape.physics.imaging import ImagingGrid
    from cryoscape.physics.transform2d import phase_flip
    folder = simulate("neighbours", "--frames", "0", "--n-images", "1000", "--box", "32", "--snr", "1")
    d, images, _ = load(folder)
    R = d.poses.R.numpy()
    t = time.perf_counter()
    flipped = phase_flip(images, d.ctf, ImagingGrid(images.shape[-1], d.apix))
    nb = image_neighbours(flipped, 9)
    out = {"nn_wall_s": time.perf_counter() - t,
           "nn_bispectrum_9nn_within_10deg_frac": neighbours_within(nb, R, 10.0),
           "nn_chance_within_10deg_frac": pairs_within(R, 10.0)}
    plain = nearest_neighbours(embed(flipped, kind="bispectrum", seed=0), 9)  # embed's defaults, no mirrors
    out["nn_bispectrum_32features_no_mirror_9nn_within_10deg_frac"] = neighbours_within(plain, R, 10.0)
    if peer:
        a = aspire(folder / "particles.star", n_classes=0)
        if a:
            out["nn_aspire_wall_s"] = a["wall_s"]
            out["nn_aspire_9nn_within_10deg_frac"] = neighbours_within(a["npz"]["neighbours"][:, 1:], R, 10.0)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("views", "conformations", "neighbours"), required=True)
    p.add_argument("--no-peer", action="store_true", help="skip ASPIRE")
    p.add_argument("--snr", type=float, nargs="*", default=None, help="conformations: the SNRs to run")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    if a.part == "views":
        result = part_views(not a.no_peer)
    elif a.part == "conformations":
        result = part_conformations(not a.no_peer, tuple(a.snr) if a.snr else (1.0, 0.1, 0.03, 0.01))
    else:
        result = part_neighbours(not a.no_peer)
    print(json.dumps({"part": a.part, "threads": 2, **result}))


if __name__ == "__main__":
    main()
