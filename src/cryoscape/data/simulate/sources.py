"""What the simulator images: conformations as Gaussian atoms, or one voxel map.

A source is a thin data-side wrapper around a projector of :mod:`cryoscape.physics.imaging` (the one forward
model): it centres the frames, knows the particle's radius (for the box check and the automatic pixel size),
how its images are formed, and the bytes that determine them (for the resume fingerprint).
"""

from __future__ import annotations

import numpy as np
import torch

from ...physics.imaging import GaussianAtoms, VoxelMap
from .config import PROJECTIONS

__all__ = ["AtomSource", "MapSource"]


class AtomSource:
    """Conformations as Gaussian atoms of width ``sigma`` Å, projected analytically
    (:class:`~cryoscape.physics.imaging.GaussianAtoms`, in float32).

    Args:
        coords: ``(F, A, 3)`` (or one ``(A, 3)`` frame) atom positions in Å; each frame is centred on its own
            centroid (kept in float64 as :attr:`coords`, the truth written to ``models.pdb``).
        sigma: atom width in Å. weights: optional ``(A,)`` masses.
        projection: ``exact`` samples each atom's Gaussian at the pixel centres; ``splat`` spreads atoms with
            a cubic B-spline and applies the Gaussian in Fourier space (several times faster, relative error
            ~3e-4 at σ = 1.5 px; periodic in the box, so atom tails at an edge wrap around); ``auto`` splats
            when ``σ ≥ 1.5`` pixels.
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
        self._projectors: dict = {}

    def projector(self, device=None) -> GaussianAtoms:
        """The float32 :class:`~cryoscape.physics.imaging.GaussianAtoms` of these frames on ``device``
        (cached: its splat filter and buffer are reused from batch to batch)."""
        device = torch.device(device or "cpu")
        key = str(device)
        if key not in self._projectors:
            w = None if self.weights is None else self.weights.to(device=device, dtype=torch.float32)
            self._projectors[key] = GaussianAtoms(self.coords.to(device=device, dtype=torch.float32), self.sigma,
                                                  w, method=self.projection)
        return self._projectors[key]

    def radius(self) -> float:
        """Largest atom distance from the centre (Å) over all frames, plus 2σ for the Gaussian tails."""
        return float(self.coords.norm(dim=-1).max()) + 2 * self.sigma

    def uses_splat(self, apix: float) -> bool:
        """Whether images at this pixel size are rendered by splatting."""
        return self.projector().uses_splat(apix)

    def projection_used(self, apix: float) -> str:
        """How images at this pixel size are formed: ``splat`` or ``exact``."""
        return "splat" if self.uses_splat(apix) else "exact"

    def fingerprint_bytes(self) -> bytes:
        """Everything of the source that determines the images."""
        tail = f"{self.kind} {self.sigma} {self.projection}".encode()
        w = b"" if self.weights is None else np.ascontiguousarray(self.weights.numpy()).tobytes()
        return np.ascontiguousarray(self.coords.numpy()).tobytes() + w + tail

    def truth_models(self, meta=None, frame_ids: np.ndarray | None = None):
        """The centred coordinates actually rendered as :class:`~cryoscape.io.models.Conformations`, with the
        atom names of ``meta`` (a ``Conformations`` of the same atoms; Cα-like when None or different)."""
        from ...io.models import Conformations
        coords = self.coords.numpy()
        A = coords.shape[1]
        if meta is not None and meta.n_atoms == A:
            return Conformations(coords, meta.names, meta.resnames, meta.resids, meta.chains, meta.elements,
                                 meta.source, frame_ids)
        return Conformations(coords, np.array(["CA"] * A), np.array(["ALA"] * A), np.arange(1, A + 1),
                             np.array(["A"] * A), np.array(["C"] * A), "atoms", frame_ids)


class MapSource:
    """One voxel map ``(D, D, D)`` of voxel size ``apix`` Å, projected by Fourier slice
    (:class:`~cryoscape.physics.imaging.VoxelMap`, transform padded twice, in float32)."""

    kind = "map"
    n_conformations = 1

    def __init__(self, volume: np.ndarray, apix: float):
        self.volume = torch.as_tensor(np.array(volume, dtype=np.float32))
        self.apix = float(apix)
        self.D = self.volume.shape[-1]
        self._projectors: dict = {}

    def projector(self, device=None) -> VoxelMap:
        """The :class:`~cryoscape.physics.imaging.VoxelMap` on ``device`` (cached with its padded transform)."""
        device = torch.device(device or "cpu")
        key = str(device)
        if key not in self._projectors:
            self._projectors[key] = VoxelMap(self.volume.to(device), self.apix, pad=2)
        return self._projectors[key]

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

    def projection_used(self, apix: float) -> str:
        return "fourier-slice"

    def fingerprint_bytes(self) -> bytes:
        """Everything of the source that determines the images."""
        return np.ascontiguousarray(self.volume.numpy()).tobytes() + f"{self.kind} {self.apix}".encode()
