"""The particle simulator: atomic models, MD trajectories or maps → particle stack + STAR + ground truth.

Image formation (CONVENTIONS.md) for particle ``n``, computed in Fourier space:

    Î_n(k) = CTF_n(k) · exp(−2πi k·t_n) · P̂_{R_n}[V_{c_n}](k),   I_n = F⁻¹[Î_n] + ε_n,   ε ~ N(0, σ²)

``V_c`` is conformation ``c`` (Gaussian atoms, projected analytically, or a voxel map, projected by Fourier
slice), ``R_n`` a Haar-uniform pose, ``t_n`` the in-plane offset of the particle from the box centre (the
STAR file gets ``rlnOriginXAngst/YAngst = −t_n``, RELION's meaning), and ``σ² = var(clean) / SNR`` with
the variance taken over every pixel of the whole noiseless dataset (an exact first pass).

Everything random is drawn from the seed, so the same seed and options give bit-identical files.
Images are rendered and written in chunks, so memory is bounded for any number of images.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..io.errors import InputError
from ..physics.ctf import CTFParams, ctf_from_basis, ctf_phase_basis
from ..physics.fourier import half_box_shift_sign, irfft2_centered, rfft2_centered, rfreq_grid_2d
from ..physics.gaussian import project_atoms_real, projected_xy, splat_atoms, splat_filter
from ..physics.noise import RunningVariance, noise_sigma
from ..physics.shift import phase_ramp
from ..physics.slice import FourierSliceProjector
from ..geometry.rotations import matrix_to_euler, random_rotations

__all__ = ["SimulationConfig", "SimulationPlan", "AtomSource", "MapSource", "plan_simulation",
           "render_images", "simulate_to_folder"]

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
        astigmatism_um: ``ΔfU − ΔfV`` (µm); the azimuth is uniform in [0°, 180°).
        voltage_kv, cs_mm, amp_contrast, bfactor, phase_shift_deg: microscope and CTF envelope.
        shift_max_A: particle offsets drawn uniformly in a disc of this radius (Å).
        sampling: how conformations are assigned: ``random`` (with replacement), ``balanced`` (each
            frame equally often, shuffled: without replacement when ``n_images ≤ frames``) or
            ``sequential`` (frame ``n mod F``).
        seed: random seed. chunk: images per rendered chunk. ctf: apply the CTF.
        ctf_pad: apply the CTF on a canvas this many times the box, then cut the box out (2: delocalised
            signal leaves the box as in a micrograph; 1: circular, fastest).
        save_clean: also write the noiseless images to ``truth/clean.mrcs``.
    """

    n_images: int = 1000
    box: int | None = None
    apix: float | None = None
    snr: float = 0.1
    sigma: float = 3.0
    defocus_min_um: float = 1.0
    defocus_max_um: float = 2.5
    astigmatism_um: float = 0.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amp_contrast: float = 0.1
    bfactor: float = 0.0
    phase_shift_deg: float = 0.0
    shift_max_A: float = 0.0
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
                  "--bfactor": self.bfactor, "--phase-shift-deg": self.phase_shift_deg, "--shift-max": self.shift_max_A}
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
            (self.astigmatism_um >= 0, "--astigmatism", f"must be ≥ 0, got {self.astigmatism_um}"),
            (self.voltage_kv > 0, "--voltage", f"must be > 0, got {self.voltage_kv}"),
            (0 <= self.amp_contrast < 1, "--amp-contrast", f"must be in [0, 1), got {self.amp_contrast}"),
            (self.bfactor >= 0, "--bfactor", f"must be ≥ 0, got {self.bfactor}"),
            (self.shift_max_A >= 0, "--shift-max", f"must be ≥ 0, got {self.shift_max_A}"),
            (self.sampling in SAMPLING, "--sampling", f"must be one of {', '.join(SAMPLING)}"),
            (self.chunk >= 1, "--chunk", f"must be ≥ 1, got {self.chunk}"),
            (1 <= self.ctf_pad <= 8, "--ctf-pad", f"must be 1 to 8, got {self.ctf_pad}"),
        ]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, problem)


PROJECTIONS = ("auto", "splat", "exact")
SPLAT_MIN_SIGMA_PX = 1.5  # "auto" splats when σ ≥ this many pixels (relative error ≲ 5e-4 measured)


class AtomSource:
    """Conformations as Gaussian atoms, projected analytically.

    Args:
        coords: ``(F, A, 3)`` atom positions in Å; each frame is centred on its own centroid.
        sigma: atom width in Å. weights: optional ``(A,)`` masses.
        projection: ``exact`` samples each atom's Gaussian at the pixel centres
            (:func:`~cryoscape.physics.gaussian.project_atoms_real`); ``splat`` spreads atoms with a cubic
            B-spline and applies the Gaussian in Fourier space
            (:func:`~cryoscape.physics.gaussian.project_atoms_splat`, several times faster, relative error
            ~3e-4 at σ = 1.5 px; periodic in the box, so atom tails at an edge wrap around); ``auto``
            splats when ``σ ≥ 1.5`` pixels.
    """

    kind = "atoms"

    def __init__(self, coords: np.ndarray, sigma: float, weights: np.ndarray | None = None,
                 projection: str = "auto"):
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        c = np.asarray(coords, dtype=np.float64)
        if c.ndim == 2:
            c = c[None]
        self.coords = torch.from_numpy(c - c.mean(axis=1, keepdims=True))
        self.sigma = float(sigma)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.projection = projection
        self.n_conformations = c.shape[0]
        self._coords32 = None
        self._filters: dict = {}
        self._grid = None

    def radius(self) -> float:
        """Largest atom distance from the centre (Å) over all frames, plus 2σ for the Gaussian tails."""
        return float(self.coords.norm(dim=-1).max()) + 2 * self.sigma

    def uses_splat(self, apix: float) -> bool:
        """Whether images at this pixel size are rendered by splatting."""
        return self.projection == "splat" or (self.projection == "auto" and self.sigma >= SPLAT_MIN_SIGMA_PX * apix)

    def render_fourier(self, conf: torch.Tensor, R: torch.Tensor, shifts: torch.Tensor, D: int,
                       apix: float) -> torch.Tensor:
        """Shifted projections on the rfft half plane, ``(n, D, D//2+1)`` complex64 (the transform of
        the analytic projection sampled at pixel centres)."""
        if self._coords32 is None:
            self._coords32 = self.coords.to(torch.float32)
        w = None if self.weights is None else self.weights.to(torch.float32)
        R32, t = R.to(torch.float32), shifts.to(torch.float32)
        if not self.uses_splat(apix):
            return rfft2_centered(project_atoms_real(self._coords32[conf], R32, self.sigma, D, apix, t, w))
        if R.device.type != "cpu":
            px, py = projected_xy(self._coords32.to(R.device)[conf.to(R.device)], R32, t.to(R.device))
            grid = splat_atoms(px / apix, py / apix, D, None if w is None else w.to(R.device))  # image origin at index 0: the ifftshift layout
            return torch.fft.rfft2(grid).mul_(self._filter(D, apix, R.device))
        from ..utils.cpu_kernels import splat_cubic_bspline
        # On the CPU the origin sits at D//2 (atoms away from the edges splat without wrapping); the
        # ifftshift to the origin-at-0 layout is then a sign folded into the filter (even D) or a roll.
        if self._grid is None or self._grid.shape != (len(conf), D, D):
            self._grid = np.empty((len(conf), D, D), dtype=np.float32)  # reused: no fresh pages per batch
        grid = torch.from_numpy(splat_cubic_bspline(self._coords32.numpy(), conf.numpy(), R32.numpy(), t.numpy(),
                                                    apix, None if w is None else w.numpy(), D, origin=D // 2,
                                                    out=self._grid))
        if D % 2:
            return torch.fft.rfft2(torch.fft.ifftshift(grid, dim=(-2, -1))).mul_(self._filter(D, apix))
        return torch.fft.rfft2(grid).mul_(self._filter(D, apix, centred=True))

    def _filter(self, D: int, apix: float, device=None, centred: bool = False) -> torch.Tensor:
        """The splat's Fourier filter (cached), times the half-box shift sign when ``centred``."""
        key = (D, apix, str(device), centred)
        if key not in self._filters:
            f = splat_filter(D, apix, self.sigma, device=device)
            self._filters[key] = f * half_box_shift_sign(D, device=device) if centred else f
        return self._filters[key]


class MapSource:
    """One voxel map, projected by Fourier slice (``(D, D, D)`` array, voxel size ``apix``)."""

    kind = "map"
    n_conformations = 1

    def __init__(self, volume: np.ndarray, apix: float):
        self.volume = torch.as_tensor(np.array(volume, dtype=np.float32))
        self.apix = float(apix)
        self.D = self.volume.shape[-1]
        self._projector = None

    def radius(self) -> float:
        """Radius (Å) of the sphere holding 99.9 % of the map's absolute mass."""
        v = self.volume.abs().double()
        D = self.D
        r = torch.arange(D, dtype=torch.float64) - D // 2
        rr = torch.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2).reshape(-1)
        order = torch.argsort(rr)
        cum = torch.cumsum(v.reshape(-1)[order], 0)
        k = int(torch.searchsorted(cum, 0.999 * cum[-1]))
        return float(rr[order][min(k, rr.numel() - 1)]) * self.apix

    def render_fourier(self, conf, R, shifts, D, apix):
        if self._projector is None:
            self._projector = FourierSliceProjector(self.volume, self.apix, pad=2)
        f = self._projector.project_fourier(R.to(torch.float32))
        ky, kx = rfreq_grid_2d(D, apix)
        return f * phase_ramp(kx, ky, shifts.to(torch.float32))


@dataclass
class SimulationPlan:
    """Every per-particle random draw of a simulation (drawn once, up front, from the seed).

    Shapes: ``conformation (N,)`` int64, ``rotations (N, 3, 3)`` float64, ``offsets_A (N, 2)`` (particle
    displacement from the box centre; the STAR origin is its negative), ``ctf`` a :class:`CTFParams`.
    """

    conformation: np.ndarray
    rotations: torch.Tensor
    offsets_A: np.ndarray
    ctf: CTFParams
    box: int
    apix: float
    frame_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @functools.cached_property
    def render_arrays(self) -> dict:
        """What rendering reads per batch, converted once: ``conformation`` (int64), ``rotations`` and
        ``offsets`` (float32 tensors), ``ctf_phase`` (``(N, 5)`` :func:`ctf_phase_coefficients`) and
        ``bfactor`` (``(N,)``, or None when all are 0). Cached on first use: a plan is not to be changed
        once rendering has started."""
        return {"conformation": torch.as_tensor(self.conformation, dtype=torch.int64),
                "rotations": self.rotations.to(torch.float32),
                "offsets": torch.as_tensor(self.offsets_A, dtype=torch.float32),
                "ctf_phase": self.ctf.phase_coefficients(), "bfactor": self.ctf.bfactor_or_none()}


def _auto_geometry(cfg: SimulationConfig, source) -> tuple[int, float]:
    if isinstance(source, MapSource):
        if cfg.box is not None and cfg.box != source.D:
            raise InputError("--box", f"a map source keeps the map's box ({source.D}); got {cfg.box}")
        return source.D, float(cfg.apix or source.apix)
    box = cfg.box or 64
    diameter = 2 * source.radius()
    apix = cfg.apix if cfg.apix is not None else round((diameter + 2 * cfg.shift_max_A) / (0.7 * box), 3)
    return box, float(apix)


def plan_simulation(cfg: SimulationConfig, source, frame_ids: np.ndarray | None = None) -> SimulationPlan:
    """Draw conformations, poses, offsets and CTF parameters for every particle, and check the box.

    Raises :class:`InputError` when the particle (plus offsets) does not fit in the box.
    """
    cfg.validate()
    box, apix = _auto_geometry(cfg, source)
    extent = 2 * source.radius() + 2 * cfg.shift_max_A
    if isinstance(source, AtomSource) and extent > box * apix + 1e-6:  # a map is already in its box
        raise InputError("--box", f"box of {box} px × {apix:.3g} Å = {box * apix:.1f} Å is smaller than the "
                                  f"particle ({extent:.1f} Å incl. offsets); increase --box or --apix")
    n = cfg.n_images
    rng = np.random.default_rng(cfg.seed)
    F = source.n_conformations
    if cfg.sampling == "random":
        conf = rng.integers(0, F, size=n)
    elif cfg.sampling == "balanced":  # every frame n // F times, the rest to distinct random frames
        conf = rng.permutation(np.concatenate([np.tile(np.arange(F), n // F),
                                               rng.choice(F, n % F, replace=False)]))
    else:
        conf = np.arange(n) % F
    gen = torch.Generator().manual_seed(cfg.seed)
    R = random_rotations(n, gen, dtype=torch.float64)
    radius = cfg.shift_max_A * np.sqrt(rng.random(n))
    ang = rng.random(n) * 2 * np.pi
    offsets = np.stack([radius * np.cos(ang), radius * np.sin(ang)], -1)
    df = rng.uniform(cfg.defocus_min_um, cfg.defocus_max_um, n) * 1e4
    ast = cfg.astigmatism_um * 1e4
    ast_angle = rng.random(n) * np.pi
    ctf = CTFParams(df + ast / 2, df - ast / 2, ast_angle, cfg.voltage_kv, cfg.cs_mm, cfg.amp_contrast,
                    math.radians(cfg.phase_shift_deg), cfg.bfactor)
    ids = np.arange(F) if frame_ids is None else np.asarray(frame_ids)
    return SimulationPlan(conf, R, offsets, ctf, box, apix, ids)


def render_images(plan: SimulationPlan, source, index: slice, apply_ctf: bool = True,
                  stages: bool = False, batch: int | None = None, ctf_pad: int = 1):
    """Noiseless images of the particles in ``index`` (a slice), ``(n, D, D)`` float32.

    Work proceeds in batches (default: about 2¹⁹ pixels, 128 images of 64 px, so per-call overheads are
    small and the arrays stay in cache). With ``stages`` also returns the projections before the CTF (for
    previews). With ``ctf_pad`` > 1 the projection is placed on a canvas ``ctf_pad`` times larger before
    the CTF and the box is cut out afterwards, so signal that the CTF delocalises beyond the box leaves it
    (as in a micrograph) instead of wrapping around.

    The same ``index`` and ``batch`` always give the same bits; another grouping of the same images may
    differ in the last bit (~1e-7 relative: the batched FFTs round differently).
    """
    D, apix = plan.box, plan.apix
    batch = batch or max(8, min(256, 2 ** 19 // (D * D)))
    Dc = ctf_pad * D
    start, stop, _ = index.indices(len(plan.conformation))
    arrays = plan.render_arrays
    if apply_ctf:
        # fftshift after the inverse FFT is the factor (−1)^(i+j) before it (even box, no canvas): an extra
        # basis grid of phase π where i + j is odd (sin(χ + π) = −sin χ) with weight 1, free per image.
        shift_sign = Dc % 2 == 0 and ctf_pad == 1
        basis = _ctf_basis(Dc, apix, shift_sign)
        coef = arrays["ctf_phase"][start:stop]
        if shift_sign:
            coef = torch.cat([coef, torch.ones(len(coef), 1)], dim=1)
        bfactor = None if arrays["bfactor"] is None else arrays["bfactor"][start:stop]
    lo = Dc // 2 - D // 2
    img = torch.empty(max(0, stop - start), D, D)
    projs = []
    for s in range(start, stop, batch):
        sl = slice(s, min(stop, s + batch))
        b = slice(s - start, sl.stop - start)
        out = img[b]
        f = source.render_fourier(arrays["conformation"][sl], arrays["rotations"][sl], arrays["offsets"][sl], D, apix)
        if stages:
            projs.append(irfft2_centered(f, D))
        if not apply_ctf:
            out.copy_(irfft2_centered(f, D))
            continue
        ctf = ctf_from_basis(coef[b], basis, None if bfactor is None else bfactor[b])
        if ctf_pad > 1:
            canvas = torch.zeros(f.shape[0], Dc, Dc)
            canvas[:, lo:lo + D, lo:lo + D] = irfft2_centered(f, D)
            out.copy_(irfft2_centered(rfft2_centered(canvas) * ctf, Dc)[:, lo:lo + D, lo:lo + D])
        elif D % 2:
            out.copy_(irfft2_centered(f * ctf, D))
        else:
            out.copy_(torch.fft.irfft2(f.mul_(ctf), s=(D, D)))  # the basis holds the fftshift; f is our own
    if stages:
        return img, torch.cat(projs) if projs else torch.zeros(0, D, D)
    return img


@functools.lru_cache(maxsize=8)
def _ctf_basis(D: int, apix: float, shift_sign: bool) -> torch.Tensor:
    """:func:`ctf_phase_basis` of the rfft half plane of a ``D`` box, plus the π-phase grid of the half-box
    shift when ``shift_sign``: ``(5 or 6, D, D//2+1)`` float32 (read only)."""
    ky, kx = rfreq_grid_2d(D, apix, dtype=torch.float32)
    basis = ctf_phase_basis(kx, ky)
    if shift_sign:
        basis = torch.cat([basis, math.pi * (half_box_shift_sign(D) < 0).to(basis.dtype)[None]])
    return basis


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def clean_variance(plan: SimulationPlan, source, cfg: SimulationConfig, progress=None) -> float:
    """Variance of every pixel of the whole noiseless dataset (first pass; nothing stored)."""
    rv = RunningVariance()
    for sl in _chunks(cfg.n_images, cfg.chunk):
        rv.update(render_images(plan, source, sl, cfg.ctf, ctf_pad=cfg.ctf_pad))
        if progress is not None:
            progress.advance(sl.stop - sl.start)
    return rv.variance


def _truth_conformations(source: AtomSource, meta, frame_ids):
    """The centred coordinates actually rendered, with atom names from ``meta`` (Cα-like if None)."""
    from ..io.models import Conformations
    coords = source.coords.numpy()
    A = coords.shape[1]
    if meta is not None and meta.n_atoms == A:
        return Conformations(coords, meta.names, meta.resnames, meta.resids, meta.chains, meta.elements,
                             meta.source, frame_ids)
    return Conformations(coords, np.array(["CA"] * A), np.array(["ALA"] * A), np.arange(1, A + 1),
                         np.array(["A"] * A), np.array(["C"] * A), "atoms", frame_ids)


def _fingerprint(cfg: SimulationConfig, source, plan: SimulationPlan) -> str:
    """A hash of everything that determines the output bytes (options and source data)."""
    import hashlib
    import json
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True, default=str).encode())
    data = source.coords if isinstance(source, AtomSource) else source.volume
    h.update(np.ascontiguousarray(data.numpy()).tobytes())
    h.update(np.ascontiguousarray(plan.frame_ids).tobytes())
    h.update(f"{source.kind} {getattr(source, 'sigma', '')} {getattr(source, 'projection', '')} {plan.box} "
             f"{plan.apix}".encode())
    return h.hexdigest()


def add_dataset_noise(images: torch.Tensor, sigma: float, seed: int, first_image: int) -> torch.Tensor:
    """``images + σ·n`` with ``n`` white N(0, 1) noise that depends only on ``(seed, image index, pixel)``:
    any chunking, a resumed run and any thread count give the same bits.

    Args:
        images: ``(n, D, D)`` float32 CPU tensor (left unchanged). sigma: noise std (image units).
        seed: the simulation seed. first_image: dataset index of ``images[0]``.
    """
    from ..utils.cpu_kernels import add_normal_noise, noise_key
    out = images.detach().to(torch.float32).contiguous().clone()
    add_normal_noise(out.numpy(), sigma, noise_key(seed, stream=1), first_image)
    return out


class _Checkpoint:
    """``progress.json`` of a partial run: what is done, and the running statistics needed to go on."""

    def __init__(self, folder: Path, fingerprint: str):
        self.path = folder / "progress.json"
        self.state = {"fingerprint": fingerprint, "sigma": None, "chunks_done": 0, "stack_stats": None,
                      "clean_stats": None, "rv_clean": None, "rv_noise": None}

    @classmethod
    def load(cls, folder: Path, fingerprint: str) -> "_Checkpoint | None":
        import json
        ck = cls(folder, fingerprint)
        try:
            state = json.loads(ck.path.read_text())
        except (OSError, ValueError):
            return None
        if state.get("fingerprint") != fingerprint:
            return None
        ck.state = state
        return ck

    def save(self) -> None:
        import json
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.path)


def _rv_state(rv: RunningVariance) -> list:
    return [rv.n, rv.mean, rv.m2]


def _rv_from(state) -> RunningVariance:
    rv = RunningVariance()
    if state:
        rv.n, rv.mean, rv.m2 = state
    return rv


def simulate_to_folder(out_dir: str | Path, source, cfg: SimulationConfig, *, source_info: dict | None = None,
                       frame_ids: np.ndarray | None = None, truth_models=None, overwrite: bool = False,
                       show_progress: bool = True, previews: bool = True) -> dict:
    """Simulate a dataset into ``out_dir``; it appears only when complete.

    Writes ``particles.mrcs``, ``particles.star`` (RELION 3.1 + ``_cryoscapeConformation``), ``truth/``
    (``conformation.npy``, ``rotations.npy``, ``offsets_A.npy``, cryoDRGN ``poses.pkl`` and ``ctf.pkl``,
    ``models.pdb`` or ``volume.mrc``, optionally ``clean.mrcs``), ``config.yaml``, ``versions.txt``,
    ``run.log`` and ``previews/*.png``.

    Work goes into ``.<name>.part`` beside ``out_dir``, with a checkpoint after every chunk. If the run is
    interrupted, calling again with the same options and source resumes from the last finished chunk and
    gives the same bytes as an uninterrupted run (every chunk has its own noise generator).

    Returns:
        A summary dict (box, apix, noise σ, measured SNR, wall time, images/s).
    """
    import shutil

    from ..io.atomic import check_can_write, replace_dir
    from ..io.mrc import StackFile
    from ..io.rundir import close_logger, run_logger
    from ..utils.progress import progress_bar

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    check_can_write(out_dir, overwrite)
    plan = plan_simulation(cfg, source, frame_ids)
    n, D, apix = cfg.n_images, plan.box, plan.apix
    tmp = out_dir.parent / f".{out_dir.name}.part"
    fingerprint = _fingerprint(cfg, source, plan)
    ck = _Checkpoint.load(tmp, fingerprint) if tmp.is_dir() else None
    if ck is None:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "truth").mkdir(parents=True)
        ck = _Checkpoint(tmp, fingerprint)
        ck.save()
    st = ck.state
    log = run_logger(tmp)
    if st["chunks_done"] or st["sigma"] is not None:
        log.info("resuming after %d chunks", st["chunks_done"])
    else:
        log.info("simulate %d images, box %d, apix %.4f, source %s", n, D, apix, source_info)
    noisy = math.isfinite(cfg.snr)
    if noisy and st["sigma"] is None:
        with progress_bar(n, "measuring signal", show_progress) as bar:
            var = clean_variance(plan, source, cfg, bar)
        st["sigma"] = noise_sigma(var, cfg.snr)
        ck.save()
        log.info("noise sigma %.6g (SNR %s)", st["sigma"], cfg.snr)
    sigma = st["sigma"] or 0.0
    rv_clean, rv_noise = _rv_from(st["rv_clean"]), _rv_from(st["rv_noise"])
    fresh = st["chunks_done"] == 0
    stacks = [StackFile(tmp / "particles.mrcs", n, D, apix, create=fresh, stats=st["stack_stats"])]
    if cfg.save_clean:
        stacks.append(StackFile(tmp / "truth" / "clean.mrcs", n, D, apix, create=fresh, stats=st["clean_stats"]))
    try:
        with progress_bar(n, "simulating", show_progress) as bar:
            for ci, sl in enumerate(_chunks(n, cfg.chunk)):
                if ci < st["chunks_done"]:
                    bar.advance(sl.stop - sl.start)
                    continue
                clean = render_images(plan, source, sl, cfg.ctf, ctf_pad=cfg.ctf_pad)
                img = add_dataset_noise(clean, sigma, cfg.seed, sl.start) if noisy else clean
                rv_clean.update(clean)
                rv_noise.update(img - clean)
                stacks[0].write_at(sl.start, img.numpy())
                if cfg.save_clean:
                    stacks[1].write_at(sl.start, clean.numpy())
                for s_ in stacks:
                    s_.flush()
                st.update(chunks_done=ci + 1, stack_stats=stacks[0].stats, rv_clean=_rv_state(rv_clean),
                          rv_noise=_rv_state(rv_noise), clean_stats=stacks[1].stats if cfg.save_clean else None)
                ck.save()
                bar.advance(sl.stop - sl.start)
    except BaseException:
        for s_ in stacks:
            s_.close()
        log.info("interrupted after %d chunks; the same command resumes", st["chunks_done"])
        close_logger(log)
        raise
    for s_ in stacks:
        s_.finish()
    summary = _write_metadata(tmp, plan, source, cfg, sigma, rv_clean, rv_noise, source_info, truth_models,
                              previews, t0)
    log.info("done: %s", summary)
    close_logger(log)
    (tmp / "progress.json").unlink()
    replace_dir(tmp, out_dir)
    return summary


def _projection_used(source, apix: float) -> str:
    """How images were formed: ``fourier-slice`` for a map, ``splat`` or ``exact`` for atoms."""
    if not isinstance(source, AtomSource):
        return "fourier-slice"
    return "splat" if source.uses_splat(apix) else "exact"


def _write_metadata(tmp: Path, plan: SimulationPlan, source, cfg: SimulationConfig, sigma: float,
                    rv_clean: RunningVariance, rv_noise: RunningVariance, source_info, truth_models,
                    previews: bool, t0: float) -> dict:
    """STAR, numpy truth, cryoDRGN pickles, truth models or map, config, versions, previews."""
    import pandas as pd

    from ..io.cryodrgn_pkl import poses_to_cryodrgn, write_ctf_pkl, write_poses_pkl
    from ..io.mrc import write_map
    from ..io.models import write_pdb
    from ..io.rundir import write_config, write_versions
    from ..io.star import write_star

    n, D, apix = cfg.n_images, plan.box, plan.apix
    noisy = math.isfinite(cfg.snr)
    # Metadata: STAR, numpy truth, cryoDRGN pickles.
    euler = np.rad2deg(matrix_to_euler(plan.rotations).numpy())
    origin = -plan.offsets_A
    c = plan.ctf
    parts = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(n)],
        "rlnDefocusU": c.defocus_u.numpy(), "rlnDefocusV": c.defocus_v.numpy(),
        "rlnDefocusAngle": np.rad2deg(c.angle_ast.numpy()), "rlnPhaseShift": np.rad2deg(c.phase_shift.numpy()),
        "rlnCtfBfactor": c.bfactor.numpy(),
        "rlnAngleRot": euler[:, 0], "rlnAngleTilt": euler[:, 1], "rlnAnglePsi": euler[:, 2],
        "rlnOriginXAngst": origin[:, 0], "rlnOriginYAngst": origin[:, 1],
        "rlnOpticsGroup": np.ones(n, dtype=int),
        "cryoscapeConformation": plan.frame_ids[plan.conformation],
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnVoltage": [cfg.voltage_kv], "rlnSphericalAberration": [cfg.cs_mm],
                           "rlnAmplitudeContrast": [cfg.amp_contrast], "rlnImagePixelSize": [apix],
                           "rlnImageSize": [D], "rlnImageDimensionality": [2]})
    if not cfg.ctf:  # the images carry no CTF: say none, rather than parameters that were not applied
        parts = parts.drop(columns=["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift",
                                    "rlnCtfBfactor"])
    write_star(tmp / "particles.star", parts, optics)
    np.save(tmp / "truth" / "conformation.npy", plan.frame_ids[plan.conformation])
    np.save(tmp / "truth" / "frame_ids.npy", plan.frame_ids)  # model k of models.pdb is frame frame_ids[k]
    np.save(tmp / "truth" / "rotations.npy", plan.rotations.numpy())
    np.save(tmp / "truth" / "offsets_A.npy", plan.offsets_A)
    rot, trans = poses_to_cryodrgn(plan.rotations.numpy(), origin, D, apix)
    write_poses_pkl(tmp / "truth" / "poses.pkl", rot, trans)
    ctf_tab = np.stack([np.full(n, D), np.full(n, apix), c.defocus_u.numpy(), c.defocus_v.numpy(),
                        np.rad2deg(c.angle_ast.numpy()), c.voltage_kv.numpy(), c.cs_mm.numpy(),
                        c.amp_contrast.numpy(), np.rad2deg(c.phase_shift.numpy())], -1)
    if cfg.ctf:
        write_ctf_pkl(tmp / "truth" / "ctf.pkl", ctf_tab)
    if isinstance(source, MapSource):
        write_map(tmp / "truth" / "volume.mrc", source.volume.numpy(), source.apix)
    else:
        write_pdb(tmp / "truth" / "models.pdb", _truth_conformations(source, truth_models, plan.frame_ids))
    wall = time.perf_counter() - t0
    summary = {
        "n_images": n, "box_px": D, "apix_A": apix, "noise_sigma": sigma,
        "snr_requested": cfg.snr,
        "snr_measured": (rv_clean.variance / rv_noise.variance) if noisy else float("inf"),
        "wall_s": round(wall, 3), "images_per_s": round(n / wall, 1),
    }
    write_config(tmp, {"command": "simulate", "source": source_info or {}, **asdict(cfg),
                       "resolved": {"box": D, "apix": apix, "noise_sigma": sigma,
                                    "projection": _projection_used(source, apix)}})
    write_versions(tmp)
    if previews:
        from ..report.previews import simulation_previews
        simulation_previews(tmp / "previews", plan, source, cfg, sigma)
    return summary
