#!/usr/bin/env python
"""Peer benchmark: Topaz-Denoise's pretrained 2-D denoiser (Bepler et al. 2020, Nat. Commun. 11:5208) on micrographs.

Standalone: run with the Topaz venv's python, never imports cryoscape.

    .venv-peers/topaz/bin/python benchmarks/peers/topaz_denoise.py mic_000.mrc mic_001.mrc -o OUT [--threads 2]
    .venv-peers/topaz/bin/python benchmarks/peers/topaz_denoise.py micrographs/ -o OUT        (every *.mrc there)
    .venv-peers/topaz/bin/python benchmarks/peers/topaz_denoise.py stack.mrcs -o OUT          (one (N, H, W) stack)

The venv (``.venv-peers/topaz``, ignored by git): ``python3 -m venv .venv-peers/topaz``; ``pip install
torch==2.13.0``; ``pip install -c constraints.txt topaz-em`` (constraints: ``torch==2.13.0``; topaz-em 0.3.20);
``pip uninstall -y torchvision``; ``pip install "setuptools<81"``. The last is needed because Topaz 0.3.20 loads
its pretrained weights with ``importlib.resources.files("topaz.denoising.models")``, which fails (a module, not
a package), and then falls back to ``pkg_resources``, which setuptools ≥ 81 no longer ships.

Why not ``topaz denoise``: Topaz's command line (``topaz.main``) imports every subcommand, and the training ones
import torchvision, which the Topaz venv does without (it does not load beside torch 2.13 on this CPU). This
script calls the same functions ``topaz denoise`` calls (``topaz.commands.denoise.main``): ``topaz.denoise.
Denoise(name)`` (``load_model``: ``unet`` is the shipped ``pretrained/denoise/unet_L2_v0.2.2.sav``) and
``topaz.denoise.denoise_image``, with every setting taken from the command's own argument parser defaults
(``topaz.commands.denoise.add_arguments().parse_args([])``): model ``unet``, no lowpass (1), no Gaussian
filters, no deconvolution, pixel cutoff 0, patch size 1024 with padding 500 (a 1024² micrograph is denoised in
one piece), no normalisation of the output (``--format mrc``: the input's mean and std are restored). Only the
device is forced to the CPU (``-d -1``) and the thread count set (``-j``). Files are read and written with
Topaz's own MRC code, as the command does.

Output: OUT/<name>.mrc per input micrograph (or OUT/<name>.mrcs for a stack), same shape, float32.
Timing (wall clock, s): ``topaz_import_s`` (importing topaz), ``topaz_model_load_s`` (building the network and
loading the pretrained weights), ``topaz_denoise_s`` (per micrograph: ``denoise_image`` only, file I/O
excluded), and their mean ``topaz_s_per_micrograph``. The last line printed to stdout is one JSON object.
"""

import argparse
import glob
import json
import os
import sys
import time


def _inputs(paths):
    """Expand folders to their *.mrc files; return ``(list of files, is_stack)``."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "*.mrc")))
        else:
            files.append(p)
    if not files:
        sys.exit("topaz_denoise: no input micrographs")
    stacks = [f for f in files if f.endswith(".mrcs")]
    if stacks and len(files) > 1:
        sys.exit("topaz_denoise: give one .mrcs stack or any number of .mrc micrographs, not both")
    for f in files:
        if not os.path.isfile(f):
            sys.exit(f"topaz_denoise: {f}: file not found")
    return files, bool(stacks)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help=".mrc micrographs, folders of them, or one .mrcs stack")
    ap.add_argument("-o", "--output", required=True, help="output folder")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (Topaz's -j)")
    ap.add_argument("--model", default=None, help="pretrained model name (default: Topaz's default, unet)")
    args = ap.parse_args(argv)
    files, is_stack = _inputs(args.inputs)
    os.makedirs(args.output, exist_ok=True)

    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # Topaz's weight loader's fallback
    t0 = time.perf_counter()
    import numpy as np
    import torch
    import topaz
    from topaz import mrc as topaz_mrc
    from topaz.commands.denoise import add_arguments
    from topaz.denoise import Denoise, denoise_image
    from topaz.torch import set_num_threads
    from topaz.utils.data.loader import load_image
    from topaz.utils.image import save_image
    import_s = time.perf_counter() - t0

    d = add_arguments().parse_args(["-d", "-1", "-j", str(args.threads)])  # Topaz's own defaults
    set_num_threads(d.num_threads)
    name = args.model or d.model[0]
    t0 = time.perf_counter()
    model = Denoise(name, use_cuda=False)
    load_s = time.perf_counter() - t0
    settings = {"model": name, "lowpass": d.lowpass, "gaussian": d.gaussian, "inv_gaussian": d.inv_gaussian,
                "deconvolve": d.deconvolve, "deconv_patch": d.deconv_patch, "pixel_cutoff": d.pixel_cutoff,
                "patch_size": d.patch_size, "patch_padding": d.patch_padding, "normalize": d.normalize}

    def run(mic):
        mic = np.asarray(mic, dtype=np.float32)
        t = time.perf_counter()
        out = denoise_image(mic, [model], lowpass=d.lowpass, cutoff=d.pixel_cutoff, gaus=None, inv_gaus=None,
                            deconvolve=d.deconvolve, deconv_patch=d.deconv_patch, patch_size=d.patch_size,
                            padding=d.patch_padding, normalize=d.normalize, use_cuda=False)
        return np.asarray(out, dtype=np.float32), time.perf_counter() - t

    times, outputs, shapes = [], [], []
    if is_stack:
        with open(files[0], "rb") as f:
            stack, header, ext = topaz_mrc.parse(f.read())
        stack = stack if stack.ndim == 3 else stack[None]
        den = np.zeros(stack.shape, dtype=np.float32)
        for i in range(len(stack)):
            den[i], s = run(stack[i])
            times.append(s)
        out = os.path.join(args.output, os.path.basename(files[0]))
        with open(out, "wb") as f:
            topaz_mrc.write(f, den, header=header, extended_header=ext)
        outputs.append(out)
        shapes = [list(stack.shape[1:])] * len(stack)
    else:
        for path in files:
            image = load_image(path, make_image=False)
            image, header, ext = image if type(image) is tuple else (image, None, None)
            image = image[0] if image.ndim == 3 else image
            den, s = run(image)
            times.append(s)
            out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".mrc")
            save_image(den, out, header=header, extended_header=ext)
            outputs.append(out)
            shapes.append(list(image.shape))

    result = {"peer": "topaz-denoise", "topaz_version": getattr(topaz, "__version__", "?"),
              "torch_version": torch.__version__, "threads": torch.get_num_threads(), "settings": settings,
              "topaz_import_s": round(import_s, 3), "topaz_model_load_s": round(load_s, 3),
              "topaz_denoise_s": [round(t, 3) for t in times],
              "topaz_s_per_micrograph": round(sum(times) / len(times), 3), "shapes_px": shapes,
              "outputs": outputs}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
