"""Simulated micrographs: particles at random, non-overlapping positions and poses in a field, optional junk,
one astigmatic CTF per micrograph over the whole field, a background gradient, Gaussian noise at a target SNR or
Poisson shot noise at a dose, an optional detector MTF/DQE, and movie frames. The ground truth for denoising
and picking.

Micrograph ``m`` of ``H × W`` pixels of ``apix`` Å, by the one forward model of
:mod:`cryoscape.physics.imaging` (``F`` the 2-D Fourier transform of the field):

    P_m(r) = Σ_j  box_j(r − round(c_j)),   box_j = F⁻¹[ exp(−2πi k·δ_j) · P̂_{R_j}[V_{f_j}] ]   particles (no CTF)
    J_m(r) = Σ_i  junk_i(r) + C_m(r)                                  junk objects and a carbon edge (no CTF)
    s_m    = apply_ctf(P_m + J_m, CTF_m, pad = ctf_pad) + a K_m(r) + b_m(r)        the whole field at once
    clean_m = F⁻¹[ MTF(k) · F[s_m] ]                                  (MTF ≡ 1 without a detector model)

``K_m`` holds the thick objects (ice blobs and the carbon film's level), whose strong scattering removes electrons
(amplitude contrast ``a = absorption``, added after the CTF), and ``b_m`` is the background gradient.

Particles
    Particle ``j`` sits at ``c_j = (x, y)`` pixels (0-based pixel centres, ``x`` the column, ``y`` the row): its
    box of ``B`` pixels (:func:`~cryoscape.physics.imaging.forward_images` with pose ``R_j`` and conformation
    ``f_j``, no CTF) is rendered with the sub-pixel offset ``δ_j = (c_j − round(c_j)) · apix`` as the forward
    model's shift, and its pixel ``B//2`` is added at ``round(c_j)`` (cut at the field's edges). ``c_j`` is the
    centroid of the frame's atoms (:class:`~cryoscape.data.simulate.AtomSource` centres every frame), so it is
    the mass centroid of the CTF-free particle. Positions are drawn uniformly (random sequential addition: a
    candidate is kept when it is at least ``min_distance`` from every kept centre) at least ``edge_margin``
    from the edges; poses are Haar-uniform, conformations uniform over the source's frames; defocus uniform in
    ``[defocus_min, defocus_max]``, the astigmatism azimuth uniform in ``[0, π)``. Every particle of micrograph
    ``m`` has the micrograph's CTF.

Junk (never listed as particles; listed with its kind, centre and radius)
    ``junk_fraction = f`` is the share of the objects of a micrograph that are junk: with ``n`` particles,
    ``n_junk = round(n f / (1 − f))`` objects of the kinds ``junk_kinds`` (drawn with equal probability), placed
    before the particles (largest first), uniformly, at least ``r_junk + r_other`` apart; the particles are then
    kept at least ``r_particle + r_junk`` from every junk centre. ``p_ref`` is the largest pixel of the
    CTF-free projection of conformation 0 at the identity pose (the particle's peak projected density) and sets
    the scale of all junk and background.

    - ``ice``: a contamination blob: the projection of an ellipsoid (chord length) of semi-axes ``R`` and
      ``q R`` (``R ∈ [1, 2.5] r_particle``, ``q ∈ [0.6, 1]``, random azimuth), peak ``ice_contrast · p_ref ·
      U(0.7, 1.3)``, its edge softened by a Gaussian of ``max(1, 0.08 R)`` px: ``A·sqrt(max(0, 1 − ρ²)) ⊛ G``
      (in ``J`` and in ``K``).
    - ``aggregate``: a clump of 3 to 6 overlapping copies of the molecule (random poses and conformations), the
      first at the clump's seed point, the others uniform in a disc of radius ``r_particle`` around it; listed
      at the copies' centroid with the radius of the disc holding them all.
    - ``second``: one copy of a second molecule (``second_source``), random pose and conformation.
    - ``carbon`` (probability ``carbon_edge`` per micrograph, not counted in ``junk_fraction``): the region
      outside a circular hole of radius ``R_h ∈ [1, 4] max(H, W)`` px whose edge crosses the field at ``p``
      (listed as the centre, with ``R_h`` as the radius): ``C(r) = Φ(d(r)/2 px) · (carbon_contrast · p_ref +
      t(r))`` with ``d`` the signed distance outside the hole's rim, ``Φ`` the normal CDF (a soft edge) and
      ``t`` white noise smoothed by a Gaussian of 1 px with standard deviation ``0.3 p_ref`` (texture); ``K``
      gets the level ``Φ · carbon_contrast · p_ref``. The film is drawn on the CTF's whole canvas (``ctf_pad``
      times the field), so it does not end in a step at the field's edges.
      Particles are kept wholly inside the hole (``d(c_j) ≤ −r_particle``); junk objects may lie on carbon.

Background gradient (``gradient = g``)
    ``b_m(r) = g · p_ref · u(r) / max|u|`` with ``u`` a linear ramp of random direction plus three cosines of at
    most 1.5 periods per field (random phases): uneven ice thickness and illumination. It is added after the
    CTF (it acts on the intensity, like the thickness-dependent loss of electrons), so it is not in
    ``clean_noctf``.

Noise, Gaussian at a target SNR (``dose = None``)
    ``frame_{m,t} = clean_m + F⁻¹[ NTF̃(k) · F[ε_t] ]``, ``ε_t ~ N(0, T σ_m²)`` white, ``NTF̃ = NTF / rms(NTF)``
    (``≡ 1`` without a detector model; the SNR sets the level, the NTF only the shape), ``t = 0 .. T − 1``;
    ``noisy_m = mean_t frame_{m,t}``; ``halves_m`` = (mean of even t, mean of odd t). The frames are in the
    units of their mean (a frame holds ``1/T`` of the dose, so ``T`` times the noise variance).
    ``σ_m² = var_R(signal) / SNR`` with, for ``snr_region``:

    - ``field`` (CONVENTIONS.md, one micrograph as the dataset): the variance of ``clean_m`` over every pixel
      (junk, carbon, gradient and empty ice included);
    - ``particles`` ("SNR in the particle box"): the variance of the particles' own detected signal
      ``F⁻¹[MTF · F[apply_ctf(P_m)]]`` over the union of the particles' ``B × B`` boxes (each pixel once, mean
      subtracted over that set). It needs at least one particle.

    So ``noisy_m − clean_m`` has variance ``σ_m²``, each half ``2σ_m²`` and ``half₀ − half₁`` ``4σ_m²``.

Noise, Poisson shot noise at a dose ``D`` e⁻/Å² (``dose = D``)
    With ``λ₀ = D · apix²`` the expected electrons per pixel through empty ice and the contrast scale
    ``c = 2 φ_peak / p_ref`` (``φ_peak = peak_phase_rad``, the phase shift of the particle's densest projection;
    ~0.1 rad for a ~25 kDa protein at 300 kV: ``σ_e ΔV t ≈ 6.5e-4 rad/(V Å) · 3 V · 45 Å``), the weak-phase
    intensity of RELION's CTF sign (protein dark in the raw counts) is ``λ_m(r) = λ₀ · max(0, 1 − c · s_m(r))``
    and each frame gets ``1/T`` of the dose:

        N_{m,t} ~ Poisson(λ_m / T)
        d_{m,t} = F⁻¹[ MTF · F[λ_m / T] ] + F⁻¹[ NTF · F[N_{m,t} − λ_m / T] ]     (= N_{m,t} without a detector)
        frame_{m,t} = (1 − T d_{m,t} / λ₀) / c,   noisy_m = mean_t frame_{m,t} = (1 − Σ_t d_{m,t} / λ₀) / c

    so ``E[noisy_m] = clean_m`` (where the intensity is not clipped at 0) and the written micrograph is the
    normalised, contrast-inverted count image (protein white, as after RELION's ``--invert_contrast``). The raw
    counts are ``Σ_t N_{m,t} = λ₀ (1 − c · noisy_m)`` (without a detector model): mean = variance = ``λ_m``.
    ``snr`` is not used; the SNRs it gives are measured (``snr_field``, ``snr_particles``).

Detector (``mtf = True``), with ``ω = 2 apix k`` the frequency as a fraction of Nyquist per axis, ``b = mtf_width``
    MTF(ω) = sinc(π ω_x / 2) sinc(π ω_y / 2) · exp(−|ω|² / (2 b²))     (pixel aperture × charge spread)
    NTF(ω) = exp(−|ω|² / (2 b²)) / sqrt(DQE₀)
    DQE(ω) = MTF² / NTF² = DQE₀ · sinc²(π ω_x / 2) sinc²(π ω_y / 2)
    The ideal counting detector (``b → ∞``, ``DQE₀ = 1``) has ``MTF = sinc`` and ``DQE = sinc²`` (0.405 at Nyquist;
    McMullan, Chen, Henderson & Faruqi 2009, Ultramicroscopy); signal and noise are shaped separately so that
    ``DQE = MTF²/NTF²`` as in InSilicoTEM's detector model (Vulovic et al. 2013, J. Struct. Biol.). Measured curves
    of real detectors: Ruskin, Yu & Grigorieff 2013 (J. Struct. Biol.); McMullan et al. 2014 (Ultramicroscopy).
    The transfer functions act on the field as a periodic image (``rfft2``).

Seeds
    Micrograph ``m``'s draws come from the seed and ``m`` alone: ``default_rng([seed, m])`` for the CTF, the
    particles' positions, conformations and poses, ``[seed, m, 1]`` for the noise, ``[seed, m, 2]`` for the
    carbon edge and the junk, ``[seed, m, 3]`` for the gradient; so micrograph ``m`` is the same in a set of any
    size, and the gradient, the detector model and the noise model leave the particles where they were (junk
    and a carbon edge move them: particles are kept off them).

Not modelled: beam-induced motion between frames, radiation damage, particles cut by the field's edge,
inelastic scattering beyond the gradient. Nothing here writes files: ``cryoscape.runs.simulate_micrographs``
writes a run folder; a micrograph alone is saved with :func:`cryoscape.io.mrc.write_micrograph`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..geometry.poses import Poses
from ..geometry.rotations import random_rotations
from ..io.errors import InputError
from ..physics.ctf import CTFParams
from ..physics.imaging import ImagingGrid, apply_ctf, forward_images
from .simulate.sources import AtomSource, MapSource

__all__ = ["MicrographConfig", "MicrographSet", "Micrograph", "MicrographPlan", "JunkObject", "MicrographSimulator",
           "simulate_micrographs", "particle_box", "detector_mtf", "detector_ntf", "detector_dqe",
           "apply_transfer", "read_micrographs_ctf", "RSA_JAMMING", "JUNK_KINDS", "SNR_REGIONS"]

RSA_JAMMING = 0.547  # densest coverage random sequential addition of discs reaches (Feder 1980; Hinrichsen 1986)
JUNK_KINDS = ("ice", "aggregate", "second")
SNR_REGIONS = ("field", "particles")


@dataclass
class MicrographConfig:
    """Options of a micrograph simulation (module docstring for the model). Units: pixels, Å, µm for defocus,
    kV, mm, degrees where named.

    Attributes:
        size: ``H = W = size`` pixels, or ``(H, W)`` (non-square fields are supported).
        apix: pixel size in Å.
        n_particles: particles per micrograph; None: from ``coverage``.
        coverage: when ``n_particles`` is None, the fraction of the field's area covered by the discs of
            particle radius (``n = coverage · H W apix² / (π r²)``, rounded).
        min_distance_A: least distance between particle centres (Å); None: the particle's diameter ``2r``
            (so particles do not overlap). ``r`` is the source's radius (atoms: largest atom distance + 2σ).
        edge_margin_A: least distance of a centre from the field's edges (Å); None: ``r`` (whole particles).
        snr: ``var_R(signal) / σ²`` per micrograph; finite and > 0 (unused with ``dose``).
        snr_region: ``field`` (every pixel of the clean micrograph) or ``particles`` (the particles' own signal
            over their boxes).
        dose: electrons per Å² of the whole exposure: Poisson shot noise instead of Gaussian noise (None: Gaussian).
        peak_phase_rad: ``φ_peak``, the phase shift of the particle's densest projection (sets ``c`` with a dose).
        n_frames: movie frames ``T`` (even, ≥ 2): the halves are the means of the even and odd frames.
        keep_frames: also return the frames ``(N, T, H, W)``.
        junk_fraction: share of the objects of a micrograph that are junk, in ``[0, 0.9]``.
        junk_kinds: kinds of junk objects (of :data:`JUNK_KINDS`); None: ``ice`` and ``aggregate``, plus
            ``second`` when a second molecule is given.
        ice_contrast: peak projected density of an ice blob in units of ``p_ref``.
        absorption: amplitude contrast of thick objects (ice blobs, the carbon film's level), added after the CTF.
        carbon_edge: probability that a micrograph has a carbon edge, in ``[0, 1]``.
        carbon_contrast: projected density of the carbon film in units of ``p_ref``.
        gradient: amplitude of the background gradient in units of ``p_ref`` (0: none).
        mtf: apply the detector model (MTF to the signal, NTF to the noise).
        mtf_width: ``b``, the width of the MTF's charge-spread Gaussian as a fraction of Nyquist (> 0).
        dqe0: the detector's DQE at zero frequency, in ``(0, 1]``.
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
    snr_region: str = "field"
    dose: float | None = None
    peak_phase_rad: float = 0.1
    junk_fraction: float = 0.0
    junk_kinds: tuple | None = None
    ice_contrast: float = 6.0
    absorption: float = 0.3
    carbon_edge: float = 0.0
    carbon_contrast: float = 3.0
    gradient: float = 0.0
    mtf: bool = False
    mtf_width: float = 1.0
    dqe0: float = 0.8

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        if isinstance(self.size, (tuple, list)):
            return int(self.size[0]), int(self.size[1])
        return int(self.size), int(self.size)

    def check(self) -> None:
        """Raise :class:`InputError` naming the first invalid option (the source-dependent checks are made by
        :class:`MicrographSimulator`)."""
        if isinstance(self.size, (tuple, list)) and len(self.size) != 2:
            raise InputError("--size", f"must be one number or (H, W), got {self.size}")
        floats = {"--apix": self.apix, "--coverage": self.coverage, "--min-distance": self.min_distance_A,
                  "--edge-margin": self.edge_margin_A, "--snr": self.snr, "--defocus-min": self.defocus_min_um,
                  "--defocus-max": self.defocus_max_um, "--astigmatism": self.astigmatism_um,
                  "--voltage": self.voltage_kv, "--cs": self.cs_mm, "--amp-contrast": self.amp_contrast,
                  "--bfactor": self.bfactor, "--phase-shift-deg": self.phase_shift_deg, "--dose": self.dose,
                  "--peak-phase": self.peak_phase_rad, "--junk-fraction": self.junk_fraction,
                  "--ice-contrast": self.ice_contrast, "--absorption": self.absorption,
                  "--carbon-edge": self.carbon_edge,
                  "--carbon-contrast": self.carbon_contrast, "--gradient": self.gradient,
                  "--mtf-width": self.mtf_width, "--dqe0": self.dqe0}
        for where, value in floats.items():
            if value is not None and not math.isfinite(value):
                raise InputError(where, f"must be a finite number, got {value}")
        H, W = self.shape
        kinds = self.junk_kinds
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
            (self.snr_region in SNR_REGIONS, "--snr-region",
             f"must be one of {', '.join(SNR_REGIONS)}, got {self.snr_region!r}"),
            (self.dose is None or self.dose > 0, "--dose", f"must be > 0 e/Å², got {self.dose}"),
            (0 < self.peak_phase_rad <= 1, "--peak-phase", f"must be in (0, 1] rad, got {self.peak_phase_rad}"),
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
            (0 <= self.junk_fraction <= 0.9, "--junk-fraction", f"must be in [0, 0.9], got {self.junk_fraction}"),
            (kinds is None or (len(kinds) > 0 and len(set(kinds)) == len(kinds)
                               and all(k in JUNK_KINDS for k in kinds)), "--junk-kinds",
             f"must be distinct names among {', '.join(JUNK_KINDS)}, got {kinds}"),
            (self.ice_contrast >= 0, "--ice-contrast", f"must be ≥ 0, got {self.ice_contrast}"),
            (self.absorption >= 0, "--absorption", f"must be ≥ 0, got {self.absorption}"),
            (0 <= self.carbon_edge <= 1, "--carbon-edge", f"must be a probability in [0, 1], got {self.carbon_edge}"),
            (self.carbon_contrast >= 0, "--carbon-contrast", f"must be ≥ 0, got {self.carbon_contrast}"),
            (self.gradient >= 0, "--gradient", f"must be ≥ 0, got {self.gradient}"),
            (self.mtf_width > 0, "--mtf-width", f"must be > 0 (fraction of Nyquist), got {self.mtf_width}"),
            (0 < self.dqe0 <= 1, "--dqe0", f"must be in (0, 1], got {self.dqe0}"),
        ]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, problem)


@dataclass
class JunkObject:
    """One junk object of a micrograph's plan: ``kind`` (``ice``, ``aggregate``, ``second`` or ``carbon``),
    ``centre (x, y)`` px, ``radius_px`` (the disc it occupies; for ``carbon`` the hole's radius) and the
    kind's draws in ``params``."""

    kind: str
    centre: np.ndarray
    radius_px: float
    params: dict = field(default_factory=dict)


@dataclass
class MicrographPlan:
    """Every random draw of micrograph ``m`` (no image yet): its CTF (one entry), the particles' ``centres (n, 2)``
    ``(x, y)`` px, ``conformation (n,)`` int64, ``rotations (n, 3, 3)`` float64 tensor, the ``junk`` objects
    (the carbon edge, when there is one, is ``carbon``) and the gradient's draws (or None)."""

    index: int
    ctf: CTFParams
    centres: np.ndarray
    conformation: np.ndarray
    rotations: torch.Tensor
    junk: list
    carbon: JunkObject | None
    gradient: dict | None


@dataclass
class Micrograph:
    """One simulated micrograph and its truth (``H × W`` float32 CPU tensors; module docstring for the model).

    ``clean`` (detected, noiseless), ``clean_noctf`` (everything before the CTF: particles, junk, carbon),
    ``junk_noctf`` (junk and carbon before the CTF, or None when there is none), ``particle_signal`` (the
    particles' own detected signal ``F⁻¹[MTF·F[apply_ctf(P)]]``), ``noisy``, ``halves (2, H, W)``, ``frames (T, H,
    W)`` or None, ``box_mask (H, W)`` bool (the union of the particles' boxes). Particles: ``coords (n, 2)``,
    ``rotations (n, 3, 3)`` float64 numpy, ``conformation (n,)``. Junk: ``junk_kind (k,)`` str, ``junk_xy (k,
    2)``, ``junk_radius_A (k,)``. ``ctf`` (one entry), ``noise_sigma`` (``σ_m`` of the Gaussian noise; with a
    dose the measured std of ``noisy − clean``), ``snr_field``
    and ``snr_particles`` (measured: ``var(clean)/var(noise)`` over the field, ``var(particle_signal)/var(noise)``
    over the boxes; NaN without particles or noise)."""

    index: int
    clean: torch.Tensor
    clean_noctf: torch.Tensor
    junk_noctf: torch.Tensor | None
    particle_signal: torch.Tensor
    noisy: torch.Tensor
    halves: torch.Tensor
    frames: torch.Tensor | None
    box_mask: torch.Tensor
    coords: np.ndarray
    rotations: np.ndarray
    conformation: np.ndarray
    junk_kind: np.ndarray
    junk_xy: np.ndarray
    junk_radius_A: np.ndarray
    ctf: CTFParams
    noise_sigma: float
    snr_field: float
    snr_particles: float


@dataclass
class MicrographSet:
    """Simulated micrographs and their ground truth (module docstring). ``N`` micrographs of ``H × W`` pixels.

    Images (float32 CPU tensors): ``clean (N, H, W)`` CTF applied (and MTF, gradient), noiseless;
    ``clean_noctf (N, H, W)`` everything before the CTF (particles, junk, carbon); ``noisy (N, H, W)``;
    ``halves (N, 2, H, W)`` (even-frame and odd-frame means, ``noisy = halves.mean(1)``); ``frames (N, T, H, W)``
    or None; ``junk_noctf (N, H, W)`` the junk and carbon before the CTF, or None when there is none.

    Particles (``P`` in all, numpy): ``micrograph (P,)`` int64 index; ``coords (P, 2)`` float64 ``(x, y)``
    centres in pixels (0-based pixel centres; ``x`` the column); ``rotations (P, 3, 3)`` float64 poses;
    ``conformation (P,)`` int64 frame of the source. Junk (``K``): ``junk_micrograph (K,)``, ``junk_kind (K,)``
    str, ``junk_xy (K, 2)``, ``junk_radius_A (K,)``. Per micrograph: ``ctf`` (:class:`CTFParams`, N entries),
    ``noise_sigma (N,)`` (``σ_m``, the std of ``noisy − clean``: requested, or measured with a dose),
    ``snr_field (N,)`` and ``snr_particles (N,)`` (measured).
    ``box``: the particle box (px); ``radius_A``: the particle radius (Å); ``apix``, ``snr`` (requested),
    ``dose`` (or None).
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
    junk_noctf: torch.Tensor | None = None
    junk_micrograph: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    junk_kind: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    junk_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    junk_radius_A: np.ndarray = field(default_factory=lambda: np.zeros(0))
    snr_field: np.ndarray = field(default_factory=lambda: np.zeros(0))
    snr_particles: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dose: float | None = None

    def __len__(self) -> int:
        return self.noisy.shape[0]

    def particles(self, m: int) -> dict:
        """The particles of micrograph ``m``: ``coords (n, 2)``, ``rotations (n, 3, 3)``, ``conformation (n,)``."""
        sel = self.micrograph == m
        return {"coords": self.coords[sel], "rotations": self.rotations[sel], "conformation": self.conformation[sel]}

    def junk(self, m: int) -> dict:
        """The junk of micrograph ``m``: ``kind (k,)``, ``xy (k, 2)``, ``radius_A (k,)``."""
        sel = self.junk_micrograph == m
        return {"kind": self.junk_kind[sel], "xy": self.junk_xy[sel], "radius_A": self.junk_radius_A[sel]}


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


# ---------------------------------------------------------------------------------------------- detector model

def _omega(H: int, W: int, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ω_y (H, 1), ω_x (1, W or W//2+1))``: frequency as a fraction of Nyquist (``2 apix k``) on the ``fft2``
    (``full``) or ``rfft2`` grid."""
    wy = 2 * torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
    wx = 2 * (torch.fft.fftfreq(W, dtype=torch.float64) if full else torch.fft.rfftfreq(W, dtype=torch.float64))
    return wy, wx[None, :]


def detector_mtf(shape: tuple[int, int], width: float, full: bool = False) -> torch.Tensor:
    """``MTF(ω) = sinc(π ω_x/2) sinc(π ω_y/2) exp(−|ω|²/(2 b²))`` (``b = width``) on the ``rfft2`` grid of an
    ``(H, W)`` field, ``(H, W//2 + 1)`` float64 (``full``: the ``fft2`` grid, ``(H, W)``). ``torch.sinc(x) =
    sin(πx)/(πx)``, so ``sinc(π ω/2)`` is ``torch.sinc(ω/2)``."""
    wy, wx = _omega(*shape, full)
    return torch.sinc(wx / 2) * torch.sinc(wy / 2) * torch.exp(-(wx ** 2 + wy ** 2) / (2 * width ** 2))


def detector_ntf(shape: tuple[int, int], width: float, dqe0: float, full: bool = False) -> torch.Tensor:
    """``NTF(ω) = exp(−|ω|²/(2 b²)) / sqrt(DQE₀)`` on the ``rfft2`` (or ``fft2``) grid, float64."""
    wy, wx = _omega(*shape, full)
    return torch.exp(-(wx ** 2 + wy ** 2) / (2 * width ** 2)) / math.sqrt(dqe0)


def detector_dqe(shape: tuple[int, int], dqe0: float, full: bool = False) -> torch.Tensor:
    """``DQE(ω) = MTF²/NTF² = DQE₀ sinc²(π ω_x/2) sinc²(π ω_y/2)`` (independent of ``b``), float64."""
    wy, wx = _omega(*shape, full)
    return dqe0 * (torch.sinc(wx / 2) * torch.sinc(wy / 2)) ** 2


def apply_transfer(image: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
    """``F⁻¹[tf · F[image]]`` for a real ``(H, W)`` image and a transfer function on its ``rfft2`` grid (periodic
    field), in ``image``'s dtype."""
    H, W = image.shape[-2:]
    f = torch.fft.rfft2(image.to(torch.float64)) * tf
    return torch.fft.irfft2(f, s=(H, W)).to(image.dtype)


# ---------------------------------------------------------------------------------------------- placement

def _n_particles(cfg: MicrographConfig, radius_A: float) -> int:
    if cfg.n_particles is not None:
        return int(cfg.n_particles)
    H, W = cfg.shape
    return int(round(cfg.coverage * H * W * cfg.apix ** 2 / (math.pi * radius_A ** 2)))


def _place(rng: np.random.Generator, n: int, H: int, W: int, margin: float, dmin: float, m: int,
           allowed=None, beside: str = "") -> np.ndarray:
    """``(n, 2)`` centres ``(x, y)`` in px, uniform in ``[margin, W−1−margin] × [margin, H−1−margin]``, pairwise
    ≥ ``dmin`` apart (random sequential addition: candidates are drawn in batches and kept in order when far
    enough from every kept one, and ``allowed(c)`` when given); :class:`InputError` when the budget of
    ``200 n + 1000`` candidates is spent (``beside`` says what ``allowed`` keeps them from, for the message)."""
    lo, hx, hy = margin, W - 1 - margin, H - 1 - margin
    kept = np.empty((0, 2))
    budget, d2 = 200 * n + 1000, dmin * dmin
    while len(kept) < n and budget > 0:
        cand = np.stack([rng.uniform(lo, hx, 256), rng.uniform(lo, hy, 256)], -1)
        budget -= len(cand)
        for c in cand:
            if len(kept) == n:
                break
            if allowed is not None and not allowed(c):
                continue
            if d2 == 0 or len(kept) == 0 or np.min(((kept - c) ** 2).sum(-1)) >= d2:
                kept = np.vstack([kept, c])
    if len(kept) < n:
        raise InputError("--n-particles", f"placed {len(kept)} of {n} particles at least {dmin:.1f} px apart"
                                          f"{beside} in micrograph {m}; ask for fewer particles or a smaller "
                                          "--min-distance")
    return kept


def _place_junk(rng: np.random.Generator, radii: np.ndarray, H: int, W: int, margin: float, m: int) -> np.ndarray:
    """Centres ``(k, 2)`` of junk objects of ``radii (k,)`` px, uniform in the particles' region, at least
    ``r_i + r_j`` apart (random sequential addition, largest first); :class:`InputError` when ``200 k + 1000``
    candidates are spent."""
    k = len(radii)
    order = np.argsort(-radii, kind="stable")
    lo, hx, hy = margin, W - 1 - margin, H - 1 - margin
    kept: list[np.ndarray] = []
    budget = 200 * k + 1000
    while len(kept) < k and budget > 0:
        cand = np.stack([rng.uniform(lo, hx, 256), rng.uniform(lo, hy, 256)], -1)
        budget -= len(cand)
        for c in cand:
            i = len(kept)
            if i == k:
                break
            if i and np.any(((np.array(kept) - c) ** 2).sum(-1) < (radii[order[:i]] + radii[order[i]]) ** 2):
                continue
            kept.append(c)
    if len(kept) < k:
        raise InputError("--junk-fraction", f"placed {len(kept)} of {k} junk objects in micrograph {m}; ask for "
                                            "less junk")
    xy = np.empty((k, 2))
    xy[order] = np.array(kept).reshape(-1, 2)
    return xy


def _paste(field_: torch.Tensor, boxes: torch.Tensor, pix: np.ndarray) -> None:
    """Add ``boxes (n, B, B)`` into ``field (H, W)`` with box pixel ``B//2`` at ``pix (n, 2)`` = integer
    ``(x, y)``, cut at the edges."""
    H, W = field_.shape
    B = boxes.shape[-1]
    for box, (x, y) in zip(boxes, pix):
        y0, x0 = int(y) - B // 2, int(x) - B // 2
        ya, xa = max(0, y0), max(0, x0)
        yb, xb = min(H, y0 + B), min(W, x0 + B)
        if ya < yb and xa < xb:
            field_[ya:yb, xa:xb] += box[ya - y0:yb - y0, xa - x0:xb - x0]


def _box_mask(shape: tuple[int, int], centres: np.ndarray, B: int) -> torch.Tensor:
    """The union of the ``B × B`` boxes whose pixel ``B//2`` is at ``round(c)`` (cut at the edges), ``(H, W)`` bool."""
    H, W = shape
    mask = torch.zeros(H, W, dtype=torch.bool)
    for x, y in np.round(centres).astype(np.int64):
        y0, x0 = int(y) - B // 2, int(x) - B // 2
        mask[max(0, y0):min(H, y0 + B), max(0, x0):min(W, x0 + B)] = True
    return mask


# ---------------------------------------------------------------------------------------------- simulator

class MicrographSimulator:
    """Plans and renders micrographs one at a time (module docstring for the model).

    Args:
        source: the particle (:class:`~cryoscape.data.simulate.AtomSource` or
            :class:`~cryoscape.data.simulate.MapSource`).
        cfg: :class:`MicrographConfig`.
        second_source: the second molecule (junk kind ``second``), or None.

    Raises :class:`InputError` for invalid options, a field smaller than the particle box (plus margins), more
    particles than fit at the minimum distance, junk of kind ``second`` without a second source, or an SNR in
    the particle boxes without particles. :meth:`plan` raises it when random sequential addition jams.
    """

    def __init__(self, source, cfg: MicrographConfig, second_source=None):
        cfg.check()
        self.cfg, self.source, self.second = cfg, source, second_source
        H, W = self.shape = cfg.shape
        apix = self.apix = float(cfg.apix)
        B = self.box = particle_box(source, apix)
        self.radius_A = float(source.radius())
        self.r_px = self.radius_A / apix
        self.margin = (self.radius_A if cfg.edge_margin_A is None else cfg.edge_margin_A) / apix
        self.dmin = (2 * self.radius_A if cfg.min_distance_A is None else cfg.min_distance_A) / apix
        margin, dmin = self.margin, self.dmin
        if min(H, W) < B or min(H, W) - 1 < 2 * margin:
            raise InputError("--size", f"a {H} × {W} px field is smaller than the particle box ({B} px at {apix} "
                                       f"Å/px) or its margins ({2 * margin:.1f} px); increase --size or --apix")
        n = self.n = _n_particles(cfg, self.radius_A)
        area = (W - 1 - 2 * margin + dmin) * (H - 1 - 2 * margin + dmin)  # centres' region, grown by dmin/2
        if n > 1 and n * math.pi * dmin ** 2 / 4 > RSA_JAMMING * area:
            raise InputError("--n-particles", f"{n} particles {dmin:.1f} px apart do not fit at random in a {H} × "
                                              f"{W} px field (coverage {n * math.pi * dmin ** 2 / 4 / area:.2f} > "
                                              f"{RSA_JAMMING}); ask for fewer particles or a smaller --min-distance")
        if cfg.snr_region == "particles" and n == 0:
            raise InputError("--snr-region", "an SNR in the particle boxes needs particles (--n-particles > 0)")
        kinds = cfg.junk_kinds
        if kinds is None:
            kinds = ("ice", "aggregate") + (("second",) if second_source is not None else ())
        if "second" in kinds and second_source is None:
            raise InputError("--junk-kinds", "junk of kind 'second' needs a second molecule (--second-model)")
        self.kinds = tuple(kinds)
        f = cfg.junk_fraction
        self.n_junk = int(round(n * f / (1 - f))) if f > 0 else 0
        self.grid = ImagingGrid(B, apix, dtype=torch.float32)
        self.projector = source.projector()
        if second_source is not None:
            self.box2 = particle_box(second_source, apix)
            self.grid2 = ImagingGrid(self.box2, apix, dtype=torch.float32)
            self.projector2 = second_source.projector()
            self.r2_px = float(second_source.radius()) / apix
        eye = Poses(torch.eye(3)[None], torch.zeros(1, 2))
        ref = forward_images(self.projector, eye, self.grid, None, torch.zeros(1, dtype=torch.int64))[0]
        self.p_ref = float(ref.max())
        if cfg.mtf:
            self.mtf = detector_mtf(self.shape, cfg.mtf_width)
            self.ntf = detector_ntf(self.shape, cfg.mtf_width, cfg.dqe0)
            self.ntf_rms = float(detector_ntf(self.shape, cfg.mtf_width, cfg.dqe0, full=True).pow(2).mean().sqrt())

    # ------------------------------------------------------------------ draws

    def _ctf(self, df: float, ast: float, ang: float) -> CTFParams:
        c = self.cfg
        return CTFParams([df + ast / 2], [df - ast / 2], [ang], c.voltage_kv, c.cs_mm, c.amp_contrast,
                         math.radians(c.phase_shift_deg), c.bfactor)

    def _carbon(self, rng: np.random.Generator) -> JunkObject | None:
        """The carbon edge's geometry (or None): the edge point ``p`` on a ray from the field's centre, the hole's
        radius and centre; ``d(r) = |r − centre_h| − R_h``."""
        if not (self.cfg.carbon_edge > 0 and rng.random() < self.cfg.carbon_edge):
            return None
        H, W = self.shape
        theta = rng.uniform(0, 2 * np.pi)
        nvec = np.array([math.cos(theta), math.sin(theta)])
        c0 = np.array([(W - 1) / 2, (H - 1) / 2])
        reach = min(W / 2 / max(abs(nvec[0]), 1e-12), H / 2 / max(abs(nvec[1]), 1e-12))
        p = c0 + rng.uniform(0.5, 0.85) * reach * nvec
        R = rng.uniform(1.0, 4.0) * max(H, W)
        return JunkObject("carbon", p, float(R), {"hole_centre": p - R * nvec})

    def _junk(self, rng: np.random.Generator, m: int) -> list:
        """Draw the kinds, sizes, positions and inner draws of the junk objects (module docstring)."""
        k = self.n_junk
        if k == 0:
            return []
        F, r = self.source.n_conformations, self.r_px
        kinds = [self.kinds[i] for i in rng.integers(0, len(self.kinds), k)]
        objs = []
        for kind in kinds:
            if kind == "ice":
                R = rng.uniform(1.0, 2.5) * r
                p = {"R": R, "q": rng.uniform(0.6, 1.0), "theta": rng.uniform(0, np.pi),
                     "amp": self.cfg.ice_contrast * self.p_ref * rng.uniform(0.7, 1.3), "soft": max(1.0, 0.08 * R)}
                objs.append(JunkObject("ice", None, R, p))
            elif kind == "aggregate":
                c = int(rng.integers(3, 7))
                rad, ang = r * np.sqrt(rng.random(c)), rng.uniform(0, 2 * np.pi, c)
                off = np.stack([rad * np.cos(ang), rad * np.sin(ang)], -1)
                off[0] = 0.0
                mean = off.mean(0)
                off -= mean  # listed at the copies' centroid
                gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
                p = {"offsets": off, "conformation": rng.integers(0, F, c),
                     "rotations": random_rotations(c, gen, dtype=torch.float64)}
                objs.append(JunkObject("aggregate", None, float(np.sqrt((off ** 2).sum(-1)).max() + r), p))
            else:
                gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
                p = {"conformation": rng.integers(0, self.second.n_conformations, 1),
                     "rotations": random_rotations(1, gen, dtype=torch.float64)}
                objs.append(JunkObject("second", None, self.r2_px, p))
        radii = np.array([o.radius_px for o in objs])
        xy = _place_junk(rng, radii, *self.shape, self.margin, m)
        for o, c in zip(objs, xy):
            o.centre = c
        return objs

    def _gradient(self, m: int) -> dict | None:
        if self.cfg.gradient <= 0:
            return None
        rng = np.random.default_rng([self.cfg.seed, m, 3])
        return {"theta": rng.uniform(0, 2 * np.pi), "freqs": rng.uniform(-1.5, 1.5, (3, 2)),
                "phases": rng.uniform(0, 2 * np.pi, 3), "weights": rng.uniform(0.2, 1.0, 4)}

    def plan(self, m: int) -> MicrographPlan:
        """Every random draw of micrograph ``m`` (a function of ``seed`` and ``m`` only)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, m])
        df = rng.uniform(cfg.defocus_min_um, cfg.defocus_max_um) * 1e4
        ast, ang = cfg.astigmatism_um * 1e4, rng.random() * np.pi
        rng_j = np.random.default_rng([cfg.seed, m, 2])
        carbon = self._carbon(rng_j)
        junk = self._junk(rng_j, m)
        tests = []
        if carbon is not None:  # particles wholly inside the hole
            hc, Rh, r = carbon.params["hole_centre"], carbon.radius_px, self.r_px
            tests.append(lambda c: math.hypot(c[0] - hc[0], c[1] - hc[1]) - Rh <= -r)
        if junk:  # particles at least r_particle + r_junk from every junk centre
            jxy = np.array([o.centre for o in junk])
            jr2 = (np.array([o.radius_px for o in junk]) + self.r_px) ** 2
            tests.append(lambda c: bool((((jxy - c) ** 2).sum(-1) >= jr2).all()))
        allowed = (lambda c: all(t(c) for t in tests)) if tests else None
        beside = " and ".join((["off the carbon"] if carbon is not None else [])
                              + (["beside the junk"] if junk else []))
        centres = _place(rng, self.n, *self.shape, self.margin, self.dmin, m, allowed, beside and " " + beside)
        conf = rng.integers(0, self.source.n_conformations, len(centres))
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
        R = random_rotations(len(centres), gen, dtype=torch.float64)
        if carbon is not None:
            carbon.params["texture_seed"] = int(rng_j.integers(0, 2 ** 62))
        return MicrographPlan(m, self._ctf(df, ast, ang), centres, conf.astype(np.int64), R, junk, carbon,
                              self._gradient(m))

    # ------------------------------------------------------------------ rendering

    def _render_copies(self, field_: torch.Tensor, projector, grid: ImagingGrid, centres: np.ndarray,
                       R: torch.Tensor, conf) -> None:
        """Add the CTF-free projections of copies at ``centres (n, 2)`` with poses ``R`` into ``field``."""
        if len(centres) == 0:
            return
        pix = np.round(centres).astype(np.int64)
        frac = torch.as_tensor((centres - pix) * self.apix, dtype=torch.float32)
        boxes = forward_images(projector, Poses(R.to(torch.float32), frac), grid, None,
                               torch.as_tensor(np.asarray(conf), dtype=torch.int64))
        _paste(field_, boxes, pix)

    def _render_ice(self, junk: torch.Tensor, thick: torch.Tensor, o: JunkObject) -> None:
        """Add an ice blob (module docstring) into ``junk`` (its projected density) and ``thick`` (the same, for
        the absorption term)."""
        from scipy.ndimage import gaussian_filter
        p = o.params
        half = int(math.ceil(p["R"] + 4 * p["soft"])) + 1
        cx, cy = o.centre
        ix, iy = int(round(cx)), int(round(cy))
        yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1].astype(np.float64)
        dx, dy = xx - cx, yy - cy
        ct, st = math.cos(p["theta"]), math.sin(p["theta"])
        u, v = ct * dx + st * dy, -st * dx + ct * dy
        rho2 = (u / p["R"]) ** 2 + (v / (p["q"] * p["R"])) ** 2
        blob = gaussian_filter(p["amp"] * np.sqrt(np.clip(1 - rho2, 0, None)), p["soft"], mode="constant")
        blob = torch.from_numpy(blob.astype(np.float32))[None]
        _paste(junk, blob, np.array([[ix, iy]]))
        _paste(thick, blob, np.array([[ix, iy]]))

    def _render_carbon(self, o: JunkObject, ctf: CTFParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The carbon film: ``(film with the CTF, film without, the film's mask × level)``, ``(H, W)`` each. The
        film is drawn on the CTF's canvas (``ctf_pad`` times the field, the field at its centre, as
        :func:`~cryoscape.physics.imaging.apply_ctf` places it) and the CTF applied there circularly, so the film
        goes on past the field's edges instead of ending in a step at them."""
        from scipy.ndimage import gaussian_filter
        from scipy.special import ndtr
        H, W = self.shape
        pad = self.cfg.ctf_pad
        Hp, Wp = pad * H, pad * W
        ly, lx = Hp // 2 - H // 2, Wp // 2 - W // 2
        hc = o.params["hole_centre"]
        yy, xx = np.mgrid[-ly:Hp - ly, -lx:Wp - lx].astype(np.float64)  # field pixel coordinates on the canvas
        mask = ndtr((np.hypot(xx - hc[0], yy - hc[1]) - o.radius_px) / 2.0)
        tex = gaussian_filter(np.random.default_rng(o.params["texture_seed"]).standard_normal((Hp, Wp)), 1.0,
                              mode="wrap")
        tex *= 0.3 * self.p_ref / max(float(tex.std()), 1e-30)
        level = mask * (self.cfg.carbon_contrast * self.p_ref)
        film = torch.from_numpy((level + mask * tex).astype(np.float32))
        with_ctf = apply_ctf(film[None], ctf, self.apix, pad=1)[0]
        crop = (slice(ly, ly + H), slice(lx, lx + W))
        return with_ctf[crop], film[crop].clone(), torch.from_numpy(level[crop].astype(np.float32))

    def _render_gradient(self, g: dict) -> torch.Tensor:
        H, W = self.shape
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
        xn, yn = xx / W - 0.5, yy / H - 0.5
        w = g["weights"]
        u = w[0] * (math.cos(g["theta"]) * xn + math.sin(g["theta"]) * yn)
        for (fx, fy), ph, wi in zip(g["freqs"], g["phases"], w[1:]):
            u = u + wi * np.cos(2 * np.pi * (fx * xn + fy * yn) + ph)
        u *= self.cfg.gradient * self.p_ref / max(float(np.abs(u).max()), 1e-30)
        return torch.from_numpy(u.astype(np.float32))

    def render(self, plan: MicrographPlan) -> Micrograph:
        """The images of a plan: CTF-free field, CTF, absorption, gradient, detector, noise (module docstring)."""
        cfg, (H, W), apix = self.cfg, self.shape, self.apix
        particles = torch.zeros(H, W)
        self._render_copies(particles, self.projector, self.grid, plan.centres, plan.rotations, plan.conformation)
        junk = thick = None
        if plan.junk or plan.carbon is not None:
            junk, thick = torch.zeros(H, W), torch.zeros(H, W)
            for o in plan.junk:
                p = o.params
                if o.kind == "ice":
                    self._render_ice(junk, thick, o)
                elif o.kind == "aggregate":
                    self._render_copies(junk, self.projector, self.grid, o.centre + p["offsets"], p["rotations"],
                                        p["conformation"])
                else:
                    self._render_copies(junk, self.projector2, self.grid2, o.centre[None], p["rotations"],
                                        p["conformation"])
        if junk is None:
            clean_noctf = particles
            ctf_p = apply_ctf(particles[None], plan.ctf, apix, pad=cfg.ctf_pad)[0]
            s = ctf_p.clone()
        else:
            both = apply_ctf(torch.stack([particles, junk]), plan.ctf.subset([0, 0]), apix, pad=cfg.ctf_pad)
            ctf_p, s = both[0], both[0] + both[1]
            if plan.carbon is not None:
                c_ctf, film, level = self._render_carbon(plan.carbon, plan.ctf)
                s, junk, thick = s + c_ctf, junk + film, thick + level
            clean_noctf = particles + junk
            s = s + cfg.absorption * thick
        if plan.gradient is not None:
            s = s + self._render_gradient(plan.gradient)
        clean = apply_transfer(s, self.mtf) if cfg.mtf else s
        signal_p = apply_transfer(ctf_p, self.mtf) if cfg.mtf else ctf_p
        mask = _box_mask(self.shape, plan.centres, self.box)
        T = cfg.n_frames
        halves = torch.zeros(2, H, W)
        frames = torch.empty(T, H, W) if cfg.keep_frames else None
        rng = np.random.default_rng([cfg.seed, plan.index, 1])
        if cfg.dose is None:
            if cfg.snr_region == "field":
                var = float(clean.double().var(unbiased=False))
            else:
                var = float(signal_p[mask].double().var(unbiased=False))
            sigma = math.sqrt(var / cfg.snr)
            shape_tf = self.ntf / self.ntf_rms if cfg.mtf else None
            _add_frames(clean, sigma, T, rng, halves, frames, shape_tf)
        else:
            sigma = None
            _add_poisson_frames(s, cfg.dose * apix ** 2, 2 * cfg.peak_phase_rad / self.p_ref, T, rng, halves,
                                frames, self.mtf if cfg.mtf else None, self.ntf if cfg.mtf else None)
        noisy = 0.5 * (halves[0] + halves[1])
        noise = (noisy - clean).double()
        nvar = float(noise.var(unbiased=False))
        snr_field = float(clean.double().var(unbiased=False)) / nvar if nvar > 0 else math.nan
        snr_part = math.nan
        if mask.any() and nvar > 0:
            snr_part = float(signal_p[mask].double().var(unbiased=False)) / float(noise[mask].var(unbiased=False))
        kinds = [o.kind for o in plan.junk] + (["carbon"] if plan.carbon is not None else [])
        objs = plan.junk + ([plan.carbon] if plan.carbon is not None else [])
        return Micrograph(
            plan.index, clean, clean_noctf, junk, signal_p, noisy, halves, frames, mask, plan.centres,
            plan.rotations.numpy(), plan.conformation, np.array(kinds, dtype=object),
            np.array([o.centre for o in objs], dtype=np.float64).reshape(-1, 2),
            np.array([o.radius_px * apix for o in objs], dtype=np.float64), plan.ctf,
            math.sqrt(nvar) if sigma is None else sigma, snr_field,
            snr_part)

    def micrograph(self, m: int) -> Micrograph:
        """Plan and render micrograph ``m``."""
        return self.render(self.plan(m))


def simulate_micrographs(source, cfg: MicrographConfig | None = None, n_micrographs: int = 1,
                         progress=None, second_source=None) -> MicrographSet:
    """Simulate ``n_micrographs`` micrographs of ``source`` (an :class:`~cryoscape.data.simulate.AtomSource` or
    :class:`~cryoscape.data.simulate.MapSource`) with the options ``cfg`` (module docstring for the model), in
    memory. ``second_source``: the second molecule for junk of kind ``second``.

    ``progress``: optional object with ``.advance(n)`` (micrographs done). Raises :class:`InputError` for
    invalid options, a field smaller than the particle box (plus margins), or more particles than fit at
    the minimum distance.
    """
    cfg = cfg or MicrographConfig()
    cfg.check()
    if n_micrographs < 1:
        raise InputError("--n-micrographs", f"must be ≥ 1, got {n_micrographs}")
    sim = MicrographSimulator(source, cfg, second_source)
    H, W = sim.shape
    N, T = n_micrographs, cfg.n_frames
    clean, clean_noctf, noisy = torch.empty(N, H, W), torch.empty(N, H, W), torch.empty(N, H, W)
    halves = torch.empty(N, 2, H, W)
    frames = torch.empty(N, T, H, W) if cfg.keep_frames else None
    mics = []
    for m in range(N):
        g = sim.micrograph(m)
        clean[m], clean_noctf[m], noisy[m], halves[m] = g.clean, g.clean_noctf, g.noisy, g.halves
        if frames is not None:
            frames[m] = g.frames
        g.clean = g.clean_noctf = g.noisy = g.halves = g.frames = g.particle_signal = None  # keep memory at one field
        mics.append(g)
        if progress is not None:
            progress.advance(1)
    junk_noctf = None
    if any(g.junk_noctf is not None for g in mics):
        junk_noctf = torch.stack([torch.zeros(H, W) if g.junk_noctf is None else g.junk_noctf for g in mics])
    cat = lambda key: np.concatenate([getattr(g, key) for g in mics])  # noqa: E731
    ctf_all = CTFParams(*[torch.cat([getattr(g.ctf, k) for g in mics]) for k in CTFParams.fields])
    return MicrographSet(
        clean, clean_noctf, noisy, halves, frames,
        np.concatenate([np.full(len(g.coords), g.index, dtype=np.int64) for g in mics]), cat("coords"),
        cat("rotations").reshape(-1, 3, 3), cat("conformation").astype(np.int64), ctf_all,
        np.array([g.noise_sigma for g in mics]), sim.apix, float(cfg.snr), sim.box, sim.radius_A, junk_noctf,
        np.concatenate([np.full(len(g.junk_kind), g.index, dtype=np.int64) for g in mics]),
        np.concatenate([g.junk_kind for g in mics]).astype(object), cat("junk_xy").reshape(-1, 2),
        cat("junk_radius_A"), np.array([g.snr_field for g in mics]), np.array([g.snr_particles for g in mics]),
        cfg.dose)


# ---------------------------------------------------------------------------------------------- noise

def _add_frames(clean: torch.Tensor, sigma: float, T: int, rng: np.random.Generator, halves: torch.Tensor,
                frames: torch.Tensor | None, shape_tf: torch.Tensor | None = None) -> None:
    """Fill ``halves (2, H, W)`` with the means of the even and odd frames ``clean + ε_t``,
    ``ε_t ~ N(0, T σ²)`` (shaped by ``F⁻¹[shape_tf · F[·]]`` when given; ``shape_tf`` of unit mean power keeps
    the variance), and ``frames (T, H, W)`` when given, one frame at a time."""
    halves.zero_()
    frame_sigma = sigma * math.sqrt(T)
    for t in range(T):
        eps = torch.from_numpy(rng.standard_normal(clean.shape, dtype=np.float32))
        if shape_tf is not None:
            eps = apply_transfer(eps, shape_tf)
        frame = clean + frame_sigma * eps
        halves[t % 2] += frame
        if frames is not None:
            frames[t] = frame
    halves /= T // 2


def _add_poisson_frames(s: torch.Tensor, lam0: float, c: float, T: int, rng: np.random.Generator,
                        halves: torch.Tensor, frames: torch.Tensor | None, mtf: torch.Tensor | None,
                        ntf: torch.Tensor | None) -> None:
    """Shot noise (module docstring): ``λ = λ₀ max(0, 1 − c s)``, ``N_t ~ Poisson(λ/T)``, detected
    ``d_t = F⁻¹[MTF F[λ/T]] + F⁻¹[NTF F[N_t − λ/T]]`` (``N_t`` without ``mtf``), ``frame_t = (1 − T d_t/λ₀)/c``;
    ``halves`` = means of the even and odd frames."""
    halves.zero_()
    lam_t = lam0 * np.clip(1.0 - c * s.double().numpy(), 0.0, None) / T
    mean_t = None if mtf is None else apply_transfer(torch.from_numpy(lam_t), mtf)
    for t in range(T):
        counts = rng.poisson(lam_t)
        if mtf is None:
            det = torch.from_numpy(counts.astype(np.float64))
        else:
            det = mean_t + apply_transfer(torch.from_numpy(counts - lam_t), ntf)
        frame = ((1.0 - T * det / lam0) / c).to(torch.float32)
        halves[t % 2] += frame
        if frames is not None:
            frames[t] = frame
    halves /= T // 2


def read_micrographs_ctf(path) -> tuple[list[str], CTFParams, float]:
    """A RELION micrographs STAR (:func:`cryoscape.io.star.read_micrographs_star`) as ``(names, CTFParams with
    one entry per micrograph, apix Å)``."""
    from ..io.star import read_micrographs_star
    names, cols, apix = read_micrographs_star(path)
    return names, CTFParams(**cols), apix
