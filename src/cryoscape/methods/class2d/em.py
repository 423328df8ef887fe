"""Reference-free 2D classification by expectation-maximisation over classes, in-plane rotations and shifts.

Model (the 2-D forward model, in Fourier space on a :class:`~cryoscape.physics.polar.PolarGrid`):
``x_i = h_i · ramp(s) · rotate(c_k, ψ) + n``, with ``h_i`` the image's CTF, ``ramp(s)`` the shift by ``s``
pixels, ``c_k`` the class average and ``n`` Gaussian noise of variance ``σ²(r)`` per ring. The latent class,
rotation (``L`` angles) and shift (a grid in a disc of ``shift_range_px``) are marginalised:

- E-step: ``γ_i(k, t, s) ∝ π_k exp ℓ_i(k, t, s)`` with ``ℓ`` from :func:`cryoscape.physics.likelihood.inplane_loglik`.
- M-step: the Wiener estimate ``c_k = Σ γ rotate⁻¹(h x ramp̄/σ²) / (Σ γ rotate⁻¹(h²/σ²) + 1/τ²_k)`` with the
  signal prior ``τ²_k(r) = fudge · max(⟨|c_ML|²⟩_r − ⟨1/den⟩_r, 0)`` (RELION's regularised likelihood, with its
  ``T = 2``), class priors ``π_k = Σ_i p_i(k) / N`` and the noise spectrum ``σ²(r)`` as the mean residual
  power at the most probable pose.
- Between iterations each class is brought back to real space, masked, and re-centred on its centre of
  mass; a class that lost its images is replaced by a perturbed copy of the largest one. The outermost ring
  grows with the resolution the classes reach (frequency marching).

Start: every image in a random class at a random rotation (the average of random subsets). Stochastic mode
(``mini_batch``): each iteration but the last ``full_passes`` uses a fresh random subset of the images.
Everything random comes from ``seed``; the same inputs, seed, device and thread count give the same result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ...io.errors import InputError
from ...physics.ctf import CTFParams
from ...physics.likelihood import inplane_loglik
from ...physics.polar import PolarGrid, soft_disc_mask
from ...physics.shift import shift_images
from ...utils.progress import progress_bar

__all__ = ["Class2DConfig", "Class2DResult", "fit", "shift_grid"]


@dataclass
class Class2DConfig:
    """Options of :func:`fit`. Pixels where named ``_px``.

    n_classes: K. n_iterations: EM iterations. shift_range_px / shift_step_px: the shifts tried (a square grid
    of this step cut to the disc of this radius). mask_diameter_px: soft circular mask on images and classes
    (None: 90 % of the box). r_start: the first iterations' outermost ring (None: D/8, at least 8; from 4 a random start
    merged two of three templates at D = 32). r_limit:
    the outermost ring ever used (None: D/2 − 1). tau_fudge: multiplies the signal prior (RELION's T).
    batch_size: images per E-step batch (bounds memory: ~``batch_size · S · K · L`` floats).
    mini_batch: images per iteration in stochastic mode (None: all). full_passes: final iterations over all
    images in stochastic mode. global_shift_iterations: the first iterations search the whole shift grid;
    later ones the 3 × 3 steps around each image's last most probable shift. anneal_start / anneal_iterations:
    deterministic annealing: iteration ``i`` divides the log-likelihoods by ``T_i = anneal_start^(1 − (i − 1) /
    anneal_iterations)`` for ``i ≤ anneal_iterations`` (1 after; as if the noise were ``T_i`` times stronger),
    so early assignments stay soft and classes separate before they commit. init: ``random`` (each image in a
    random class at a random rotation) or ``features`` (k-means on rotation-invariant power spectra of the
    phase-flipped images, then each cluster aligned by a one-class EM of ``init_iterations``; also what
    ``fit(init_labels=…)`` does with given labels). n_starts: independent runs (seeds ``seed, seed + 1, …``),
    the one with the highest final log-likelihood kept (on 5 AdK conformations at SNR 1 and 0.1 the runs that
    merged two conformations were 50–100 and 2.5 units per image below the others). seed: randomness. centre: re-centre classes. device: torch device.
    """

    n_classes: int = 50
    n_iterations: int = 20
    shift_range_px: float = 3.0
    shift_step_px: float = 1.0
    mask_diameter_px: float | None = None
    r_start: int | None = None
    r_limit: int | None = None
    tau_fudge: float = 2.0
    batch_size: int = 64
    mini_batch: int | None = None
    full_passes: int = 2
    global_shift_iterations: int = 5
    anneal_start: float = 1.0
    anneal_iterations: int = 0
    init: str = "random"
    init_iterations: int = 4
    n_starts: int = 1
    seed: int = 0
    centre: bool = True
    device: str = "cpu"

    def check(self, n_images: int, D: int) -> None:
        """Raise :class:`InputError` naming the first option that cannot work for ``n_images`` of ``D`` px."""
        checks = [
            (self.n_classes >= 1, "--classes", f"must be ≥ 1, got {self.n_classes}"),
            (self.n_classes <= n_images, "--classes", f"{self.n_classes} classes for {n_images} images: need at "
                                                      "most one class per image"),
            (self.n_iterations >= 1, "--iterations", f"must be ≥ 1, got {self.n_iterations}"),
            (0 <= self.shift_range_px < D / 2, "--shift-range", f"must be in [0, {D / 2}) px"),
            (self.shift_step_px > 0, "--shift-step", f"must be > 0, got {self.shift_step_px}"),
            (self.tau_fudge > 0, "--tau-fudge", f"must be > 0, got {self.tau_fudge}"),
            (self.anneal_start >= 1, "--anneal-start", f"must be ≥ 1, got {self.anneal_start}"),
            (self.anneal_iterations >= 0, "--anneal-iterations", f"must be ≥ 0, got {self.anneal_iterations}"),
            (self.n_starts >= 1, "--starts", f"must be ≥ 1, got {self.n_starts}"),
            (self.init_iterations >= 1, "--init-iterations", f"must be ≥ 1, got {self.init_iterations}"),
            (self.init in ("random", "features"), "--init", f"must be random or features, got {self.init!r}"),
            (self.batch_size >= 1, "--batch-size", f"must be ≥ 1, got {self.batch_size}"),
            (self.mini_batch is None or self.mini_batch >= self.n_classes, "--mini-batch",
             f"must be ≥ the number of classes ({self.n_classes})"),
            (self.mask_diameter_px is None or 4 <= self.mask_diameter_px <= D, "--mask-diameter",
             f"must be in [4, {D}] px"),
        ]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, problem)


@dataclass
class Class2DResult:
    """Shapes: ``averages (K, D, D)`` float32 (the EM's classes, real space, CTF-corrected, masked);
    ``labels (N,)`` int64 (0-based); ``psi (N,)`` radians and ``shift_A (N, 2)`` (``x_i ≈ shift(rotate(c, ψ), s)``);
    ``max_prob (N,)`` (largest posterior over class, rotation and shift: RELION's MaxValueProbDistribution);
    ``class_prob (N, K)``; ``counts (K,)``; ``noise_var (R,)`` per ring; ``history`` one dict per iteration."""

    averages: torch.Tensor
    labels: torch.Tensor
    psi: torch.Tensor
    shift_A: torch.Tensor
    max_prob: torch.Tensor
    class_prob: torch.Tensor
    counts: torch.Tensor
    noise_var: torch.Tensor
    apix: float
    history: list = field(default_factory=list)


def shift_grid(range_px: float, step_px: float) -> torch.Tensor:
    """``(S, 2)`` shifts ``(x, y)`` in px: a square grid of ``step_px`` within the disc of ``range_px``; (0, 0) first."""
    n = int(math.floor(range_px / step_px + 1e-9))
    v = torch.arange(-n, n + 1, dtype=torch.float64) * step_px
    g = torch.stack(torch.meshgrid(v, v, indexing="xy"), -1).reshape(-1, 2)
    g = g[(g.square().sum(-1) <= range_px ** 2 + 1e-9)]
    order = torch.argsort(g.square().sum(-1), stable=True)
    return g[order]


class _State:
    """What an iteration hands to the next: classes (real space), noise per ring, class priors, ring limit,
    and each image's most probable shift (px), the centre of its local shift search."""

    def __init__(self, classes, noise_var, priors, r_max, offsets):
        self.classes, self.noise_var, self.priors, self.r_max = classes, noise_var, priors, r_max
        self.offsets = offsets


class _Accumulator:
    """Sums of one M-step: numerator and denominator spectra per class ``(M, K, R)``, class weights, residual
    power per ring."""

    def __init__(self, K, grid: PolarGrid, device):
        R, M = grid.r_max + 1, grid.M
        self.num = torch.zeros(M, K, R, dtype=grid._ctype, device=device)
        self.den = torch.zeros(M, K, R, dtype=grid._ctype, device=device)
        self.weight = torch.zeros(K, dtype=torch.float64, device=device)
        self.resid = torch.zeros(R, dtype=torch.float64, device=device)
        self.n = 0


def _grid_for(cache: dict, D: int, r_max: int, apix: float, device) -> PolarGrid:
    if r_max not in cache:
        cache[r_max] = PolarGrid(D, r_max, apix=apix, device=device)
    return cache[r_max]


def _class_spectra(grid, classes):
    c = grid.transform(classes)  # (K, R, L)
    return c, grid.spectrum_major(c), grid.spectrum_major((c.abs() ** 2).to(c.dtype))


def _accumulate(acc: _Accumulator, grid, gamma, X, h, ramps, c, Y, A):
    """Add one batch's responsibilities ``gamma (B, S, K, L)`` to the M-step sums."""
    B, S, K, L = gamma.shape
    acc.num += grid.convolve(gamma.reshape(B * S, K, L), Y)
    acc.den += grid.convolve(gamma.sum(1), A)
    acc.weight += gamma.sum((0, 1, 3)).to(torch.float64)
    # noise: residual power per ring at each image's most probable (s, k, t)
    best = gamma.reshape(B, -1).argmax(-1)
    s, k, t = best // (K * L), (best // L) % K, best % L
    b = torch.arange(B, device=X.device)
    model = grid.inplane_model(c[k], h, ramps[b, s], t)
    acc.resid += ((X - model).abs() ** 2).mean(-1).sum(0).to(torch.float64)
    acc.n += B


def _m_step(acc: _Accumulator, grid: PolarGrid, tau_fudge: float):
    """Wiener class samples ``(K, R, L)`` and the per-class spectral SNR per ring ``(K, R)``."""
    num = grid.from_spectrum(acc.num.permute(1, 2, 0))
    den = grid.from_spectrum(acc.den.permute(1, 2, 0)).real.clamp_min(1e-12)
    c_ml = num / den
    noise_of_estimate = (1.0 / den).mean(-1)
    tau2 = tau_fudge * ((c_ml.abs() ** 2).mean(-1) - noise_of_estimate).clamp_min(0)  # (K, R)
    ssnr = (c_ml.abs() ** 2).mean(-1) / noise_of_estimate - 1
    c = num / (den + 1.0 / tau2.clamp_min(1e-30)[..., None])
    c = torch.where(tau2[..., None] > 0, c, torch.zeros_like(c))
    return c, ssnr


def _centre(classes: torch.Tensor) -> torch.Tensor:
    """Shift each class so the centre of mass of its positive part sits on pixel ``D // 2``."""
    D = classes.shape[-1]
    i = torch.arange(D, dtype=classes.dtype, device=classes.device) - D // 2
    w = classes.clamp_min(0)
    tot = w.sum((-2, -1)).clamp_min(1e-30)
    cx, cy = (w.sum(-2) * i).sum(-1) / tot, (w.sum(-1) * i).sum(-1) / tot
    return shift_images(classes, -torch.stack([cx, cy], -1))


def _split_members(images, ctf, apix, index, psi, shift_px, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeds from one class's images ``index`` with their in-plane poses ``psi`` (rad), ``shift_px``: the
    images brought into the class frame (``rotate(shift(x, −s), −ψ)``, phase flipped, masked, low-passed to a
    quarter of Nyquist) are split by the sign of their first principal component, and each half is averaged
    by the CTF-weighted Wiener averager (:class:`~cryoscape.physics.transform2d.Averager2D`) → two ``(D, D)``."""
    from ...physics.imaging import ImagingGrid
    from ...physics.transform2d import Averager2D, phase_flip, rotate_images

    D = images.shape[-1]
    grid = ImagingGrid(D, apix)
    x = images[index].float().cpu()
    sub = None if ctf is None else ctf.subset(index)
    shift_A = shift_px.double() * apix
    y = x if sub is None else phase_flip(x, sub, grid)
    y = rotate_images(shift_images(y, -shift_A.float(), apix), -psi.float()) * mask.cpu()
    f = grid.transform(y)
    smooth = grid.to_images(torch.where(grid.radius_px <= D / 8, f, torch.zeros_like(f)))
    centred = smooth.reshape(len(index), -1).double()
    centred = centred - centred.mean(0)
    v = centred.abs().sum(0)  # a deterministic start; power iteration → the first principal axis
    for _ in range(30):
        v = centred.T @ (centred @ v)
        v = v / v.norm().clamp_min(1e-300)
    side = ((centred @ v) > 0).long()
    if int(side.sum()) in (0, len(index)):
        side = torch.arange(len(index)) % 2
    avg = Averager2D(2, D, apix)
    avg.add(x, sub, side, psi.double(), shift_A)
    out = avg.averages().float() * mask.cpu()
    return out[1], out[0]


def _reseed_empty(classes, priors, images, ctf, apix, order, labels, psi, shift_px, mask):
    """Classes holding < 1/(10K) of the images take half of one of the largest classes: the donor's images
    (by the last E-step: ``order`` the image indices, ``labels``, ``psi``, ``shift_px`` per entry) are split in
    two by :func:`_split_members`; one half seeds the empty class, the other the donor, and the two share the
    donor's prior. Returns ``(classes, priors, number reseeded)``."""
    K = classes.shape[0]
    empty = torch.nonzero(priors < 1 / (10 * K)).reshape(-1)
    if empty.numel() == 0:
        return classes, priors, 0
    donors = torch.argsort(priors, descending=True)[: empty.numel()]
    classes, priors = classes.clone(), priors.clone()
    for e, d in zip(empty.tolist(), donors.tolist()):
        members = torch.nonzero(labels == d).reshape(-1)
        if members.numel() < 4:
            continue
        a, b = _split_members(images, ctf, apix, order[members], psi[members], shift_px[members], mask)
        classes[e], classes[d] = a.to(classes), b.to(classes)
        priors[e] = priors[d] = priors[d] / 2
    return classes, priors / priors.sum(), int(empty.numel())


def _random_start(images, ctf, grid, cfg, noise_var, gen, mask, device):
    """Classes from a random class and rotation per image (no alignment)."""
    N, K, L = images.shape[0], cfg.n_classes, grid.L
    labels = torch.randperm(N, generator=gen) % K
    rots = torch.randint(0, L, (N,), generator=gen)
    acc = _Accumulator(K, grid, device)
    for start in range(0, N, cfg.batch_size):
        idx = torch.arange(start, min(N, start + cfg.batch_size))
        batch = images[idx].to(device, grid.dtype) * mask
        _, _, _, Y, A = grid.inplane_terms(batch, None if ctf is None else ctf.subset(idx),
                                    noise_var[: grid.r_max + 1], torch.zeros(len(idx), 2), torch.zeros(1, 2))
        gamma = torch.zeros(len(idx), K, L, dtype=grid.dtype, device=device)
        gamma[torch.arange(len(idx), device=device), labels[idx].to(device), rots[idx].to(device)] = 1
        acc.num += grid.convolve(gamma, Y)
        acc.den += grid.convolve(gamma, A)
    num = grid.from_spectrum(acc.num.permute(1, 2, 0))
    den = grid.from_spectrum(acc.den.permute(1, 2, 0)).real
    c = num / (den + den.mean((-1, -2), keepdim=True).clamp_min(1e-12))  # a mild, uniform regulariser
    return grid.to_images(c).float() * mask


def _initial_noise(images, mask, device, batch_size) -> torch.Tensor:
    """``σ²(r)`` for rings ``r = 0 … D/2``: the mean power per ring (radius rounded) of the masked images'
    transforms (signal included: an upper bound, replaced ring by ring by residuals as the rings come in)."""
    D = images.shape[-1]
    ky = torch.fft.fftfreq(D, d=1.0 / D, dtype=torch.float64)
    kx = torch.fft.rfftfreq(D, d=1.0 / D, dtype=torch.float64)
    ring = torch.sqrt(ky[:, None] ** 2 + kx[None] ** 2).round().long().reshape(-1).to(device)
    keep = ring <= D // 2
    tot = torch.zeros(D // 2 + 1, dtype=torch.float64, device=device)
    for start in range(0, images.shape[0], batch_size):
        F = torch.fft.rfft2(images[start:start + batch_size].to(device, torch.float32) * mask)
        p = (F.abs() ** 2).sum(0).reshape(-1).to(torch.float64)
        tot += torch.bincount(ring[keep], p[keep], minlength=D // 2 + 1)
    count = torch.bincount(ring[keep], minlength=D // 2 + 1).to(torch.float64)
    return (tot / (count * images.shape[0]).clamp_min(1)).clamp_min(1e-20)


def _feature_labels(images, ctf, apix, K, seed) -> torch.Tensor:
    """k-means labels on rotation- and shift-invariant power spectra of the phase-flipped images."""
    from ...physics.imaging import ImagingGrid
    from ...physics.transform2d import phase_flip
    from .cluster import cluster_features, embed

    flipped = images if ctf is None else torch.cat([
        phase_flip(images[i:i + 1024].float(), ctf.subset(slice(i, i + 1024)), ImagingGrid(images.shape[-1], apix))
        for i in range(0, images.shape[0], 1024)])
    return torch.as_tensor(cluster_features(embed(flipped, kind="power", seed=seed), K, seed=seed))


def _classes_from_labels(images, ctf, apix, labels, cfg, gen, device) -> torch.Tensor:
    """One aligned class per label: a one-class EM (``cfg.init_iterations``) over the images with that label;
    a label no image carries gets a random image."""
    D, K = images.shape[-1], cfg.n_classes
    classes = torch.zeros(K, D, D, dtype=torch.float32, device=device)
    sub = replace(cfg, n_classes=1, n_iterations=cfg.init_iterations, init="random", mini_batch=None)
    for k in range(K):
        members = torch.nonzero(labels == k).reshape(-1)
        if members.numel() == 0:
            members = torch.randint(0, images.shape[0], (1,), generator=gen)
        res = fit(images[members], None if ctf is None else ctf.subset(members), apix, sub, progress=False)
        classes[k] = res.averages[0].to(device)
    return classes


def fit(images: torch.Tensor, ctf: CTFParams | None, apix: float, cfg: Class2DConfig,
        checkpoint: str | Path | None = None, progress: bool = True,
        init_labels: torch.Tensor | np.ndarray | None = None) -> Class2DResult:
    """Classify ``images (N, D, D)`` (float, any device) with per-image ``ctf`` (or None) into ``cfg.n_classes``.

    ``init_labels`` ``(N,)`` in ``0 … K − 1``: start from one aligned average per label (e.g. a clustering on
    invariant features) instead of ``cfg.init``.

    ``checkpoint``: a file written atomically after every iteration; when it exists and was written for the
    same configuration and data size, the run resumes from it (same result as an uninterrupted run).
    Returns a :class:`Class2DResult`.
    """
    from ...io.atomic import atomic_path
    from ..training import load_checkpoint

    if images.ndim != 3 or images.shape[-1] != images.shape[-2]:
        raise InputError("images", f"need square images (N, D, D), got shape {tuple(images.shape)}")
    N, D = images.shape[0], images.shape[-1]
    cfg.check(N, D)
    if not bool(torch.isfinite(images).all()):
        raise InputError("images", "contain NaN or infinite pixels")
    if cfg.n_starts > 1:
        runs = []
        for i in range(cfg.n_starts):
            ck = None if checkpoint is None else Path(f"{checkpoint}.start{i}")
            runs.append(fit(images, ctf, apix, replace(cfg, seed=cfg.seed + i, n_starts=1), ck, progress, init_labels))
        return max(runs, key=lambda r: r.history[-1]["loglik_per_image"])
    device = torch.device(cfg.device)
    K = cfg.n_classes
    gen = torch.Generator().manual_seed(cfg.seed)
    mask = soft_disc_mask(D, (cfg.mask_diameter_px or 0.9 * D) / 2, device=device)
    r_limit = min(cfg.r_limit or D // 2 - 1, D // 2)
    r_start = min(cfg.r_start or max(8, D // 8), r_limit)
    grids: dict = {}
    signature = {"config": asdict(cfg), "n_images": N, "D": D, "apix": float(apix)}

    state, start_it, history, last = None, 1, [], None
    if checkpoint is not None and Path(checkpoint).exists():
        saved = load_checkpoint(checkpoint, signature)
        m = saved["model"]
        state = _State(m["classes"].to(device), m["noise_var"].to(device), m["priors"].to(device), m["r_max"],
                       m["offsets"])
        start_it, history = saved["epoch"] + 1, saved["history"]
        last = m["assignments"]  # the assignments of the last E-step done
        gen.set_state(saved["gen"])
    if state is None:
        grid = _grid_for(grids, D, r_start, apix, device)
        noise = _initial_noise(images, mask, device, cfg.batch_size)
        if init_labels is None and cfg.init == "features" and K > 1:
            init_labels = _feature_labels(images, ctf, apix, K, cfg.seed)
        if init_labels is not None:
            labels0 = torch.as_tensor(np.asarray(init_labels), dtype=torch.int64).reshape(-1)
            if labels0.numel() != N or int(labels0.min()) < 0 or int(labels0.max()) >= K:
                raise InputError("init_labels", f"need {N} labels in 0..{K - 1}")
            classes = _classes_from_labels(images, ctf, apix, labels0, cfg, gen, device) * mask
        else:
            classes = _random_start(images, ctf, grid, cfg, noise, gen, mask, device)
        state = _State(classes, noise, torch.full((K,), 1.0 / K, dtype=torch.float64, device=device), r_start,
                       torch.zeros(N, 2, dtype=torch.float64))

    with progress_bar(cfg.n_iterations, "2D classification", enabled=progress) as bar:
        bar.advance(start_it - 1)
        for it in range(start_it, cfg.n_iterations + 1):
            stochastic = cfg.mini_batch is not None and cfg.mini_batch < N and it <= cfg.n_iterations - cfg.full_passes
            order = torch.randperm(N, generator=gen)[: cfg.mini_batch] if stochastic else torch.arange(N)
            local = it > cfg.global_shift_iterations
            T = cfg.anneal_start ** (1 - (it - 1) / cfg.anneal_iterations) if it <= cfg.anneal_iterations else 1.0
            last = _iterate(images, ctf, order, state, grids, cfg, local, mask, apix, device, gen, temperature=T)
            history.append({"iteration": it, "r_max_px": state.r_max, "local_shifts": local, **last["summary"]})
            state = last["state"]
            if checkpoint is not None:
                model = {"classes": state.classes.cpu(), "noise_var": state.noise_var.cpu(),
                         "priors": state.priors.cpu(), "r_max": state.r_max, "offsets": state.offsets,
                         "assignments": {k: v for k, v in last.items() if k not in ("state", "summary")}}
                with atomic_path(checkpoint) as tmp:
                    torch.save({"signature": signature, "epoch": it, "model": model, "gen": gen.get_state(),
                                "history": history}, tmp)
            bar.advance(1)
    if last is None or last["order"].numel() < N:  # no full E-step yet (a last stochastic pass)
        last = _iterate(images, ctf, torch.arange(N), state, grids, cfg, cfg.n_iterations > cfg.global_shift_iterations,
                        mask, apix, device, gen, update=False)
    a = last
    return Class2DResult(averages=state.classes.float().cpu(), labels=a["labels"], psi=a["psi"],
                         shift_A=a["shift_px"] * apix, max_prob=a["max_prob"], class_prob=a["class_prob"],
                         counts=torch.bincount(a["labels"], minlength=K), noise_var=state.noise_var.cpu(),
                         apix=float(apix), history=history)


def _shifts_for(idx, state: _State, cfg: Class2DConfig, local: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The shifts (px) tried per image as ``centres (B, 2)`` + ``steps (S, 2)``: the whole grid around 0, or
    the 3 × 3 steps around the image's last most probable shift (the centre kept within the range; steps that
    leave the range are given zero probability by the caller)."""
    if not local:
        return torch.zeros(len(idx), 2, dtype=torch.float64), shift_grid(cfg.shift_range_px, cfg.shift_step_px)
    step = cfg.shift_step_px
    v = torch.tensor([0.0, -step, step], dtype=torch.float64)
    d = torch.stack(torch.meshgrid(v, v, indexing="xy"), -1).reshape(-1, 2)
    d = d[torch.argsort(d.square().sum(-1), stable=True)]
    centre = state.offsets[idx]
    r = centre.norm(dim=-1, keepdim=True)
    centre = torch.where(r > cfg.shift_range_px, centre * cfg.shift_range_px / r.clamp_min(1e-12), centre)
    return centre, d


def _iterate(images, ctf, order, state: _State, grids, cfg, local, mask, apix, device, gen,
             update: bool = True, temperature: float = 1.0) -> dict:
    """One E-step over ``order`` and (when ``update``) the M-step; returns the new state and the assignments."""
    D, K = images.shape[-1], cfg.n_classes
    grid = _grid_for(grids, D, state.r_max, apix, device)
    L = grid.L
    noise = state.noise_var[: grid.r_max + 1]
    c, C, P = _class_spectra(grid, state.classes.to(device, grid.dtype))
    log_prior = torch.log(state.priors.clamp_min(1e-30)).to(grid.dtype)
    acc = _Accumulator(K, grid, device)
    n = order.numel()
    labels = torch.empty(n, dtype=torch.int64)
    psi, max_prob = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    shift_px, class_prob = torch.empty(n, 2, dtype=torch.float64), torch.empty(n, K, dtype=torch.float32)
    loglik_sum = 0.0
    for start in range(0, n, cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        B = len(idx)
        centres, steps = _shifts_for(idx, state, cfg, local)
        batch = images[idx].to(device, grid.dtype) * mask
        X, h, ramps, Y, A = grid.inplane_terms(batch, None if ctf is None else ctf.subset(idx), noise, centres, steps)
        logp = inplane_loglik(Y, A, C, P, grid) / temperature + log_prior[:, None]  # (B, S, K, L)
        outside = (centres[:, None] + steps[None]).norm(dim=-1) > cfg.shift_range_px + 1e-9  # (B, S)
        if bool(outside.any()):
            logp = logp.masked_fill(outside.to(logp.device)[:, :, None, None], float("-inf"))
        lse = torch.logsumexp(logp.reshape(B, -1), dim=-1)
        gamma = torch.exp(logp - lse[:, None, None, None])
        del logp
        loglik_sum += float(lse.sum())
        if update:
            _accumulate(acc, grid, gamma, X, h, ramps, c, Y, A)
        sl = slice(start, start + B)
        kp = gamma.sum((1, 3))  # (B, K)
        lab = kp.argmax(-1)
        within = gamma[torch.arange(B), :, lab].reshape(B, -1)  # (B, S·L)
        s_best, t_best = within.argmax(-1) // L, within.argmax(-1) % L
        labels[sl], class_prob[sl] = lab.cpu(), kp.float().cpu()
        psi[sl] = (t_best.double() * (2 * math.pi / L)).cpu()
        shift_px[sl] = centres + steps[s_best.cpu()]
        max_prob[sl] = gamma.reshape(B, -1).amax(-1).double().cpu()
    offsets = state.offsets.clone()
    offsets[order] = shift_px
    out = {"order": order, "labels": torch.empty_like(labels), "psi": torch.empty_like(psi),
           "shift_px": torch.empty_like(shift_px), "max_prob": torch.empty_like(max_prob),
           "class_prob": torch.empty_like(class_prob)}
    full = n == images.shape[0]
    if full:
        inv = torch.empty_like(order)
        inv[order] = torch.arange(n)
    for key, v in (("labels", labels), ("psi", psi), ("shift_px", shift_px), ("max_prob", max_prob),
                   ("class_prob", class_prob)):
        out[key] = v[inv] if full else v
    summary = {"loglik_per_image": loglik_sum / max(n, 1), "temperature": temperature}
    if not update:
        out["state"], out["summary"] = state, summary
        return out
    c_new, ssnr = _m_step(acc, grid, cfg.tau_fudge)
    classes = grid.to_images(c_new).float() * mask
    if cfg.centre:
        classes = _centre(classes) * mask
    noise_new = state.noise_var.clone()
    noise_new[: grid.r_max + 1] = (acc.resid / max(acc.n, 1)).clamp_min(1e-20)
    # frequency marching: the next outer ring is 4 beyond the last ring where the mean class SSNR exceeds 1
    good = torch.nonzero(ssnr.mean(0) > 1).reshape(-1)
    resolved = int(good.max()) if good.numel() else 0
    r_next = min(max(state.r_max, resolved + 4), cfg.r_limit or D // 2 - 1, D // 2)
    priors = (acc.weight / acc.weight.sum()).clamp_min(1e-6)
    classes, priors, reseeded = _reseed_empty(classes, priors / priors.sum(), images, ctf, apix, order, labels,
                                              psi, shift_px, mask)
    summary.update(resolved_ring_px=resolved, reseeded=reseeded)
    out["state"] = _State(classes, noise_new, priors, r_next, offsets)
    out["summary"] = summary
    return out
