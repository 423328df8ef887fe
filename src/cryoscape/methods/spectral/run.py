"""End-to-end run of the spectral method on a particle set: features → graph → model → fit → models.

Inputs: a :class:`cryoscape.data.particles.ParticleData` (images with known poses and CTF), the given
atomic model (Cα chain of one conformation) and a feature source: "images" (coordinates on the main modes of
3-D variability, from the images, poses and CTF alone; :func:`.features.variability_coordinates`) or
"oracle" (the paper's low-resolution maps of each particle's *true* conformation; simulated data only).

With the true models (simulated data) each particle's true anchor (reference atom and frame) is given to
the model, as in the paper's protocol, and errors are reported on held-out particles; without them the
chain is anchored at the given model's reference atom and frame (the frame the poses refer to).

The method returns a :class:`SpectralResult` and writes nothing: ``cryoscape.runs.spectral`` scores it against
the truth and writes the run folder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ...io.errors import InputError
from ...structure.chain import chain_to_internal
from ...structure.segments import Segment, check_segments, find_segments
from .features import oracle_maps
from .graph import spectral_embedding
from .model import (FitConfig, LinearAngleModel, CartesianModel, SegmentedAngleModel, fit_model, refine_cartesian,
                    render_particles)

__all__ = ["SpectralConfig", "SpectralResult", "run_spectral", "model_segments", "check_inputs", "default_fit",
           "variability_box",
           "split", "training_items", "MODELS", "FEATURES"]


MODELS = ("cartesian", "angles")
FEATURES = ("images", "oracle")


@dataclass
class SpectralConfig:
    """Options. The defaults are the best measured ones on AdK (docs/benchmarks.md; the demo runs them): graph
    features from the images (``features`` "images": coordinates on ``variability_modes`` = 1 mode of 3-D
    variability, measured best on AdK's one-path motion), ``k`` = 3 eigenvectors, the cartesian model
    (positions linear in the eigenvectors within ``smooth_modes`` = 20 cosines along the chain), refitted with
    ``refine_modes`` = 60 cosines at ``refine_lr`` = a tenth of the step, Adam 1.0 with a cosine schedule over
    30 epochs per stage (``fit``, a :class:`FitConfig`, whose ``seed`` and ``sigma`` also seed the split and
    set the atom width). The paper's model: ``model`` "angles" (bend and torsion angles linear in the
    eigenvectors, with ``bias`` and ``bonds`` "constant" or "given"; no refit) with ``k`` = 10 and
    :func:`default_fit` ("angles": Adam 0.01, constant steps). ``hidden``: units of an optional small MLP
    term of the cartesian model. ``oracle_*``: the grid of the paper's oracle features. ``variability_box``: the
    crop of the images for the variability features (None: :func:`variability_box`, the same pixel for any
    box)."""

    features: str = "images"
    k: int = 3
    bias: bool = False
    bonds: str = "constant"
    model: str = "cartesian"
    smooth_modes: int = 20
    refine_modes: int = 60
    refine_lr: float = 0.1
    hidden: int = 0
    test_fraction: float = 0.1
    oracle_box: int = 16
    oracle_apix: float = 6.0
    oracle_noise: float = 0.5
    variability_modes: int = 1
    variability_box: int | None = None
    variability_resolution_A: float = 10.0
    fit: FitConfig = field(default_factory=lambda: default_fit("cartesian"))

    @property
    def refines(self) -> bool:
        """Whether a second stage refits the cartesian model with ``refine_modes`` cosines."""
        return self.model == "cartesian" and self.refine_modes > self.smooth_modes

    @property
    def stages(self) -> int:
        return 2 if self.refines else 1

    def check(self) -> None:
        """Raise :class:`InputError` naming the option of the first bad value (before any work)."""
        if self.model not in MODELS:
            raise InputError("--model", f"must be cartesian or angles, got {self.model!r}")
        if self.features not in FEATURES:
            raise InputError("--features", f"must be images or oracle, got {self.features!r}")
        if self.bonds not in ("constant", "given"):
            raise InputError("--bonds", f"must be constant or given, got {self.bonds!r}")
        for name, value, low in (("--k", self.k, 1), ("--smooth-modes", self.smooth_modes, 1),
                                 ("--refine-modes", self.refine_modes, 0), ("--hidden", self.hidden, 0),
                                 ("--variability-modes", self.variability_modes, 1),
                                 ("--epochs", self.fit.epochs, 1), ("--batch-size", self.fit.batch_size, 1),
                                 ("--seed", self.fit.seed, 0)):
            if not (isinstance(value, int) and value >= low):
                raise InputError(name, f"must be an integer ≥ {low}, got {value}")
        if not 0 < self.test_fraction < 1:
            raise InputError("--test-fraction", f"must be in (0, 1), got {self.test_fraction}")
        for name, value in (("--lr", self.fit.lr), ("--sigma", self.fit.sigma), ("--refine-lr", self.refine_lr)):
            if not (value > 0 and math.isfinite(value)):
                raise InputError(name, f"must be a finite number > 0, got {value}")
        if self.fit.optimizer not in ("sgd", "adam"):
            raise InputError("--optimizer", f"must be sgd or adam, got {self.fit.optimizer!r}")
        if self.fit.schedule not in ("constant", "cosine"):
            raise InputError("--schedule", f"must be constant or cosine, got {self.fit.schedule!r}")


def variability_box(D: int, apix: float, resolution_A: float) -> int:
    """The box the images are Fourier-cropped to for the variability features: the smallest even box, at most
    ``D``, whose pixel is no larger than ``0.365 · resolution_A`` (Nyquist at 1.37× the features' frequency
    limit). That is the measured setting on AdK (64 px of 1.822 Å cropped to 32 px for 10 Å) kept for any box:
    a fixed 32 px would blur a larger particle's features (a dimer in 112 px: 6.4 Å pixels, Nyquist 12.8 Å)."""
    size = D * apix / (0.365 * resolution_A)
    return int(min(D, 2 * math.ceil(size / 2 - 1e-9)))


def default_fit(model: str, **changes) -> FitConfig:
    """The measured-best training of each model (docs/benchmarks.md), with ``changes`` applied: the cartesian
    model Adam 1.0 with a cosine schedule; the angle model Adam 0.01 with constant steps (30 epochs each)."""
    base = (FitConfig(epochs=30, lr=1.0, optimizer="adam", schedule="cosine") if model == "cartesian" else
            FitConfig(epochs=30, lr=0.01, optimizer="adam", schedule="constant"))
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class SpectralResult:
    """What the method returns (no metrics: scoring against a truth is the analysis layer's job).

    ``models (N, L, 3)``: one Cα model per particle (Å, model frame); ``initial_models (N, L, 3)``: the given
    model as each particle starts (with the same anchors); ``embedding (N, k)``; ``test_index``: the held-out
    particles (sorted); ``history``: per-epoch training history of every stage (epochs numbered on);
    ``truth (N, L, 3)`` when given; ``views``: noiseless renders of three held-out particles (``initial``,
    ``truth``, ``prediction``) beside the ``observed`` images, each ``(3, D, D)``; ``segments``: the
    continuous segments the model was cut into (:class:`~cryoscape.structure.segments.Segment`).
    """

    models: torch.Tensor
    embedding: torch.Tensor
    test_index: np.ndarray
    history: list
    wall_s: float = 0.0
    initial_models: torch.Tensor | None = None
    truth: torch.Tensor | None = None
    views: dict = field(default_factory=dict)
    segments: list = field(default_factory=list)


def model_segments(reference: np.ndarray, meta=None, truth: np.ndarray | None = None) -> list[Segment]:
    """The continuous segments of the given model (:func:`cryoscape.structure.segments.find_segments`): cut at
    chain and residue-number restarts of ``meta`` (a :class:`~cryoscape.io.models.Conformations` of the same
    atoms; None: one chain numbered 1…L) and at Cα gaps above 4.2 Å in the reference or in any true model."""
    L = reference.shape[0]
    coords = reference[None] if truth is None else np.concatenate([reference[None], truth], 0)
    chains = np.array(["A"] * L) if meta is None else meta.chains
    resids = np.arange(1, L + 1) if meta is None else meta.resids
    return find_segments(coords, chains, resids)


def check_inputs(n_particles: int, reference: np.ndarray, cfg: SpectralConfig, truth: np.ndarray | None = None,
                 where_reference="--reference", segments: list[Segment] | None = None) -> list[Segment]:
    """Every refusal :func:`run_spectral` would make about its inputs, without reading any image; returns the
    segments (``segments``, or :func:`model_segments` of the reference and truth)."""
    cfg.check()
    if cfg.features == "oracle" and truth is None:
        raise InputError("--features", "the oracle feature source needs the true models (--truth-models)")
    L = reference.shape[0]
    if L < 4:
        raise InputError(where_reference, f"needs at least 4 Cα, has {L}")
    if truth is not None and truth.shape != (n_particles, L, 3):
        raise InputError("--truth-models", f"true models have shape {truth.shape}, expected ({n_particles}, {L}, 3)")
    if not cfg.k < n_particles:
        raise InputError("--k", f"must be in 1..{n_particles - 1}, got {cfg.k}")
    segments = model_segments(reference, None, truth) if segments is None else segments
    if sum(len(s) for s in segments) != L:
        raise InputError(where_reference, f"segments cover {sum(len(s) for s in segments)} atoms, the model has {L}")
    check_segments(segments, where_reference)
    return segments


def split(n: int, cfg: SpectralConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` sorted particle indices: ``max(1, round(test_fraction · n))`` held out at random
    (numpy generator seeded ``cfg.fit.seed``)."""
    perm = np.random.default_rng(cfg.fit.seed).permutation(n)
    n_test = max(1, int(round(cfg.test_fraction * n)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def training_items(n: int, cfg: SpectralConfig) -> int:
    """Images a run on ``n`` particles trains on, over all epochs and stages (a progress bar's total)."""
    return len(split(n, cfg)[0]) * cfg.fit.epochs * cfg.stages


def run_spectral(data, reference: np.ndarray, cfg: SpectralConfig, truth: np.ndarray | None = None,
                 progress=None, checkpoint_dir=None, log=None, segments: list[Segment] | None = None) -> SpectralResult:
    """Run the method.

    Args:
        data: :class:`~cryoscape.data.particles.ParticleData` with poses (and CTF, or none: CTF-free).
        reference: ``(L, 3)`` Cα of the given model (Å, centred as the particles' poses assume).
        truth: ``(N, L, 3)`` true Cα of every particle (simulated data): gives each particle its true anchor
            (the paper's protocol) and the oracle features; the method does not score against it.
        progress: object with ``advance(n)``, advanced by the images of every batch (:func:`training_items`
            in all).
        segments: the model's continuous segments (chains, missing loops; default :func:`model_segments` of
            the reference and truth, cut at Cα gaps only): the cartesian model's smooth basis is per segment,
            the angle model's internal coordinates are per segment with a rigid link each, and no bond term
            spans a gap.
        checkpoint_dir: folder of the per-epoch checkpoints (``fit.pt``, and ``refine.pt`` for the refit);
            a run finds them there and resumes (None: no checkpoints). log: logger (one line per epoch).
    Training runs on ``cfg.fit.device``; under ``torchrun`` each process fits its part of every batch and
    every process returns the same result.
    """
    from .features import variability_coordinates
    t0 = time.perf_counter()
    if data.rotations is None:
        raise InputError(data.source, "no poses")
    N = len(data)
    segments = check_inputs(N, reference, cfg, truth, segments=segments)
    ref_t = torch.as_tensor(reference, dtype=torch.float64)[None]
    # the anchor segment: the only one for a continuous chain, else the longest (the others hang on rigid links)
    primary = max(segments, key=len)
    ref = chain_to_internal(ref_t[:, primary.atoms])
    if cfg.bonds == "constant":
        ref.bonds = torch.full_like(ref.bonds, float(ref.bonds.mean()))
    true_t = None if truth is None else torch.as_tensor(truth, dtype=torch.float64)
    if true_t is not None:
        true_int = chain_to_internal(true_t[:, primary.atoms], ref=ref.ref)
        anchors = (true_int.ref_pos, true_int.ref_frame)  # the paper's protocol: each particle's true anchor
    else:
        anchors = (ref.ref_pos.expand(N, -1), ref.ref_frame.expand(N, -1, -1))
    if cfg.features == "oracle":
        feats = oracle_maps(true_t - true_t.mean(1, keepdim=True), cfg.oracle_box, cfg.oracle_apix, blur=cfg.fit.sigma,
                            noise_std=cfg.oracle_noise, seed=cfg.fit.seed)
    else:
        box = cfg.variability_box or variability_box(data.D, data.apix, cfg.variability_resolution_A)
        feats = variability_coordinates(data, box, cfg.variability_modes, cfg.variability_resolution_A,
                                        seed=cfg.fit.seed)
    v, _, _ = spectral_embedding(feats, cfg.k)
    images = torch.from_numpy(data.images(slice(0, N))).to(torch.float64)
    train, test = split(N, cfg)
    poses = data.poses  # shift_A: the particle's displacement from the box centre (−RELION origin)
    R, offsets = poses.R, poses.shift_A

    v_rms = float(v.pow(2).mean().sqrt())

    def new_model():
        if cfg.model == "cartesian":
            return CartesianModel(ref_t[0], cfg.k, v_rms, cfg.smooth_modes, hidden=cfg.hidden, seed=cfg.fit.seed,
                                  segments=segments)
        if len(segments) > 1:
            return SegmentedAngleModel(ref_t[0], segments, cfg.k, v_rms, bias=cfg.bias,
                                       constant_bonds=cfg.bonds == "constant")
        return LinearAngleModel(ref, cfg.k, bias=cfg.bias)

    model = new_model()
    fit_cfg = cfg.fit

    def checkpoint(name):
        return None if checkpoint_dir is None else str(Path(checkpoint_dir) / name)

    tr = torch.as_tensor(train)
    train_ctf = None if data.ctf is None else data.ctf.subset(tr)
    history = fit_model(model, v[tr], images[tr], R[tr], offsets[tr], train_ctf, data.D, data.apix,
                        replace(fit_cfg, checkpoint=checkpoint("fit.pt")), progress=progress,
                        anchors=(anchors[0][tr], anchors[1][tr]), log=log)
    if cfg.refines:
        model = refine_cartesian(model.cpu(), cfg.refine_modes)
        fine = fit_model(model, v[tr], images[tr], R[tr], offsets[tr], train_ctf, data.D, data.apix,
                         replace(fit_cfg, lr=fit_cfg.lr * cfg.refine_lr, history=[], checkpoint=checkpoint("refine.pt")),
                         progress=progress, log=log)
        history += [{**h, "epoch": h["epoch"] + fit_cfg.epochs} for h in fine]
    model = model.cpu()
    with torch.no_grad():
        models = model(v, anchors[0], anchors[1])
        start = new_model()(v, anchors[0], anchors[1])
        # noiseless views of three test particles: the given model, the truth and the prediction
        show = torch.as_tensor(test[:3])
        ctf = None if data.ctf is None else data.ctf.subset(show)
        views = {name: render_particles(c[show], R[show], offsets[show], ctf, cfg.fit.sigma, data.D,
                                        data.apix).numpy()
                 for name, c in (("initial", start), ("truth", true_t), ("prediction", models)) if c is not None}
        views["observed"] = images[show].numpy()
    return SpectralResult(models, v, test, history, time.perf_counter() - t0, start, true_t, views, segments)
