"""End-to-end run of the spectral method on a particle set: features → graph → model → fit → models.

Inputs: a :class:`cryoscape.data.particles.ParticleData` (images with known poses and CTF), the given
atomic model (Cα chain of one conformation) and a feature source: "images" (coordinates on the main modes of
3-D variability, from the images, poses and CTF alone; :func:`.features.variability_coordinates`) or
"oracle" (the paper's low-resolution maps of each particle's *true* conformation; simulated data only).

With the true models (simulated data) each particle's true anchor (reference atom and frame) is given to
the model, as in the paper's protocol, and errors are reported on held-out particles; without them the
chain is anchored at the given model's reference atom and frame (the frame the poses refer to).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ...io.errors import InputError
from ...structure.chain import chain_to_internal
from .features import oracle_maps
from .graph import spectral_embedding
from .model import FitConfig, LinearAngleModel, CartesianModel, fit_model, refine_cartesian

__all__ = ["SpectralConfig", "SpectralResult", "run_spectral", "check_chain"]

MAX_BOND_A = 4.2


@dataclass
class SpectralConfig:
    """Options: the feature source, eigenvectors ``k``, the model (``model`` "angles", the paper's, with
    ``bias`` and ``bonds`` "constant" or "given"; or "cartesian", positions linear in the eigenvectors
    within ``smooth_modes`` cosines along the chain, then optionally refitted with ``refine_modes``
    cosines at ``refine_lr`` times the step; ``hidden`` units of an optional small MLP term), the test
    fraction, the feature sources' grids (``variability_modes``: 1 measured best on AdK, where the
    motion is one path), and the training
    (``fit``, a :class:`FitConfig`: Adam 0.01 by default, robust on this normalised loss; its ``seed`` and ``sigma``
    also seed the split and set the atom width)."""

    features: str = "images"
    k: int = 10
    bias: bool = False
    bonds: str = "constant"
    model: str = "angles"
    smooth_modes: int = 20
    refine_modes: int = 0
    refine_lr: float = 0.1
    hidden: int = 0
    test_fraction: float = 0.1
    oracle_box: int = 16
    oracle_apix: float = 6.0
    oracle_noise: float = 0.5
    variability_modes: int = 1
    variability_box: int = 32
    variability_resolution_A: float = 10.0
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, optimizer="adam"))


@dataclass
class SpectralResult:
    """Per-particle models ``(N, L, 3)`` (Å, model frame), the embedding ``(N, k)``, the test indices,
    the training history and, with truth, the metrics on the test particles."""

    models: torch.Tensor
    embedding: torch.Tensor
    test_index: np.ndarray
    history: list
    metrics: dict = field(default_factory=dict)
    initial_metrics: dict = field(default_factory=dict)
    wall_s: float = 0.0
    initial_models: torch.Tensor | None = None
    truth: torch.Tensor | None = None
    views: dict = field(default_factory=dict)


def check_chain(coords: np.ndarray, where) -> None:
    """Refuse chains with gaps: consecutive Cα more than 4.2 Å apart (split the model into segments)."""
    d = np.linalg.norm(np.diff(coords, axis=-2), axis=-1)
    if d.ndim > 1:
        d = d.max(axis=0)
    gaps = np.nonzero(d > MAX_BOND_A)[0]
    if len(gaps):
        raise InputError(where, f"chain gap: Cα {gaps[0] + 1}–{gaps[0] + 2} are {d[gaps[0]]:.1f} Å apart "
                                f"({len(gaps)} gap(s) > {MAX_BOND_A} Å); give one continuous segment")


def run_spectral(data, reference: np.ndarray, cfg: SpectralConfig, truth: np.ndarray | None = None,
                 progress=None) -> SpectralResult:
    """Run the method.

    Args:
        data: particles with poses and CTF. reference: ``(L, 3)`` Cα of the given model (Å, centred as the
            particles' poses assume). truth: ``(N, L, 3)`` true Cα of every particle (oracle features and
            metrics). progress: object with ``advance(n)``, one unit per epoch.
    """
    from ...analysis.pointcloud import pointcloud_errors
    from .features import variability_coordinates
    t0 = time.perf_counter()
    if cfg.features not in ("images", "oracle"):
        raise InputError("--features", f"must be images or oracle, got {cfg.features!r}")
    if cfg.features == "oracle" and truth is None:
        raise InputError("--features", "the oracle feature source needs the true models (--truth-models)")
    if data.rotations is None:
        raise InputError(data.source, "no poses")
    N, L = len(data), reference.shape[0]
    if truth is not None and truth.shape != (N, L, 3):
        raise InputError("--truth-models", f"true models have shape {truth.shape}, expected ({N}, {L}, 3)")
    if not 0 < cfg.test_fraction < 1:
        raise InputError("--test-fraction", f"must be in (0, 1), got {cfg.test_fraction}")
    if not 1 <= cfg.k < N:
        raise InputError("--k", f"must be in 1..{N - 1}, got {cfg.k}")
    check_chain(reference, "--reference")
    ref_t = torch.as_tensor(reference, dtype=torch.float64)[None]
    ref = chain_to_internal(ref_t)
    if cfg.bonds == "constant":
        ref.bonds = torch.full_like(ref.bonds, float(ref.bonds.mean()))
    elif cfg.bonds != "given":
        raise InputError("--bonds", f"must be constant or given, got {cfg.bonds!r}")
    true_t = None if truth is None else torch.as_tensor(truth, dtype=torch.float64)
    if true_t is not None:
        true_int = chain_to_internal(true_t, ref=ref.ref)
        anchors = (true_int.ref_pos, true_int.ref_frame)  # the paper's protocol: each particle's true anchor
    else:
        anchors = (ref.ref_pos.expand(N, -1), ref.ref_frame.expand(N, -1, -1))
    if cfg.features == "oracle":
        feats = oracle_maps(true_t - true_t.mean(1, keepdim=True), cfg.oracle_box, cfg.oracle_apix, blur=cfg.fit.sigma,
                            noise_std=cfg.oracle_noise, seed=cfg.fit.seed)
    else:
        feats = variability_coordinates(data, cfg.variability_box, cfg.variability_modes,
                                        cfg.variability_resolution_A, seed=cfg.fit.seed)
    v, _, _ = spectral_embedding(feats, cfg.k)
    images = torch.from_numpy(data.images(slice(0, N))).to(torch.float64)
    rng = np.random.default_rng(cfg.fit.seed)
    perm = rng.permutation(N)
    n_test = max(1, int(round(cfg.test_fraction * N)))
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    # origins (RELION: the shift that centres the particle) → the particle's offset is their negative
    offsets = -torch.as_tensor(data.origins_A)
    def new_model():
        if cfg.model == "cartesian":
            return CartesianModel(ref_t[0], cfg.k, float(v.pow(2).mean().sqrt()), cfg.smooth_modes,
                                  hidden=cfg.hidden, seed=cfg.fit.seed)
        return LinearAngleModel(ref, cfg.k, bias=cfg.bias)
    if cfg.model not in ("angles", "cartesian"):
        raise InputError("--model", f"must be angles or cartesian, got {cfg.model!r}")
    if cfg.model == "cartesian" and not 1 <= cfg.smooth_modes:
        raise InputError("--smooth-modes", f"must be ≥ 1, got {cfg.smooth_modes}")
    model = new_model()
    fit_cfg = cfg.fit
    tr = torch.as_tensor(train)
    with torch.no_grad():
        initial = ({} if true_t is None else
                   pointcloud_errors(model(v[test], anchors[0][test], anchors[1][test]), true_t[test]))
    train_ctf = None if data.ctf is None else data.ctf.subset(tr)
    history = fit_model(model, v[tr], images[tr], data.rotations[tr], offsets[tr], train_ctf, data.D, data.apix,
                        fit_cfg, progress=progress, anchors=(anchors[0][tr], anchors[1][tr]))
    if cfg.model == "cartesian" and cfg.refine_modes > cfg.smooth_modes:
        model = refine_cartesian(model, cfg.refine_modes)
        fine = fit_model(model, v[tr], images[tr], data.rotations[tr], offsets[tr], train_ctf, data.D, data.apix,
                         replace(fit_cfg, lr=fit_cfg.lr * cfg.refine_lr, history=[]), progress=progress)
        history += [{**h, "epoch": h["epoch"] + fit_cfg.epochs} for h in fine]
    with torch.no_grad():
        models = model(v, anchors[0], anchors[1])
        final = {} if true_t is None else pointcloud_errors(models[test], true_t[test])
        start = new_model()(v, anchors[0], anchors[1])
        # noiseless views of three test particles: the given model, the truth and the prediction
        from .model import render_particles
        show = torch.as_tensor(test[:3])
        ctf = None if data.ctf is None else data.ctf.subset(show)
        views = {name: render_particles(c[show], data.rotations[show], offsets[show], ctf, cfg.fit.sigma, data.D,
                                        data.apix).numpy()
                 for name, c in (("initial", start), ("truth", true_t), ("prediction", models)) if c is not None}
        views["observed"] = images[show].numpy()
    return SpectralResult(models, v, test, history, final, initial, time.perf_counter() - t0, start, true_t, views)


def write_spectral(out_dir, result: SpectralResult, meta, config: dict, overwrite: bool = False,
                   color: np.ndarray | None = None, models_format: str = "pdb") -> dict:
    """Write the per-particle models (``models.pdb``, one model per particle; or with ``models_format``
    "dcd" ``models.dcd`` + ``models_topology.pdb``), ``embedding.npy``, ``test_index.npy``,
    ``training.json``, ``metrics.json``, plots (``color``: e.g. the true conformation of each particle),
    ``config.yaml``, ``versions.txt`` atomically."""
    import json

    from ...io.atomic import atomic_dir
    from ...io.models import Conformations, write_dcd, write_pdb
    from ...io.rundir import write_config, write_versions
    from ...report.plots import embedding_plot, structures_plot, training_plot, views_plot

    summary = {"n_particles": int(result.models.shape[0]), "wall_s": round(result.wall_s, 3),
               "test_initial": {k: v for k, v in result.initial_metrics.items() if k != "per_residue_error_A"},
               "test_trained": {k: v for k, v in result.metrics.items() if k != "per_residue_error_A"},
               "per_residue_error_A": result.metrics.get("per_residue_error_A")}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        conf = Conformations(result.models.detach().numpy(), meta.names, meta.resnames, meta.resids, meta.chains,
                             meta.elements, "cryoscape spectral", np.arange(result.models.shape[0]))
        if models_format == "dcd":
            write_dcd(tmp / "models.dcd", conf)
        else:
            write_pdb(tmp / "models.pdb", conf)
        np.save(tmp / "embedding.npy", result.embedding.numpy())
        np.save(tmp / "test_index.npy", result.test_index)
        (tmp / "training.json").write_text(json.dumps(result.history, indent=1))
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=1))
        embedding_plot(tmp / "embedding.png", result.embedding.numpy(), color)
        training_plot(tmp / "training.png", result.history)
        if result.views:
            views_plot(tmp / "projections.png", result.views)
        if result.initial_models is not None and result.truth is not None and len(result.test_index):
            idx = result.test_index[:3]
            structures_plot(tmp / "structures.png", result.initial_models[idx].numpy(), result.truth[idx].numpy(),
                            result.models[idx].detach().numpy())
        write_config(tmp, config)
        write_versions(tmp)
    return summary
