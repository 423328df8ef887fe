"""Every random draw of a simulation, made once from the seed: the :class:`SimulationPlan`.

Conformations follow ``cfg.sampling``; poses are Haar-uniform (uniform unit quaternions); offsets are uniform
in a disc of radius ``shift_max_A``; defoci are uniform in ``[defocus_min, defocus_max]`` with the
astigmatism azimuth uniform in ``[0, π)``. The same seed and options give the same plan, bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ...geometry.poses import Poses
from ...geometry.rotations import euler_to_matrix, random_rotations
from ...io.errors import InputError
from ...physics.ctf import CTFParams
from .config import SimulationConfig
from .sources import AtomSource, MapSource

__all__ = ["SimulationPlan", "plan_simulation", "simulation_fingerprint"]


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

    @property
    def poses(self) -> Poses:
        """The true poses (float64): ``R = rotations``, ``shift_A = offsets_A``."""
        return Poses(self.rotations, torch.as_tensor(self.offsets_A, dtype=torch.float64))

    @functools.cached_property
    def render_arrays(self) -> dict:
        """What rendering reads per batch, converted once: ``conformation`` (int64 tensor) and ``poses``
        (float32 :class:`~cryoscape.geometry.poses.Poses`). Cached on first use: a plan is not to be changed
        once rendering has started."""
        return {"conformation": torch.as_tensor(self.conformation, dtype=torch.int64),
                "poses": Poses(self.rotations.to(torch.float32), torch.as_tensor(self.offsets_A, dtype=torch.float32))}

    def batch(self, index: slice) -> tuple[Poses, torch.Tensor, CTFParams]:
        """The particles ``index`` (a slice) as the forward model takes them: float32 poses, conformation
        indices and CTF parameters (views of the cached arrays; no copies of the plan)."""
        a = self.render_arrays
        return a["poses"].subset(index), a["conformation"][index], self.ctf.subset(index)


def _auto_geometry(cfg: SimulationConfig, source) -> tuple[int, float]:
    if isinstance(source, MapSource):
        if cfg.box is not None and cfg.box != source.D:
            raise InputError("--box", f"a map source keeps the map's box ({source.D}); got {cfg.box}")
        return source.D, float(cfg.apix or source.apix)
    box = cfg.box or 64
    diameter = 2 * source.radius()
    apix = cfg.apix if cfg.apix is not None else round((diameter + 2 * cfg.shift_max_A) / (0.7 * box), 3)
    return box, float(apix)


def _cone_rotations(n: int, cfg: SimulationConfig) -> torch.Tensor:
    """``(n, 3, 3)`` float64 poses whose viewing direction (last row, ``(sin t cos r, sin t sin r, cos t)``)
    is uniform on the spherical cap ``tilt ≤ view_cone_deg`` (``cos tilt`` uniform in ``[cos cone, 1]``), with
    rot and psi uniform in ``[0, 2π)``: ``R = Rz(psi) · Ry(tilt) · Rz(rot)``. Drawn from a generator of its
    own (seeded ``(seed, 1)``) so that the other draws of the plan are those of the full-sphere plan."""
    rng = np.random.default_rng([cfg.seed, 1])
    cos_tilt = rng.uniform(math.cos(math.radians(cfg.view_cone_deg)), 1.0, n)
    euler = np.stack([rng.random(n) * 2 * np.pi, np.arccos(np.clip(cos_tilt, -1, 1)), rng.random(n) * 2 * np.pi], -1)
    return euler_to_matrix(torch.as_tensor(euler, dtype=torch.float64))


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
    R = random_rotations(n, gen, dtype=torch.float64) if cfg.view_cone_deg >= 180 else _cone_rotations(n, cfg)
    radius = cfg.shift_max_A * np.sqrt(rng.random(n))
    ang = rng.random(n) * 2 * np.pi
    offsets = np.stack([radius * np.cos(ang), radius * np.sin(ang)], -1)
    u = rng.random(n)  # the same draw either way, so groups change only the defoci
    if cfg.defocus_groups:
        K = cfg.defocus_groups
        u = (np.minimum(np.floor(u * K), K - 1) + 0.5) / K
    df = (cfg.defocus_min_um + u * (cfg.defocus_max_um - cfg.defocus_min_um)) * 1e4
    ast = cfg.astigmatism_um * 1e4
    ast_angle = rng.random(n) * np.pi
    ctf = CTFParams(df + ast / 2, df - ast / 2, ast_angle, cfg.voltage_kv, cfg.cs_mm, cfg.amp_contrast,
                    math.radians(cfg.phase_shift_deg), cfg.bfactor)
    ids = np.arange(F) if frame_ids is None else np.asarray(frame_ids)
    return SimulationPlan(conf, R, offsets, ctf, box, apix, ids)




def simulation_fingerprint(cfg: SimulationConfig, source, plan: SimulationPlan, device="cpu") -> str:
    """A hash of everything that determines the output bytes: options, source data, frame ids, geometry and
    the device the images are formed on (a resumed run continues only when it matches)."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True, default=str).encode())
    h.update(source.fingerprint_bytes())
    h.update(np.ascontiguousarray(plan.frame_ids).tobytes())
    h.update(f"{plan.box} {plan.apix} {device}".encode())
    return h.hexdigest()
