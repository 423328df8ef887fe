#!/usr/bin/env python
"""Peer side of ``benchmarks/atomic_vs_cryosphere.py``: cryoSPHERE trained on CPU, one Cα model per particle.

cryoSPHERE (Ducrocq, Grunewald, Westenhoff & Lindsten; github.com/Gabriel-Ducrocq/cryoSPHERE; PyPI
``cryosphere`` 0.6.1) represents the protein by one Gaussian per residue,
placed on the Cα of a base structure; a Gaussian mixture over residue indices cuts the chain into ``S``
segments, and a VAE maps each image to a latent ``z`` (dimension ``d``) and ``z`` to one rigid motion per
segment (quaternion with real part 1, translation in Å). Residue ``r`` moves by the segment motions weighted
with its (soft) segment assignment. Images are rendered as ``CTF ⊛ Σ_r a_r exp(−|p_xy − R x_r|²/(2σ²))``.

Run with the peer venv: ``.venv-peers/cryosphere/bin/python benchmarks/peers/cryosphere_fit.py …``.
cryoSPHERE's own ``cryosphere_train`` spawns one process per CUDA device (zero on a CPU machine), so this
script runs the body of its training loop in one process, calling cryoSPHERE's functions
(``model.utils.parse_yaml``, ``vae.sample_latent``/``decode``, ``segmenter.sample_segments``,
``compute_translations_per_residue``, ``deform_structure``, ``renderer.*``, ``loss.compute_loss``).
torchvision is not installed (CPU-only torch 2.13 has no matching wheel); cryoSPHERE imports it only for
``resize`` when images are downsampled, which this script never does (``Npix_downsize = Npix``): a module
with an antialiased bilinear ``resize`` stands in for it.

Conventions, read from cryoSPHERE's source and checked with ``--check-clean`` (see the benchmark report):
  * Poses: STAR (rot, tilt, psi) → ``roma.euler_to_rotmat("ZYZ")``ᵀ, equal to RELION's
    ``A = Rz(psi) Ry(tilt) Rz(rot)`` (difference 2e-16); atoms are rotated ``x ↦ A x`` and projected along z,
    as our simulator does. Pixel ``D//2`` is coordinate 0 (EMAN2 grid), as in our convention.
  * Shifts: rlnOriginX/YAngst are applied to the *data* image (bilinear, periodic) to centre the particle;
    predictions are rendered centred. Same meaning as ours.
  * CTF: cryoSPHERE computes −(RELION CTF) and multiplies the projection by its negative, so the rendered
    image is ``+CTF_RELION ⊛ P`` — our sign. It reads defocus U/V/angle, kV, Cs, w, phase shift from the STAR
    but not ``rlnCtfBfactor``/``rlnCtfScalefactor``; this script copies those two columns into the CTF.
  * Base structure: Cα (C1' for nucleotides) of each residue, in the PDB's own frame; cryoSPHERE does not
    centre or move it (its ``center_origin`` tool is separate and not used). Rotations of segments are
    about the coordinate origin. Output models are therefore in the frame of ``--reference``.
  * Amplitudes: the residue's electron count (6 for a Cα-only PDB). The image loss is a correlation, so the
    overall scale does not matter.

Prediction (as ``cryosphere_analyze --generate_structures`` does, but deterministic): the encoder's latent
mean ``μ(image)`` → decoder → per-segment motions; the segmentation is evaluated at the means of its
variational parameters (cryoSPHERE's analysis draws a random one) → deformed structure.

Files in ``--out`` DIR:
  ``image.yaml``, ``parameters.yaml`` (cryoSPHERE's config, as used), ``settings.json`` (this script's
  options), ``base_structure.pdb`` (the reference as given to cryoSPHERE: first model, force-field residue
  names such as CHARMM's HSD renamed so that no residue is dropped), ``cryoSPHERE/`` (cryoSPHERE's log and
  copies of the yamls), ``vae.pt``, ``segmenter.pt``, ``check_corr.npy`` (with ``--check-clean``),
  ``epochs.json`` (per epoch: seconds, mean loss and its terms), ``latent_mean.npy`` (N, d),
  ``ca_models_epochK.npy`` (with ``--snapshot-epochs``),
  ``ca_models.npy`` float32 (N, L, 3) Å, STAR row order, ``result.json``.

Usage (last stdout line is one JSON object):
    .venv-peers/cryosphere/bin/python benchmarks/peers/cryosphere_fit.py \\
        --particles SIM/particles.star --reference ref.pdb --out DIR [--epochs 150] [--segments 8]
        [--latent-dim 8] [--batch-size 64] [--lr 3e-4] [--sigma-gmm 3.0] [--threads 2] [--seed 0]
    Checks: ``--check-clean SIM/truth/clean.mrcs`` renders every particle from the reference with the
    identity deformation and reports the Pearson correlation with the clean images (shifted as cryoSPHERE
    shifts the data); ``--identity`` zeroes the decoder's last layer after training (every predicted model
    must equal the reference).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

# Defaults: cryoSPHERE's example parameters (latent 8, MLP 256×2, Adam 3e-4, batch 64, tau 0.05, KL betas
# 1e-3, continuity and clash weights 1). Segments and epochs measured on AdK (1,000 images of 64 px, SNR 0.058,
# reference = frame 0, whose mean Cα error to the truth is 3.500 Å): 4 segments × 150 epochs → 3.547 Å,
# 8 segments × 150 epochs → 3.496 Å (3.486 Å at epoch 100). In both the latent collapsed (predicted models
# differ by 0.02–0.03 Å between particles, the true ones by 1.75 Å), also on noiseless images. σ = 3 Å is
# cryoscape simulate's default atom width.
DEFAULTS = dict(epochs=150, segments=8, latent_dim=8, batch_size=64, lr=3e-4, sigma_gmm=3.0, threads=2, seed=0)


class InputError(Exception):
    """Bad input: ``where`` (file or option) and a one-line message; the CLI exits 2, nothing is written."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")


def _install_torchvision_stand_in() -> None:
    """Register a ``torchvision.transforms.functional`` module with ``resize`` only (what cryoSPHERE imports).

    ``resize(x (C, H, W), size [h, w])`` → antialiased bilinear interpolation. Never called here: images are
    used at full size.
    """
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        pass
    import torch.nn.functional as F

    def resize(x, size, antialias=True):
        return F.interpolate(x[None], size=list(size), mode="bilinear", antialias=antialias)[0]

    tv = types.ModuleType("torchvision")
    tvt = types.ModuleType("torchvision.transforms")
    tvf = types.ModuleType("torchvision.transforms.functional")
    tvf.resize = resize
    tv.transforms, tvt.functional = tvt, tvf
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tvt, "torchvision.transforms.functional": tvf})


def _atomic_save(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (no half-written file is ever visible)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, obj) -> None:
    _atomic_save(path, lambda p: p.write_text(json.dumps(obj, indent=1) + "\n"))


def read_star(path: Path) -> tuple[dict, "object"]:
    """RELION 3.1 STAR → (optics row as dict, particles DataFrame); InputError when unusable by cryoSPHERE."""
    import starfile

    try:
        star = starfile.read(path)
    except Exception as e:  # starfile raises many kinds
        raise InputError(str(path), f"not a readable STAR file ({e})")
    if not isinstance(star, dict) or "optics" not in star or "particles" not in star:
        raise InputError(str(path), "needs RELION 3.1 data_optics and data_particles blocks")
    optics, parts = star["optics"], star["particles"]
    if len(optics) != 1:
        raise InputError(str(path), f"cryoSPHERE supports one optics group, found {len(optics)}")
    need = ["rlnImageName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnAngleRot", "rlnAngleTilt",
            "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"]
    missing = [c for c in need if c not in parts.columns]
    if missing:
        raise InputError(str(path), f"missing particle columns {missing}")
    for c in ["rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize"]:
        if c not in optics.columns:
            raise InputError(str(path), f"missing optics column {c}")
    return optics.iloc[0].to_dict(), parts


def _stack_paths(star_path: Path, parts) -> list[Path]:
    names = sorted({str(n).split("@", 1)[1] for n in parts["rlnImageName"]})
    return [star_path.parent / n for n in names]


# Force-field and protonation-state names of standard residues (CHARMM, AMBER) → PDB names. cryoSPHERE keeps
# only residues that biotite recognises as amino acids, so e.g. CHARMM's HSD would silently drop out.
_RESIDUE_ALIASES = {"HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS",
                    "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS"}


def prepare_base_structure(reference: Path, out: Path) -> tuple[Path, np.ndarray, dict]:
    """The reference as cryoSPHERE will read it: ``out/base_structure.pdb`` and its Cα coordinates (L, 3) Å.

    First model only. A residue with a carbon named CA that biotite does not class as an amino acid is
    renamed (``_RESIDUE_ALIASES``, else UNK) so that cryoSPHERE keeps it; coordinates are not changed.
    Returns (path, Cα coordinates in the order cryoSPHERE uses, {"renamed": {old: count}}).
    InputError when no Cα is found or cryoSPHERE would keep a different set of residues.
    """
    import biotite.structure as bs
    from biotite.structure.io.pdb import PDBFile
    from cryosphere.model.polymer import Polymer

    try:
        atoms = PDBFile.read(str(reference)).get_structure(model=1)
    except Exception as e:
        raise InputError(str(reference), f"not a readable PDB file ({e})")
    is_ca = (atoms.atom_name == "CA") & (atoms.element == "C")
    if not is_ca.any():
        raise InputError(str(reference), "no Cα atoms")
    known = bs.filter_amino_acids(atoms)
    starts = bs.get_residue_starts(atoms, add_exclusive_stop=True)
    renamed: dict[str, int] = {}
    for a, b in zip(starts[:-1], starts[1:]):
        if is_ca[a:b].any() and not known[a:b].any():
            old = str(atoms.res_name[a])
            atoms.res_name[a:b] = _RESIDUE_ALIASES.get(old, "UNK")
            renamed[old] = renamed.get(old, 0) + 1
    path = out / "base_structure.pdb"

    def write(p):
        f = PDBFile()
        f.set_structure(atoms)
        f.write(str(p))

    _atomic_save(path, write)
    poly = Polymer.from_pdb(str(path))
    n_ca = int(np.sum(is_ca & bs.filter_amino_acids(atoms)))
    if len(poly) != n_ca:
        path.unlink()
        raise InputError(str(reference), f"cryoSPHERE keeps {len(poly)} residues of {n_ca} with a Cα")
    return path, np.asarray(poly.coord, dtype=np.float32), {"renamed": renamed}


def write_cryosphere_config(out: Path, star: Path, reference: Path, apix: float, D: int, n: int,
                            args: argparse.Namespace) -> Path:
    """Write ``out/image.yaml`` and ``out/parameters.yaml`` for ``parse_yaml``; return the parameters path.

    Loss weights and network sizes are cryoSPHERE's example values; ``segments``, ``latent_dim``,
    ``batch_size``, ``lr``, ``epochs``, ``sigma_gmm`` come from the options. No low-pass filter and no masks
    (the simulated images have no neighbours or carbon); no wandb.
    """
    import yaml

    image = {"apix": float(apix), "Npix": int(D), "Npix_downsize": int(D), "sigma_gmm": float(args.sigma_gmm)}
    params = {
        "name": "cryoscape_peer", "wandb": False, "wandb_project": "none",
        "folder_path": str(out), "image_yaml": "image.yaml",
        "particles_path": str(star.parent), "base_structure_path": str(reference),
        "cs_star_file": {"file": str(star)}, "N_images": int(n), "amortized": True, "device": "CPU",
        "seed": int(args.seed), "deterministic_cuda": False, "num_workers": 0,
        "N_epochs": int(args.epochs), "batch_size": int(args.batch_size),
        "latent_dimension": int(args.latent_dim), "tau_segmentation": 0.05, "epsilon_kl": "1e-10",
        "encoder": {"hidden_dimensions": [256, 256]}, "decoder": {"hidden_dimensions": [256, 256]},
        "segmentation_config": {"part1": {"N_segm": int(args.segments), "all_protein": True}},
        "optimizer": {"name": "adam", "learning_rate": float(args.lr)},
        "resume_training": {"model": None, "segmentation": None},
        "lp_bandwidth": None, "input_mask_radius": None, "loss_mask_radius": None,
        "loss": {
            "KL_prior_latent": {"schedule": "constant", "beta": 0.001},
            "KL_prior_segmentation_mean": {"schedule": "constant", "beta": 0.001},
            "KL_prior_segmentation_std": {"schedule": "constant", "beta": 0.001},
            "KL_prior_segmentation_proportions": {"schedule": "constant", "beta": 0.001},
            "l2_pen": {"schedule": "constant", "beta": 0.0},
            "continuity_loss": {"schedule": "constant", "beta": 1.0},
            "clashing_loss": {"schedule": "constant", "beta": 1.0, "full_clashing_loss": False,
                              "clashing_cutoff": 4.0, "min_clashing_cutoff_pairs": 4.0,
                              "max_clashing_cutoff_pairs": 10.0},
        },
    }
    _atomic_save(out / "image.yaml", lambda p: p.write_text(yaml.safe_dump(image, sort_keys=False)))
    _atomic_save(out / "parameters.yaml", lambda p: p.write_text(yaml.safe_dump(params, sort_keys=False)))
    return out / "parameters.yaml"


def set_ctf_envelope(ctf, parts) -> None:
    """Copy rlnCtfBfactor (Å², envelope ``exp(−B s²/4)``) and rlnCtfScalefactor into cryoSPHERE's CTF.

    cryoSPHERE's STAR reader leaves both at their neutral values (0 and 1) whatever the file says.
    """
    import torch

    for col, buf in (("rlnCtfBfactor", "bfactor"), ("rlnCtfScalefactor", "scalefactor")):
        if col in parts.columns:
            vals = torch.tensor(parts[col].to_numpy(np.float32))[:, None]
            getattr(ctf, buf).copy_(vals)


def mean_segmenter(segmenter):
    """A copy of cryoSPHERE's Segmentation whose samples are the plug-in at the variational means.

    Setting every ``*_stds`` parameter to 0 makes ``sample_segments`` deterministic: segment centres
    ``m``, widths ``elu(s) + 1`` and proportions ``softmax(p)`` at their means; the soft assignment of residue
    ``r`` is ``softmax_k[(log π_k − (r − m_k)²/(2 w_k²)) / τ]``.
    """
    import torch

    seg = copy.deepcopy(segmenter)
    with torch.no_grad():
        for name, p in seg.named_parameters():
            if name.startswith(("segments_means_stds", "segments_stds_stds", "segments_proportions_stds")):
                p.zero_()
    return seg


def deform(vae, segmenter, mus, z):
    """Decode latents ``z (B, d)`` into structures ``(B, L, 3)`` Å with cryoSPHERE's functions."""
    from cryosphere.model import utils as cu

    seg = segmenter.sample_segments(z.shape[0])
    quats, trans = vae.decode(z)
    t_res = cu.compute_translations_per_residue(trans, seg, mus.shape[0], z.shape[0], "cpu")
    return cu.deform_structure(mus, t_res, quats, seg, "cpu")


def pearson(a, b):
    """Per-image Pearson correlation of ``(B, D, D)`` tensors → (B,)."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-12)


def check_clean(clean_path: Path, dataset, translator, ctf, gmm, grid, batch: int, out: Path) -> dict:
    """Render every particle from the reference (identity deformation) and compare with clean images.

    The clean image is shifted by its STAR origin with cryoSPHERE's translator (exactly what the training
    loss compares against); the rendering uses cryoSPHERE's pose, projector and CTF. Returns mean/min/median
    Pearson correlation, and the same for the unshifted clean image (to show the shift matters when present);
    the per-particle values go to ``out/check_corr.npy`` (N,).
    """
    import mrcfile
    import torch
    from cryosphere.model import renderer

    with mrcfile.open(clean_path, permissive=True) as m:
        clean = torch.from_numpy(np.asarray(m.data, dtype=np.float32).copy())
    if clean.shape[0] != len(dataset):
        raise InputError(str(clean_path), f"{clean.shape[0]} images, the STAR has {len(dataset)}")
    cors, cors_noshift = [], []
    for s in range(0, len(dataset), batch):
        idx = torch.arange(s, min(s + batch, len(dataset)))
        poses = dataset.poses[idx]
        shift_px = dataset.poses_translation[idx] / dataset.down_apix
        pred = renderer.apply_ctf(renderer.project(renderer.rotate_structure(
            gmm.mus[None].expand(len(idx), -1, -1), poses), gmm.sigmas, gmm.amplitudes, grid), ctf, idx)
        cors.append(pearson(pred, translator.transform(clean[idx], shift_px[:, None, :])))
        cors_noshift.append(pearson(pred, clean[idx]))
    c, c0 = torch.cat(cors), torch.cat(cors_noshift)
    _atomic_save(out / "check_corr.npy", lambda p: np.save(p, c.numpy()))
    return {"corr_mean": float(c.mean()), "corr_min": float(c.min()), "corr_median": float(c.median()),
            "corr_unshifted_mean": float(c0.mean()), "n": int(c.numel())}


def predict(vae, segmenter, mus, images, batch: int = 256):
    """Every image's structure: encoder mean ``μ`` → decoder → deformation with the mean segmentation.

    Returns (latent means (N, d) float32, models (N, L, 3) float32 Å, hard segment of each residue (L,)).
    """
    import torch

    vae.eval()
    seg_mean = mean_segmenter(segmenter)
    zs, models = [], []
    with torch.no_grad():
        for s in range(0, images.shape[0], batch):
            _, z_mu, _ = vae.sample_latent(images[s:s + batch].flatten(start_dim=-2))
            zs.append(z_mu)
            models.append(deform(vae, seg_mean, mus, z_mu))
        hard = seg_mean.sample_segments(1)["part1"]["segmentation"][0].argmax(-1).numpy()
    return torch.cat(zs).numpy().astype(np.float32), torch.cat(models).numpy().astype(np.float32), hard


def load_images(dataset) -> "tuple":
    """All images of cryoSPHERE's dataset (normalised by its Fourier std), poses and shifts (px), in row order."""
    import torch

    items = [dataset[i] for i in range(len(dataset))]
    return (torch.stack([it[1] for it in items]), torch.stack([it[2] for it in items]),
            torch.stack([it[3] for it in items]))


def train(args, parts, out: Path, params_path: Path) -> dict:
    """cryoSPHERE's training loop body in one process, then the prediction of every particle.

    One deviation from cryoSPHERE's loop: a step whose gradient has a non-finite entry is skipped (counted in
    ``skipped_steps``). cryoSPHERE samples each segment's width as ``elu(N(m_s, s_s²)) + 1`` with the prior
    ``m_s = L/S`` and ``s_s = 10`` residues; for a small protein cut into many segments (L/S ≈ 27 for 214
    residues and 8 segments) ``N(26.8, 10²)`` falls below −17 now and then, the width is then exactly 0 in
    float32, and the gradient of ``(r − m)²/w²`` is not finite; one such step (the 120th, 8 segments, AdK)
    turned a segment's parameters and every later loss into NaN.
    """
    import torch
    from cryosphere import model
    from cryosphere.model import renderer
    from cryosphere.model import loss as _loss
    from cryosphere.model.utils import low_pass_images

    (vae, translator, ctf, grid, gmm, optimizer, dataset, n_epochs, batch_size, settings, _device, scheduler,
     base, lp_mask2d, _mask, _amortized, _path_results, struct_loss, segmenter) = model.utils.parse_yaml(
        str(params_path), 0)
    set_ctf_envelope(ctf, parts)
    L = int(base.coord.shape[0])
    result = {"n_residues": L}
    if args.check_clean:
        result["check_clean"] = check_clean(Path(args.check_clean), dataset, translator, ctf, gmm, grid, 100, out)
        print("convention check:", json.dumps(result["check_clean"]), flush=True)

    t_load = time.perf_counter()
    images, poses, shifts_px = load_images(dataset)
    result["load_s"] = time.perf_counter() - t_load
    n = images.shape[0]
    gen = torch.Generator().manual_seed(int(args.seed))
    terms = ["correlation_loss", "kl_prior_latent", "kl_prior_segmentation_mean", "kl_prior_segmentation_std",
             "kl_prior_segmentation_proportions", "l2_pen", "continuity_loss", "clashing_loss"]
    epochs = []
    params = list(vae.parameters()) + list(segmenter.parameters())
    skipped: list[tuple[int, int]] = []
    snapshots = set(args.snapshot_epochs)
    t_excluded = 0.0
    t_train = time.perf_counter()
    vae.train()
    for epoch in range(n_epochs):
        t0 = time.perf_counter()
        track = {"wandb": False, "epoch": epoch, "path_results": None, **{k: [] for k in terms}}
        order = torch.randperm(n, generator=gen)
        losses = []
        for b in range(n // batch_size):  # drop_last, as cryoSPHERE's loader
            idx = order[b * batch_size:(b + 1) * batch_size]
            imgs = images[idx]
            target = low_pass_images(translator.transform(imgs, shifts_px[idx][:, None, :]), lp_mask2d)
            z, z_mu, z_sd = vae.sample_latent(imgs.flatten(start_dim=-2))
            seg = segmenter.sample_segments(len(idx))
            quats, trans = vae.decode(z)
            t_res = model.utils.compute_translations_per_residue(trans, seg, L, len(idx), "cpu")
            structs = model.utils.deform_structure(gmm.mus, t_res, quats, seg, "cpu")
            proj = renderer.project(renderer.rotate_structure(structs, poses[idx]), gmm.sigmas, gmm.amplitudes, grid)
            pred = renderer.apply_ctf(proj, ctf, idx) / dataset.f_std
            loss = _loss.compute_loss(pred, target, None, z_mu, z_sd, vae, segmenter, settings, track,
                                structural_loss_parameters=struct_loss, epoch=epoch, predicted_structures=structs,
                                device="cpu")
            loss.backward()
            if all(bool(torch.isfinite(q.grad).all()) for q in params if q.grad is not None):
                optimizer.step()
                losses.append(float(loss.detach()))
            else:  # see skipped_steps in train()'s docstring
                skipped.append((epoch, b))
            optimizer.zero_grad()
        if scheduler:
            scheduler.step()
        rec = {"epoch": epoch, "epoch_s": time.perf_counter() - t0,
               "loss": float(np.mean(losses)) if losses else float("nan"),
               "skipped_steps": sum(1 for e, _ in skipped if e == epoch)}
        rec.update({k: float(np.nanmean([float(v) for v in track[k]])) for k in terms})
        epochs.append(rec)
        print(f"epoch {epoch}: {rec['epoch_s']:.2f} s, loss {rec['loss']:.5f}, "
              f"corr {rec['correlation_loss']:.5f}, continuity {rec['continuity_loss']:.4f}, "
              f"clash {rec['clashing_loss']:.4f}", flush=True)
        if epoch + 1 in snapshots and epoch + 1 < n_epochs:  # not timed as training
            t_snap = time.perf_counter()
            ca_e = predict(vae, segmenter, gmm.mus, images)[1]
            _atomic_save(out / f"ca_models_epoch{epoch + 1}.npy", lambda p: np.save(p, ca_e))
            vae.train()
            t_excluded += time.perf_counter() - t_snap
    result["train_s"] = time.perf_counter() - t_train - t_excluded
    result["skipped_steps"] = len(skipped)
    result["epochs"] = epochs
    _write_json(out / "epochs.json", epochs)
    _atomic_save(out / "vae.pt", lambda p: torch.save(vae.state_dict(), p))
    _atomic_save(out / "segmenter.pt", lambda p: torch.save(segmenter.state_dict(), p))

    # Prediction: latent mean of every image → decoder → deformation with the mean segmentation.
    t_pred = time.perf_counter()
    if args.identity:
        with torch.no_grad():
            last = vae.decoder.output_layer[0]
            last.weight.zero_()
            last.bias.zero_()
    z_all, ca, hard = predict(vae, segmenter, gmm.mus, images)
    result["predict_s"] = time.perf_counter() - t_pred
    result["segment_of_residue"] = hard.tolist()
    _atomic_save(out / "latent_mean.npy", lambda p: np.save(p, z_all))
    _atomic_save(out / "ca_models.npy", lambda p: np.save(p, ca))
    result["n_particles"] = n
    result["reference_ca"] = base.coord.astype(np.float32)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    d = DEFAULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--particles", required=True, type=Path, help="particles.star (RELION 3.1, stacks beside it)")
    ap.add_argument("--reference", required=True, type=Path, help="base structure PDB (Cα or all-atom), pose frame")
    ap.add_argument("--out", required=True, type=Path, help="output folder (created; files replaced)")
    ap.add_argument("--epochs", type=int, default=d["epochs"])
    ap.add_argument("--segments", type=int, default=d["segments"], help="N_segm: rigid segments")
    ap.add_argument("--latent-dim", type=int, default=d["latent_dim"])
    ap.add_argument("--batch-size", type=int, default=d["batch_size"])
    ap.add_argument("--lr", type=float, default=d["lr"])
    ap.add_argument("--sigma-gmm", type=float, default=d["sigma_gmm"], help="Gaussian width per residue, Å")
    ap.add_argument("--threads", type=int, default=d["threads"])
    ap.add_argument("--seed", type=int, default=d["seed"])
    ap.add_argument("--check-clean", type=Path, default=None, help="clean stack for the convention check")
    ap.add_argument("--identity", action="store_true", help="zero the decoder output (models = reference)")
    ap.add_argument("--snapshot-epochs", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                    help="also write ca_models_epochK.npy after these epochs, e.g. 25,50,100 (not timed)")
    return ap.parse_args(argv)


def validate(args) -> tuple[dict, "object"]:
    for opt in ("epochs", "segments", "latent_dim", "batch_size", "threads"):
        lo = 0 if opt == "epochs" else 1
        if getattr(args, opt) < lo:
            raise InputError("--" + opt.replace("_", "-"), f"must be ≥ {lo}")
    for opt in ("lr", "sigma_gmm"):
        v = getattr(args, opt)
        if not (math.isfinite(v) and v > 0):
            raise InputError("--" + opt.replace("_", "-"), "must be a positive number")
    if not args.particles.is_file():
        raise InputError(str(args.particles), "no such file")
    if not args.reference.is_file():
        raise InputError(str(args.reference), "no such file")
    if args.reference.suffix.lower() != ".pdb":
        raise InputError(str(args.reference), "cryoSPHERE reads PDB files only")
    if args.check_clean is not None and not args.check_clean.is_file():
        raise InputError(str(args.check_clean), "no such file")
    optics, parts = read_star(args.particles)
    for p in _stack_paths(args.particles, parts):
        if not p.is_file():
            raise InputError(str(args.particles), f"stack {p} not found")
    if len(parts) < 100:
        raise InputError(str(args.particles), f"{len(parts)} particles; cryoSPHERE needs at least 100")
    if args.batch_size > len(parts):
        raise InputError("--batch-size", f"{args.batch_size} is more than the {len(parts)} particles")
    return optics, parts


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    try:
        optics, parts = validate(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.particles, args.reference = args.particles.resolve(), args.reference.resolve()
    out = args.out.resolve()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "disabled")
    # Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine, spinning threads made an epoch
    # 20× slower (64 s instead of 3 s) whenever another process held a core.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(args.threads)
    apix, D = float(optics["rlnImagePixelSize"]), int(optics["rlnImageSize"])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings.update(apix_A=apix, box_px=D, torch=torch.__version__)
    _install_torchvision_stand_in()
    try:
        import importlib.metadata as md
        settings["cryosphere"] = md.version("cryosphere")
    except Exception:
        settings["cryosphere"] = "unknown"
    try:
        base_path, ref_ca, base_info = prepare_base_structure(args.reference, out)
    except InputError as e:
        if created and not any(out.iterdir()):
            out.rmdir()
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings["base_structure"] = base_info
    _write_json(out / "settings.json", settings)
    params = write_cryosphere_config(out, args.particles, base_path, apix, D, len(parts), args)
    try:
        res = train(args, parts, out, params)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ref = res.pop("reference_ca")
    if not np.array_equal(ref, ref_ca):
        raise RuntimeError("cryoSPHERE's base structure differs from the prepared reference")
    ca = np.load(out / "ca_models.npy")
    n_img = (res["n_particles"] // args.batch_size) * args.batch_size * len(res["epochs"])  # drop_last
    summary = {
        "train_s": round(res["train_s"], 3), "predict_s": round(res["predict_s"], 3),
        "load_s": round(res["load_s"], 3), "epochs": len(res["epochs"]),
        "epoch_s_median": round(float(np.median([e["epoch_s"] for e in res["epochs"]])), 3) if res["epochs"] else None,
        "skipped_steps": res["skipped_steps"],
        "images_per_s": round(n_img / res["train_s"], 2) if res["train_s"] > 0 else None,
        "n_particles": res["n_particles"], "n_residues": res["n_residues"],
        "final_loss": res["epochs"][-1]["loss"] if res["epochs"] else None,
        "max_abs_dev_from_reference_A": float(np.abs(ca - ref[None]).max()),
        "wall_s": round(time.perf_counter() - t_start, 3),
    }
    if "check_clean" in res:
        summary["check_corr_mean"] = round(res["check_clean"]["corr_mean"], 5)
    full = dict(summary, settings=settings, check_clean=res.get("check_clean"),
                segment_of_residue=res["segment_of_residue"], per_epoch=res["epochs"])
    _write_json(out / "result.json", full)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
