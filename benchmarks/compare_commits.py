#!/usr/bin/env python
"""Speed and results of this checkout against another commit, measured side by side in one invocation.

For a refactoring that must not change results or speed (issue "One forward model, one house"), the two
versions run alternately, round after round, so a slow spell of the shared machine hits both:

- ``simulate``: ``cryoscape simulate`` of the embedded AdK trajectory (Cα, 64 px, default options), end to
  end (signal pass, rendering, noise, writing); figure: images/s from the command's summary, and whether
  the two ``particles.mrcs`` are byte-identical.
- ``backproject``: ``cryoscape backproject`` of one simulated set (10,000 × 64 px by default); figure:
  wall time of the command, and the FSC between the two versions' maps.
- ``train-vae``: ``cryoscape train-vae`` for a few epochs on a 2,000-image balanced set; figures: images/s
  of the last epoch, the final loss of both.

The baseline commit is checked out once into ``benchmarks/out/baseline-<rev>`` (a git worktree) and run
with the same virtual environment through ``PYTHONPATH``. Usage::

    .venv/bin/python benchmarks/compare_commits.py --baseline <rev> [--rounds 3] [--n-sim 20000]

The last printed line is one JSON object (ratios are this checkout over the baseline: > 1 is faster for
rates, < 1 is faster for wall times).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "compare"
sys.path.insert(0, str(ROOT / "benchmarks"))
from _figures import print_figures  # noqa: E402

ENTRY = "from cryoscape.cli.main import entry; import sys; sys.argv = ['cryoscape'] + sys.argv[1:]; entry()"


def baseline_tree(rev: str) -> Path:
    path = ROOT / "benchmarks" / "out" / f"baseline-{rev}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev], check=True,
                       capture_output=True)
    return path


def cryoscape(src: Path, args: list, quiet: bool = True) -> tuple[float, str]:
    """Run ``cryoscape ARGS`` from the sources in ``src``; returns (wall seconds, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(src / "src")}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", ENTRY, *map(str, args)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"failed ({src.name}): cryoscape {' '.join(map(str, args))}\n{res.stderr[-3000:]}")
    return wall, res.stdout


def summary_line(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no summary line")


def find_history(folder: Path) -> list:
    for p in sorted(folder.rglob("history.json")):
        return json.loads(p.read_text())
    raise FileNotFoundError(f"no history.json under {folder}")


def map_fsc_min(a: Path, b: Path) -> float:
    import mrcfile
    sys.path.insert(0, str(ROOT / "src"))
    from cryoscape.analysis.fsc import fsc
    with mrcfile.open(a, permissive=True) as ma, mrcfile.open(b, permissive=True) as mb:
        return float(np.min(fsc(ma.data.astype(np.float64), mb.data.astype(np.float64))[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-sim", type=int, default=20000)
    ap.add_argument("--n-bp", type=int, default=10000)
    ap.add_argument("--vae-epochs", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated: simulate,backproject,vae")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    base, here = baseline_tree(args.baseline), ROOT
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    print(f"load average at start: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    rates = {"base": {"sim": [], "bp": [], "vae": []}, "here": {"sim": [], "bp": [], "vae": []}}
    loss = {}
    bp_data = OUT / "bp_data"
    vae_data = OUT / "vae_data"
    if "backproject" not in skip:
        cryoscape(here, ["simulate", "-n", args.n_bp, "--shift-max", 6, "--astigmatism", 0.2, "--no-progress",
                         "-o", bp_data])
    if "vae" not in skip:
        cryoscape(here, ["simulate", "-n", 2000, "--sampling", "balanced", "--shift-max", 4, "--no-progress",
                         "-o", vae_data])
    for r in range(args.rounds):
        order = [("base", base), ("here", here)] if r % 2 == 0 else [("here", here), ("base", base)]
        for name, src in order:
            if "simulate" not in skip:
                out = OUT / f"sim_{name}"
                shutil.rmtree(out, ignore_errors=True)
                _, stdout = cryoscape(src, ["simulate", "-n", args.n_sim, "--no-progress", "-o", out])
                rates[name]["sim"].append(summary_line(stdout)["images_per_s"])
            if "backproject" not in skip:
                out = OUT / f"bp_{name}"
                shutil.rmtree(out, ignore_errors=True)
                wall, _ = cryoscape(src, ["backproject", bp_data / "particles.star", "--no-progress", "-o", out])
                rates[name]["bp"].append(wall)
            if "vae" not in skip:
                out = OUT / f"vae_{name}"
                shutil.rmtree(out, ignore_errors=True)
                cryoscape(src, ["train-vae", vae_data / "particles.star", "-o", out, "--zdim", 8, "--enc-dim", 128,
                                "--dec-dim", 128, "-n", args.vae_epochs, "--no-progress"])
                hist = find_history(out)
                rates[name]["vae"].append(hist[-1]["images_per_s"])
                loss[name] = hist[-1]["loss"]
        print(f"round {r + 1}: " + json.dumps({k: {m: v[-1] for m, v in d.items() if v} for k, d in rates.items()}),
              flush=True)
    def medians(key: str, unit: str, name: str) -> dict:
        """Medians of both versions and the median of the per-round ratios (this checkout / baseline)."""
        here, base = rates["here"][key], rates["base"][key]
        return {f"{name}_base_{unit}": statistics.median(base), f"{name}_here_{unit}": statistics.median(here),
                f"{name}_{'wall' if unit == 'wall_s' else 'speed'}_ratio":
                    statistics.median(h / b for h, b in zip(here, base))}

    fig = {}
    if "simulate" not in skip:
        a, b = (OUT / "sim_base" / "particles.mrcs").read_bytes(), (OUT / "sim_here" / "particles.mrcs").read_bytes()
        fig.update({**medians("sim", "images_per_s", "simulate"), "simulate_particles_mrcs_identical": a == b})
    if "backproject" not in skip:
        fsc_min = map_fsc_min(OUT / "bp_base" / "map.mrc", OUT / "bp_here" / "map.mrc")
        fig.update({**medians("bp", "wall_s", "backproject"), "backproject_maps_min_fsc": fsc_min})
    if "vae" not in skip:
        fig.update({**medians("vae", "images_per_s", "vae"), "vae_base_final_loss": loss["base"],
                    "vae_here_final_loss": loss["here"]})
    fig["rounds"] = args.rounds
    print_figures(fig)


if __name__ == "__main__":
    main()
