"""Options of a simulation (:class:`SimulationConfig`) and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...io.errors import InputError

__all__ = ["SimulationConfig", "SAMPLING", "PROJECTIONS"]

PROJECTIONS = ("auto", "splat", "exact")  # how Gaussian atoms become images (physics.imaging.GaussianAtoms)
SAMPLING = ("random", "balanced", "sequential")


@dataclass
class SimulationConfig:
    """Options of a simulation. Units: Å, µm for defocus options, kV, mm, degrees where named ``_deg``.

    Attributes:
        n_images: number of particles.
        box: image size in pixels (None: the map's size, or 64 for atomic models).
        apix: pixel size in Å (None: the map's header, or chosen so the particle fills 70 % of the box).
        snr: signal-to-noise ratio (variance ratio); ``inf`` writes noiseless images.
        sigma: Gaussian atom width in Å (atomic models only).
        defocus_min_um, defocus_max_um: defocus drawn uniformly in this range (µm, underfocus > 0).
        defocus_groups: 0 (default) for a continuous defocus; K ≥ 1 for K values evenly spaced from min to
            max (the centres of K equal bins), each particle taking the one of the bin its uniform draw falls
            in — the "defocus groups" of denoising benchmarks (CWF).
        astigmatism_um: ``ΔfU − ΔfV`` (µm); the azimuth is uniform in [0°, 180°).
        voltage_kv, cs_mm, amp_contrast, bfactor, phase_shift_deg: microscope and CTF envelope.
        shift_max_A: particle offsets drawn uniformly in a disc of this radius (Å).
        view_cone_deg: viewing directions uniform on the sphere (180, the default) or uniform within this
            angle of the +z axis (tilt ≤ cone), with uniform rot and in-plane psi: e.g. 5 for particles seen
            almost all from one side (seed 004's clustering problem).
        sampling: how conformations are assigned: ``random`` (with replacement), ``balanced`` (each
            frame equally often, shuffled: without replacement when ``n_images ≤ frames``) or
            ``sequential`` (frame ``n mod F``).
        seed: random seed. chunk: images per rendered chunk. ctf: apply the CTF.
        ctf_pad: apply the CTF on a canvas this many times the box, then cut the box out (2: delocalised
            signal leaves the box as in a micrograph; 1: circular, fastest).
        save_clean: also write the noiseless images to ``truth/clean.mrcs`` (with the CTF, as in the data)
            and, with a CTF, the CTF-free projections to ``truth/clean_noctf.mrcs`` (the target of denoisers
            that remove the CTF).
    """

    n_images: int = 1000
    box: int | None = None
    apix: float | None = None
    snr: float = 0.1
    sigma: float = 3.0
    defocus_min_um: float = 1.0
    defocus_max_um: float = 2.5
    defocus_groups: int = 0
    astigmatism_um: float = 0.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amp_contrast: float = 0.1
    bfactor: float = 0.0
    phase_shift_deg: float = 0.0
    shift_max_A: float = 0.0
    view_cone_deg: float = 180.0
    sampling: str = "random"
    seed: int = 0
    chunk: int = 1024
    ctf: bool = True
    ctf_pad: int = 1
    save_clean: bool = False

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first invalid option."""
        floats = {"--apix": self.apix, "--sigma": self.sigma, "--defocus-min": self.defocus_min_um,
                  "--defocus-max": self.defocus_max_um, "--astigmatism": self.astigmatism_um,
                  "--voltage": self.voltage_kv, "--cs": self.cs_mm, "--amp-contrast": self.amp_contrast,
                  "--bfactor": self.bfactor, "--phase-shift-deg": self.phase_shift_deg, "--shift-max": self.shift_max_A,
                  "--view-cone-deg": self.view_cone_deg}
        for where, value in floats.items():
            if value is not None and not math.isfinite(value):
                raise InputError(where, f"must be a finite number, got {value}")
        checks = [
            (self.seed >= 0, "--seed", f"must be ≥ 0, got {self.seed}"),
            (self.n_images >= 1, "--n-images", f"must be ≥ 1, got {self.n_images}"),
            (self.box is None or self.box >= 8, "--box", f"must be ≥ 8 pixels, got {self.box}"),
            (self.apix is None or (self.apix > 0 and math.isfinite(self.apix)), "--apix",
             f"must be > 0, got {self.apix}"),
            (self.snr > 0 and not math.isnan(self.snr), "--snr", f"must be > 0, got {self.snr}"),
            (self.sigma > 0, "--sigma", f"must be > 0, got {self.sigma}"),
            (0 <= self.defocus_min_um <= self.defocus_max_um, "--defocus-min/--defocus-max",
             f"need 0 ≤ min ≤ max, got {self.defocus_min_um}, {self.defocus_max_um}"),
            (self.defocus_groups >= 0, "--defocus-groups", f"must be ≥ 0, got {self.defocus_groups}"),
            (self.astigmatism_um >= 0, "--astigmatism", f"must be ≥ 0, got {self.astigmatism_um}"),
            (self.voltage_kv > 0, "--voltage", f"must be > 0, got {self.voltage_kv}"),
            (0 <= self.amp_contrast < 1, "--amp-contrast", f"must be in [0, 1), got {self.amp_contrast}"),
            (self.bfactor >= 0, "--bfactor", f"must be ≥ 0, got {self.bfactor}"),
            (self.shift_max_A >= 0, "--shift-max", f"must be ≥ 0, got {self.shift_max_A}"),
            (0 < self.view_cone_deg <= 180, "--view-cone-deg", f"must be in (0, 180], got {self.view_cone_deg}"),
            (self.sampling in SAMPLING, "--sampling", f"must be one of {', '.join(SAMPLING)}"),
            (self.chunk >= 1, "--chunk", f"must be ≥ 1, got {self.chunk}"),
            (1 <= self.ctf_pad <= 8, "--ctf-pad", f"must be 1 to 8, got {self.ctf_pad}"),
        ]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, problem)
