#!/usr/bin/env python
"""Particle picking: cryoscape's learned, blob and template pickers beside Topaz's pretrained detector on the same
simulated micrographs, in the same invocation; then extraction of the learned picks and a reconstruction with
the true poses, against the one from the true centres.

    .venv/bin/python benchmarks/picking.py                       # the issue's set: 20 × 1024², 150 AdK each
    .venv/bin/python benchmarks/picking.py --n-micrographs 6 --no-peer --no-extract   # a quick look

Data (``cryoscape simulate-micrographs``, written under ``benchmarks/out/picking/data`` and reused when the
options match): ``--n-micrographs`` fields of ``--size``² px at ``--apix`` Å (1.2: a 1229 Å field), each with
``--n-particles`` of the 102 embedded AdK conformations (Cα, σ = 3 Å; radius 40.8 Å, so a 64-px (77 Å) box
holds most of one) at random poses, centres at least ``--min-distance`` (60 Å) apart; ``--junk`` of the objects
are junk (ice contamination blobs and aggregates of several AdK copies, never counted as particles), a
background gradient, and a carbon edge on ``--carbon-edge`` of the micrographs (0 by default: with a carbon
film over part of the field, 150 particles 60 Å apart no longer fit beside the junk); defocus 1.0–2.5 µm, 300 kV; Gaussian
noise at ``--snr`` in the particle boxes (``--snr-region particles``: the variance of the particles' own
CTF-affected signal over their boxes / σ²).

Labels: ``--labels`` particles (default 50) drawn at random from the first two micrographs' truth (half each).
Scored on the other micrographs only (``--n-micrographs`` − 2), by one-to-one matching of picks to the true
centres within half the particle radius (:func:`cryoscape.analysis.picking.picking_scores`; Topaz's AUPRC):
AUPRC, precision at 90 % recall, precision and recall at each picker's own default threshold, the share of
duplicate picks, seconds per micrograph (picking alone; training reported apart).

Pickers:
- ``learned`` (:mod:`cryoscape.methods.pick.learned`, defaults): trained positive-unlabelled from the labels on
  every micrograph (all unlabelled windows), then picks every micrograph; its default threshold is the one it
  ``threshold`` (logit 0; all peaks are kept here for the AUPRC, the default cut is applied afterwards);
- ``blob`` (:mod:`cryoscape.methods.pick.blob`, defaults, the CTF filter from ``micrographs_ctf.star``);
- ``template`` (:mod:`cryoscape.methods.pick.template`, defaults): templates from AdK's middle frame (a PDB
  written here), each micrograph's CTF;
- Topaz (Bepler et al. 2019; topaz-em 0.3.20 in ``.venv-peers/topaz``, ``benchmarks/peers/topaz_pick.py``):
  the pretrained ``resnet16_u64`` after ``topaz preprocess``-style downsampling (to ≥ 4 Å/px) and GMM
  normalisation, given protein-dark copies of the micrographs (raw micrographs' contrast, on which it was
  trained: on the protein-white originals its AUPRC was 0.01–0.02, on the dark copies 0.60, measured on six of
  them); its default extraction threshold (−6) keeps nearly every peak; scored the same way.
  ``--topaz-train`` also trains Topaz (PU, its defaults but ``--topaz-updates`` updates in one epoch: the
  default 10 × 1000 takes about 8 h here) on the same labels and the two labelled micrographs, then picks.

Extraction (unless ``--no-extract``): the learned picks above its default threshold on the scored micrographs,
matched to the truth, are extracted (``cryoscape extract``: ``--box`` px, sub-pixel centring) and
backprojected with their true poses and CTFs; so are the same particles from their true centres. Reported: each
map's gold-standard (half-map) FSC = 0.143 resolution and its shell, and the FSC of the two maps.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "picking"
TOPAZ_PY = ROOT / ".venv-peers" / "topaz" / "bin" / "python"


def log(msg: str) -> None:
    print(f"[picking] {msg}", file=sys.stderr, flush=True)


def cli(args: list) -> None:
    """``cryoscape ARGS`` in this process; raise on a non-zero exit."""
    from cryoscape.cli.main import main
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"cryoscape {' '.join(map(str, args[:2]))} failed with {exc.code}") from None


def make_data(args) -> Path:
    """Simulate the micrographs (or reuse them when made with the same options)."""
    folder = OUT / "data"
    key = {k: getattr(args, k) for k in ("n_micrographs", "size", "apix", "n_particles", "min_distance", "snr",
                                         "junk", "carbon_edge", "gradient", "seed")}
    stamp = folder / "benchmark_key.json"
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        return folder
    log(f"simulating {args.n_micrographs} micrographs")
    cli(["simulate-micrographs", "-o", folder, "-n", args.n_micrographs, "--size", args.size, "--apix", args.apix,
         "--n-particles", args.n_particles, "--min-distance", args.min_distance, "--snr", args.snr,
         "--snr-region", "particles", "--junk-fraction", args.junk, "--carbon-edge", args.carbon_edge,
         "--gradient", args.gradient, "--seed", args.seed, "--overwrite", "--no-progress"])
    stamp.write_text(json.dumps(key))
    return folder


def keyed(coords):
    """Coordinates renamed to their micrograph's stem (RELION keeps folders, Topaz bare stems)."""
    from cryoscape.io.coords import Coordinates
    names = np.array([Path(str(n)).stem for n in coords.micrograph])
    return Coordinates(names, np.asarray(coords.xy, np.float64), coords.score)


def subset(coords, stems: set, min_score: float | None = None):
    from cryoscape.io.coords import Coordinates
    keep = np.array([n in stems for n in coords.micrograph], dtype=bool)
    if min_score is not None and coords.score is not None:
        keep &= np.asarray(coords.score) >= min_score
    return Coordinates(coords.micrograph[keep], coords.xy[keep], None if coords.score is None else coords.score[keep])


def score(picks, truth, radius_px: float, stems: set, default_cut: float | None) -> dict:
    """AUPRC etc. over all picks on ``stems``, and precision/recall at the picker's default threshold."""
    from cryoscape.analysis.picking import picking_scores
    t = subset(truth, stems)
    everything = picking_scores(subset(picks, stems), t, radius_px)
    cut = picking_scores(subset(picks, stems, default_cut), t, radius_px)
    return {"auprc": round(everything["auprc"], 4), "precision_at_recall_90": round(everything["precision_at_recall_90"], 4),
            "precision": round(cut["precision"], 4), "recall": round(cut["recall"], 4), "f1": round(cut["f1"], 4),
            "duplicate_share": round(cut["duplicate_share"], 4), "n_picks": int(cut["n_picks"]),
            "n_true": int(cut["n_true"])}


def run_ours(method: str, files, data: Path, args, extra: list) -> tuple:
    from cryoscape.io.coords import read_coordinates
    out = OUT / method
    cli(["pick", *files, "-o", out, "-m", method, "--radius", args.radius_A, "--overwrite", "--no-progress",
         "--threads", args.threads, "--overlays", 2, "--truth", data / "truth" / "particles.star", *extra])
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    return keyed(read_coordinates(out / "picks.star")), metrics


def dark_copies(files) -> list:
    """Copies of the micrographs with the contrast inverted (protein dark, as in raw micrographs, on which Topaz's
    detectors were trained; ours are protein-white, RELION's convention) under ``OUT/topaz_input``."""
    from cryoscape.io.mrc import read_micrograph, write_micrograph
    folder = OUT / "topaz_input"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        img, apix = read_micrograph(f)
        write_micrograph(folder / f.name, -np.asarray(img), apix)
        out.append(folder / f.name)
    return out


def run_topaz(files, args, labels_txt: Path, mode: str) -> tuple:
    from cryoscape.io.coords import read_coordinates
    out = OUT / f"topaz_{mode}"
    cmd = [str(TOPAZ_PY), str(ROOT / "benchmarks" / "peers" / "topaz_pick.py"), mode, *map(str, files), "-o", str(out),
           "--apix", str(args.apix), "--radius-A", str(args.radius_A), "--threads", str(args.threads)]
    if mode == "train":
        cmd += ["--labels", str(labels_txt), "--num-particles", str(args.n_particles), "--num-epochs", "1",
                "--epoch-size", str(args.topaz_updates), "--train-micrographs", *map(str, files[:2])]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"topaz {mode} failed:\n{res.stderr[-3000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["subprocess_wall_s"] = round(time.perf_counter() - t0, 2)
    return keyed(read_coordinates(out / "picks.txt", "topaz")), info


def reconstruct_pair(picks, truth_table, data: Path, files, stems, args, cut: float) -> dict:
    """Extract matched learned picks and the same particles at their true centres; backproject both with the
    true poses; FSC-0.143 of each (half maps) and the FSC between the two maps."""
    import starfile

    from cryoscape.analysis.fsc import fsc, resolution_at, shell_frequencies
    from cryoscape.analysis.picking import match_picks
    from cryoscape.data.particles import load_particles
    from cryoscape.geometry.rotations import euler_to_matrix
    from cryoscape.io.coords import Coordinates, write_coordinates
    from cryoscape.methods.reconstruct import BackprojectConfig, backproject

    table = truth_table
    names = np.array([Path(str(n)).stem for n in table["rlnMicrographName"]])
    true_xy = table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(np.float64)
    euler = np.deg2rad(table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(np.float64))
    pick_xy, true_sel, mic_of = [], [], []
    for stem in sorted(stems):
        p = subset(picks, {stem}, cut)
        rows = np.flatnonzero(names == stem)
        i, j = match_picks(p.xy, true_xy[rows], args.radius_A / args.apix / 2)
        pick_xy.append(p.xy[i])
        true_sel.append(rows[j])
        mic_of += [stem] * len(i)
    pick_xy, true_sel = np.concatenate(pick_xy), np.concatenate(true_sel)
    by_stem = {f.stem: str(f) for f in files}
    mic_names = np.array([by_stem[s] for s in mic_of])
    rotations = euler_to_matrix(torch.from_numpy(euler[true_sel]))
    maps, fscs = {}, {}
    for label, xy in (("picks", pick_xy), ("truth", true_xy[true_sel])):
        folder = OUT / "extract" / label
        folder.mkdir(parents=True, exist_ok=True)
        write_coordinates(folder / "coords.star", Coordinates(mic_names, xy, None), "relion-multi", overwrite=True)
        run = folder / "run"
        cli(["extract", *[by_stem[s] for s in sorted(stems)], "-c", folder / "coords.star", "-o", run,
             "--box", args.box, "--pad", "--ctf", data / "micrographs_ctf.star", "--overwrite", "--no-progress",
             "--threads", args.threads])
        particles = load_particles(run / "particles.star", need_poses=False)
        star = starfile.read(run / "particles.star")["particles"]
        if len(star) != len(xy):
            raise RuntimeError(f"{label}: extracted {len(star)} of {len(xy)} (edge boxes skipped)")
        particles.rotations = rotations.to(torch.float64)
        res = backproject(particles, BackprojectConfig(half_maps=True, device="cpu"))
        D = res.volume.shape[0]
        curve = fsc(res.half_a, res.half_b)
        maps[label] = res.volume
        r = resolution_at(curve, D, res.apix, 0.143)
        fscs[label] = {"fsc0143_A": round(float(r), 3),
                       "fsc0143_shell": int(np.argmax(shell_frequencies(D, res.apix) >= 1 / r)) if np.isfinite(r) else None}
    cross = fsc(maps["picks"], maps["truth"])
    D = maps["picks"].shape[0]
    return {"n_particles": int(len(pick_xy)), "box_px": args.box, "picks_map": fscs["picks"], "truth_map": fscs["truth"],
            "shell_difference": (None if None in (fscs["picks"]["fsc0143_shell"], fscs["truth"]["fsc0143_shell"])
                                 else fscs["truth"]["fsc0143_shell"] - fscs["picks"]["fsc0143_shell"]),
            "fsc_picks_vs_truth_map_0.5_A": round(float(resolution_at(cross, D, float(particles.apix), 0.5)), 3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--n-micrographs", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--apix", type=float, default=1.2)
    ap.add_argument("--n-particles", type=int, default=150)
    ap.add_argument("--min-distance", type=float, default=60.0, help="Å between particle centres")
    ap.add_argument("--snr", type=float, default=0.1, help="in the particle boxes")
    ap.add_argument("--junk", type=float, default=0.1, help="share of the objects that are junk")
    ap.add_argument("--carbon-edge", type=float, default=0.0)
    ap.add_argument("--gradient", type=float, default=0.5)
    ap.add_argument("--labels", type=int, default=50)
    ap.add_argument("--box", type=int, default=96, help="extraction box, px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="learned,blob,template")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--topaz-train", action="store_true")
    ap.add_argument("--topaz-updates", type=int, default=200, help="Topaz training updates (its default, "
                    "10 × 1000, takes ~8 h on 2 cores)")
    ap.add_argument("--no-extract", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import starfile

    from cryoscape.data.embedded import adk_files
    from cryoscape.data.simulate import AtomSource
    from cryoscape.io.coords import Coordinates, read_coordinates, write_coordinates
    from cryoscape.io.models import read_trajectory, write_pdb

    conf = read_trajectory(*adk_files(), "ca")
    args.radius_A = round(float(AtomSource(conf.coords, 3.0).radius()), 3)
    data = make_data(args)
    files = sorted((data / "micrographs").glob("*.mrc"))
    stems_train = {f.stem for f in files[:2]}
    stems_eval = {f.stem for f in files[2:]}
    truth_table = starfile.read(data / "truth" / "particles.star")
    truth_table = truth_table["particles"] if isinstance(truth_table, dict) else truth_table
    truth = keyed(read_coordinates(data / "truth" / "particles.star"))

    rng = np.random.default_rng(args.seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(truth.micrograph == s), args.labels // 2, replace=False)
                           for s in sorted(stems_train)])
    label_names = np.array([str(files[[f.stem for f in files].index(s)]) for s in truth.micrograph[rows]])
    labels = Coordinates(label_names, truth.xy[rows], None)
    OUT.mkdir(parents=True, exist_ok=True)
    write_coordinates(OUT / "labels.star", labels, "relion-multi", overwrite=True)
    write_coordinates(OUT / "labels.txt", labels, "topaz", overwrite=True)
    template_pdb = OUT / "adk_frame51.pdb"
    if not template_pdb.exists():
        frame = type(conf)(coords=conf.coords[51:52], **{k: getattr(conf, k) for k in conf.__dataclass_fields__
                                                         if k != "coords"})
        write_pdb(template_pdb, frame)

    radius_px = args.radius_A / args.apix / 2
    res = {"data": {"n_micrographs": len(files), "scored_micrographs": len(stems_eval), "size_px": args.size,
                    "apix_A": args.apix, "particles_per_micrograph": args.n_particles, "snr_in_box": args.snr,
                    "junk_fraction": args.junk, "n_labels": len(labels), "match_radius_px": round(radius_px, 2)},
           "loadavg_start": os.getloadavg()[0]}
    learned_picks = learned_cut = None
    for method in args.methods.split(","):
        log(f"cryoscape {method}")
        if method == "learned":
            picks, m = run_ours("learned", files, data, args, ["--labels", OUT / "labels.star", "-p", "threshold=-1e9"])
            from cryoscape.methods.pick.learned import PickerConfig
            cut = PickerConfig().threshold
            learned_picks, learned_cut = picks, cut
            res[method] = {**score(picks, truth, radius_px, stems_eval, cut), "training_s": m["training_s"],
                           "s_per_micrograph": m["picking_s_per_micrograph"], "threshold": cut}
        elif method == "blob":
            picks, m = run_ours("blob", files, data, args, ["--ctf", data / "micrographs_ctf.star", "-p", "threshold=none"])
            res[method] = {**score(picks, truth, radius_px, stems_eval, 3.5), "s_per_micrograph": m["picking_s_per_micrograph"]}
        elif method == "template":
            picks, m = run_ours("template", files, data, args, ["--ctf", data / "micrographs_ctf.star",
                                                                "--template", template_pdb, "-p", "threshold=none"])
            from cryoscape.methods.pick.template import TemplateConfig
            default = TemplateConfig(diameter_A=2 * args.radius_A).threshold
            res[method] = {**score(picks, truth, radius_px, stems_eval, default),
                           "s_per_micrograph": m["picking_s_per_micrograph"]}
        log(json.dumps(res[method]))
    eval_files = [f for f in files if f.stem in stems_eval]
    if not args.no_peer:
        log("Topaz pretrained (on protein-dark copies)")
        picks, info = run_topaz(dark_copies(eval_files), args, OUT / "labels.txt", "pretrained")
        res["topaz_pretrained"] = {**score(picks, truth, radius_px, stems_eval, None), "timing": info}
        log(json.dumps(res["topaz_pretrained"]))
        if args.topaz_train:
            log("Topaz trained on the same labels")
            picks, info = run_topaz(dark_copies(files[:2]) + dark_copies(eval_files), args, OUT / "labels.txt",
                                    "train")
            res["topaz_trained"] = {**score(picks, truth, radius_px, stems_eval, None), "timing": info}
            log(json.dumps(res["topaz_trained"]))
    if not args.no_extract and learned_picks is not None:
        log("extraction + backprojection with the true poses")
        res["extraction"] = reconstruct_pair(learned_picks, truth_table, data, files, stems_eval, args, learned_cut)
        log(json.dumps(res["extraction"]))
    res["loadavg_end"] = os.getloadavg()[0]
    (OUT / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
