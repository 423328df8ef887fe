#!/usr/bin/env python
"""Peer benchmark: ASPIRE's covariance Wiener filter (Cov2D / CWF, Bhamre, Zhang & Singer 2016) on a stack.

Standalone: run with the ASPIRE venv's python, never imports cryoscape.

    .venv-peers/aspire/bin/python benchmarks/peers/aspire_cwf.py stack.mrcs --ctf ctf.csv -o denoised.npy \
        [--threads 2] [--noise-var V] [--shrinker frobenius_norm]

Input: an .mrcs stack (N, L, L) and a CTF table (.csv or .npy, one row per image: defocusU (A), defocusV (A),
defocus angle (deg), voltage (kV), Cs (mm), amplitude contrast, pixel size (A)). Identical rows share one
ASPIRE CTFFilter (ASPIRE's Cov2D works per unique filter, i.e. per defocus group).

Sign: ASPIRE's CTFFilter is -1 x RELION's CTF (its h = sqrt(1-a^2) sin(chi) - a cos(chi) with chi of the
opposite sign), so data made with RELION's CTF are y = (-H_aspire) x. The stack is handed to ASPIRE negated,
so that ASPIRE's model y' = H_aspire x holds for the same CTF-free image x; the output is then ASPIRE's
estimate of x itself (no sign change afterwards). --no-negate hands it over as is.

Pipeline (ASPIRE 0.14's own public API): ArrayImageSource(stack, pixel_size) with CTFFilter per unique row ->
DenoiserCov2D(src, var_noise=None -> ASPIRE's WhiteNoiseEstimator; basis FFBBasis2D; covar_opt default:
shrinker 'frobenius_norm') -> DenoisedSource(src, denoiser).images[:]. Timed: everything from building the
denoiser to the last denoised image (the basis, noise estimation, mean/covariance and the per-image filter).

Output: denoised images (N, L, L) float32 .npy. The last line printed is one JSON object with aspire_wall_s,
noise_var (ASPIRE's estimate, of the negated stack: the same) and the settings.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stack", help=".mrcs stack")
    p.add_argument("--ctf", required=True, help="per-image CTF table (.csv or .npy, 7 columns)")
    p.add_argument("-o", "--out", required=True, help="output .npy")
    p.add_argument("--threads", type=int, default=None, help="OMP/BLAS threads (default: all cores)")
    p.add_argument("--noise-var", type=float, default=None, help="noise variance (default: ASPIRE estimates it)")
    p.add_argument("--shrinker", default=None, help="Cov2D shrinker (default: ASPIRE's, frobenius_norm)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--no-negate", action="store_true", help="hand the stack to ASPIRE without the sign change")
    return p.parse_args(argv)


from _aspire import configure_aspire as _configure_aspire  # noqa: E402  (the script's folder is on sys.path)


def main(argv=None):
    args = parse_args(argv)
    ncpu = os.cpu_count() or 1
    threads = args.threads or ncpu
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _configure_aspire(tempfile.mkdtemp(prefix="aspire_cfg_"))

    import mrcfile
    import numpy as np
    import aspire
    from aspire.denoising import DenoisedSource, DenoiserCov2D
    from aspire.operators import CTFFilter
    from aspire.source import ArrayImageSource

    with mrcfile.open(args.stack, permissive=True) as m:
        stack = np.asarray(m.data, dtype=np.float64)
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2]:
        sys.exit(f"{args.stack}: expected a stack of square images, got shape {stack.shape}")
    table = np.load(args.ctf) if args.ctf.endswith(".npy") else np.loadtxt(args.ctf, delimiter=",", ndmin=2)
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (len(stack), 7):
        sys.exit(f"{args.ctf}: expected ({len(stack)}, 7) rows, got shape {table.shape}")
    apix = float(table[0, 6])
    sign = 1.0 if args.no_negate else -1.0
    src = ArrayImageSource(sign * stack, pixel_size=apix)
    uniq, inverse = np.unique(table[:, :6], axis=0, return_inverse=True)
    src.unique_filters = [CTFFilter(voltage=r[3], defocus_u=r[0], defocus_v=r[1], defocus_ang=np.radians(r[2]),
                                    Cs=r[4], alpha=r[5], B=0) for r in uniq]
    src.filter_indices = np.asarray(inverse).reshape(-1)

    covar_opt = None if args.shrinker is None else {"shrinker": args.shrinker}
    t0 = time.perf_counter()
    denoiser = DenoiserCov2D(src, var_noise=args.noise_var, batch_size=args.batch_size, covar_opt=covar_opt)
    out = DenoisedSource(src, denoiser).images[:].asnumpy().astype(np.float32)
    wall = time.perf_counter() - t0
    np.save(os.path.abspath(args.out), out)
    print(json.dumps({"aspire_wall_s": wall, "noise_var": float(denoiser.var_noise), "n_images": len(stack),
                      "box_px": int(stack.shape[1]), "n_ctf_groups": int(len(uniq)), "negated": sign < 0,
                      "shrinker": args.shrinker or "frobenius_norm (default)", "threads": threads,
                      "aspire_version": aspire.__version__, "pixel_size_A": apix}))


if __name__ == "__main__":
    main()
