#!/usr/bin/env python
"""Peer benchmark: Topaz particle picking (Bepler et al. 2019, Nat. Methods 16:1153) on micrographs.

Standalone: run with the Topaz venv's python, never imports cryoscape.

    .venv-peers/topaz/bin/python benchmarks/peers/topaz_pick.py pretrained mics/ --apix 1.2 --radius-A 41 -o OUT
    .venv-peers/topaz/bin/python benchmarks/peers/topaz_pick.py train mics/ --apix 1.2 --radius-A 41 -o OUT \\
        --labels labels.txt --num-particles 130 [--train-micrographs train_mics/] [--num-epochs 10]

Inputs: ``.mrc`` micrographs (files or folders of ``*.mrc``), their pixel size ``--apix`` (Å) and the particle
radius ``--radius-A`` (Å). The venv is the one of ``topaz_denoise.py`` (topaz-em 0.3.20, torch 2.13.0 CPU, no
torchvision, ``setuptools<81``). Topaz's command line does not start there, so this script calls the functions
the commands call, with the commands' own defaults read from their argument parsers.

Steps (what ``topaz preprocess`` + ``topaz extract`` do, in one process):

1. Preprocess (``topaz.commands.normalize``/``preprocess``): Fourier-crop downsampling by the factor ``s``
   (``topaz.utils.image.downsample``; ``H' = int(H/s)``, ``W' = int(W/s)``), then the per-micrograph
   normalisation ``topaz.stats.normalize``: a two-component Gaussian mixture with a Beta(α = 900, β = 1) prior on
   the mixing weight, fitted on every ``sample``-th pixel (default 10, 100 EM iterations at most), and
   ``x ← (x − μ) / σ`` of the component that holds most pixels (``--affine``: the plain mean/std instead).
   Defaults from ``topaz.commands.normalize.add_arguments``. ``np.random`` is seeded (``--seed``) because the
   pixel sample is random (the command does not seed).
   The factor: ``--scale`` if given, else the least integer that brings the pixel size to ``--target-apix``
   (4 Å) or above, ``s = max(1, ceil(target_apix / apix))`` (1.2 Å/px: s = 4, 4.8 Å/px). Source: Topaz's
   quick-start tutorial (``tutorial/01_quick_start_guide.ipynb``) says the pretrained detectors expect
   micrographs downsampled to between 4 and 8 Å per pixel, the low end for small and medium particles and the
   high end for particles of 300 Å or more, and that the particle's diameter should fit in the network's
   receptive field (``model.width``: 91 px for resnet16, 71 px for resnet8); its example downsamples
   EMPIAR-10025 by 8 to about 5.3 Å/px and extracts with the particle radius in downsampled pixels (14).
   ``topaz preprocess -s`` takes an integer; a float ``--scale`` is accepted here (the same function).
   Measured on simulated AdK micrographs (1024², 1.2 Å/px, 82 Å particle diameter, SNR 0.1, two sets of two):
   AUPRC 0.65 (s = 2), 0.82-0.86 (3), 0.93 (3.33), 0.99 (4), 0.99 (4.5), 0.98-0.99 (5), 0.80 (6), 0.20 (8)
   (picks matched one-to-one to the true centres within the particle radius, Topaz's way): the lower end of
   the tutorial's range, rounded up, is the best integer factor there.
2. Score (``topaz.extract.score_images``'s body): ``topaz.model.factory.load_model(name)`` (``resnet16_u64`` is
   the pretrained ``resnet16``, ``topaz extract``'s default model, ``pretrained/detector/resnet16_u64.sav``),
   ``eval()``, ``fill()`` (strides become dilations and the input is zero-padded by ``(width − 1)/2``: one
   log-likelihood-ratio score per downsampled pixel, the map the same shape as the image), the whole
   micrograph at once (``-p 0``, the default).
3. Extract: ``topaz.algorithms.non_maximum_suppression(score, r, threshold)``, as ``topaz extract`` with its
   default ``-t -6`` (keeps scores > −6, p ≥ 0.0025) and ``r = round(radius_A / (apix · s))`` downsampled px
   (``--radius-px`` overrides); its coordinates are ``x = column, y = row`` of the score map (``i % W``,
   ``i // W``), 0-based pixel indices. Picks are sorted by score, descending.
4. Upscale: ``x_orig = x · W / W'``, ``y_orig = y · H / H'`` (Fourier cropping keeps sample 0 at pixel 0 and
   spaces samples ``W/W'`` apart; this is ``s`` when ``s`` divides the size, which is what ``topaz extract -x s``
   multiplies by), rounded to integers as ``topaz extract`` does.

Train mode (positive-unlabelled learning, ``topaz train``): the training micrographs (``--train-micrographs``,
default the inputs) are preprocessed as above and written as ``.mrc`` under ``OUT/preprocessed/``; the labels
(``--labels``: Topaz's text format in original pixels, ``image_name`` = a training micrograph's file stem) are
scaled by ``1/s`` and rounded as ``topaz convert -s`` does; then ``topaz.commands.train.main`` runs with ``topaz
train``'s defaults (``add_arguments().parse_args``): ``resnet8``, 32 units, initialised from the pretrained
``resnet8_u32``, method ``GE-binomial`` (slack 1), label radius 3 px, Adam lr 2e-4, minibatches of 256 with 1/16
labelled positives, 1000 updates per epoch, 10 epochs, no test split; the model after the last epoch picks. ``-n``
(``--num-particles``, the expected particles per micrograph, from which ``pi`` is set) has no default in Topaz and
must be given. Topaz 0.3.20 sets ``pi = n A / (H' W')`` (the mean over the training micrographs) with the disc area
``A`` from ``topaz.stats.pixels_given_radius``, which sums a 3-D grid for 2-D images (``A = 203`` px for radius 3
instead of 29: 7×), and counts the labelled positive fraction with the same ``A``; both are kept as the command
computes them (its log prints ``pi``). Topaz's data augmentation imports ``torchvision.transforms.functional``
(``rotate``, ``hflip``, ``vflip``), which does not load in this venv: when ``import torchvision`` fails, a stand-in
module provides those three on tensors (rotation about the centre by the given angle in degrees, nearest-neighbour
sampling, zero fill, the size kept, as torchvision's tensor ``rotate`` with its defaults; flips of the last and
second-last axes). Training runs on the CPU (``topaz train -d -1``); its wall time, including the preprocessing of
the training micrographs, is reported separately (``topaz_train_s``); the per-epoch models
(``OUT/model_epoch*.sav``) and the training log (``OUT/training.txt``) stay in ``OUT``.

Output: ``OUT/picks.txt``, Topaz's coordinate format (tab separated, header ``image_name x_coord y_coord
score``; ``image_name`` the micrograph's file stem; coordinates in original-micrograph pixels, 0-based,
``x`` the column; ``score`` Topaz's log-likelihood ratio). Timing (wall clock, s, on ``--threads`` torch
threads): import, model load (or training), and per micrograph ``preprocess_s``, ``score_s``, ``extract_s``
(file reading and writing excluded) with their means. The last line printed to stdout is one JSON object.
"""

import argparse
import glob
import json
import math
import os
import sys
import time
import types


def _inputs(paths, what="inputs"):
    """Expand folders to their *.mrc files; check the files exist."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "*.mrc")))
        else:
            files.append(p)
    if not files:
        sys.exit(f"topaz_pick: {what}: no .mrc micrographs")
    for f in files:
        if not os.path.isfile(f):
            sys.exit(f"topaz_pick: {f}: file not found")
        if not f.endswith(".mrc"):
            sys.exit(f"topaz_pick: {f}: not an .mrc micrograph")
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    if len(set(stems)) != len(stems):
        sys.exit(f"topaz_pick: {what}: two micrographs share a file name (Topaz names picks by the stem)")
    return files


def _torchvision_stand_in():
    """Register ``torchvision.transforms.functional`` with ``rotate``, ``hflip``, ``vflip`` on tensors, for
    Topaz's training-data augmentation, when the real torchvision does not import (see the module docstring)."""
    import importlib
    try:
        importlib.import_module("torchvision")
        return False
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    import torch
    import torch.nn.functional as F

    def rotate(img, angle, *args, **kwargs):
        """Rotate ``img (..., H, W)`` by ``angle`` degrees about its centre: nearest sampling, zero fill."""
        shape = img.shape
        x = img.reshape(1, -1, shape[-2], shape[-1])
        h, w = shape[-2], shape[-1]
        a = math.radians(float(angle))
        c, s = math.cos(a), math.sin(a)
        # output -> input sampling in normalised coordinates; h/w terms keep the rotation rigid in pixels
        theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype)[None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        y = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return y.reshape(shape)

    def hflip(img):
        return torch.flip(img, dims=[-1])

    def vflip(img):
        return torch.flip(img, dims=[-2])

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    fn = types.ModuleType("torchvision.transforms.functional")
    fn.rotate, fn.hflip, fn.vflip = rotate, hflip, vflip
    tv.transforms, tr.functional = tr, fn
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn})
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["pretrained", "train"], help="pretrained resnet16 model, or train one (PU)")
    ap.add_argument("inputs", nargs="+", help=".mrc micrographs to pick, or folders of them")
    ap.add_argument("-o", "--output", required=True, help="output folder (picks.txt)")
    ap.add_argument("--apix", type=float, required=True, help="pixel size of the micrographs (Å)")
    ap.add_argument("--radius-A", type=float, required=True, help="particle radius (Å)")
    ap.add_argument("--scale", type=float, default=None, help="downsampling factor s (default: from --target-apix)")
    ap.add_argument("--target-apix", type=float, default=4.0,
                    help="least pixel size aimed at when --scale is not given, s = ceil(target/apix) (default: 4 Å)")
    ap.add_argument("--radius-px", type=int, default=None,
                    help="extraction radius in downsampled px (default: round(radius_A / (apix s)))")
    ap.add_argument("--threshold", type=float, default=None, help="score threshold (default: topaz extract's, -6)")
    ap.add_argument("--affine", action="store_true", help="mean/std normalisation instead of the GMM")
    ap.add_argument("--model", default="resnet16_u64", help="pretrained detector for mode pretrained")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (Topaz's -j)")
    ap.add_argument("--seed", type=int, default=0, help="numpy seed (GMM pixel sample, training)")
    tr = ap.add_argument_group("train mode")
    tr.add_argument("--labels", help="labelled particles, Topaz text format, original pixels")
    tr.add_argument("--train-micrographs", nargs="+", help="micrographs the labels are on (default: the inputs)")
    tr.add_argument("--num-particles", type=float, default=None, help="topaz train -n: expected particles/micrograph")
    tr.add_argument("--num-epochs", type=int, default=None, help="default: topaz train's (10)")
    tr.add_argument("--epoch-size", type=int, default=None, help="updates per epoch; default: topaz train's (1000)")
    args = ap.parse_args(argv)

    files = _inputs(args.inputs)
    if not (args.apix > 0 and args.radius_A > 0):
        sys.exit("topaz_pick: --apix and --radius-A must be > 0")
    s = args.scale if args.scale is not None else max(1, math.ceil(args.target_apix / args.apix - 1e-9))
    if not s >= 1:
        sys.exit("topaz_pick: --scale must be >= 1")
    if args.mode == "train":
        if not args.labels or not os.path.isfile(args.labels):
            sys.exit("topaz_pick: train mode needs --labels FILE (Topaz text format)")
        if args.num_particles is None or not args.num_particles > 0:
            sys.exit("topaz_pick: train mode needs --num-particles N > 0 (topaz train -n has no default)")
    os.makedirs(args.output, exist_ok=True)

    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    t0 = time.perf_counter()
    import numpy as np
    import torch
    import topaz
    from topaz.algorithms import non_maximum_suppression
    from topaz.commands.extract import add_arguments as extract_arguments
    from topaz.commands.normalize import add_arguments as normalize_arguments
    from topaz.model.factory import load_model
    from topaz.stats import normalize
    from topaz.torch import set_num_threads
    from topaz.utils.data.loader import load_image
    from topaz.utils.image import downsample, save_image
    import_s = time.perf_counter() - t0

    set_num_threads(args.threads)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    norm = normalize_arguments().parse_args(["x"])            # topaz preprocess defaults
    ext = extract_arguments().parse_args([])                  # topaz extract defaults
    threshold = ext.threshold if args.threshold is None else args.threshold
    radius = args.radius_px if args.radius_px is not None else max(1, int(round(args.radius_A / (args.apix * s))))
    method = "affine" if args.affine else "gmm"

    def read(path):
        """``(image (H, W) float32, MRC header, extended header)`` read with Topaz's MRC code."""
        loaded = load_image(path, make_image=False)
        image, header, ext_header = loaded if type(loaded) is tuple else (loaded, None, b"")
        image = image[0] if image.ndim == 3 else image
        if image.ndim != 2 or not np.isfinite(image).all():
            sys.exit(f"topaz_pick: {path}: not a finite 2-D micrograph")
        return np.asarray(image, dtype=np.float32), header, ext_header

    def preprocess(image):
        x = downsample(image, s) if s > 1 else image
        x, _ = normalize(x, alpha=norm.alpha, beta=norm.beta, num_iters=norm.niters, method=method,
                         sample=norm.sample, use_cuda=False)
        return x

    # ---- the model: pretrained, or trained on the labels (topaz train) ----
    train_info = {}
    t0 = time.perf_counter()
    if args.mode == "pretrained":
        model = load_model(args.model)
        model_name = args.model
    else:
        import pandas as pd
        stand_in = _torchvision_stand_in()
        from topaz.commands.train import add_arguments as train_arguments, main as train_main
        train_files = _inputs(args.train_micrographs or args.inputs, "--train-micrographs")
        pre_dir = os.path.join(args.output, "preprocessed")
        os.makedirs(pre_dir, exist_ok=True)
        for old in glob.glob(os.path.join(pre_dir, "*.mrc")):
            os.remove(old)
        for path in train_files:
            stem = os.path.splitext(os.path.basename(path))[0]
            image, header, ext_header = read(path)
            x = preprocess(image)
            if header is not None:  # as topaz preprocess: the input's header with the new size
                header = header._replace(ny=x.shape[0], nx=x.shape[1])
            save_image(x, os.path.join(pre_dir, stem + ".mrc"), header=header, extended_header=ext_header or b"")
        labels = pd.read_csv(args.labels, sep="\t")
        if not {"image_name", "x_coord", "y_coord"} <= set(labels.columns):
            sys.exit(f"topaz_pick: {args.labels}: needs columns image_name, x_coord, y_coord")
        stems = {os.path.splitext(os.path.basename(f))[0] for f in train_files}
        unknown = sorted(set(labels.image_name.astype(str)) - stems)
        if unknown:
            sys.exit(f"topaz_pick: {args.labels}: names micrographs not among the training ones: {unknown[:3]}")
        scaled = pd.DataFrame({"image_name": labels.image_name.astype(str),
                               "x_coord": np.round(labels.x_coord.to_numpy(float) / s).astype(int),
                               "y_coord": np.round(labels.y_coord.to_numpy(float) / s).astype(int)})
        targets = os.path.join(args.output, "train_targets.txt")
        scaled.to_csv(targets, sep="\t", index=False)
        targv = ["-d", "-1", "-j", str(args.threads), "--train-images", pre_dir, "--train-targets", targets,
                 "-n", str(args.num_particles), "--save-prefix", os.path.join(args.output, "model"),
                 "-o", os.path.join(args.output, "training.txt")]
        if args.num_epochs is not None:
            targv += ["--num-epochs", str(args.num_epochs)]
        if args.epoch_size is not None:
            targv += ["--epoch-size", str(args.epoch_size)]
        targs = train_arguments().parse_args(targv)
        model = train_main(targs)
        model_name = f"{targs.model}_u{targs.units} trained (topaz train, PU {targs.method})"
        train_info = {"n_labels": int(len(scaled)), "n_train_micrographs": len(train_files),
                      "num_particles": args.num_particles, "num_epochs": targs.num_epochs,
                      "epoch_size": targs.epoch_size, "minibatch_size": targs.minibatch_size,
                      "train_radius_px": targs.radius, "torchvision_stand_in": stand_in}
    model.eval()
    model.fill()
    model_s = time.perf_counter() - t0
    torch.set_num_threads(args.threads)  # training may have reset it

    # ---- per micrograph: preprocess, score, extract ----
    rows, timings, n_picks = [], {"preprocess_s": [], "score_s": [], "extract_s": []}, []
    for path in files:
        name = os.path.splitext(os.path.basename(path))[0]
        image = read(path)[0]
        H, W = image.shape
        t = time.perf_counter()
        x = preprocess(image)
        timings["preprocess_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            score = model(torch.from_numpy(np.ascontiguousarray(x)).float()[None, None])[0, 0].numpy()
        timings["score_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        sc, xy = non_maximum_suppression(score, radius, threshold=threshold)
        timings["extract_s"].append(time.perf_counter() - t)
        h, w = x.shape
        cx = np.round(xy[:, 0] * (W / w)).astype(int)
        cy = np.round(xy[:, 1] * (H / h)).astype(int)
        rows += [f"{name}\t{a}\t{b}\t{c}" for a, b, c in zip(cx, cy, sc)]
        n_picks.append(int(len(sc)))

    out = os.path.join(args.output, "picks.txt")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("image_name\tx_coord\ty_coord\tscore\n" + "".join(r + "\n" for r in rows))
    os.replace(tmp, out)

    per_mic = [sum(v) for v in zip(*timings.values())]
    result = {"peer": "topaz-pick", "mode": args.mode, "model": model_name,
              "topaz_version": getattr(topaz, "__version__", "?"), "torch_version": torch.__version__,
              "threads": torch.get_num_threads(), "apix_A": args.apix, "radius_A": args.radius_A,
              "downsample_factor": s, "apix_downsampled_A": args.apix * s, "extract_radius_px": radius,
              "threshold": threshold, "normalisation": method, "receptive_field_px": int(model.width),
              "n_micrographs": len(files), "n_picks": n_picks,
              "topaz_import_s": round(import_s, 3),
              ("topaz_model_load_s" if args.mode == "pretrained" else "topaz_train_s"): round(model_s, 3),
              **{k: [round(v, 3) for v in vs] for k, vs in timings.items()},
              **{"mean_" + k: round(sum(vs) / len(vs), 3) for k, vs in timings.items()},
              "topaz_s_per_micrograph": round(sum(per_mic) / len(per_mic), 3), "train": train_info,
              "output": out}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
