"""Simulated micrographs: particles at random, non-overlapping positions in a field, one CTF per micrograph,
white noise split into movie frames. The ground truth for denoising and picking.

Micrograph ``m`` of ``H × W`` pixels of ``apix`` Å, by the one forward model of
:mod:`cryoscape.physics.imaging`:

    P_m(r) = Σ_j  box_j(r − round(c_j)),   box_j = F⁻¹[ exp(−2πi k·δ_j) · P̂_{R_j}[V_{f_j}] ]  (no CTF)
    clean_m = apply_ctf(P_m, CTF_m, pad = ctf_pad)          (the whole field at once)
    frame_{m,t} = clean_m + ε_{m,t},  ε ~ N(0, T σ_m²),  t = 0 .. T − 1
    noisy_m = mean_t frame_{m,t},  halves_m = (mean of even t, mean of odd t),  noisy_m = (half₀ + half₁) / 2

- Particle ``j`` sits at ``c_j = (x, y)`` pixels (0-based pixel centres, ``x`` the column, ``y`` the row): its
  box of ``B`` pixels (:func:`~cryoscape.physics.imaging.forward_images` with pose ``R_j`` and conformation
  ``f_j``, no CTF) is rendered with the sub-pixel offset ``δ_j = (c_j − round(c_j)) · apix`` as the forward
  model's shift, and its pixel ``B//2`` is added at ``round(c_j)`` (cut at the field's edges). ``c_j`` is the
  centroid of the frame's atoms (:class:`~cryoscape.data.simulate.AtomSource` centres every frame), so it is
  the mass centroid of the CTF-free particle.
- Positions are drawn uniformly (random sequential addition: a candidate is kept when it is at least
  ``min_distance`` from every kept centre) at least ``edge_margin`` from the edges; poses are Haar-uniform,
  conformations uniform over the source's frames; defocus uniform in ``[defocus_min, defocus_max]``, the
  astigmatism azimuth uniform in ``[0, π)``.
- SNR (as the particle simulator, CONVENTIONS.md, with one micrograph as the dataset):
  ``σ_m² = var(clean_m) / SNR`` with the variance over every pixel of ``clean_m`` (CTF applied, empty ice
  included), so ``noisy_m − clean_m`` has variance ``σ_m²``, each half ``2σ_m²`` and ``half₀ − half₁``
  ``4σ_m²``. ``T`` (``n_frames``, even) only splits the exposure: the frames are in the units of their mean
  (a frame holds ``1/T`` of the dose, so ``T`` times the noise variance), and are kept only on request.
- Micrograph ``m``'s draws come from the seed and ``m`` alone (``default_rng([seed, m])`` for the particles and
  CTF, ``[seed, m, 1]`` for the noise), so micrograph ``m`` is the same in a set of any size.

Not modelled: ice (structured background, thickness), beam-induced motion between frames, shot (Poisson)
noise, particles cut by the field's edge. Nothing here writes files: a micrograph is saved with
:func:`cryoscape.io.mrc.write_micrograph` (``(H, W)``, any shape) and a set with
:func:`cryoscape.io.mrc.write_stack`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.poses import Poses
from ..geometry.rotations import random_rotations
from ..io.errors import InputError
from ..physics.ctf import CTFParams
from ..physics.imaging import ImagingGrid, apply_ctf, forward_images
from .simulate.sources import AtomSource, MapSource

__all__ = ["MicrographConfig", "MicrographSet", "simulate_micrographs", "particle_box", "RSA_JAMMING"]

RSA_JAMMING = 0.547  # densest coverage random sequential addition of discs reaches (Feder 1980; Hinrichsen 1986)


@dataclass
class MicrographConfig:
    """Options of a micrograph simulation. Units: pixels, Å, µm for defocus, kV, mm, degrees where named.

    Attributes:
        size: ``H = W = size`` pixels, or ``(H, W)`` (non-square fields are supported).
        apix: pixel size in Å.
        n_particles: particles per micrograph; None: from ``coverage``.
        coverage: when ``n_particles`` is None, the fraction of the field's area covered by the discs of
            particle radius (``n = coverage · H W apix² / (π r²)``, rounded).
        min_distance_A: least distance between particle centres (Å); None: the particle's diameter ``2r``
            (so particles do not overlap). ``r`` is the source's radius (atoms: largest atom distance + 2σ).
        edge_margin_A: least distance of a centre from the field's edges (Å); None: ``r`` (whole particles).
        snr: ``var(clean) / σ²`` per micrograph (module docstring); finite and > 0.
        n_frames: movie frames ``T`` (even, ≥ 2): the halves are the means of the even and odd frames.
        keep_frames: also return the frames ``(N, T, H, W)``.
        defocus_min_um, defocus_max_um, astigmatism_um, voltage_kv, cs_mm, amp_contrast, bfactor,
            phase_shift_deg: the microscope, as :class:`~cryoscape.data.simulate.SimulationConfig`.
        ctf_pad: the CTF acts on a canvas this many times the field (2: fringes leave the field at its edges
            instead of wrapping around; 1: circular).
        seed: random seed.
    """

    size: int | tuple[int, int] = 1024
    apix: float = 1.2
    n_particles: int | None = None
    coverage: float = 0.2
    min_distance_A: float | None = None
    edge_margin_A: float | None = None
    snr: float = 0.1
    n_frames: int = 2
    keep_frames: bool = False
    defocus_min_um: float = 1.0
    defocus_max_um: float = 2.5
    astigmatism_um: float = 0.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amp_contrast: float = 0.1
    bfactor: float = 0.0
    phase_shift_deg: float = 0.0
    ctf_pad: int = 2
    seed: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        if isinstance(self.size, (tuple, list)):
            return int(self.size[0]), int(self.size[1])
        return int(self.size), int(self.size)

    def check(self) -> None:
        """Raise :class:`InputError` naming the first invalid option (the source-dependent checks are made by
        :func:`simulate_micrographs`)."""
        if isinstance(self.size, (tuple, list)) and len(self.size) != 2:
            raise InputError("--size", f"must be one number or (H, W), got {self.size}")
        floats = {"--apix": self.apix, "--coverage": self.coverage, "--min-distance": self.min_distance_A,
                  "--edge-margin": self.edge_margin_A, "--snr": self.snr, "--defocus-min": self.defocus_min_um,
                  "--defocus-max": self.defocus_max_um, "--astigmatism": self.astigmatism_um,
                  "--voltage": self.voltage_kv, "--cs": self.cs_mm, "--amp-contrast": self.amp_contrast,
                  "--bfactor": self.bfactor, "--phase-shift-deg": self.phase_shift_deg}
        for where, value in floats.items():
            if value is not None and not math.isfinite(value):
                raise InputError(where, f"must be a finite number, got {value}")
        H, W = self.shape
        checks = [
            (H >= 8 and W >= 8, "--size", f"must be ≥ 8 pixels, got {H} × {W}"),
            (self.apix > 0, "--apix", f"must be > 0, got {self.apix}"),
            (self.n_particles is None or self.n_particles >= 0, "--n-particles",
             f"must be ≥ 0, got {self.n_particles}"),
            (0 <= self.coverage < RSA_JAMMING, "--coverage", f"must be in [0, {RSA_JAMMING}), got {self.coverage}"),
            (self.min_distance_A is None or self.min_distance_A >= 0, "--min-distance",
             f"must be ≥ 0, got {self.min_distance_A}"),
            (self.edge_margin_A is None or self.edge_margin_A >= 0, "--edge-margin",
             f"must be ≥ 0, got {self.edge_margin_A}"),
            (self.snr > 0, "--snr", f"must be > 0, got {self.snr}"),
            (self.n_frames >= 2 and self.n_frames % 2 == 0, "--n-frames",
             f"must be even and ≥ 2 (two halves of equal dose), got {self.n_frames}"),
            (0 <= self.defocus_min_um <= self.defocus_max_um, "--defocus-min/--defocus-max",
             f"need 0 ≤ min ≤ max, got {self.defocus_min_um}, {self.defocus_max_um}"),
            (self.astigmatism_um >= 0, "--astigmatism", f"must be ≥ 0, got {self.astigmatism_um}"),
            (self.voltage_kv > 0, "--voltage", f"must be > 0, got {self.voltage_kv}"),
            (0 <= self.amp_contrast < 1, "--amp-contrast", f"must be in [0, 1), got {self.amp_contrast}"),
            (self.bfactor >= 0, "--bfactor", f"must be ≥ 0, got {self.bfactor}"),
            (1 <= self.ctf_pad <= 4, "--ctf-pad", f"must be 1 to 4, got {self.ctf_pad}"),
            (self.seed >= 0, "--seed", f"must be ≥ 0, got {self.seed}"),
        ]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, problem)


@dataclass
class MicrographSet:
    """Simulated micrographs and their ground truth (module docstring). ``N`` micrographs of ``H × W`` pixels.

    Images (float32 CPU tensors): ``clean (N, H, W)`` CTF applied, noiseless; ``clean_noctf (N, H, W)`` the
    particles' projections before the CTF; ``noisy (N, H, W)``; ``halves (N, 2, H, W)`` (even-frame and
    odd-frame means, ``noisy = halves.mean(1)``); ``frames (N, T, H, W)`` or None.

    Particles (``P`` in all, numpy): ``micrograph (P,)`` int64 index; ``coords (P, 2)`` float64 ``(x, y)``
    centres in pixels (0-based pixel centres; ``x`` the column); ``rotations (P, 3, 3)`` float64 poses;
    ``conformation (P,)`` int64 frame of the source. Per micrograph: ``ctf`` (:class:`CTFParams`, N entries),
    ``noise_sigma (N,)`` (std of ``noisy − clean``). ``box``: the particle box (px); ``radius_A``: the
    particle radius (Å); ``apix``, ``snr``.
    """

    clean: torch.Tensor
    clean_noctf: torch.Tensor
    noisy: torch.Tensor
    halves: torch.Tensor
    frames: torch.Tensor | None
    micrograph: np.ndarray
    coords: np.ndarray
    rotations: np.ndarray
    conformation: np.ndarray
    ctf: CTFParams
    noise_sigma: np.ndarray
    apix: float
    snr: float
    box: int
    radius_A: float

    def __len__(self) -> int:
        return self.noisy.shape[0]

    def particles(self, m: int) -> dict:
        """The particles of micrograph ``m``: ``coords (n, 2)``, ``rotations (n, 3, 3)``, ``conformation (n,)``."""
        sel = self.micrograph == m
        return {"coords": self.coords[sel], "rotations": self.rotations[sel], "conformation": self.conformation[sel]}


def particle_box(source, apix: float) -> int:
    """The even box (px) a particle is rendered in before pasting: atoms: ``2 ⌈(r + 2σ)/apix⌉ + 2`` with ``r``
    the source's radius (largest atom distance + 2σ), so the Gaussian tails are cut at ≥ 4σ (relative
    amplitude ≤ 3e-4); a map: its own box (its voxel size must be ``apix``)."""
    if isinstance(source, MapSource):
        if abs(source.apix - apix) > 1e-6 * apix:
            raise InputError("--apix", f"a map source is imaged at its own voxel size ({source.apix} Å), got {apix}")
        return source.D
    if not isinstance(source, AtomSource):
        raise InputError("source", f"expected an AtomSource or MapSource, got {type(source).__name__}")
    half = math.ceil((source.radius() + 2 * source.sigma) / apix) + 1
    return 2 * half


def _n_particles(cfg: MicrographConfig, radius_A: float) -> int:
    if cfg.n_particles is not None:
        return int(cfg.n_particles)
    H, W = cfg.shape
    return int(round(cfg.coverage * H * W * cfg.apix ** 2 / (math.pi * radius_A ** 2)))


def _place(rng: np.random.Generator, n: int, H: int, W: int, margin: float, dmin: float, m: int) -> np.ndarray:
    """``(n, 2)`` centres ``(x, y)`` in px, uniform in ``[margin, W−1−margin] × [margin, H−1−margin]``, pairwise
    ≥ ``dmin`` apart (random sequential addition: candidates are drawn in batches and kept in order when far
    enough from every kept one); :class:`InputError` when the budget of ``200 n + 1000`` candidates is spent."""
    lo, hx, hy = margin, W - 1 - margin, H - 1 - margin
    kept = np.empty((0, 2))
    budget, d2 = 200 * n + 1000, dmin * dmin
    while len(kept) < n and budget > 0:
        cand = np.stack([rng.uniform(lo, hx, 256), rng.uniform(lo, hy, 256)], -1)
        budget -= len(cand)
        for c in cand:
            if len(kept) == n:
                break
            if d2 == 0 or len(kept) == 0 or np.min(((kept - c) ** 2).sum(-1)) >= d2:
                kept = np.vstack([kept, c])
    if len(kept) < n:
        raise InputError("--n-particles", f"placed {len(kept)} of {n} particles at least {dmin:.1f} px apart in "
                                          f"micrograph {m}; ask for fewer particles or a smaller --min-distance")
    return kept


def _paste(field: torch.Tensor, boxes: torch.Tensor, pix: np.ndarray) -> None:
    """Add ``boxes (n, B, B)`` into ``field (H, W)`` with box pixel ``B//2`` at ``pix (n, 2)`` = integer
    ``(x, y)``, cut at the edges."""
    H, W = field.shape
    B = boxes.shape[-1]
    for box, (x, y) in zip(boxes, pix):
        y0, x0 = int(y) - B // 2, int(x) - B // 2
        ya, xa = max(0, y0), max(0, x0)
        yb, xb = min(H, y0 + B), min(W, x0 + B)
        if ya < yb and xa < xb:
            field[ya:yb, xa:xb] += box[ya - y0:yb - y0, xa - x0:xb - x0]


def simulate_micrographs(source, cfg: MicrographConfig | None = None, n_micrographs: int = 1,
                         progress=None) -> MicrographSet:
    """Simulate ``n_micrographs`` micrographs of ``source`` (an :class:`~cryoscape.data.simulate.AtomSource` or
    :class:`~cryoscape.data.simulate.MapSource`) with the options ``cfg`` (module docstring for the model).

    ``progress``: optional object with ``.advance(n)`` (micrographs done). Raises :class:`InputError` for
    invalid options, a field smaller than the particle box (plus margins), or more particles than fit at
    the minimum distance.
    """
    cfg = cfg or MicrographConfig()
    cfg.check()
    if n_micrographs < 1:
        raise InputError("--n-micrographs", f"must be ≥ 1, got {n_micrographs}")
    H, W = cfg.shape
    apix = float(cfg.apix)
    B = particle_box(source, apix)
    radius_A = float(source.radius())
    margin = (radius_A if cfg.edge_margin_A is None else cfg.edge_margin_A) / apix
    dmin = (2 * radius_A if cfg.min_distance_A is None else cfg.min_distance_A) / apix
    if min(H, W) < B or min(H, W) - 1 < 2 * margin:
        raise InputError("--size", f"a {H} × {W} px field is smaller than the particle box ({B} px at {apix} Å/px) "
                                   f"or its margins ({2 * margin:.1f} px); increase --size or --apix")
    n = _n_particles(cfg, radius_A)
    area = (W - 1 - 2 * margin + dmin) * (H - 1 - 2 * margin + dmin)  # centres' region, grown by dmin/2 each side
    if n > 1 and n * math.pi * dmin ** 2 / 4 > RSA_JAMMING * area:
        raise InputError("--n-particles", f"{n} particles {dmin:.1f} px apart do not fit at random in a {H} × {W} "
                                          f"px field (coverage {n * math.pi * dmin ** 2 / 4 / area:.2f} > "
                                          f"{RSA_JAMMING}); ask for fewer particles or a smaller --min-distance")

    grid = ImagingGrid(B, apix, dtype=torch.float32)
    projector = source.projector()
    F, T = source.n_conformations, cfg.n_frames
    N = n_micrographs
    clean_noctf = torch.zeros(N, H, W)
    clean = torch.empty(N, H, W)
    noisy = torch.empty(N, H, W)
    halves = torch.empty(N, 2, H, W)
    frames = torch.empty(N, T, H, W) if cfg.keep_frames else None
    mic, coords, rots, confs, dfu, dfv, angles, sigmas = [], [], [], [], [], [], [], []
    for m in range(N):
        rng = np.random.default_rng([cfg.seed, m])
        df = rng.uniform(cfg.defocus_min_um, cfg.defocus_max_um) * 1e4
        ast, ang = cfg.astigmatism_um * 1e4, rng.random() * np.pi
        ctf = CTFParams([df + ast / 2], [df - ast / 2], [ang], cfg.voltage_kv, cfg.cs_mm, cfg.amp_contrast,
                        math.radians(cfg.phase_shift_deg), cfg.bfactor)
        centres = _place(rng, n, H, W, margin, dmin, m)
        conf = rng.integers(0, F, len(centres))
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
        R = random_rotations(len(centres), gen, dtype=torch.float64)
        if len(centres):
            pix = np.round(centres).astype(np.int64)
            frac = torch.as_tensor((centres - pix) * apix, dtype=torch.float32)
            boxes = forward_images(projector, Poses(R.to(torch.float32), frac), grid, None,
                                   torch.as_tensor(conf, dtype=torch.int64))
            _paste(clean_noctf[m], boxes, pix)
        clean[m] = apply_ctf(clean_noctf[m:m + 1], ctf, apix, pad=cfg.ctf_pad)[0]
        sigma = math.sqrt(float(clean[m].double().var(unbiased=False)) / cfg.snr)
        _add_frames(clean[m], sigma, T, np.random.default_rng([cfg.seed, m, 1]), halves[m],
                    None if frames is None else frames[m])
        noisy[m] = 0.5 * (halves[m, 0] + halves[m, 1])
        mic.append(np.full(len(centres), m, dtype=np.int64))
        coords.append(centres)
        rots.append(R.numpy())
        confs.append(conf.astype(np.int64))
        dfu.append(df + ast / 2)
        dfv.append(df - ast / 2)
        angles.append(ang)
        sigmas.append(sigma)
        if progress is not None:
            progress.advance(1)
    ctf_all = CTFParams(dfu, dfv, angles, cfg.voltage_kv, cfg.cs_mm, cfg.amp_contrast,
                        math.radians(cfg.phase_shift_deg), cfg.bfactor)
    return MicrographSet(clean, clean_noctf, noisy, halves, frames, np.concatenate(mic), np.concatenate(coords),
                         np.concatenate(rots).reshape(-1, 3, 3), np.concatenate(confs), ctf_all, np.array(sigmas),
                         apix, float(cfg.snr), B, radius_A)


def _add_frames(clean: torch.Tensor, sigma: float, T: int, rng: np.random.Generator, halves: torch.Tensor,
                frames: torch.Tensor | None) -> None:
    """Fill ``halves (2, H, W)`` with the means of the even and odd frames ``clean + ε_t``,
    ``ε_t ~ N(0, T σ²)`` (and ``frames (T, H, W)`` when given), one frame at a time."""
    halves.zero_()
    frame_sigma = sigma * math.sqrt(T)
    for t in range(T):
        eps = torch.from_numpy(rng.standard_normal(clean.shape, dtype=np.float32))
        frame = clean + frame_sigma * eps
        halves[t % 2] += frame
        if frames is not None:
            frames[t] = frame
    halves /= T // 2
