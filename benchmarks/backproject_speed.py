#!/usr/bin/env python
"""Backprojection speed and accuracy: cryoscape vs ``cryodrgn backproject_voxel`` on the same data.

Data: the AdK model (all 3,341 atoms, σ = 1.5 Å) voxelised into the truth map; particles projected from
it by cryoscape's simulator (uniform poses, offsets up to 6 Å, astigmatic CTF 1–2.5 µm): 10,000 × 64 px
noiseless, 10,000 × 64 px at SNR 0.1, and 10,000 × 128 px noiseless. Each set is reconstructed, in this
same invocation, by ``cryoscape backproject`` (command line, so start-up is counted as for cryoDRGN; default trilinear
insertion and ``--interp nearest``) and by
``cryodrgn backproject_voxel`` (cryoDRGN 4.3.1 in ``.venv-peers/cryodrgn``); both maps are compared with the
truth by FSC.

Figures: images/s and wall time of both, the ratio, the start-up time of each (a process that only imports
what the command needs) and the "job" ratio with start-up taken off both walls, FSC to the truth at 0.5 and 0.8 × Nyquist, and the
resolution at FSC 0.143 against the truth. Usage: ``.venv/bin/python benchmarks/backproject_speed.py
[--n 10000] [--skip-128]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import math
import os
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

from cryoscape.analysis.fsc import fsc, resolution_at  # noqa: E402
from cryoscape.data.embedded import adk_files  # noqa: E402
from cryoscape.data.simulate import MapSource, SimulationConfig  # noqa: E402
from cryoscape.runs.simulate import simulate_to_folder  # noqa: E402
from cryoscape.io.models import read_trajectory  # noqa: E402
from cryoscape.io.mrc import read_map  # noqa: E402
from cryoscape.physics import atoms_to_volume  # noqa: E402

CRYODRGN = ROOT / ".venv-peers" / "cryodrgn" / "bin" / "cryodrgn"


def timed(cmd: list, env=None) -> float:
    t = time.perf_counter()
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{res.stderr[-3000:]}")
    return time.perf_counter() - t


def startup_s(python, module: str, env=None, repeats: int = 3) -> float:
    """Best wall time of a Python process that only imports ``module`` (the fixed cost of a command)."""
    return min(timed([python, "-c", f"import {module}"], env) for _ in range(repeats))


def scores(vol: np.ndarray, truth: np.ndarray, apix: float) -> dict:
    D = truth.shape[0]
    c = fsc(vol, truth)
    return {"fsc_half_nyquist": float(c[D // 4]), "fsc_0.8_nyquist": float(c[int(0.8 * D / 2)]),
            "fsc_min_to_0.8_nyquist": float(c[1:int(0.8 * D / 2) + 1].min()),
            "resolution_fsc0.143_A": resolution_at(c, D, apix, 0.143)}


def case(name: str, D: int, apix: float, snr: float, n: int, coords, work: Path, fig: dict) -> None:
    truth = atoms_to_volume(coords, 1.5, D, apix).numpy()
    sim = work / f"sim_{name}"
    cfg = SimulationConfig(n_images=n, box=D, apix=apix, snr=snr, defocus_min_um=1.0, defocus_max_um=2.5,
                           astigmatism_um=0.1, shift_max_A=6.0, seed=1)
    simulate_to_folder(sim, MapSource(truth, apix), cfg, show_progress=False, previews=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    ours = timed([sys.executable, "-m", "cryoscape.cli.main", "backproject", sim / "particles.star",
                  "--no-progress", "--mask-radius", "0", "-o", work / f"ours_{name}"], env)
    near = timed([sys.executable, "-m", "cryoscape.cli.main", "backproject", sim / "particles.star",
                  "--no-progress", "--mask-radius", "0", "--interp", "nearest", "-o", work / f"near_{name}"], env)
    theirs = timed([CRYODRGN, "backproject_voxel", sim / "particles.mrcs", "--poses", sim / "truth" / "poses.pkl",
                    "--ctf", sim / "truth" / "ctf.pkl", "-o", work / f"cdrgn_{name}"])
    v_ours, _ = read_map(work / f"ours_{name}" / "map.mrc")
    v_near, _ = read_map(work / f"near_{name}" / "map.mrc")
    v_theirs, _ = read_map(work / f"cdrgn_{name}" / "backproject.mrc")
    fig[f"{name}_cryoscape_wall_s"] = ours
    fig[f"{name}_cryodrgn_wall_s"] = theirs
    fig[f"{name}_cryoscape_img_per_s"] = n / ours
    fig[f"{name}_cryodrgn_img_per_s"] = n / theirs
    fig[f"{name}_speed_ratio_vs_cryodrgn"] = theirs / ours
    fig[f"{name}_job_speed_ratio_vs_cryodrgn"] = (theirs - fig["cryodrgn_startup_s"]) / (ours - fig["cryoscape_startup_s"])
    fig[f"{name}_cryoscape_nearest_wall_s"] = near
    fig[f"{name}_nearest_speed_ratio_vs_cryodrgn"] = theirs / near
    for who, v in (("cryoscape", v_ours), ("cryoscape_nearest", v_near), ("cryodrgn", v_theirs)):
        for k, val in scores(v, truth, apix).items():
            fig[f"{name}_{who}_{k}"] = val


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--skip-128", action="store_true")
    args = ap.parse_args()
    if not CRYODRGN.exists():
        sys.exit("cryoDRGN venv not found at .venv-peers/cryodrgn (see benchmarks/interop_cryodrgn.py)")
    torch.set_num_threads(2)
    psf, dcd = adk_files()
    at = read_trajectory(psf, dcd, "all", frames=[0])
    coords = torch.as_tensor(at.coords[0] - at.coords[0].mean(0))
    fig: dict = {"n_images": args.n, "threads": 2}
    # Start-up (interpreter + imports, torch included) is a fixed cost of every run of either tool; the
    # "job" ratio below removes it from both walls to show the reconstruction itself.
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    fig["cryoscape_startup_s"] = startup_s(sys.executable, "cryoscape.data.particles, cryoscape.methods.reconstruct",
                                           env)
    fig["cryodrgn_startup_s"] = startup_s(CRYODRGN.parent / "python", "cryodrgn.commands.backproject_voxel")
    work = Path(tempfile.mkdtemp(prefix="bpspeed_"))
    try:
        case("64px_noiseless", 64, 1.5, math.inf, args.n, coords, work, fig)
        case("64px_snr0.1", 64, 1.5, 0.1, args.n, coords, work, fig)
        if not args.skip_128:
            case("128px_noiseless", 128, 0.75, math.inf, args.n, coords, work, fig)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_figures(fig)


if __name__ == "__main__":
    main()
