#!/usr/bin/env python
"""Micrograph denoising: cryoscape's learned denoiser (trained on the data, no clean images) beside
Topaz-Denoise's pretrained ``unet`` on the same simulated micrographs, in the same invocation.

    .venv/bin/python benchmarks/denoise_micrographs.py                     # 4 micrographs of 1024², SNR 0.1
    .venv/bin/python benchmarks/denoise_micrographs.py --snr 0.03 --no-peer

Data (:func:`cryoscape.data.micrographs.simulate_micrographs`): ``--n-micrographs`` fields of ``--size``² pixels
of ``--apix`` Å (default 4 × 1024² at 1.2 Å/px: a 1229 Å field) holding the 102
embedded AdK conformations (Cα, σ = 3 Å) at random poses, ``--coverage`` 0.2 of the area under particle discs
(≈ 58 particles of 82 Å diameter per micrograph, at least one diameter apart), defocus 1.0–2.5 µm, 300 kV,
Cs 2.7 mm, w = 0.1, the CTF applied to the whole field (canvas twice the field); white noise at ``--snr`` (0.1:
``var(clean micrograph) / σ² = 0.1``, empty ice included; in a 64-px (77 Å) box around a particle it is
0.43, measured) split into two frame halves of twice the noise variance (``noisy`` = their mean).

Methods, each given the noisy micrograph (and, for n2n, its two halves), never the clean one:
- Topaz-Denoise (Bepler et al. 2020), ``.venv-peers/topaz`` via ``benchmarks/peers/topaz_denoise.py``: the
  pretrained ``unet`` (``unet_L2_v0.2.2.sav``, trained by noise2noise on real movie-frame pairs) with
  ``topaz denoise``'s default settings, on the micrographs written as ``.mrc``.
- cryoscape ``unet`` (:mod:`cryoscape.methods.denoise.learned`, :class:`UNetConfig` defaults): trained on these
  micrographs only, ``n2n`` on the even/odd halves and ``n2s`` (Neighbor2Neighbor) on the noisy micrographs
  alone; then ``apply_unet`` on the noisy micrographs (n2n also on each half, the two outputs averaged:
  ``*_halves_mean``, at the noise level it was trained at; twice the inference time).

Metrics: Pearson correlation of each output with the clean (CTF-affected, noiseless) micrograph, per micrograph,
averaged (both methods estimate the CTF-affected image); the noisy input's own correlation (expected
``sqrt(SNR / (1 + SNR))``). Wall times on ``--threads`` CPU threads: Topaz's model load and its seconds per
micrograph (``denoise_image`` only), ours: training (separately) and seconds per micrograph (``apply_unet``).
Data go to ``benchmarks/out/denoise/micrographs/`` (ignored): the inputs (``noisy/*.mrc``, ``halves_*.mrcs``),
the truth (``truth/``), each method's outputs, ``results.json`` and ``panel.png``. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "denoise" / "micrographs"
TOPAZ_PY = ROOT / ".venv-peers" / "topaz" / "bin" / "python"
TOPAZ_SCRIPT = ROOT / "benchmarks" / "peers" / "topaz_denoise.py"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def corr(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Pearson correlation of each image of ``a`` with the same image of ``b`` (``(N, H, W)``)."""
    return [float(np.corrcoef(x.double().reshape(-1).numpy(), y.double().reshape(-1).numpy())[0, 1])
            for x, y in zip(a, b)]


def simulate(args):
    from cryoscape.data.embedded import adk_files
    from cryoscape.data.micrographs import MicrographConfig, simulate_micrographs
    from cryoscape.data.simulate import AtomSource
    from cryoscape.io.models import read_trajectory
    conf = read_trajectory(*adk_files(), "ca")
    source = AtomSource(conf.coords, 3.0)
    cfg = MicrographConfig(size=args.size, apix=args.apix, coverage=args.coverage, snr=args.snr, n_frames=2,
                           seed=args.seed)
    t = time.perf_counter()
    ms = simulate_micrographs(source, cfg, args.n_micrographs)
    return ms, time.perf_counter() - t


def write_inputs(ms, folder: Path) -> list[Path]:
    from cryoscape.io.mrc import write_micrograph, write_stack
    (folder / "noisy").mkdir(parents=True, exist_ok=True)
    (folder / "truth").mkdir(parents=True, exist_ok=True)
    paths = []
    for m in range(len(ms)):
        p = folder / "noisy" / f"mic_{m:03d}.mrc"
        write_micrograph(p, ms.noisy[m].numpy(), ms.apix)
        paths.append(p)
    write_stack(folder / "halves_even.mrcs", ms.halves[:, 0].numpy(), ms.apix)
    write_stack(folder / "halves_odd.mrcs", ms.halves[:, 1].numpy(), ms.apix)
    write_stack(folder / "truth" / "clean.mrcs", ms.clean.numpy(), ms.apix)
    write_stack(folder / "truth" / "clean_noctf.mrcs", ms.clean_noctf.numpy(), ms.apix)
    np.savez(folder / "truth" / "particles.npz", micrograph=ms.micrograph, coords_px=ms.coords,
             rotations=ms.rotations, conformation=ms.conformation, noise_sigma=ms.noise_sigma,
             defocus_u_A=ms.ctf.defocus_u.numpy(), defocus_v_A=ms.ctf.defocus_v.numpy(),
             angle_ast_rad=ms.ctf.angle_ast.numpy())
    return paths


def write_outputs(images: torch.Tensor, folder: Path, apix: float) -> None:
    from cryoscape.io.mrc import write_micrograph
    folder.mkdir(parents=True, exist_ok=True)
    for m, img in enumerate(images):
        write_micrograph(folder / f"mic_{m:03d}.mrc", img.numpy(), apix)


def run_topaz(paths: list[Path], folder: Path, threads: int) -> tuple[torch.Tensor, dict]:
    from cryoscape.io.mrc import read_micrograph
    t = time.perf_counter()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(TOPAZ_PY), str(TOPAZ_SCRIPT), *map(str, paths), "-o", str(folder),
                           "--threads", str(threads)], check=True, capture_output=True, text=True, env=env)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["wall_s"] = time.perf_counter() - t
    out = torch.stack([torch.from_numpy(read_micrograph(p)[0]) for p in info["outputs"]])
    return out, info


def run_ours(ms, mode: str, args) -> tuple[torch.Tensor, dict]:
    from cryoscape.methods.denoise.learned import UNetConfig, apply_unet, fit_unet, save_unet
    overrides = {k: v for k, v in (("epochs", args.epochs), ("steps_per_epoch", args.steps_per_epoch))
                 if v is not None}
    cfg = UNetConfig(mode=mode, device="cpu", seed=args.seed, **overrides)
    pairs = (ms.halves[:, 0], ms.halves[:, 1]) if mode == "n2n" else None
    t = time.perf_counter()
    model, history = fit_unet(ms.noisy, cfg, pairs=pairs)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    out = apply_unet(model, ms.noisy, tile=cfg.tile, overlap=cfg.overlap, precision=cfg.precision)
    apply_s = time.perf_counter() - t
    info = {"train_s": train_s, "s_per_micrograph": apply_s / len(ms), "config": {
        k: getattr(cfg, k) for k in ("channels", "depth", "crop", "batch_size", "epochs", "steps_per_epoch", "lr",
                                     "tile", "overlap", "precision")}, "final_loss": history[-1].get("loss")}
    save_unet(model, cfg, Path(args.out) / f"unet_{mode}.pt")
    if mode == "n2n":  # the network saw halves (noise 2σ²): also applied to each half, outputs averaged
        t = time.perf_counter()
        info["halves_mean"] = 0.5 * sum(apply_unet(model, ms.halves[:, h], tile=cfg.tile, overlap=cfg.overlap,
                                                   precision=cfg.precision) for h in (0, 1))
        info["halves_mean_s_per_micrograph"] = (time.perf_counter() - t) / len(ms)
    return out, info


def panel(ms, outputs: dict, path: Path, crop: int = 384) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    items = [("clean", ms.clean[0]), ("noisy", ms.noisy[0])] + [(k, v[0]) for k, v in outputs.items()]
    fig, axes = plt.subplots(1, len(items), figsize=(3 * len(items), 3.2))
    for ax, (name, img) in zip(axes, items):
        a = img[:crop, :crop].numpy()
        lo, hi = np.percentile(a, [1, 99])
        ax.imshow(a, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-micrographs", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--apix", type=float, default=1.2)
    ap.add_argument("--coverage", type=float, default=0.2)
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="n2n,n2s", help="our training modes, comma-separated ('' for none)")
    ap.add_argument("--epochs", type=int, default=None, help="override UNetConfig.epochs (default: its default)")
    ap.add_argument("--steps-per-epoch", type=int, default=None)
    ap.add_argument("--no-peer", action="store_true", help="skip Topaz")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]

    ms, sim_s = simulate(args)
    log(f"simulated {len(ms)} micrographs of {tuple(ms.noisy.shape[1:])} px in {sim_s:.1f} s "
        f"({len(ms.coords)} particles)")
    paths = write_inputs(ms, folder)
    res = {"n_micrographs": len(ms), "size_px": args.size, "apix_A": args.apix, "snr": args.snr,
           "particles_per_micrograph": len(ms.coords) / len(ms), "threads": args.threads,
           "load_avg_1min_at_start": round(load, 2), "simulate_s": round(sim_s, 2),
           "corr_noisy": float(np.mean(corr(ms.noisy, ms.clean))),
           "corr_noisy_expected": float(np.sqrt(args.snr / (1 + args.snr)))}
    outputs = {}
    if not args.no_peer:
        if not TOPAZ_PY.exists():
            log(f"Topaz venv not found ({TOPAZ_PY.relative_to(ROOT)}); skipping the peer")
        else:
            log("Topaz-Denoise (pretrained unet) ...")
            out, info = run_topaz(paths, folder / "topaz_unet", args.threads)
            outputs["topaz_unet"] = out
            c = corr(out, ms.clean)
            res.update({"corr_topaz_unet": float(np.mean(c)), "corr_topaz_unet_per_micrograph": c,
                        "topaz_model_load_s": info["topaz_model_load_s"], "topaz_import_s": info["topaz_import_s"],
                        "topaz_s_per_micrograph": info["topaz_s_per_micrograph"],
                        "topaz_subprocess_wall_s": round(info["wall_s"], 2), "topaz_version": info["topaz_version"],
                        "topaz_settings": info["settings"]})
            log(f"  r = {res['corr_topaz_unet']:.4f}, {info['topaz_s_per_micrograph']:.2f} s per micrograph")
    for mode in [m for m in args.modes.split(",") if m]:
        log(f"cryoscape unet {mode} ...")
        out, info = run_ours(ms, mode, args)
        outputs[f"unet_{mode}"] = out
        write_outputs(out, folder / f"unet_{mode}", ms.apix)
        c = corr(out, ms.clean)
        res.update({f"corr_unet_{mode}": float(np.mean(c)), f"corr_unet_{mode}_per_micrograph": c,
                    f"unet_{mode}_train_s": round(info["train_s"], 2),
                    f"unet_{mode}_s_per_micrograph": round(info["s_per_micrograph"], 3),
                    f"unet_{mode}_config": info["config"]})
        if "halves_mean" in info:
            outputs[f"unet_{mode}_halves"] = info["halves_mean"]
            res[f"corr_unet_{mode}_halves_mean"] = float(np.mean(corr(info["halves_mean"], ms.clean)))
            res[f"unet_{mode}_halves_mean_s_per_micrograph"] = round(info["halves_mean_s_per_micrograph"], 3)
        if "topaz_s_per_micrograph" in res:
            res[f"unet_{mode}_speedup_vs_topaz_x"] = round(res["topaz_s_per_micrograph"] / info["s_per_micrograph"], 2)
        log(f"  r = {res[f'corr_unet_{mode}']:.4f}, train {info['train_s']:.1f} s, "
            f"{info['s_per_micrograph']:.2f} s per micrograph")
    res["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    panel(ms, outputs, folder / "panel.png")
    (folder / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
