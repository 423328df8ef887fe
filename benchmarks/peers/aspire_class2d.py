#!/usr/bin/env python
"""Peer benchmark: 2-D classification and class averaging with ASPIRE (RIRClass2D + BFTAverager2D).

Standalone: run with the ASPIRE venv's python, never imports cryoscape.

    .venv-peers/aspire/bin/python benchmarks/peers/aspire_class2d.py particles.star -o aspire.npz \
        [--n-nbor 10] [--seed 0] [--n-classes K] [--threads 2]
    .venv-peers/aspire/bin/python benchmarks/peers/aspire_class2d.py stack.mrcs --ctf ctf.csv \
        --pixel-size 2.0 -o aspire.npz

Input: a RELION STAR (read by ASPIRE's own RelionSource, CTF from its columns, stacks resolved from the STAR's
folder), or an .mrcs stack with an optional --ctf table (.npy or .csv, one row per image: defocusU (A),
defocusV (A), defocus angle (deg), voltage (kV), Cs (mm), amplitude contrast, pixel size (A)) turned into one
ASPIRE CTFFilter per image on an ArrayImageSource.

Pipeline (all ASPIRE's own public API, the steps of its experimental pipelines):
  phase_flip()  (ASPIRE's CTF is -1 x RELION's, so phase-flipped "white" particles come out dark)
  -> normalize_background() (per image: background ramp removed, scaled by the background std)
  -> whiten() (ASPIRE's WhiteNoiseEstimator); FSPCA then estimates the noise variance itself.
     There is no option for the true noise variance: ASPIRE's whiten(Filter) also multiplies the source's CTF
     filters, which its CTF-aware covariance (FSPCA) uses, while normalize_background rescales the images only;
     whitening by the true variance (before or without normalize_background, or passing
     FSPCABasis(noise_var=1)) left RIRClass2D's neighbours at chance on a cryoscape stack of 300 AdK images
     (box 32, SNR 1: 6-8 % of pairs within 20 deg, chance 6 %), against 28-30 % (seeds 0-2) for this
     pipeline; normalize_background(do_ramp=False) was at chance too.
  -> invert_contrast() (ASPIRE's automatic check; makes the particle brighter than the background again)
  -> cache()
  -> RIRClass2D with the settings of ASPIRE 0.14's DefaultClassAvgSource (fspca_components=400,
     bispectrum_components=300, legacy PCA and bispectrum, scikit-learn nearest neighbours), classify()
  -> BFTAverager2D(FFBBasis2D) (the averager of DefaultClassAvgSource in 0.14: brute-force shifts within
     L//32 px, polar-Fourier rotations), average() of the first --n-classes classes (default: all N).
Run to run: the same command (seed 0, 2 threads) gave 30 % of neighbour pairs within 20 deg in 7 of 8 runs
on that stack and 8 % (near chance) in one, whose reflected_fraction was 0.50 instead of 0.999; compare
reflected_fraction across repeats before trusting a single run.
Components shrink (with a note in the JSON) when the stack is too small for ASPIRE's defaults:
fspca_components <= basis size, bispectrum_components <= min(fspca_components, N).

Output .npz (ASPIRE's own arrays, 0-based image indices):
  neighbours   (N, n_nbor) int64: row i is ASPIRE's class i, whose reference is image i: ASPIRE lists image i
               first (its own nearest neighbour, distance 0) and then its n_nbor - 1 nearest neighbours in the
               rotation-invariant bispectrum features, closest first.
  reflections  (N, n_nbor) bool: True where the neighbour matched in its mirrored form.
  distances    (N, n_nbor) float: the classifier's nearest-neighbour distances.
  rotations    (K, n_nbor) float: the in-plane angle (radians, ASPIRE's counter-clockwise convention) the
               averager applied to each member of class k (k < K = --n-classes).
  shifts       (K, n_nbor, 2) float: the averager's shifts (pixels) of each member.
  class_averages (K, L, L) float32: the average of class k (class whose reference is image k), in the
               preprocessed (phase-flipped, background-normalised, whitened, contrast-checked) units.
  pixel_size   () float (A).
Timing (wall clock): aspire_preprocess_s (building the preprocessed source and caching it, noise estimation
included), aspire_classify_s (RIRClass2D construction + classify()), aspire_average_s (averager construction
+ average()). The last line printed to stdout is one JSON object.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("particles", help="RELION .star, or an .mrcs stack")
    p.add_argument("-o", "--out", required=True, help="output .npz")
    p.add_argument("--ctf", default=None, help="with an .mrcs: per-image CTF table (.npy or .csv, 7 columns)")
    p.add_argument("--pixel-size", type=float, default=None,
                   help="pixel size (A); default from the STAR, the --ctf table or the stack header")
    p.add_argument("--n-nbor", type=int, default=10, help="class size incl. the reference image (default 10)")
    p.add_argument("--n-classes", type=int, default=None, help="average the first K classes (default all N)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=None, help="OMP/BLAS threads (default: all cores)")
    return p.parse_args(argv)


from _aspire import configure_aspire as _configure_aspire  # noqa: E402  (the script's folder is on sys.path)


def _load_source(args, np):
    """ASPIRE source of the raw particles: RelionSource for a STAR, ArrayImageSource (+ CTFFilters) for a stack."""
    from aspire.operators import CTFFilter
    from aspire.source import ArrayImageSource, RelionSource

    path = os.path.abspath(args.particles)
    if path.lower().endswith(".star"):
        if args.ctf:
            sys.exit("--ctf is for an .mrcs stack; a STAR carries its own CTF")
        return RelionSource(path, pixel_size=args.pixel_size, dtype=np.float64), "star"
    import mrcfile
    with mrcfile.open(path, permissive=True) as m:
        stack = np.asarray(m.data, dtype=np.float64)
        header_apix = float(m.voxel_size.x) or None
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2]:
        sys.exit(f"{path}: expected a stack of square images, got shape {stack.shape}")
    table = None
    if args.ctf:
        table = (np.load(args.ctf) if args.ctf.endswith(".npy")
                 else np.loadtxt(args.ctf, delimiter=",", ndmin=2))
        table = np.asarray(table, dtype=np.float64)
        if table.shape != (len(stack), 7):
            sys.exit(f"{args.ctf}: expected ({len(stack)}, 7) rows of defocusU, defocusV, angle_deg, kV, Cs_mm, "
                     f"amp_contrast, apix; got shape {table.shape}")
    apix = args.pixel_size or (float(table[0, 6]) if table is not None else header_apix)
    if not apix:
        sys.exit("no pixel size: give --pixel-size")
    src = ArrayImageSource(stack, pixel_size=apix)
    if table is not None:
        src.unique_filters = [CTFFilter(voltage=r[3], defocus_u=r[0], defocus_v=r[1],
                                        defocus_ang=np.radians(r[2]), Cs=r[4], alpha=r[5], B=0) for r in table]
        src.filter_indices = np.arange(len(stack))
    return src, "mrcs+ctf" if table is not None else "mrcs"


def main(argv=None):
    args = parse_args(argv)
    out_path = os.path.abspath(args.out)
    ncpu = os.cpu_count() or 1
    threads = args.threads or ncpu
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    _configure_aspire(tempfile.mkdtemp(prefix="aspire_cfg_"))

    import numpy as np  # noqa: E402  (after thread env vars)
    import aspire  # noqa: E402
    from aspire.basis import FFBBasis2D
    from aspire.classification import BFTAverager2D, RIRClass2D

    raw, kind = _load_source(args, np)
    n, L = int(raw.n), int(raw.L)
    notes = []

    # ---- timed: preprocessing (lazy pipeline, materialised by cache()) -------------------------------------
    t0 = time.perf_counter()
    src = raw.phase_flip() if raw.n_ctf_filters else raw
    if not raw.n_ctf_filters:
        notes.append("no CTF: phase_flip skipped")
    src = src.normalize_background()
    src = src.whiten()
    src = src.invert_contrast(batch_size=args.batch_size)
    src = src.cache(batch_size=args.batch_size)
    t1 = time.perf_counter()

    # ---- timed: classification ----------------------------------------------------------------------------
    basis = FFBBasis2D(L, dtype=src.dtype)
    fspca = min(400, basis.count)
    bispec = min(300, fspca, n)
    if (fspca, bispec) != (400, 300):
        notes.append(f"components reduced to fspca={fspca}, bispectrum={bispec} (basis {basis.count}, N {n})")
    classifier = RIRClass2D(
        src,
        fspca_components=fspca,
        bispectrum_components=bispec,
        n_nbor=args.n_nbor,
        large_pca_implementation="legacy",
        nn_implementation="sklearn",
        bispectrum_implementation="legacy",
        batch_size=args.batch_size,
        seed=args.seed,
    )
    classes, reflections, distances = classifier.classify()
    t2 = time.perf_counter()

    # ---- timed: class averages ----------------------------------------------------------------------------
    k = n if args.n_classes is None else max(1, min(int(args.n_classes), n))
    averager = BFTAverager2D(composite_basis=FFBBasis2D(L, dtype=src.dtype), src=src,
                             batch_size=args.batch_size, dtype=src.dtype)
    averages = averager.average(classes[:k], reflections[:k]).asnumpy().astype(np.float32)
    t3 = time.perf_counter()

    refs = classes[:k, 0]
    rotations = np.stack([np.asarray(averager.rotations[i], np.float64) for i in refs])
    shifts = (np.stack([np.asarray(averager.shifts[i], np.float64) for i in refs])
              if len(averager.shifts) else np.zeros((k, classes.shape[1], 2)))
    pixel_size = float(src.pixel_size)
    np.savez(out_path, neighbours=np.asarray(classes, np.int64), reflections=np.asarray(reflections, bool),
             distances=np.asarray(distances, np.float64), rotations=rotations, shifts=shifts,
             class_averages=averages, pixel_size=np.float64(pixel_size))

    result = {
        "aspire_preprocess_s": t1 - t0,
        "aspire_classify_s": t2 - t1,
        "aspire_average_s": t3 - t2,
        "n_images": n,
        "box_px": L,
        "n_nbor": int(classes.shape[1]),
        "n_classes_averaged": k,
        "reference_listed_first": float(np.mean(classes[:, 0] == np.arange(n))),
        "reflected_fraction": float(np.mean(reflections[:, 1:])) if classes.shape[1] > 1 else 0.0,
        "fspca_components": fspca,
        "bispectrum_components": bispec,
        "input": kind,
        "pixel_size_A": pixel_size,
        "aspire_version": aspire.__version__,
        "threads": threads,
        "cpu_count": ncpu,
        "seed": args.seed,
        "notes": notes,
        "out": out_path,
    }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
