"""``denoise``: a particle stack or micrographs through one denoising method, written as one run folder.

Inputs (never changed):

- a RELION particle ``.star`` (images, pixel size and per-particle CTF), or an ``.mrcs`` stack (no CTF);
- one or more micrographs ``.mrc`` (any size; one section each). Micrographs of one size are denoised
  together (a learned method trains one network on all of them); other sizes form their own groups.
  ``odd``: for the noise2noise mode of ``unet``, the second halves (e.g. odd-frame sums) of the same
  micrographs, in the same order as the inputs (the inputs are then the first halves); the output is the
  denoised full exposure, the mean of the two halves.

The folder holds (besides ``config.yaml``, ``versions.txt``, ``run.log``, ``metrics.json``):

- particles: ``denoised.mrcs`` (N, D, D) float32, and for a STAR input ``particles.star``: every row and
  column of the input with ``rlnImageName`` pointing at ``denoised.mrcs``. For methods that divide the CTF
  out (``wiener``, ``cwf``: :data:`cryoscape.methods.denoise.METHODS` ``removes_ctf``) the defocus and
  phase-shift columns are dropped, so no later step applies the CTF a second time;
- micrographs: ``denoised/<input name>.mrc`` for every input;
- ``comparison.png``: input, denoised and (with ``truth``) the clean image, side by side;
- ``unet``: ``model.pt`` (``model_<k>.pt`` per micrograph size; reusable with ``model``), ``history.json``
  (loss per epoch) and, while training, ``checkpoint_<k>.pt`` in the hidden ``.NAME.part`` folder: an
  interrupted run (also by kill -9) resumes from its last epoch when the same command is run again. With
  ``model`` the network is only applied (no training).

``truth``: the clean images (one ``.mrcs`` for a stack, one ``.mrc`` per micrograph) — the CTF-free ones
for a method that removes the CTF — adds MSE, PSNR (per image, averaged), SSIM, Pearson correlation and,
for square images, the FRC-0.5 resolution to the metrics (:mod:`cryoscape.analysis.images`).

Every check that can fail on the input runs before the folder is made: the method name and its options,
the files (readable, finite, non-empty, consistent sizes), a stack-only method on micrographs, the truth's
shape.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..io.errors import InputError
from .folder import RunFolder

__all__ = ["DenoiseInput", "load_denoise_input", "denoise_run"]

STACK_SUFFIXES = (".star", ".mrcs")
MICROGRAPH_SUFFIXES = (".mrc",)
CTF_ONLY_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift", "rlnCtfBfactor")


@dataclass
class DenoiseInput:
    """What was read: ``kind`` ("particles" | "micrographs"), ``files``, ``groups`` (lists of indices into
    ``files`` — one group of all particles for a stack, one per micrograph size), ``images`` per group
    ``(n, H, W)`` float32, ``halves`` per group ``(n, 2, H, W)`` or None, ``ctf`` (particles from a STAR) or
    None, ``apix`` (Å; 0.0 when no file states one), ``table`` (the STAR's :class:`ParticleTable`) and
    ``notes``."""

    kind: str
    files: list
    groups: list
    images: list
    halves: list | None = None
    ctf: object = None
    apix: float = 0.0
    table: object = None
    notes: list = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return sum(int(x.shape[0]) for x in self.images)


def _read_stack_input(path: Path, apix, datadir) -> DenoiseInput:
    from ..data.particles import load_particles
    from ..io.mrc import read_stack

    if path.suffix.lower() == ".star":
        from ..io.star import read_star
        data = load_particles(path, datadir=datadir, apix=apix, need_poses=False, check_finite=True)
        table = read_star(path, apix=apix)
        if len(data) == 0:
            raise InputError(path, "has no particles")
        images = torch.from_numpy(data.images(slice(0, len(data))))
        return DenoiseInput("particles", [path], [[0]], [images], ctf=data.ctf, apix=float(data.apix),
                            table=table, notes=list(data.notes))
    stack, file_apix = read_stack(path)
    if stack.shape[0] == 0:
        raise InputError(path, "is an empty stack")
    images = torch.from_numpy(np.array(stack, dtype=np.float32))
    bad = ~torch.isfinite(images).flatten(1).all(1)
    if bad.any():
        raise InputError(path, f"image {int(torch.nonzero(bad)[0]) + 1} has NaN or infinite pixels")
    return DenoiseInput("particles", [path], [[0]], [images], apix=float(apix or file_apix),
                        notes=["an .mrcs stack carries no CTF: methods run without one"])


def _read_micrographs(paths: list[Path], odd: list[Path] | None, apix) -> DenoiseInput:
    from ..io.mrc import read_micrograph

    if odd and len(odd) != len(paths):
        raise InputError("--odd", f"{len(odd)} second halves for {len(paths)} micrographs; give one per input")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise InputError("inputs", "two micrographs share a file name; their outputs would collide")
    mics, halves, apixes = [], [], []
    for i, p in enumerate(paths):
        img, a = read_micrograph(p)
        mics.append(img)
        apixes.append(a)
        if odd:
            o, _ = read_micrograph(odd[i])
            if o.shape != img.shape:
                raise InputError(odd[i], f"is {o.shape[0]}×{o.shape[1]} but its first half {p.name} is "
                                         f"{img.shape[0]}×{img.shape[1]}")
            halves.append(o)
    by_shape: dict = {}
    for i, m in enumerate(mics):
        by_shape.setdefault(m.shape, []).append(i)
    groups = list(by_shape.values())
    if odd:
        images = [torch.from_numpy(np.stack([(mics[i] + halves[i]) / 2 for i in g])) for g in groups]
        pairs = [torch.from_numpy(np.stack([np.stack([mics[i], halves[i]]) for i in g])) for g in groups]
    else:
        images = [torch.from_numpy(np.stack([mics[i] for i in g])) for g in groups]
        pairs = None
    notes = [] if len(groups) == 1 else [f"{len(groups)} micrograph sizes: each size is denoised on its own"]
    return DenoiseInput("micrographs", list(paths), groups, images, halves=pairs,
                        apix=float(apix or apixes[0]), notes=notes)


def load_denoise_input(inputs, apix: float | None = None, datadir=None, odd=None) -> DenoiseInput:
    """Read and check the inputs of ``denoise`` (module docstring); :class:`InputError` naming the file and
    the problem for anything that cannot be denoised."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError("inputs", "give a particle .star / .mrcs stack or one or more .mrc micrographs")
    if apix is not None and not (apix > 0 and np.isfinite(apix)):
        raise InputError("--apix", f"must be a positive number, got {apix}")
    suffixes = {p.suffix.lower() for p in paths}
    for p in paths:
        if p.suffix.lower() not in STACK_SUFFIXES + MICROGRAPH_SUFFIXES:
            raise InputError(p, f"unknown file type {p.suffix or '(no suffix)'!r}: expected a particle .star, "
                                "an .mrcs stack or .mrc micrographs")
    if suffixes & set(STACK_SUFFIXES):
        if len(paths) != 1:
            raise InputError("inputs", "give one particle .star or .mrcs stack at a time")
        if odd:
            raise InputError("--odd", "frame halves are for micrographs, not particle stacks")
        return _read_stack_input(paths[0], apix, datadir)
    return _read_micrographs(paths, [Path(p) for p in odd] if odd else None, apix)


def _read_truth(truth, inp: DenoiseInput) -> list | None:
    """The clean images in the layout of ``inp.images`` (one tensor per group), or None."""
    from ..io.mrc import read_micrograph, read_stack

    if not truth:
        return None
    truth = [Path(t) for t in truth]
    if inp.kind == "particles":
        if len(truth) != 1:
            raise InputError("--truth", "give one clean .mrcs stack for a particle stack")
        clean, _ = read_stack(truth[0])
        clean = torch.from_numpy(np.array(clean, dtype=np.float32))
        if clean.shape != inp.images[0].shape:
            raise InputError(truth[0], f"holds {tuple(clean.shape)} images, the input {tuple(inp.images[0].shape)}")
        return [clean]
    if len(truth) != len(inp.files):
        raise InputError("--truth", f"{len(truth)} clean micrographs for {len(inp.files)} inputs")
    out = []
    for g, imgs in zip(inp.groups, inp.images):
        clean = [read_micrograph(truth[i])[0] for i in g]
        for i, c in zip(g, clean):
            if c.shape != tuple(imgs.shape[1:]):
                raise InputError(truth[i], f"is {c.shape}, its micrograph {tuple(imgs.shape[1:])}")
        out.append(torch.from_numpy(np.stack(clean)))
    return out


def _write_star(table, path: Path, n: int, drop_ctf: bool) -> None:
    from ..io.star import write_star

    parts = table.particles.copy()
    parts["rlnImageName"] = [f"{i + 1:06d}@denoised.mrcs" for i in range(n)]
    if drop_ctf:
        parts = parts.drop(columns=[c for c in CTF_ONLY_COLUMNS if c in parts.columns])
    write_star(path, parts, table.optics)


def auto_method(inputs) -> str:
    """The default method for these inputs: ``cwf`` for a particle stack, ``unet`` for micrographs."""
    stack = any(Path(p).suffix.lower() in STACK_SUFFIXES for p in inputs)
    return "cwf" if stack else "unet"


def _check_unet_size(cfg, inp: DenoiseInput) -> None:
    """Images too small for the U-Net's training window or tiles: :class:`InputError` before anything is
    written. Neighbor2Neighbor (n2s) trains on half-size sub-images, so it needs twice the network's
    ``2^depth`` pixels; n2n needs ``2^depth``."""
    mode = cfg.resolved_mode(inp.halves is not None)
    need = 2 ** cfg.depth * (2 if mode == "n2s" else 1)
    for g, images in zip(inp.groups, inp.images):
        H, W = images.shape[1:]
        if H < need or W < need:
            raise InputError(inp.files[g[0]], f"{H}×{W} pixels is smaller than the U-Net's minimum of "
                                              f"{need}×{need} (depth {cfg.depth}, mode {mode})")


def _run_unet(run, inp: DenoiseInput, cfg, model_path, show: bool) -> list:
    """Train one U-Net per image group (or load ``model_path``), save it, apply it; the denoised groups."""
    from ..methods.denoise.learned import apply_unet, fit_unet, load_unet, save_unet
    from ..utils.progress import progress_bar

    model = None
    if model_path is not None:
        model, trained = load_unet(model_path, device=cfg.device)
        run.log.info("applying %s (trained in mode %s, %d channels, depth %d)", model_path, trained.mode,
                     trained.channels, trained.depth)
    outs, history = [], {}
    for k, images in enumerate(inp.images):
        if model_path is None:
            windows = cfg.epochs * cfg.steps_per_epoch * cfg.batch_size
            with progress_bar(windows, "training", show) as bar:
                model, hist = fit_unet(images, cfg, pairs=None if inp.halves is None else inp.halves[k],
                                       checkpoint=run.file(f"checkpoint_{k}.pt"), progress=bar)
            name = "model.pt" if len(inp.images) == 1 else f"model_{k}.pt"
            save_unet(model, cfg, run.file(name))
            history[name] = hist
            run.log.info("trained %s: loss %.4g after %d epochs", name, hist[-1]["loss"], hist[-1]["epoch"])
        with progress_bar(int(images.shape[0]), "denoising", show) as bar:
            outs.append(apply_unet(model, images, tile=cfg.tile, overlap=cfg.overlap, precision=cfg.precision,
                                   progress=bar))
    if history:
        run.file("history.json").write_text(json.dumps(history, indent=1))
        run.metrics["training_wall_s"] = round(sum(h["wall_s"] for hs in history.values() for h in hs), 3)
        run.metrics["final_loss"] = float(np.mean([hs[-1]["loss"] for hs in history.values()]))
    for k in range(len(inp.images)):
        run.file(f"checkpoint_{k}.pt").unlink(missing_ok=True)  # the model files hold what is needed
    return outs


def denoise_run(inputs, out: str | Path, *, method: str = "auto", options: dict | None = None,
                apix: float | None = None, datadir=None, odd=None, truth=None, model=None,
                overwrite: bool = False, threads: int | None = None, progress: bool = True, echo=print) -> dict:
    """``cryoscape denoise``: check the inputs, denoise every group with ``method`` (options: the method's
    config fields, ``None`` values ignored; ``auto``: :func:`auto_method`) and write the run folder ``out`` (module docstring). Returns the
    ``metrics.json`` payload."""
    from ..analysis.images import frc_resolution_A, image_scores
    from ..io.atomic import check_can_write
    from ..io.mrc import write_micrograph, write_stack
    from ..methods.denoise import get
    from ..report.denoise import comparison_panel
    from ..utils import devices
    from ..utils.progress import progress_bar

    out = Path(out)
    method = auto_method(inputs) if method == "auto" else method
    entry = get(method)
    cfg = entry.make_config(**(options or {}))
    check_can_write(out, overwrite)
    if hasattr(cfg, "device"):
        cfg.device = str(devices.resolve_device(cfg.device))
    inp = load_denoise_input(inputs, apix, datadir, odd)
    if entry.stack_only and inp.kind == "micrographs":
        raise InputError("--method", f"{method} needs a particle stack (many images of one particle); for "
                                     "micrographs use unet, wiener or a classical filter")
    if entry.stack_only and inp.images[0].shape[1] != inp.images[0].shape[2]:
        raise InputError(inp.files[0], f"{method} needs square images")
    if inp.halves is not None and method != "unet":
        raise InputError("--odd", "frame halves are used by --method unet only")
    if model is not None and method != "unet":
        raise InputError("--model", "a trained model is used by --method unet only")
    if method == "unet":
        if model is not None and not Path(model).is_file():
            raise InputError(model, "file not found")
        if model is None:
            _check_unet_size(cfg, inp)
    clean = _read_truth(truth, inp)
    if inp.ctf is not None and inp.apix <= 0:
        raise InputError(inp.files[0], "no pixel size: give --apix")
    n_threads = devices.set_threads(threads)
    for note in inp.notes:
        echo(f"note: {note}")
    config = {"command": "denoise", "inputs": [str(p) for p in inp.files], "odd": odd, "truth": truth,
              "model": model, "method": method, "apix": inp.apix, "threads": n_threads, **asdict(cfg)}
    inputs_doc = {"files": [str(p) for p in inp.files], "kind": inp.kind, "n_images": inp.n_images,
                  "apix_A": inp.apix, "ctf": inp.ctf is not None, "method": method,
                  "removes_ctf": entry.removes_ctf}
    resume = method == "unet" and model is None  # training checkpoints: the same command continues
    with RunFolder(out, "denoise", config, overwrite=overwrite, resume=resume, inputs=inputs_doc) as run:
        run.log.info("%s: %d %s, %s, %d thread(s)", method, inp.n_images, inp.kind, entry.summary, n_threads)
        for note in inp.notes:
            run.log.info("note: %s", note)
        results, t0 = [], time.perf_counter()
        if method == "unet":
            results = _run_unet(run, inp, cfg, model, progress)
        else:
            with progress_bar(inp.n_images, f"denoise ({method})", progress) as bar:
                for images in inp.images:
                    results.append(entry(images, inp.ctf, inp.apix or 1.0, cfg, bar))
        for out_k, images in zip(results, inp.images):
            if out_k.shape != images.shape or not torch.isfinite(out_k).all():
                raise RuntimeError(f"{method} returned {tuple(out_k.shape)} images with non-finite values "
                                   f"or the wrong shape for {tuple(images.shape)}")
        wall = time.perf_counter() - t0
        if inp.kind == "particles":
            write_stack(run.file("denoised.mrcs"), results[0].numpy(), inp.apix)
            if inp.table is not None:
                _write_star(inp.table, run.file("particles.star"), inp.n_images, entry.removes_ctf)
                if entry.removes_ctf:
                    run.log.info("the CTF was divided out: particles.star has no defocus columns")
        else:
            for g, res in zip(inp.groups, results):
                for i, img in zip(g, res):
                    write_micrograph(run.file(Path("denoised") / inp.files[i].name), img.numpy(), inp.apix)
        rows = {"input": inp.images[0], method: results[0]}
        if clean is not None:
            rows["truth"] = clean[0]
        comparison_panel(run.file("comparison.png"), rows, title=f"{method}: {entry.summary}")
        run.metrics.update({"n_images": inp.n_images,
                            "denoise_wall_s": round(wall, 3), "images_per_s": inp.n_images / max(wall, 1e-9)})
        if clean is not None:
            scores = [image_scores(r, c) for r, c in zip(results, clean)]
            weights = [int(r.shape[0]) for r in results]
            for key in scores[0]:
                run.metrics[f"{key}_vs_truth" if key != "psnr_dB" else "psnr_vs_truth_dB"] = float(
                    np.average([s[key] for s in scores], weights=weights))
            before = [image_scores(x, c, with_ssim=False) for x, c in zip(inp.images, clean)]
            run.metrics["input_psnr_vs_truth_dB"] = float(np.average([s["psnr_dB"] for s in before], weights=weights))
            if inp.kind == "particles" and results[0].shape[1] == results[0].shape[2] and inp.apix > 0:
                run.metrics["frc0.5_resolution_vs_truth_A"] = frc_resolution_A(results[0], clean[0], inp.apix)
    return run.summary
