#!/usr/bin/env python
"""Atomic models of real proteins (issue 19): the spectral method on several chains and gapped models, its
scaling to thousands of Cα, and cryoSPHERE beside it on the same particles, poses and reference.

    .venv/bin/python benchmarks/atomic_vs_cryosphere.py                          # every case
    .venv/bin/python benchmarks/atomic_vs_cryosphere.py --cases single,gapped    # some of them
    .venv/bin/python benchmarks/atomic_vs_cryosphere.py --cases single --peer    # with cryoSPHERE

Cases (each built from the embedded AdK closed→open trajectory, 102 frames of 214 Cα; the models are written
as files and go through ``cryoscape simulate`` and ``cryoscape spectral`` as a user's would):

- ``single``: the continuous chain, the reference of every comparison;
- ``gapped``: AdK without residues 120–129 (a 10-residue loop missing: two segments), written as a PDB;
- ``dimer``: two copies side by side (chain B is chain A turned 180° about z and moved along x so that no two
  Cα of different chains come closer than 8 Å in any frame), moving together (frame i of both), a PDB;
- ``dimer-indep``: the same two copies moving independently (chain A at frame i, chain B at frame j, for the
  pairs of every ``--pair-stride``-th frame): a 2-D landscape, ``--indep-images`` images, DCD + topology;
- ``scale-600`` and ``scale-3000``: 3 and 14 copies (642 and 2,996 Cα) in a compact cluster, moving together,
  DCD + topology, at ``--scale-box`` (64) px and the pixel the simulator picks for that box (3.6 Å for 14
  copies), at ``--snr``; their time and peak memory (the processes' maximum resident set) are the figures.

Every case uses the same pixel size (``--apix``, the one ``cryoscape simulate`` picks for AdK at 64 px) and a
box large enough for the case, ``--n-images`` images, defocus 1–2.5 µm, and the defaults of ``cryoscape
spectral`` (graph from the images alone; the true models only score held-out particles), seed 0. The single
chain is simulated at ``--snr`` (0.058); every other case at the same noise level σ (its SNR, the signal
variance over its own larger box divided by σ², is then what it is, and reported), so that each atom is seen
through the same noise: at equal SNR a dimer in a larger box would get less noise per atom.
Reported per case: the held-out particles' average Cα error before and after training, the aligned RMSD, the
fraction within 3 Å, per chain, wall time and peak RSS of simulate and of spectral.

``--peer``: cryoSPHERE (Ducrocq, Grunewald, Westenhoff & Lindsten; PyPI ``cryosphere`` 0.6.1 in
``.venv-peers/cryosphere``, run by ``benchmarks/peers/cryosphere_fit.py`` in one CPU process) on the same
particles.star and reference (frame 0) as the ``single`` case; its per-particle Cα models are scored on the same
held-out particles.

Outputs under ``benchmarks/out/atomic`` (``atomic-seedS`` for ``--seed S`` ≠ 0; reused when present: delete a
case's folder to redo it). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "atomic"
CRYOSCAPE = ROOT / ".venv" / "bin" / "cryoscape"
PEER_PY = ROOT / ".venv-peers" / "cryosphere" / "bin" / "python"
CASES = ("single", "gapped", "dimer", "dimer-indep", "scale-600", "scale-3000")


def log(msg: str) -> None:
    print(f"[atomic] {msg}", file=sys.stderr, flush=True)


def run_measured(args: list) -> dict:
    """Run a command; ``{"wall_s", "peak_rss_GB"}`` (its own maximum resident set, from ``wait4``)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(a) for a in args])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:2]))} failed with {os.waitstatus_to_exitcode(status)}")
    return {"wall_s": round(wall, 1), "peak_rss_GB": round(usage.ru_maxrss / 2 ** 20, 3)}


def adk():
    from cryoscape.data.embedded import adk_files
    from cryoscape.io.models import read_trajectory
    psf, dcd = adk_files()
    return read_trajectory(psf, dcd, "ca")


def conformations(coords, base, copies: int, chain_letters=None):
    """A :class:`Conformations` of ``coords (F, copies·A, 3)`` with ``base``'s atom names repeated per copy."""
    from cryoscape.io.models import Conformations
    rep = lambda a: np.concatenate([np.asarray(a)] * copies)  # noqa: E731
    letters = chain_letters or [chr(ord("A") + i) for i in range(copies)]
    chains = np.concatenate([[c] * base.n_atoms for c in letters])
    return Conformations(coords, rep(base.names), rep(base.resnames), rep(base.resids), chains, rep(base.elements),
                         "benchmark", np.arange(len(coords)))


def rotz(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def copy_placements(x: np.ndarray, copies: int, clearance: float = 8.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``copies`` placements ``(R, t)`` of the frames ``x (F, A, 3)`` (centred on frame 0's centroid): two copies
    face to face along x (the second turned 180° about z); more as a compact cluster, the points of a cubic
    lattice nearest its centre, each copy turned by its own angle about z. The spacing is the smallest (1 Å
    steps) at which no two Cα of different copies come closer than ``clearance`` Å in any frame."""
    from scipy.spatial import cKDTree
    if copies == 2:
        sites, turns = np.array([[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0]]), [0.0, 180.0]
    else:
        g = np.arange(-2, 3, dtype=float)
        lattice = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) + 0.25
        sites = lattice[np.argsort(np.linalg.norm(lattice, axis=1), kind="stable")[:copies]]
        sites = sites - sites.mean(0)
        turns = [360.0 * k / copies for k in range(copies)]
    for spacing in np.arange(20.0, 400.0, 1.0):
        places = [(rotz(a), spacing * site) for a, site in zip(turns, sites)]
        if all(_apart(x[f], places, clearance, cKDTree) for f in range(0, len(x), 5)):
            return places
    raise RuntimeError("no placement found")


def _apart(frame: np.ndarray, places, clearance: float, tree) -> bool:
    pts = [frame @ R.T + t for R, t in places]
    trees = [tree(p) for p in pts]
    return all(trees[i].query(pts[j], k=1)[0].min() >= clearance
               for i in range(len(pts)) for j in range(i + 1, len(pts)))


def build_case(case: str, base, args, folder: Path) -> tuple[Path, Path | None]:
    """Write the case's models; returns ``(input, topology or None)`` for ``cryoscape simulate``."""
    from cryoscape.io.models import Conformations, write_dcd, write_pdb
    x = base.coords - base.coords[0].mean(0)
    folder.mkdir(parents=True, exist_ok=True)
    if case == "single":
        from cryoscape.data.embedded import adk_files
        psf, dcd = adk_files()
        return Path(dcd), Path(psf)
    if case == "gapped":
        keep = ~((base.resids >= 120) & (base.resids <= 129))
        conf = Conformations(x[:, keep], base.names[keep], base.resnames[keep], base.resids[keep],
                             np.array(["A"] * int(keep.sum())), base.elements[keep], "AdK without 120–129")
        write_pdb(folder / "models.pdb", conf)
        return folder / "models.pdb", None
    copies = {"dimer": 2, "dimer-indep": 2, "scale-600": 3, "scale-3000": 14}[case]
    places = copy_placements(x, copies)
    if case == "dimer-indep":
        f = np.arange(0, len(x), args.pair_stride)
        i, j = np.meshgrid(f, f, indexing="ij")
        i, j = i.ravel(), j.ravel()
        coords = np.concatenate([x[i] @ places[0][0].T + places[0][1], x[j] @ places[1][0].T + places[1][1]], 1)
        np.save(folder / "pairs.npy", np.stack([i, j], 1))
    else:
        coords = np.concatenate([x @ R.T + t for R, t in places], 1)
    conf = conformations(coords, base, copies)
    if case == "dimer":
        write_pdb(folder / "models.pdb", conf)
        return folder / "models.pdb", None
    topology = write_dcd(folder / "models.dcd", conf)
    return folder / "models.dcd", topology


def box_for(case: str, args) -> int:
    return {"single": 64, "gapped": 64, "dimer": args.dimer_box, "dimer-indep": args.dimer_box,
            "scale-600": args.scale_box, "scale-3000": args.scale_box}[case]


def run_case(case: str, base, args, noise_sigma: float | None = None) -> dict:
    """Simulate, fit and score one case; ``noise_sigma``: the noise level to match (None: ``args.snr`` as is)."""
    folder = OUT / case
    sim, fit = folder / "sim", folder / "spectral"
    source, topology = build_case(case, base, args, folder / "models")
    n = args.indep_images if case == "dimer-indep" else args.n_images
    result = {"case": case}
    if not (sim / "metrics.json").exists():
        def simulate(snr):
            apix = args.scale_apix if case.startswith("scale") else args.apix
            cmd = [CRYOSCAPE, "simulate", source, "-o", sim, "--n-images", n, "--box", box_for(case, args),
                   "--snr", snr, "--defocus-min", 1.0, "--defocus-max", 2.5, "--seed", args.seed,
                   "--overwrite", "--no-progress"] + (["--apix", apix] if apix else [])
            return run_measured(cmd + (["--topology", topology] if topology is not None else []))

        log(f"{case}: simulate {n} images")
        result["simulate"] = simulate(args.snr)
        # the single chain's noise level: the SNR scaled by (σ at args.snr / σ_single)²
        if noise_sigma is not None and not case.startswith("scale"):
            sigma = json.loads((sim / "metrics.json").read_text())["metrics"]["noise_sigma"]
            result["simulate"] = simulate(args.snr * (sigma / noise_sigma) ** 2)
        (folder / "simulate_cost.json").write_text(json.dumps(result["simulate"]))
    else:
        result["simulate"] = json.loads((folder / "simulate_cost.json").read_text())
    sim_metrics = json.loads((sim / "metrics.json").read_text())["metrics"]
    result["apix_A"] = sim_metrics["apix_A"]
    if not (fit / "metrics.json").exists():
        log(f"{case}: spectral")
        cmd = [CRYOSCAPE, "spectral", sim / "particles.star", "--reference", source, "--frame", 0, "-o", fit,
               "--truth-models", sim / "truth" / "models.pdb", "--seed", args.seed, "--no-progress", "--overwrite"]
        if topology is not None:
            cmd += ["--topology", topology]
        if case.startswith("scale") or case == "dimer-indep":
            cmd += ["--models-format", "dcd"]
        if case == "dimer-indep":
            cmd += ["--variability-modes", args.indep_modes, "--k", args.indep_k]
        result["spectral"] = run_measured(cmd)
        (folder / "spectral_cost.json").write_text(json.dumps(result["spectral"]))
    else:
        result["spectral"] = json.loads((folder / "spectral_cost.json").read_text())
    metrics = json.loads((fit / "metrics.json").read_text())["metrics"]
    errors = json.loads((fit / "errors.json").read_text())
    trained, initial = errors["test_trained"], errors["test_initial"]
    result.update({
        "n_atoms": metrics["n_atoms"], "n_chains": metrics["n_chains"], "n_segments": metrics["n_segments"],
        "n_images": n, "box_px": box_for(case, args), "snr": round(sim_metrics["snr_measured"], 4),
        "noise_sigma": round(sim_metrics["noise_sigma"], 5),
        "before_avg_error_A": round(initial["avg_error_A"], 3), "after_avg_error_A": round(trained["avg_error_A"], 3),
        "after_rmsd_aligned_A": round(trained["rmsd_aligned_mean_A"], 3),
        "after_frac_within_3A": round(trained["frac_within_3A"], 3),
        "per_chain_after_A": {c: round(e, 3) for c, e in trained.get("per_chain", {}).items()},
        "per_segment_after_A": [round(s["avg_error_A"], 3) for s in trained.get("per_segment", [])],
    })
    log(f"{case}: {json.dumps(result)}")
    return result


def run_peer(args) -> dict:
    """cryoSPHERE on the ``single`` case's particles and reference; scored on the spectral run's held-out set."""
    import torch

    from cryoscape.analysis.pointcloud import pointcloud_errors
    from cryoscape.io.models import read_structure, write_pdb
    from cryoscape.runs.spectral import truth_for_particles
    sim, fit = OUT / "single" / "sim", OUT / "single" / "spectral"
    peer = OUT / "single" / "cryosphere"
    ref = read_structure(sim / "truth" / "models.pdb", None, "ca", frames=[0])
    ref.coords = ref.coords - ref.coords[0].mean(0)  # the frame the poses refer to (the simulator's centring)
    write_pdb(OUT / "single" / "reference.pdb", ref)
    if not (peer / "ca_models.npy").exists():
        log("cryoSPHERE")
        cost = run_measured([PEER_PY, ROOT / "benchmarks" / "peers" / "cryosphere_fit.py", "--particles",
                             sim / "particles.star", "--reference", OUT / "single" / "reference.pdb", "--out", peer,
                             "--epochs", args.peer_epochs, "--threads", 2, "--seed", args.seed])
        (peer / "cost.json").write_text(json.dumps(cost))
    cost = json.loads((peer / "cost.json").read_text())
    truth, _ = truth_for_particles(sim / "truth" / "models.pdb", sim / "particles.star", ref.n_atoms)
    test = np.load(fit / "test_index.npy")
    pred = torch.as_tensor(np.load(peer / "ca_models.npy")[test], dtype=torch.float64)
    err = pointcloud_errors(pred, torch.as_tensor(truth[test]))
    ours = json.loads((fit / "errors.json").read_text())["test_trained"]
    spectral_cost = json.loads((OUT / "single" / "spectral_cost.json").read_text())
    out = {"cryosphere_avg_error_A": round(err["avg_error_A"], 3),
           "cryosphere_rmsd_aligned_A": round(err["rmsd_aligned_mean_A"], 3),
           "cryosphere_frac_within_3A": round(err["frac_within_3A"], 3), "cryosphere_wall_s": cost["wall_s"],
           "cryosphere_peak_rss_GB": cost["peak_rss_GB"],
           "cryoscape_avg_error_A": round(ours["avg_error_A"], 3),
           "cryoscape_rmsd_aligned_A": round(ours["rmsd_aligned_mean_A"], 3),
           "cryoscape_frac_within_3A": round(ours["frac_within_3A"], 3), "cryoscape_wall_s": spectral_cost["wall_s"]}
    result_file = peer / "result.json"
    if result_file.exists():
        out["cryosphere_settings"] = json.loads(result_file.read_text()).get("settings")
    log(f"peer: {json.dumps(out)}")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--n-images", type=int, default=1000)
    p.add_argument("--indep-images", type=int, default=5000)
    p.add_argument("--pair-stride", type=int, default=3)
    p.add_argument("--indep-modes", type=int, default=2)
    p.add_argument("--indep-k", type=int, default=5)
    p.add_argument("--snr", type=float, default=0.058)
    p.add_argument("--apix", type=float, default=1.822)
    p.add_argument("--dimer-box", type=int, default=112)
    p.add_argument("--scale-box", type=int, default=64)
    p.add_argument("--scale-apix", type=float, default=None, help="pixel of the scale cases (default: the "
                   "simulator's choice for the box)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snr-per-case", dest="same_noise", action="store_false",
                   help="simulate every case at --snr over its own box (default: the single chain's noise level)")
    p.add_argument("--peer", action="store_true")
    p.add_argument("--peer-epochs", type=int, default=150)
    args = p.parse_args(argv)
    global OUT
    if args.seed:
        OUT = OUT.with_name(f"atomic-seed{args.seed}")
    import torch
    log(f"load {open('/proc/loadavg').read().strip()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    base = adk()
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}")
    results = {}
    if "single" in cases or args.same_noise:
        results["single"] = run_case("single", base, args)
    sigma = results["single"]["noise_sigma"] if args.same_noise else None
    for c in cases:
        if c != "single":
            results[c] = run_case(c, base, args, sigma)
    if "single" not in cases:
        results.pop("single", None)
    summary = {"cases": results}
    if "single" in results:
        ref = results["single"]["after_avg_error_A"]
        for c in ("gapped", "dimer"):
            if c in results:
                summary[f"{c}_minus_single_avg_error_A"] = round(results[c]["after_avg_error_A"] - ref, 3)
    if args.peer:
        summary["peer"] = run_peer(args)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
