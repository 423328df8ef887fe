#!/usr/bin/env python
"""Peer benchmark: particle-stack simulation with ASPIRE (aspire.source.Simulation).

Standalone: run with the ASPIRE venv's python, never imports cryoscape.

    .venv-peers/aspire/bin/python benchmarks/peers/aspire_simulate.py \
        --volume map.mrc --n 1000 --seed 0 --snr 0.1 \
        --defocus-min-um 1.5 --defocus-max-um 2.5 \
        --voltage-kv 300 --cs-mm 2.7 --amp-contrast 0.1 [--out stack.mrcs]

Pipeline (all ASPIRE's own code): Volume.load -> Simulation(vols, uniform random
rotations, one CTFFilter per image with defocus ~ U[min, max] (in Angstrom),
white noise from WhiteNoiseAdder.from_snr) -> sim.images[...] for every image.

Timing covers generation only (not the volume load, not the optional --out write):
  * setup_s:  Simulation(...) construction.  With WhiteNoiseAdder.from_snr, ASPIRE
              computes the signal power here by generating ALL clean (projected,
              CTF-filtered) images once (Simulation.true_signal_power).
  * images_s: sim.images[i:i+batch] over all N images.  Simulation keeps no cache
              (memory=None, no .cache() call), so every image is projected,
              CTF-filtered and noised exactly once in this pass.
aspire_img_per_s = N / (setup_s + images_s)   (end-to-end noisy stack at target SNR)
aspire_img_per_s_images_only = N / images_s   (excludes ASPIRE's SNR-calibration pass)

The last line printed to stdout is one JSON object.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--volume", required=True, help="input map (.mrc)")
    p.add_argument("--n", type=int, default=1000, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snr", type=float, default=0.1)
    p.add_argument("--defocus-min-um", type=float, default=1.5)
    p.add_argument("--defocus-max-um", type=float, default=2.5)
    p.add_argument("--voltage-kv", type=float, default=300.0)
    p.add_argument("--cs-mm", type=float, default=2.7)
    p.add_argument("--amp-contrast", type=float, default=0.1)
    p.add_argument("--pixel-size", type=float, default=None,
                   help="override pixel size in A (default: from the map header)")
    p.add_argument("--out", default=None, help="optional output stack (.mrcs)")
    p.add_argument("--batch-size", type=int, default=512,
                   help="images per sim.images[] call (ASPIRE's own default is 512)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP/BLAS threads (default: all cores). finufft uses OpenMP; "
                        "ASPIRE's scipy FFT calls use workers=-1 (all cores) regardless.")
    p.add_argument("--defocus-groups", type=int, default=0,
                   help="0 (default): one CTF per image, defocus ~ U[min,max]. "
                        "K>0: K CTFs at linspace(min,max,K), randomly assigned "
                        "(the style of ASPIRE's own examples).")
    p.add_argument("--aspire-shifts-amplitudes", action="store_true",
                   help="keep ASPIRE's default random offsets (std L/16 px) and "
                        "amplitudes U[2/3,3/2]; default disables both (pure "
                        "projection + CTF + noise)")
    p.add_argument("--check-snr", action="store_true",
                   help="after timing, regenerate clean images and report the achieved "
                        "SNR by ASPIRE's definition and by whole-image variance")
    return p.parse_args(argv)


from _aspire import configure_aspire as _configure_aspire  # noqa: E402  (the script's folder is on sys.path)


def main(argv=None):
    args = parse_args(argv)
    volume_path = os.path.abspath(args.volume)
    out_path = os.path.abspath(args.out) if args.out else None

    ncpu = os.cpu_count() or 1
    threads = args.threads or ncpu
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)

    _configure_aspire(tempfile.mkdtemp(prefix="aspire_cfg_"))

    import numpy as np  # noqa: E402  (after thread env vars)
    import aspire  # noqa: E402
    from aspire.noise import WhiteNoiseAdder
    from aspire.operators import CTFFilter
    from aspire.source import Simulation
    from aspire.volume import Volume

    # ---- volume load (not timed) -------------------------------------------
    vol = Volume.load(volume_path, dtype=np.float32)
    if args.pixel_size is not None:
        vol = Volume(vol.asnumpy(), pixel_size=args.pixel_size, dtype=np.float32)
    L = int(vol.resolution)
    n = int(args.n)
    pixel_size = float(vol.pixel_size) if vol.pixel_size is not None else 1.0

    # ---- CTF parameters (not timed; plain parameter draws) ------------------
    rng = np.random.default_rng(args.seed)
    dmin_A, dmax_A = args.defocus_min_um * 1e4, args.defocus_max_um * 1e4
    if args.defocus_groups > 0:
        defoci = np.linspace(dmin_A, dmax_A, args.defocus_groups)
        filter_indices = rng.integers(0, args.defocus_groups, size=n)
    else:
        defoci = rng.uniform(dmin_A, dmax_A, size=n)
        filter_indices = np.arange(n)
    # CTFFilter.alpha is the amplitude-contrast fraction w:
    #   h = sqrt(1 - w^2) sin(chi) - w cos(chi)
    filters = [
        CTFFilter(voltage=args.voltage_kv, defocus_u=float(d), defocus_v=float(d),
                  defocus_ang=0.0, Cs=args.cs_mm, alpha=args.amp_contrast, B=0)
        for d in defoci
    ]

    extra = {}
    if not args.aspire_shifts_amplitudes:
        extra["offsets"] = np.zeros((n, 2), dtype=np.float32)
        extra["amplitudes"] = np.ones(n, dtype=np.float32)

    # ---- timed: generation ----------------------------------------------------
    t0 = time.perf_counter()
    sim = Simulation(
        n=n,
        vols=vol,
        unique_filters=filters,
        filter_indices=filter_indices,
        noise_adder=WhiteNoiseAdder.from_snr(args.snr, seed=args.seed),
        seed=args.seed,
        **extra,
    )
    t1 = time.perf_counter()
    stack = np.empty((n, L, L), dtype=np.float32)
    bs = max(1, int(args.batch_size))
    for start in range(0, n, bs):
        stop = min(n, start + bs)
        stack[start:stop] = sim.images[start:stop].asnumpy()
    t2 = time.perf_counter()

    setup_s, images_s = t1 - t0, t2 - t1
    wall_s = t2 - t0
    noise_var = float(sim.noise_adder.noise_var)
    result = {
        "aspire_img_per_s": n / wall_s,
        "aspire_img_per_s_images_only": n / images_s,
        "n_images": n,
        "box_px": L,
        "wall_s": wall_s,
        "setup_s": setup_s,
        "images_s": images_s,
        "aspire_version": aspire.__version__,
        "threads": threads,
        "cpu_count": ncpu,
        "pixel_size_A": pixel_size,
        "n_ctf_filters": len(filters),
        "snr_target": args.snr,
        "noise_var": noise_var,
        "signal_power_aspire": float(sim.noise_adder.signal_power),
        "shifts_amplitudes": bool(args.aspire_shifts_amplitudes),
        "batch_size": bs,
        "seed": args.seed,
    }

    # ---- optional checks / output (not timed) --------------------------------
    if args.check_snr:
        clean = sim.clean_images[:].asnumpy().astype(np.float64)
        yy, xx = np.mgrid[:L, :L] - (L // 2)
        disk = np.hypot(yy, xx) < (L // 2)  # approx. ASPIRE's support_mask
        result["snr_aspire_def"] = float(np.mean(clean[:, disk] ** 2) / noise_var)
        result["snr_var_whole_image"] = float(clean.var() / noise_var)
        result["snr_var_per_image_mean"] = float(clean.var(axis=(1, 2)).mean() / noise_var)
        result["noise_var_empirical"] = float((stack.astype(np.float64) - clean).var())

    if out_path:
        import mrcfile
        with mrcfile.new(out_path, overwrite=True) as m:
            m.set_data(stack)
            m.set_image_stack()
            m.voxel_size = pixel_size
        result["out"] = out_path

    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
