"""The VAE's view of a particle set: centred Fourier images on a fixed set of frequencies, encoder inputs,
CTFs and poses, read in memory or lazily in chunks, in a seeded shuffled order.

Per image ``I`` with RELION origin shift ``t`` (Å; the shift that centres the particle):

- ``Y(k) = DFT[I](k) · exp(−2πi k·t)``: the transform of the centred image (``rfft`` half plane), kept at
  the ``P`` frequencies ``|k| < D/2`` (pixels of ``1/(D apix)``) and divided by one global scale so that
  ``mean |Y|² = 1``;
- encoder input: the centred, phase-flipped image in real space, ``IDFT[Y · sign CTF]`` (the flip undoes
  the CTF's sign changes, so images of one conformation look alike whatever their defocus; as cryoDRGN
  does), its pixels inside the circle of radius ``D/2`` (MLP encoder) or the whole image with the outside
  set to zero (CNN encoder), normalised to zero mean and unit variance with global constants;
- ``CTF(k)`` at the same frequencies (ones without a CTF) and the pose ``R``.

Friedel weights: a point of the half plane with ``kx > 0`` stands for itself and its mirror ``−k``, one with
``kx = 0`` only for itself (its mirror is in the half plane too); the loss weights them 2 and 1, so it equals
the loss over the whole disc.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data.particles import ParticleData
from ...physics.ctf import ctf_from_params
from ...physics.fourier import irfft2_centered, rfft2_centered, rfreq_grid_2d
from ...physics.shift import phase_ramp

__all__ = ["FourierPoints", "VAEBatch", "ParticleSource"]

NORM_SAMPLE = 1000


@dataclass
class FourierPoints:
    """The frequencies the VAE works on, for box ``D``.

    Attributes: ``flat (P,)`` indices into the flattened ``(D, D//2+1)`` rfft layout; ``plane (P, 3)``
    ``(kx, ky, 0)`` in pixels of frequency; ``weight (P,)`` Friedel weights (2 or 1); ``pixels (D·D,)``
    bool, the real-space pixels inside the circle of radius ``D/2`` around pixel ``D//2``.
    """

    D: int
    flat: torch.Tensor
    plane: torch.Tensor
    weight: torch.Tensor
    pixels: torch.Tensor

    @classmethod
    def for_box(cls, D: int) -> "FourierPoints":
        ky, kx = rfreq_grid_2d(D, 1.0 / D, dtype=torch.float32)  # pixels of frequency
        inside = (kx * kx + ky * ky < (D / 2) ** 2).reshape(-1)
        flat = torch.nonzero(inside).reshape(-1)
        kxf, kyf = kx.reshape(-1)[flat], ky.reshape(-1)[flat]
        plane = torch.stack([kxf, kyf, torch.zeros_like(kxf)], -1)
        weight = torch.where(kxf > 0, 2.0, 1.0)
        r = torch.arange(D, dtype=torch.float32) - D // 2
        pixels = ((r[:, None] ** 2 + r[None, :] ** 2) < (D / 2) ** 2).reshape(-1)
        return cls(D, flat, plane, weight, pixels)

    @property
    def n_points(self) -> int:
        return int(self.flat.numel())


@dataclass
class VAEBatch:
    """One batch: ``y (B, P, 2)`` normalised centred transforms (real, imaginary), ``x`` encoder inputs
    (``(B, n_pixels)`` or ``(B, D, D)``), ``ctf (B, P)``, ``R (B, 3, 3)`` float32, ``index (B,)``."""

    y: torch.Tensor
    x: torch.Tensor
    ctf: torch.Tensor
    R: torch.Tensor
    index: torch.Tensor


class ParticleSource:
    """Batches of a :class:`ParticleData` with known poses for the VAE.

    Args:
        data: the particles (poses required). points: :class:`FourierPoints` of the box.
        encoder: "mlp" (pixels inside the circle) or "cnn" (the masked image).
        in_memory: prepare every image once and keep it (``N × (8P + 4·n_pixels)`` bytes); otherwise read
            and prepare the images of each chunk of the shuffled order when it is reached.
        chunk: images read at a time in lazy mode (and when preparing in memory).
        use_ctf: multiply by the CTF (when the data have one).
        norm: ``(y_scale, x_mean, x_std)`` to reuse (a resumed run or another subset); measured on the
            first :data:`NORM_SAMPLE` images otherwise.
    """

    def __init__(self, data: ParticleData, points: FourierPoints, encoder: str = "mlp", in_memory: bool = True,
                 chunk: int = 1024, use_ctf: bool = True, norm: tuple | None = None, progress=None):
        if data.rotations is None:
            from ...io.errors import InputError
            raise InputError(data.source, "the VAE needs poses: give a STAR with angles or --poses")
        self.data, self.points, self.encoder, self.chunk = data, points, encoder, chunk
        self.use_ctf = use_ctf and data.ctf is not None
        D = data.D
        ky, kx = rfreq_grid_2d(D, data.apix, dtype=torch.float32)
        self._k = (kx, ky)
        self._kp = (kx.reshape(-1)[points.flat][None], ky.reshape(-1)[points.flat][None])  # (1, P) 1/Å
        self.R = data.rotations.to(torch.float32)
        self.norm = norm if norm is not None else self._measure_norm()
        self._cache = None
        if in_memory:
            parts = []
            for s in range(0, len(data), chunk):
                parts.append(self._prepare(np.arange(s, min(s + chunk, len(data)))))
                if progress is not None:
                    progress.advance(len(parts[-1].index))
            self._cache = VAEBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in
                                     ("y", "x", "ctf", "R", "index")))

    def __len__(self) -> int:
        return len(self.data)

    def _centred(self, idx: np.ndarray) -> torch.Tensor:
        img = torch.from_numpy(self.data.images(idx))
        shifts = torch.as_tensor(self.data.origins_A[idx], dtype=torch.float32)
        return rfft2_centered(img) * phase_ramp(*self._k, shifts)

    def _ctf(self, idx: np.ndarray) -> torch.Tensor | None:
        """``(k, D, D//2+1)`` CTF of particles ``idx`` on the half plane (None without a CTF)."""
        if not self.use_ctf:
            return None
        return ctf_from_params(self.data.ctf.subset(torch.as_tensor(idx)), *self._k)

    def _measure_norm(self) -> tuple[float, float, float]:
        idx = np.arange(min(len(self.data), NORM_SAMPLE))
        f = self._centred(idx)
        y = f.reshape(len(idx), -1)[:, self.points.flat]
        c = self._ctf(idx)
        x = irfft2_centered(f if c is None else f * torch.sign(c), self.data.D)
        x = x.reshape(len(idx), -1)[:, self.points.pixels]
        return (float(y.abs().pow(2).mean().sqrt()), float(x.mean()), float(x.std()))

    def _prepare(self, idx: np.ndarray) -> VAEBatch:
        D, pts = self.data.D, self.points
        f = self._centred(idx)
        y = torch.view_as_real(f.reshape(len(idx), -1)[:, pts.flat] / self.norm[0]).contiguous()
        c = self._ctf(idx)  # once per image: its sign flips the encoder input, its values weigh the slices
        x = irfft2_centered(f if c is None else f * torch.sign(c), D).reshape(len(idx), -1)
        x = (x - self.norm[1]) / self.norm[2]
        if self.encoder == "cnn":
            x = (x * pts.pixels).reshape(len(idx), D, D)
        else:
            x = x[:, pts.pixels].contiguous()
        ctf = torch.ones(len(idx), pts.n_points) if c is None else c.reshape(len(idx), -1)[:, pts.flat]
        ti = torch.as_tensor(idx)
        return VAEBatch(y, x, ctf.to(torch.float32), self.R[ti], ti)

    def batch(self, idx: np.ndarray) -> VAEBatch:
        """The batch of particles ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self._cache is None:
            return self._prepare(idx)
        ti = torch.as_tensor(idx)
        c = self._cache
        return VAEBatch(c.y[ti], c.x[ti], c.ctf[ti], c.R[ti], ti)

    def batches(self, order: np.ndarray, batch_size: int):
        """Yield :class:`VAEBatch` es of ``batch_size`` following ``order``; in lazy mode the images of each
        chunk of ``order`` are read together (in file order) and prepared once."""
        order = np.asarray(order, dtype=np.int64)
        step = len(order) if self._cache is not None else max(self.chunk // batch_size, 1) * batch_size
        for s in range(0, len(order), step):
            part = order[s:s + step]
            block = self.batch(part) if self._cache is None else None
            for b in range(0, len(part), batch_size):
                if block is None:
                    yield self.batch(part[b:b + batch_size])
                else:
                    sl = slice(b, b + batch_size)
                    yield VAEBatch(block.y[sl], block.x[sl], block.ctf[sl], block.R[sl], block.index[sl])
