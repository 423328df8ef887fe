#!/usr/bin/env python
"""Denoising: every cryoscape method beside ASPIRE's CWF and Topaz-Denoise on the same files.

    .venv/bin/python benchmarks/denoise.py --part table            # seed 004's SNR grid, every method
    .venv/bin/python benchmarks/denoise.py --part heterogeneity    # does denoising help 2-state clustering?
    .venv/bin/python benchmarks/denoise.py --part table --snr 0.1 --methods wiener,cwf --no-peer

- table: for each SNR of seed 004's grid (0.8, 0.4, 0.1, 0.05, 0.01), ``--n-images`` (1,000) images of one AdK
  conformation, 64 px, random views, 7 defocus groups in 1.0–2.5 µm (``simulate --defocus-groups 7``), no
  astigmatism. Every method of :data:`cryoscape.methods.denoise.METHODS` runs in this process; MSE, PSNR
  (10·log10(range(clean)²/MSE) per image, averaged), SSIM and wall time against its own target: the CTF-free
  projection (``truth/clean_noctf.mrcs``) for methods that divide the CTF out (wiener, cwf), the CTF-affected
  clean image (``truth/clean.mrcs``) for the others. Peers on the same files, in the same invocation:
  ASPIRE 0.14.3's covariance Wiener filter (``.venv-peers/aspire``, ``benchmarks/peers/aspire_cwf.py``,
  target CTF-free) and Topaz-Denoise's pretrained ``unet`` (``.venv-peers/topaz``,
  ``benchmarks/peers/topaz_denoise.py``, target CTF-affected). The noisy input's own scores are the baseline
  (against both targets).
- heterogeneity: 2,000 images of two AdK conformations (closed frame 0 and the open end, 2 × 1,000), all
  within 5° of one viewing direction (seed 004's clustering problem), 64 px of 1.5 Å, in-plane rotations
  and shifts ≤ 3 px, CTF, SNR 0.05 and 0.01; k-means (K = 2) on rotation-invariant bispectrum features of the
  phase-flipped raw images and of the images denoised by each method given in ``--cluster-methods``
  (default cwf, wiener, unet); the Hungarian accuracy against the simulator's conformation labels.

Data go to ``benchmarks/out/denoise/`` (ignored; made once, reused). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# GNU OpenMP's spinning threads make small LAPACK calls >100× slower on a shared, oversubscribed machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "denoise"
ASPIRE_PY = ROOT / ".venv-peers" / "aspire" / "bin" / "python"
TOPAZ_PY = ROOT / ".venv-peers" / "topaz" / "bin" / "python"
CRYOSCAPE = [sys.executable, "-m", "cryoscape.cli.main"]
SNRS = (0.8, 0.4, 0.1, 0.05, 0.01)


def simulate(name: str, *args: str) -> Path:
    """A simulated set under OUT/name (made once; reused when its STAR exists), with both clean truths."""
    from cryoscape.data.embedded import adk_files
    folder = OUT / name
    if not (folder / "particles.star").exists():
        psf, dcd = adk_files()
        subprocess.run([*CRYOSCAPE, "simulate", str(dcd), "--topology", str(psf), "-o", str(folder),
                        "--no-progress", "--overwrite", "--save-clean", *args], check=True,
                       stdout=subprocess.DEVNULL)
    return folder


def load(folder: Path):
    """``(ParticleData, noisy (N, D, D), clean with CTF, clean without CTF)`` as float32 tensors."""
    from cryoscape.data.particles import load_particles
    from cryoscape.io.mrc import read_stack
    d = load_particles(folder / "particles.star", need_poses=False)
    noisy = torch.from_numpy(d.images(slice(0, len(d))))
    clean = torch.from_numpy(np.array(read_stack(folder / "truth" / "clean.mrcs")[0], np.float32))
    noctf = torch.from_numpy(np.array(read_stack(folder / "truth" / "clean_noctf.mrcs")[0], np.float32))
    return d, noisy, clean, noctf


def scores(estimate, target) -> dict:
    from cryoscape.analysis.images import image_scores
    s = image_scores(estimate, target)
    return {"psnr_dB": round(s["psnr_dB"], 3), "ssim": round(s["ssim"], 4), "mse": float(f"{s['mse']:.5g}")}


def run_peer(python: Path, script: str, args: list[str]) -> dict | None:
    """A peer script in its own venv; its last stdout line (JSON), or None when the venv is missing."""
    if not python.exists():
        return None
    proc = subprocess.run([str(python), str(ROOT / "benchmarks" / "peers" / script), *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"peer {script} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer_aspire_cwf(folder: Path, d, work: Path) -> tuple[np.ndarray, float] | None:
    """ASPIRE's CWF on the stack, with the STAR's CTF as the 7-column table its peer script reads."""
    c = d.ctf
    table = np.stack([c.defocus_u.numpy(), c.defocus_v.numpy(), np.degrees(c.angle_ast.numpy()),
                      c.voltage_kv.numpy(), c.cs_mm.numpy(), c.amp_contrast.numpy(),
                      np.full(len(c), d.apix)], axis=1)
    np.savetxt(work / "ctf.csv", table, delimiter=",")
    out = work / "aspire_cwf.npy"
    info = run_peer(ASPIRE_PY, "aspire_cwf.py", [str(folder / "particles.mrcs"), "--ctf", str(work / "ctf.csv"),
                                                  "-o", str(out), "--threads", "2"])
    if info is None:
        return None
    return np.load(out).astype(np.float32), float(info["aspire_wall_s"])


def peer_topaz(folder: Path, d, work: Path) -> tuple[np.ndarray, float] | None:
    """Topaz-Denoise's pretrained unet on every particle image (model loading not timed)."""
    info = run_peer(TOPAZ_PY, "topaz_denoise.py", [str(folder / "particles.mrcs"), "-o", str(work / "topaz"),
                                                    "--threads", "2"])
    if info is None:
        return None
    from cryoscape.io.mrc import read_stack
    return np.array(read_stack(work / "topaz" / "particles.mrcs")[0], np.float32), float(sum(info["topaz_denoise_s"]))


def part_table(snrs, methods: list[str], n_images: int, peer: bool) -> dict:
    from cryoscape.methods.denoise import get
    out: dict = {"n_images": n_images, "box_px": 64, "defocus_groups": 7}
    for snr in snrs:
        folder = simulate(f"table_n{n_images}_snr{snr:g}", "--frames", "0", "--n-images", str(n_images), "--box", "64",
                          "--snr", str(snr), "--defocus-groups", "7", "--seed", "1")
        d, noisy, clean, noctf = load(folder)
        key = f"snr{snr:g}"
        row = {f"{key}_input_vs_clean_psnr_dB": scores(noisy, clean)["psnr_dB"],
               f"{key}_input_vs_noctf_psnr_dB": scores(noisy, noctf)["psnr_dB"]}
        for name in methods:
            entry = get(name)
            t = time.perf_counter()
            est = entry(noisy, d.ctf, d.apix)
            wall = time.perf_counter() - t
            s = scores(est, noctf if entry.removes_ctf else clean)
            row.update({f"{key}_{name}_{k}": v for k, v in s.items()})
            row[f"{key}_{name}_wall_s"] = round(wall, 2)
            print(f"snr {snr:g} {name:9s} {s['psnr_dB']:6.2f} dB  SSIM {s['ssim']:.3f}  {wall:6.1f} s", file=sys.stderr,
                  flush=True)
        if peer:
            with tempfile.TemporaryDirectory() as tmp:
                for name, fn, target in (("aspire_cwf", peer_aspire_cwf, noctf), ("topaz_unet", peer_topaz, clean)):
                    res = fn(folder, d, Path(tmp))
                    if res is None:
                        continue
                    est, wall = res
                    s = scores(est, target)
                    row.update({f"{key}_{name}_{k}": v for k, v in s.items()})
                    row[f"{key}_{name}_wall_s"] = round(wall, 2)
                    print(f"snr {snr:g} {name:9s} {s['psnr_dB']:6.2f} dB  SSIM {s['ssim']:.3f}  {wall:6.1f} s",
                          file=sys.stderr, flush=True)
        print(json.dumps(row), flush=True)
        out.update(row)
    return out


def part_heterogeneity(snrs, methods: list[str], peer: bool) -> dict:
    from cryoscape.analysis.classes import hungarian_accuracy
    from cryoscape.methods.class2d.cluster import cluster_features, embed
    from cryoscape.methods.denoise import get
    from cryoscape.physics.imaging import ImagingGrid
    from cryoscape.physics.transform2d import phase_flip
    out: dict = {"frames": [0, 101]}
    for snr in snrs:
        folder = simulate(f"heterogeneity_snr{snr:g}", "--frames", "0,101", "--n-images", "2000", "--box", "64",
                          "--apix", "1.5", "--snr", str(snr), "--shift-max", "4.5", "--view-cone-deg", "5",
                          "--sampling", "balanced", "--defocus-groups", "7", "--seed", "2")
        d, noisy, _, _ = load(folder)
        conf = np.load(folder / "truth" / "conformation.npy")
        grid = ImagingGrid(noisy.shape[-1], d.apix)
        key = f"snr{snr:g}"

        def accuracy(images) -> float:
            return hungarian_accuracy(cluster_features(embed(images, kind="bispectrum", seed=0), 2, seed=0), conf)

        out[f"{key}_raw_hungarian_acc"] = accuracy(phase_flip(noisy, d.ctf, grid))
        for name in methods:
            entry = get(name)
            t = time.perf_counter()
            est = entry(noisy, d.ctf, d.apix)
            wall = time.perf_counter() - t
            # methods that keep the CTF are phase-flipped like the raw images; CTF-free output is used as is
            images = est if entry.removes_ctf else phase_flip(est, d.ctf, grid)
            out[f"{key}_{name}_hungarian_acc"] = accuracy(images)
            out[f"{key}_{name}_wall_s"] = round(wall, 2)
        print(json.dumps({k: v for k, v in out.items() if k.startswith(key)}), flush=True)
    return out


def main(argv=None) -> None:
    from cryoscape.methods.denoise import method_names
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("table", "heterogeneity"), default="table")
    ap.add_argument("--snr", type=float, nargs="*", default=None, help="SNRs (default: the part's grid)")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: all for table; "
                                                      "cwf,wiener,unet for heterogeneity)")
    ap.add_argument("--n-images", type=int, default=1000)
    ap.add_argument("--no-peer", action="store_true", help="skip ASPIRE and Topaz")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    if args.part == "table":
        methods = args.methods.split(",") if args.methods else method_names()
        result = part_table(args.snr or SNRS, methods, args.n_images, not args.no_peer)
    else:
        methods = args.methods.split(",") if args.methods else ["cwf", "wiener", "unet"]
        result = part_heterogeneity(args.snr or (0.05, 0.01), methods, not args.no_peer)
    result["part"] = args.part
    result["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
