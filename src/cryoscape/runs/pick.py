"""``pick``: particles picked on micrographs by one picker, written as one run folder.

Inputs (never changed): micrographs ``.mrc`` (any size; the pixel size from their headers or ``apix``), and
by picker:

- ``blob``: nothing more (the particle radius sets its scale);
- ``template``: ``template``, a map ``.mrc``, an atomic model (PDB/mmCIF) or class averages ``.mrcs``, and
  ``ctf_star``, the micrographs' CTFs (a RELION micrographs STAR, e.g. ``micrographs_ctf.star`` of
  ``simulate-micrographs``), so that each template carries its micrograph's CTF;
- ``learned``: ``labels``, a coordinate file (any format of :mod:`cryoscape.io.coords`) with a few
  particles on some micrographs — the picker is trained on them (positive-unlabelled) and then picks every
  micrograph — or ``model``, a ``model.pt`` of an earlier run, applied as it is.

The folder holds (besides ``config.yaml``, ``versions.txt``, ``run.log``, ``metrics.json``):

- ``picks.star``: every pick (``rlnMicrographName`` as given on the command line, ``rlnCoordinateX/Y``,
  ``rlnAutopickFigureOfMerit``), best first within each micrograph; ``cryoscape extract`` reads it, and
  so does RELION (as a particles/coordinates STAR);
- with ``formats``: the same picks as per-micrograph RELION STAR files (``coords/<name>.star``), EMAN
  ``.box`` (``coords/<name>.box``), crYOLO ``.cbox`` (``coords/<name>.cbox``) or Topaz text
  (``picks_topaz.txt``);
- ``overlay/<name>.png`` for the first ``overlays`` micrographs: picks as circles (and the truth as
  crosses when given);
- ``learned``: ``model.pt`` (reusable with ``model``) and ``history.json``; while training, per-round
  checkpoints in the hidden ``.NAME.part`` folder: an interrupted run (also by kill -9) resumes from its
  last epoch when the same command is run again.

``truth``: the true particle centres (a coordinate file; ``truth/particles.star`` of
``simulate-micrographs``) add precision, recall, F1, AUPRC, precision at 90 % recall and the share of
duplicate picks to the metrics (:func:`cryoscape.analysis.picking.picking_scores`, matching within
``match_radius`` px, by default :data:`MATCH_RADIUS_FRACTION` of the particle radius).

Under ``torchrun`` every rank reads the inputs and trains the learned picker (DistributedDataParallel, each
rank a share of every batch); the micrographs are picked in parallel (rank ``r`` takes ``r, r + world, …``)
and rank 0 gathers the picks and writes the folder.

Every check that can fail on the input runs before the folder is made: the picker and its options, the
micrographs (readable, finite, one pixel size, larger than the picker's window), the coordinate files
(readable, naming known micrographs, inside them), the CTF table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..io.errors import InputError
from .folder import RunFolder

__all__ = ["pick_run", "read_micrograph_set", "micrograph_index", "MATCH_RADIUS_FRACTION", "FORMATS"]

MATCH_RADIUS_FRACTION = 0.5  # a pick matches a true particle within half the particle radius (Topaz's usage)
FORMATS = ("relion", "eman", "cryolo", "topaz")


def micrograph_index(name: str, files: list[Path]) -> int | None:
    """The index in ``files`` of the micrograph a coordinate file calls ``name``: the same path, else the
    same file name, else the same stem (RELION writes project-relative paths, Topaz bare stems)."""
    for i, f in enumerate(files):
        if str(f) == name:
            return i
    base = Path(name).name
    for i, f in enumerate(files):
        if f.name == base:
            return i
    stem = Path(base).stem
    hits = [i for i, f in enumerate(files) if f.stem == stem]
    return hits[0] if len(hits) == 1 else None


def read_micrograph_set(files: list[Path], apix: float | None) -> tuple[list[np.ndarray], float]:
    """Read every micrograph (:func:`cryoscape.io.mrc.read_micrograph`), check it is finite and that they share
    one pixel size (``apix`` overrides the headers) → ``(images, apix)``."""
    from ..io.mrc import read_micrograph

    if not files:
        raise InputError("micrographs", "no micrograph given")
    images, sizes = [], []
    for f in files:
        if Path(f).suffix.lower() != ".mrc":
            raise InputError(f, "expected a micrograph .mrc")
        img, a = read_micrograph(f)
        img = np.asarray(img, dtype=np.float32)
        if not np.isfinite(img).all():
            raise InputError(f, "has NaN or infinite pixels")
        images.append(img)
        sizes.append(float(a))
    if apix is None:
        if any(a <= 0 for a in sizes):
            raise InputError(files[sizes.index(min(sizes))], "the header has no pixel size; give --apix")
        if max(sizes) - min(sizes) > 1e-3 * max(sizes):
            i = int(np.argmax(np.abs(np.array(sizes) - sizes[0])))
            raise InputError(files[i], f"pixel size {sizes[i]} Å differs from {files[0]}'s {sizes[0]} Å")
        apix = sizes[0]
    elif not apix > 0:
        raise InputError("--apix", f"must be > 0, got {apix}")
    return images, float(apix)


def _coordinates_per_micrograph(path: Path, files: list[Path], images: list[np.ndarray]) -> list[np.ndarray]:
    """A coordinate file → ``(n_m, 2)`` ``(x, y)`` per micrograph; :class:`InputError` for a micrograph it
    names that is not among ``files`` or a centre outside its micrograph."""
    from ..io.coords import read_coordinates

    coords = read_coordinates(path)
    out = [np.zeros((0, 2)) for _ in files]
    names = np.asarray(coords.micrograph).astype(str)
    for name in np.unique(names):
        i = micrograph_index(str(name), files)
        if i is None:
            raise InputError(path, f"names micrograph {str(name)!r}, which is not among the inputs")
        xy = np.asarray(coords.xy, dtype=np.float64)[names == name]
        H, W = images[i].shape
        bad = (xy[:, 0] < -0.5) | (xy[:, 0] > W - 0.5) | (xy[:, 1] < -0.5) | (xy[:, 1] > H - 0.5)
        if bad.any():
            x, y = xy[np.argmax(bad)]
            raise InputError(path, f"coordinate ({x:.1f}, {y:.1f}) lies outside micrograph {name} ({W} × {H} px)")
        out[i] = xy
    return out


def _ctf_per_micrograph(path: Path, files: list[Path]):
    """A RELION micrographs STAR → a list of one-entry CTFParams, in the order of ``files``."""
    from ..data.micrographs import read_micrographs_ctf

    names, ctf, _ = read_micrographs_ctf(path)
    out = []
    for f in files:
        hits = [j for j, n in enumerate(names) if micrograph_index(str(n), [f]) == 0]
        if not hits:
            raise InputError(path, f"has no CTF for micrograph {f.name}")
        out.append(ctf.subset([hits[0]]))
    return out


def _method_config(method: str, options: dict, radius_A: float | None, model_cfg=None):
    from ..methods.pick import get

    _, config_cls = get(method).load()
    opts = dict(options)
    if model_cfg is not None:  # an applied learned model keeps the scale and architecture it was trained with
        from dataclasses import asdict
        base = asdict(model_cfg)
        base.update(opts)
        opts = base
    elif radius_A is not None:
        key = "radius_A" if "radius_A" in {f for f in config_cls.__dataclass_fields__} else "diameter_A"
        opts[key] = radius_A if key == "radius_A" else 2 * radius_A
    try:
        cfg = config_cls(**opts)
    except TypeError as exc:
        raise InputError("--param", str(exc)) from None
    cfg.check()
    return cfg


def _radius_A(cfg) -> float:
    r = getattr(cfg, "radius_A", None)
    return float(r() if callable(r) else r)


def pick_run(micrographs: list[Path], out: Path, *, method: str = "learned", options: dict | None = None,
             radius_A: float | None = None, apix: float | None = None, ctf_star: Path | None = None,
             labels: Path | None = None, model: Path | None = None, template: Path | None = None,
             truth: Path | None = None, formats: tuple = (), overlays: int = 4, match_radius: float | None = None,
             train_micrographs: int = 20, overwrite: bool = False, threads: int | None = None,
             progress: bool = True, echo=print) -> dict:
    """Pick particles on ``micrographs`` into the run folder ``out`` (module docstring). Returns the
    ``metrics.json`` payload (None on the ranks other than 0 under ``torchrun``)."""
    from ..methods.pick import get
    from ..utils import devices

    files = [Path(f) for f in micrographs]
    entry = get(method)
    for fmt in formats:
        if fmt not in FORMATS:
            raise InputError("--format", f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if radius_A is not None and not (radius_A > 0 and np.isfinite(radius_A)):
        raise InputError("--radius", f"must be > 0 Å, got {radius_A}")
    images, apix = read_micrograph_set(files, apix)
    model_cfg = loaded = None
    if method == "learned":
        if (labels is None) == (model is None):
            raise InputError("--labels/--model", "the learned picker needs either --labels (to train) or --model "
                                                 "(a trained model.pt), not both")
        if model is not None:
            from ..methods.pick.learned import load_picker
            loaded = load_picker(model)
            model_cfg = loaded[1]
    elif radius_A is None:
        raise InputError("--radius", f"the {method} picker needs the particle radius in Å")
    elif labels is not None or model is not None:
        raise InputError("--labels/--model", f"only the learned picker takes labels or a model, not {method}")
    if model_cfg is None and radius_A is None:
        raise InputError("--radius", "the learned picker needs the particle radius in Å to train")
    cfg = _method_config(method, options or {}, radius_A, model_cfg)
    radius_px = _radius_A(cfg) / apix
    _check_sizes(files, images, method, cfg, apix, radius_px)
    label_xy = _coordinates_per_micrograph(labels, files, images) if labels is not None else None
    truth_xy = _coordinates_per_micrograph(truth, files, images) if truth is not None else None
    ctfs = _ctf_per_micrograph(ctf_star, files) if ctf_star is not None else None
    if method == "template":
        if template is None:
            raise InputError("--template", "the template picker needs a map, model or class averages")
        if ctfs is None:
            raise InputError("--ctf", "the template picker needs the micrographs' CTFs (a micrographs STAR)")
    if method == "learned" and label_xy is not None and not any(len(a) for a in label_xy):
        raise InputError(labels, "holds no particle")
    templates = _load_templates(template, apix, cfg) if method == "template" else None
    if threads is not None:
        devices.set_threads(threads)

    config = {"micrographs": [str(f) for f in files], "method": method, "options": options or {},
              "radius_A": radius_A, "apix": apix, "ctf": ctf_star, "labels": labels, "model": model,
              "template": template, "truth": truth, "formats": list(formats), "overlays": overlays,
              "match_radius": match_radius, "train_micrographs": train_micrographs}
    folder = RunFolder(out, "pick", config, overwrite=overwrite, resume=True,
                       inputs={"micrographs": len(files), "apix": apix})
    if not devices.is_main():  # another rank under torchrun: train (DDP) and pick its share; rank 0 writes
        _pick_all(entry, images, apix, cfg, ctfs, templates, loaded, label_xy, train_micrographs, folder.dir,
                  None, False, echo)
        return None
    with folder as rf:
        picks, t_pick, metrics = _pick_all(entry, images, apix, cfg, ctfs, templates, loaded, label_xy,
                                           train_micrographs, rf.dir, rf, progress, echo)
        rf.metrics.update(metrics)
        _write_picks(rf, files, picks, formats, radius_px)
        for i in range(min(overlays, len(files))):
            from ..report.picking import pick_overlay
            pick_overlay(rf.file(f"overlay/{files[i].stem}.png"), images[i], picks[i][0], radius_px,
                         None if truth_xy is None else truth_xy[i], title=files[i].name,
                         lowpass_px=radius_px / 8)
        n = int(sum(len(p[0]) for p in picks))
        rf.metrics.update({"n_picks": n, "picks_per_micrograph": round(n / len(files), 2),
                           "picking_s_per_micrograph": round(t_pick, 4), "radius_px": round(radius_px, 3),
                           "ranks": devices.dist_info().world_size})
        if truth_xy is not None:
            rf.metrics.update(_scores(files, picks, truth_xy, radius_px, match_radius))
        echo(f"picked {n} particles on {len(files)} micrographs ({t_pick:.2f} s each)")
    return rf.summary


def _pick_all(entry, images, apix, cfg, ctfs, templates, loaded, label_xy, train_micrographs, work_dir, rf,
              progress, echo) -> tuple[list, float, dict]:
    """Train (learned, unless a model is given) and pick every micrograph → ``(picks per micrograph, seconds per
    micrograph, metrics)`` on rank 0. Under ``torchrun`` every rank trains (the training loop's DDP) and picks
    micrographs ``rank, rank + world, …``; rank 0 gathers the picks in input order (other ranks get None)."""
    import torch

    from ..utils import devices
    from ..utils.progress import progress_bar

    fn, _ = entry.load()
    kwargs, metrics = {}, {}
    if entry.name == "learned":
        if loaded is None:
            net, info = _train(images, label_xy, apix, cfg, train_micrographs, work_dir, rf, progress, echo)
            metrics.update({"training_s": round(info["wall_s"], 2), "n_labels": info["n_labels"],
                            "binning": info["k"], "class_prior": round(info["prior"], 5)})
        else:
            net = loaded[0]
        kwargs["model"] = net
    if templates is not None:
        kwargs["templates"] = templates
    if devices.dist_info().world_size > 1:
        devices.init_distributed(torch.device("cpu") if entry.name != "learned" else next(net.parameters()).device)
    info = devices.dist_info()
    rank, world = (info.rank, info.world_size) if devices.is_distributed() else (0, 1)
    mine = list(range(rank, len(images), world))
    picks = {}
    t0 = time.perf_counter()
    with progress_bar(len(mine), "picking", enabled=progress) as bar:
        for i in mine:
            xy, score = fn(torch.from_numpy(images[i]), apix, cfg, ctf=None if ctfs is None else ctfs[i], **kwargs)
            picks[i] = (np.asarray(xy, np.float64).reshape(-1, 2), np.asarray(score, np.float64).reshape(-1))
            bar.advance(1)
    t_pick = (time.perf_counter() - t0) / max(1, len(mine))
    if world > 1:
        import torch.distributed as dist
        parts = [None] * world if rank == 0 else None
        dist.gather_object(picks, parts, dst=0)
        if rank != 0:
            return None, t_pick, metrics
        picks = {i: v for part in parts for i, v in part.items()}
    return [picks[i] for i in range(len(images))], t_pick, metrics


def _check_sizes(files, images, method, cfg, apix, radius_px) -> None:
    """Every micrograph must hold one particle box (and, for the learned picker, its network's window)."""
    side = int(2 * np.ceil(radius_px) + 1)
    if method == "learned":
        from ..methods.pick.learned import PickerNet, bin_factor
        side = max(side, bin_factor(cfg.radius_A, apix, cfg.radius_bin) * (2 * PickerNet.margin + 1))
    for f, img in zip(files, images):
        if min(img.shape) < side:
            raise InputError(f, f"{img.shape[1]} × {img.shape[0]} px is smaller than the {method} picker's "
                                f"{side} px window for a {radius_px:.1f} px radius")


def _load_templates(path: Path | None, apix: float, cfg):
    """The template picker's references from a map, an atomic model or class averages (``.mrcs``)."""
    from ..methods.pick.template import templates_from_file

    return templates_from_file(path, apix, cfg)


def _train(images, label_xy, apix, cfg, train_micrographs, work_dir, rf, progress, echo):
    """Train the learned picker on the labelled micrographs plus up to ``train_micrographs`` in all; rank 0
    (``rf`` given) writes ``model.pt`` and ``history.json``; per-round checkpoints live in ``work_dir``."""
    from ..methods.pick.learned import fit_picker, save_picker
    from ..utils.progress import progress_bar

    labelled = [i for i, a in enumerate(label_xy) if len(a)]
    others = [i for i in range(len(images)) if i not in labelled]
    chosen = labelled + others[:max(0, train_micrographs - len(labelled))]
    first = images[chosen[0]].shape
    chosen = [i for i in chosen if images[i].shape == first]
    steps = cfg.epochs * cfg.steps_per_epoch * (cfg.iterations + 1)
    t0 = time.perf_counter()
    with progress_bar(steps * 4 * cfg.batch_size, "training picker", enabled=progress and rf is not None) as bar:
        net, info = fit_picker([images[i] for i in chosen], apix, [label_xy[i] for i in chosen], cfg,
                               checkpoint_dir=work_dir, progress=bar, log=None if rf is None else rf.log)
    info["wall_s"] = time.perf_counter() - t0
    if rf is not None:
        save_picker(rf.file("model.pt"), net, cfg, info)
        rf.file("history.json").write_text(json.dumps(info["history"], indent=1))
        for ck in Path(work_dir).glob("round*.pt"):
            ck.unlink()
        echo(f"trained the picker on {len(chosen)} micrographs, {info['n_labels']} labels, in {info['wall_s']:.1f} s")
    return net, info


def _write_picks(rf, files, picks, formats, radius_px):
    from ..io.coords import Coordinates, write_coordinates

    names = np.concatenate([np.full(len(p[0]), str(f), dtype=object) for f, p in zip(files, picks)]) \
        if picks else np.zeros(0, dtype=object)
    xy = np.concatenate([p[0] for p in picks]) if picks else np.zeros((0, 2))
    score = np.concatenate([p[1] for p in picks]) if picks else np.zeros(0)
    coords = Coordinates(names.astype(str), xy, score)
    write_coordinates(rf.file("picks.star"), coords, "relion-multi", overwrite=True)
    box = int(2 * np.ceil(radius_px * 1.2))
    for fmt in formats:
        if fmt == "topaz":
            write_coordinates(rf.file("picks_topaz.txt"), coords, "topaz", overwrite=True)
        else:
            (rf.dir / "coords").mkdir(exist_ok=True)
            write_coordinates(rf.dir / "coords", coords, fmt, box=box, overwrite=True)


def _scores(files, picks, truth_xy, radius_px, match_radius) -> dict:
    from ..analysis.picking import picking_scores
    from ..io.coords import Coordinates

    def table(entries):
        names = np.concatenate([np.full(len(a), str(f), dtype=object) for f, a in zip(files, entries)])
        return names.astype(str)

    p = Coordinates(table([q[0] for q in picks]), np.concatenate([q[0] for q in picks]),
                    np.concatenate([q[1] for q in picks]))
    t = Coordinates(table(truth_xy), np.concatenate(truth_xy), None)
    radius = match_radius if match_radius is not None else MATCH_RADIUS_FRACTION * radius_px
    scores = picking_scores(p, t, radius)
    # an undefined score (precision with no pick, precision at 90 % recall never reached) is left out
    out = {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in scores.items()
           if not (isinstance(v, float) and not np.isfinite(v))}
    out["match_radius_px"] = round(float(radius), 3)
    return out
