#!/usr/bin/env python
"""Round trip with cryoDRGN (CONVENTIONS.md, "Verified by round trips", 1 and 3).

1. Voxelise an AdK model (all 3,341 atoms, Gaussian σ = 3 Å) into the ground-truth map.
2. Simulate particles from the *same atoms* with cryoscape (analytic projections — independent of the
   voxel map): random poses, random shifts, random astigmatic CTF, optional noise.
3. ``cryodrgn backproject_voxel`` reconstructs them (cryoDRGN in its own venv, ``.venv-peers/cryodrgn``),
   (a) from our cryoDRGN pickles (``truth/poses.pkl``, ``truth/ctf.pkl``), and (b) from our RELION STAR
   through cryoDRGN's own parsers (``parse_pose_star``, ``parse_ctf_star``).
4. FSC of each reconstruction against the truth map; the pickles cryoDRGN derives from our STAR are
   compared number by number with ours.

Pass criterion (CONVENTIONS): FSC ≥ 0.9 at every shell up to half Nyquist.

5. The other way (issue "Homogeneous reconstruction", 4a): cryoDRGN's own test data (``../shared/data/
   cryodrgn-tests``) reconstructed by ``cryoscape backproject`` and by ``cryodrgn backproject_voxel``; FSC of
   the two reconstructions with each other and with the reference maps. ``hand.mrcs`` is paired with
   ``hand_rot.pkl`` (``hand_rot_trans.pkl`` does not hold its poses, and ``hand-vol.mrc`` is not its
   volume: reported, not judged); the toy projections carry no shifts, so ``toy_rot_trans.pkl`` (random
   translations) is run as the shared README pairs it and with its rotations alone.

Set-up of the peer (once): ``python3 -m venv .venv-peers/cryodrgn``, then in it
``pip install torch==2.13.0`` and ``pip install -c <file with torch==2.13.0> cryodrgn==4.3.1``.
Usage: ``.venv/bin/python benchmarks/interop_cryodrgn.py [--n 10000] [--snr inf]``. Last line: JSON.
"""

from __future__ import annotations

import argparse
import math
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _figures import print_figures  # noqa: E402

from cryoscape.analysis.fsc import fsc, resolution_at, shell_frequencies  # noqa: E402
from cryoscape.data.embedded import adk_files  # noqa: E402
from cryoscape.data.simulate import AtomSource, SimulationConfig  # noqa: E402
from cryoscape.runs.simulate import simulate_to_folder  # noqa: E402
from cryoscape.io.models import read_trajectory  # noqa: E402
from cryoscape.io.mrc import read_map, write_map  # noqa: E402
from cryoscape.physics import atoms_to_volume  # noqa: E402

CRYODRGN = ROOT / ".venv-peers" / "cryodrgn" / "bin" / "cryodrgn"


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{res.stderr[-2000:]}")
    return time.perf_counter() - t


SHARED = ROOT.parent / "shared" / "data" / "cryodrgn-tests"


def cryodrgn_test_data(work: Path) -> dict:
    """Reconstruct cryoDRGN's test sets with both tools; FSC between them and with the reference maps."""
    if not SHARED.is_dir():
        print(f"shared data not found at {SHARED}: skipping the cryoDRGN test data", file=sys.stderr)
        return {}
    env = dict(__import__("os").environ, PYTHONPATH=str(ROOT / "src"))
    ours_cmd = [sys.executable, "-m", "cryoscape.cli.main", "backproject", "--no-progress", "--mask-radius", "0"]
    cases = {
        "hand": (SHARED / "hand.mrcs", SHARED / "hand_rot.pkl", None, SHARED / "hand-vol.mrc", ["--uninvert-data"]),
        "toy_rot_trans": (SHARED / "toy_projections.mrcs", SHARED / "toy_rot_trans.pkl", SHARED / "test_ctf.pkl",
                          SHARED / "toymodel_small_nocenter.mrc", []),
        "toy_rot_only": (SHARED / "toy_projections.mrcs", SHARED / "toy_angles.pkl", SHARED / "test_ctf.pkl",
                         SHARED / "toymodel_small_nocenter.mrc", []),
    }
    out = {}
    for name, (stack, poses, ctf, ref, extra) in cases.items():
        ctf_args = ["--ctf", ctf] if ctf else ["--apix", "1"]
        t_ours = time.perf_counter()
        res = subprocess.run([str(c) for c in ours_cmd + [stack, "--poses", poses, *ctf_args, "-o", work / f"a_{name}"]],
                             capture_output=True, text=True, env=env)
        if res.returncode != 0:
            sys.exit(f"cryoscape backproject failed on {name}:\n{res.stderr[-2000:]}")
        t_ours = time.perf_counter() - t_ours
        cd_ctf = ["--ctf", ctf] if ctf else []
        t_cd = run([CRYODRGN, "backproject_voxel", stack, "--poses", poses, *cd_ctf, *extra, "-o", work / f"c_{name}"])
        ours, _ = read_map(work / f"a_{name}" / "map.mrc")
        theirs, _ = read_map(work / f"c_{name}" / "backproject.mrc")
        reference, _ = read_map(ref)
        D = ours.shape[0]
        h = D // 4
        out[f"{name}_fsc_cryoscape_vs_cryodrgn_min_to_half_nyquist"] = float(fsc(ours, theirs)[1:h + 1].min())
        out[f"{name}_fsc_cryoscape_vs_reference_at_half_nyquist"] = float(fsc(ours, reference)[h])
        out[f"{name}_fsc_cryodrgn_vs_reference_at_half_nyquist"] = float(fsc(theirs, reference)[h])
        out[f"{name}_cryoscape_wall_s"] = t_ours
        out[f"{name}_cryodrgn_wall_s"] = t_cd
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000, help="number of particles")
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--apix", type=float, default=2.0)
    ap.add_argument("--snr", type=float, default=math.inf, help="signal-to-noise ratio (inf: noiseless)")
    ap.add_argument("--shift-max", type=float, default=8.0, help="random offsets up to this radius, Å")
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = ap.parse_args()
    if not CRYODRGN.exists():
        sys.exit("cryoDRGN venv not found at .venv-peers/cryodrgn (see this script's docstring)")
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="interop_"))
    try:
        psf, dcd = adk_files()
        atoms = read_trajectory(psf, dcd, "all", frames=[0])
        source = AtomSource(atoms.coords, 3.0)
        D, apix = args.box, args.apix
        truth = atoms_to_volume(source.coords[0], 3.0, D, apix).numpy()
        write_map(work / "truth.mrc", truth, apix)
        cfg = SimulationConfig(n_images=args.n, box=D, apix=apix, snr=args.snr, sigma=3.0,
                               defocus_min_um=1.0, defocus_max_um=2.5, astigmatism_um=0.1,
                               shift_max_A=args.shift_max, seed=0)
        t = time.perf_counter()
        simulate_to_folder(work / "sim", source, cfg, show_progress=False, previews=False)
        sim_s = time.perf_counter() - t
        sim = work / "sim"

        # (a) our pickles
        bp_s = run([CRYODRGN, "backproject_voxel", sim / "particles.mrcs", "--poses", sim / "truth" / "poses.pkl",
                    "--ctf", sim / "truth" / "ctf.pkl", "-o", work / "bp_pkl"])
        # (b) cryoDRGN's own STAR parsers on our STAR
        run([CRYODRGN, "parse_pose_star", sim / "particles.star", "-o", work / "poses_star.pkl"])
        run([CRYODRGN, "parse_ctf_star", sim / "particles.star", "-o", work / "ctf_star.pkl"])
        run([CRYODRGN, "backproject_voxel", sim / "particles.star", "--datadir", sim,
             "--poses", work / "poses_star.pkl", "--ctf", work / "ctf_star.pkl", "-o", work / "bp_star"])

        ours_rot, ours_trans = pickle.load(open(sim / "truth" / "poses.pkl", "rb"))
        star_rot, star_trans = pickle.load(open(work / "poses_star.pkl", "rb"))
        ours_ctf = pickle.load(open(sim / "truth" / "ctf.pkl", "rb"))
        star_ctf = pickle.load(open(work / "ctf_star.pkl", "rb"))
        fig = {"n_images": args.n, "box_px": D, "apix_A": apix, "snr": args.snr if math.isfinite(args.snr) else "inf",
               "pkl_vs_star_max_rot_diff": float(np.abs(ours_rot - star_rot).max()),
               "pkl_vs_star_max_trans_diff": float(np.abs(ours_trans - star_trans).max()),
               "pkl_vs_star_max_ctf_rel_diff": float((np.abs(ours_ctf - star_ctf) / np.maximum(np.abs(ours_ctf), 1e-3)).max()),
               "simulate_wall_s": sim_s, "cryodrgn_backproject_wall_s": bp_s}
        half = D // 4  # half Nyquist, in shells
        freqs = shell_frequencies(D, apix)
        for tag in ("pkl", "star"):
            rec, _ = read_map(work / f"bp_{tag}" / "backproject.mrc")
            curve = fsc(rec, truth)
            fig[f"fsc_min_to_half_nyquist_{tag}"] = float(curve[1:half + 1].min())
            fig[f"fsc_at_half_nyquist_{tag}"] = float(curve[half])
            fig[f"resolution_fsc0.5_A_{tag}"] = resolution_at(curve, D, apix, 0.5)
            if tag == "pkl":
                print("shell  freq(1/Å)  FSC(cryoDRGN backprojection of cryoscape data, truth)")
                for r in range(len(curve)):
                    print(f"{r:5d}  {freqs[r]:.4f}    {curve[r]:.4f}")
        # control: flipping the translation sign must break the round trip (the test has power)
        pickle.dump((ours_rot, -ours_trans), open(work / "poses_flipped.pkl", "wb"))
        run([CRYODRGN, "backproject_voxel", sim / "particles.mrcs", "--poses", work / "poses_flipped.pkl",
             "--ctf", sim / "truth" / "ctf.pkl", "-o", work / "bp_flip", "--no-half-maps"])
        rec, _ = read_map(work / "bp_flip" / "backproject.mrc")
        fig["control_flipped_trans_fsc_min_to_half_nyquist"] = float(fsc(rec, truth)[1:half + 1].min())
        fig["pass_fsc_0.9_to_half_nyquist"] = bool(min(fig["fsc_min_to_half_nyquist_pkl"],
                                                       fig["fsc_min_to_half_nyquist_star"]) >= 0.9)
        fig.update(cryodrgn_test_data(work))
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_figures(fig)


if __name__ == "__main__":
    main()
