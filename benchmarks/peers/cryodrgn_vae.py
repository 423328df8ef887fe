#!/usr/bin/env python
"""Peer side of ``benchmarks/vae_vs_cryodrgn.py``: cryoDRGN's VAE (``cryodrgn train_vae``) and its decoder.

Runs the cryoDRGN binary of its own venv (``.venv-peers/cryodrgn``, cryoDRGN 4.3.1, CPU torch 2.13) through
``subprocess``; imports neither cryoDRGN nor cryoscape, only numpy and the standard library, so it can be
imported from the cryoscape venv. Set-up of the peer: see ``benchmarks/interop_cryodrgn.py``.

Functions:
  * ``cryodrgn_bin()``: the peer binary, or None when it is not installed.
  * ``train_vae(...)``: ``cryodrgn train_vae`` with explicit architecture/optimiser settings; returns
    wall time, training-loop time (from cryoDRGN's own per-epoch "Finished in" lines), per-epoch losses,
    the final z means ``(N, zdim)``, paths of weights/config, peak RSS.
  * ``eval_vols(...)``: ``cryodrgn eval_vol --zfile`` → one ``.mrc`` per z.
  * ``backproject_star(...)``: a RELION 3.1 STAR (as cryoscape writes it) → cryoDRGN's own
    ``parse_pose_star`` + ``parse_ctf_star`` → ``backproject_voxel``.

What cryoDRGN does with our files (read from cryodrgn 4.3.1's source; see the report in the benchmark):
  * Data sign: cryoDRGN's CTF is −1 × RELION's (ours), and ``train_vae`` / ``backproject_voxel`` /
    ``ImageDataset`` multiply the images by −1 by default (``invert_data=True``; the only flag is
    ``--uninvert-data``). The two flips cancel, so our "white" particles are read correctly with the
    default, and decoded maps have protein density positive, in the same frame as ``backproject_voxel``.
    Never pass ``--uninvert-data`` for cryoscape data.
  * Poses pkl: ``(rot (N,3,3), trans (N,2) as a fraction of the box)``; truth/poses.pkl and truth/ctf.pkl
    written by ``cryoscape simulate`` are read as they are.
  * ``--seed`` defaults to a *random* number in cryoDRGN: always pass one (we also pass ``--shuffle-seed``).
  * ``--no-analysis`` is always passed (otherwise ``cryodrgn analyze`` — PCA/UMAP/k-means/volumes — runs
    after training and dominates the wall time).
  * ``--checkpoint``: with the default 1, z of *all* images is re-encoded and weights are saved after every
    epoch (``weights.N.pkl``, ``z.N.pkl``), and once more at the end (``weights.pkl``, ``z.pkl``).
    ``checkpoint=0`` skips the per-epoch ones (the final pair is always written).
  * ``--amp`` is on by default in cryoDRGN (fp16 autocast + GradScaler on CUDA; a no-op on CPU).

CLI (a probe run; last stdout line is JSON):
    .venv/bin/python benchmarks/peers/cryodrgn_vae.py SIM_DIR OUT_DIR [--epochs 1] [--zdim 8]
        [--enc-dim 256 --enc-layers 3 --dec-dim 256 --dec-layers 3] [--eval-k 4]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PEER_VENV = ROOT / ".venv-peers" / "cryodrgn"

# "# =====> Epoch: 1 Average gen loss = 0.95, KLD = 1.23, total loss = 0.96; Finished in 0:01:23.456789"
_EPOCH_RE = re.compile(
    r"=====> Epoch: (\d+) Average gen loss = ([-\d.eE+naif]+), KLD = ([-\d.eE+naif]+), "
    r"total loss = ([-\d.eE+naif]+); Finished in (\d+):(\d+):([\d.]+)")
# stdout log prefix: "(INFO) (train_vae.py) (05-Mar-2026 05:19:02) message"
_STAMP_RE = re.compile(r"^\((\w+)\) \(([^)]+)\) \((\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2})\) (.*)$")


def cryodrgn_bin() -> Path | None:
    """The cryoDRGN executable of the peer venv, or None when it is not installed."""
    exe = PEER_VENV / "bin" / "cryodrgn"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


def _require_bin() -> Path:
    exe = cryodrgn_bin()
    if exe is None:
        raise RuntimeError(f"cryoDRGN not found at {PEER_VENV}/bin/cryodrgn "
                           "(see benchmarks/interop_cryodrgn.py for the set-up)")
    return exe


def _run(cmd: Sequence, log: Path, threads: int | None = None, measure_rss: bool = False) -> dict:
    """Run ``cmd`` with stdout+stderr to ``log``; raise RuntimeError with the log tail on failure.

    Returns ``{"wall_s", "peak_rss_mb" (None unless measure_rss and /usr/bin/time exists), "t_start"}``.
    """
    cmd = [str(c) for c in cmd]
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    rss_file = None
    if measure_rss and Path("/usr/bin/time").exists():
        rss_file = log.with_suffix(".maxrss")
        cmd = ["/usr/bin/time", "-o", str(rss_file), "-f", "%M"] + cmd
    log.parent.mkdir(parents=True, exist_ok=True)
    t_start = datetime.now()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"cryoDRGN command failed (exit {res.returncode}): {' '.join(cmd)}\n"
                           f"--- last lines of {log} ---\n{tail}")
    rss = None
    if rss_file is not None and rss_file.exists():
        try:
            rss = int(rss_file.read_text().split()[-1]) / 1024.0  # KB -> MB
        except (ValueError, IndexError):
            rss = None
    return {"wall_s": wall, "peak_rss_mb": rss, "t_start": t_start}


def parse_epochs(log_text: str) -> list[dict]:
    """Per-epoch ``{"epoch", "gen_loss", "kld", "loss", "epoch_s"}`` from cryoDRGN's train_vae log.

    ``epoch_s`` is cryoDRGN's own "Finished in" (the batch loop only: no z evaluation, no checkpoint).
    """
    out = []
    for m in _EPOCH_RE.finditer(log_text):
        h, mi, s = int(m.group(5)), int(m.group(6)), float(m.group(7))
        out.append({"epoch": int(m.group(1)), "gen_loss": float(m.group(2)), "kld": float(m.group(3)),
                    "loss": float(m.group(4)), "epoch_s": h * 3600 + mi * 60 + s})
    return out


def _first_stamp(log_text: str, needle: str) -> datetime | None:
    """Timestamp (1 s resolution) of the first stdout log line containing ``needle``."""
    for line in log_text.splitlines():
        m = _STAMP_RE.match(line)
        if m and needle in m.group(4):
            return datetime.strptime(m.group(3), "%d-%b-%Y %H:%M:%S")
    return None


def read_z(z_pkl: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """cryoDRGN's ``z.pkl`` / ``z.N.pkl``: two consecutive pickles, z means (N, zdim) then log-variances."""
    with open(z_pkl, "rb") as f:
        mu = pickle.load(f)
        logvar = pickle.load(f)
    return np.asarray(mu), np.asarray(logvar)


def train_vae(particles_mrcs: str | Path, poses_pkl: str | Path, ctf_pkl: str | Path | None,
              out_dir: str | Path, zdim: int = 8, enc_dim: int = 256, enc_layers: int = 3,
              dec_dim: int = 256, dec_layers: int = 3, epochs: int = 1, batch_size: int = 16,
              seed: int = 0, lr: float = 1e-4, beta: float | None = None, pe_type: str = "gaussian",
              pe_dim: int | None = None, domain: str = "fourier", checkpoint: int = 0, amp: bool = True,
              datadir: str | Path | None = None, threads: int | None = None, measure_rss: bool = True,
              overwrite: bool = True, extra: Iterable[str] = ()) -> dict:
    """Train cryoDRGN's VAE with known poses (``cryodrgn train_vae``, eager loading) and collect results.

    Args:
        particles_mrcs: stack (.mrcs) or RELION STAR (then ``datadir`` is the folder of its stacks).
        poses_pkl, ctf_pkl: cryoDRGN pickles (``truth/poses.pkl``, ``truth/ctf.pkl`` of ``cryoscape simulate``).
        zdim, enc_dim/enc_layers, dec_dim/dec_layers: cryoDRGN's ``--zdim --enc-dim --enc-layers --dec-dim
            --dec-layers``. NB "layers" counts the *hidden residual* layers: an MLP with L layers of width W
            has L+2 Linear maps (in→W, L × (W→W + skip), W→out).
        epochs, batch_size (cryoDRGN default 16), lr (default 1e-4, Adam, wd 0), beta (None: 1/zdim),
        pe_type ("gaussian" default: 3·pe_dim random 3-D frequencies ~ N(0, 0.5²)·D/2), pe_dim (None: D/2),
        domain ("fourier": decoder outputs (Re, Im) on a half lattice, image = Re − Im).
        checkpoint: 0 = only the final weights.pkl/z.pkl; k = also weights.N.pkl/z.N.pkl every k epochs.
        amp: False passes ``--no-amp`` (matters on CUDA only).
        threads: OMP/MKL threads for the child (None: inherit).
        measure_rss: wrap in ``/usr/bin/time -f %M`` for the peak RSS of the child.
        extra: more cryoDRGN flags, appended verbatim.

    Returns:
        ``{"wall_s", "train_s" (Σ per-epoch batch-loop times), "startup_s" (launch → training loop, ±1 s),
        "images_per_s" (N·epochs / train_s), "epochs" (per-epoch losses/times), "z" (N, zdim) final z means,
        "z_logvar", "out_dir", "weights", "config", "peak_rss_mb", "cmd"}``.
    """
    exe = _require_bin()
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and overwrite:
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "train_vae", Path(particles_mrcs).resolve(), "-o", out_dir,
           "--poses", Path(poses_pkl).resolve(),
           "--zdim", zdim, "--enc-dim", enc_dim, "--enc-layers", enc_layers,
           "--dec-dim", dec_dim, "--dec-layers", dec_layers,
           "-n", epochs, "-b", batch_size, "--lr", lr, "--wd", 0,
           "--beta", (1.0 / zdim if beta is None else beta),
           "--encode-mode", "resid", "--pe-type", pe_type, "--domain", domain, "--activation", "relu",
           "--seed", seed, "--shuffle-seed", seed, "--checkpoint", checkpoint, "--no-analysis"]
    if ctf_pkl is not None:
        cmd += ["--ctf", Path(ctf_pkl).resolve()]
    if pe_dim is not None:
        cmd += ["--pe-dim", pe_dim]
    if datadir is not None:
        cmd += ["--datadir", Path(datadir).resolve()]
    if not amp:
        cmd += ["--no-amp"]
    cmd += list(extra)
    log = out_dir / "cryodrgn_train_vae.log"
    run = _run(cmd, log, threads=threads, measure_rss=measure_rss)
    text = log.read_text(errors="replace")
    epochs_info = parse_epochs(text)
    train_s = sum(e["epoch_s"] for e in epochs_info) if epochs_info else None
    loop_start = _first_stamp(text, "workers for data loading")
    startup_s = None
    if loop_start is not None:
        startup_s = max(0.0, (loop_start - run["t_start"].replace(microsecond=0)).total_seconds())
    z_mu, z_logvar = read_z(out_dir / "z.pkl")
    n_img = z_mu.shape[0]
    return {
        "wall_s": run["wall_s"], "train_s": train_s, "startup_s": startup_s,
        "images_per_s": (n_img * len(epochs_info) / train_s) if train_s else None,
        "epochs": epochs_info, "z": z_mu, "z_logvar": z_logvar, "out_dir": out_dir,
        "weights": out_dir / "weights.pkl", "config": out_dir / "config.yaml",
        "peak_rss_mb": run["peak_rss_mb"], "cmd": " ".join(str(c) for c in cmd),
    }


def eval_vols(out_dir: str | Path, epoch: int | None, z_values: np.ndarray, vol_dir: str | Path,
              apix: float, flip: bool = False, invert: bool = False, downsample: int | None = None,
              threads: int | None = None) -> list[Path]:
    """Decode one map per row of ``z_values`` (k, zdim) with ``cryodrgn eval_vol --zfile``.

    ``epoch`` None uses the final ``weights.pkl``, else ``weights.{epoch}.pkl``. Maps are written as
    ``vol_dir/vol_001.mrc …`` (box D, voxel size ``apix`` in the header) and returned in z order. They
    are in the frame and sign of ``cryodrgn backproject_voxel`` maps (same lattice, same inverse Hartley
    transform, norm = (0, std) undone), i.e. our ground-truth frame: keep ``flip``/``invert`` False.
    """
    exe = _require_bin()
    out_dir = Path(out_dir).resolve()
    vol_dir = Path(vol_dir).resolve()
    weights = out_dir / ("weights.pkl" if epoch is None else f"weights.{epoch}.pkl")
    if not weights.exists():
        raise RuntimeError(f"no {weights.name} in {out_dir} (train with checkpoint=1 for per-epoch weights)")
    z = np.atleast_2d(np.asarray(z_values, dtype=np.float32))
    vol_dir.mkdir(parents=True, exist_ok=True)
    zfile = vol_dir / "z_values.txt"
    np.savetxt(zfile, z)
    cmd = [exe, "eval_vol", weights, "-c", out_dir / "config.yaml", "-o", vol_dir, "--zfile", zfile,
           "--Apix", apix, "--prefix", "vol_"]
    if flip:
        cmd.append("--flip")
    if invert:
        cmd.append("--invert")
    if downsample:
        cmd += ["-d", downsample]
    _run(cmd, vol_dir / "cryodrgn_eval_vol.log", threads=threads)
    paths = [vol_dir / f"vol_{i:03d}.mrc" for i in range(1, len(z) + 1)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"cryodrgn eval_vol did not write {missing[0]}")
    return paths


def backproject_star(star: str | Path, out_dir: str | Path, datadir: str | Path | None = None,
                     extra: Iterable[str] = ()) -> Path:
    """Reconstruct from a RELION 3.1 STAR only, the way a cryoDRGN user would.

    ``cryodrgn parse_pose_star STAR -o poses.pkl`` and ``cryodrgn parse_ctf_star STAR -o ctf.pkl`` (box,
    pixel size, kV, Cs and w come from the ``data_optics`` block; no ``-D``/``--Apix`` needed), then
    ``cryodrgn backproject_voxel STAR --datadir DIR --poses poses.pkl --ctf ctf.pkl -o out_dir``
    (``--datadir`` defaults to the STAR's folder; ``rlnImageName`` paths are relative to it).
    Returns ``out_dir/backproject.mrc`` (half maps and cryoDRGN's FSC beside it).
    """
    exe = _require_bin()
    star = Path(star).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    datadir = Path(datadir).resolve() if datadir is not None else star.parent
    poses, ctf = out_dir / "poses_from_star.pkl", out_dir / "ctf_from_star.pkl"
    _run([exe, "parse_pose_star", star, "-o", poses], out_dir / "cryodrgn_parse_pose_star.log")
    _run([exe, "parse_ctf_star", star, "-o", ctf], out_dir / "cryodrgn_parse_ctf_star.log")
    _run([exe, "backproject_voxel", star, "--datadir", datadir, "--poses", poses, "--ctf", ctf,
          "-o", out_dir, *extra], out_dir / "cryodrgn_backproject_voxel.log")
    return out_dir / "backproject.mrc"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Probe: cryodrgn train_vae on a cryoscape simulation folder.")
    ap.add_argument("sim_dir", type=Path, help="output folder of `cryoscape simulate`")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--zdim", type=int, default=8)
    ap.add_argument("--enc-dim", type=int, default=256)
    ap.add_argument("--enc-layers", type=int, default=3)
    ap.add_argument("--dec-dim", type=int, default=256)
    ap.add_argument("--dec-layers", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=int, default=0)
    ap.add_argument("--eval-k", type=int, default=0, help="decode maps at the z of the first k images")
    ap.add_argument("--apix", type=float, default=1.0, help="voxel size written into eval_vol maps")
    args = ap.parse_args(argv)
    sim = args.sim_dir
    res = train_vae(sim / "particles.mrcs", sim / "truth" / "poses.pkl", sim / "truth" / "ctf.pkl", args.out_dir,
                    zdim=args.zdim, enc_dim=args.enc_dim, enc_layers=args.enc_layers, dec_dim=args.dec_dim,
                    dec_layers=args.dec_layers, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                    checkpoint=args.checkpoint)
    fig = {k: (str(v) if isinstance(v, Path) else v) for k, v in res.items() if k not in ("z", "z_logvar")}
    fig["z_shape"] = list(res["z"].shape)
    if args.eval_k:
        t = time.perf_counter()
        vols = eval_vols(args.out_dir, None, res["z"][:args.eval_k], args.out_dir / "vols", args.apix)
        fig["eval_vol_s"] = time.perf_counter() - t
        fig["vols"] = [str(v) for v in vols]
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
