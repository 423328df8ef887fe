"""The VAE's view of a particle set: centred Fourier images at the disc points of the imaging grid, encoder
inputs, CTFs and poses, prepared in memory or lazily per batch, in the order the training loop draws.

Per image ``I`` with pose ``(R, t)`` (:class:`~cryoscape.geometry.poses.Poses`), on the
:class:`~cryoscape.physics.imaging.ImagingGrid` ``(D, apix)`` (unpadded):

- ``Y(k) = DFT[I](k) · exp(+2πi k·t)`` from :func:`~cryoscape.physics.imaging.centre` (the particle moved
  to the box centre), kept at the grid's ``P`` disc points ``|k| ≤ D/2`` (pixels of ``1/(D apix)``) and
  divided by one global scale so that ``mean |Y|² = 1``;
- ``C(k)``: the CTF on the half plane from :meth:`ImagingGrid.ctf`, computed once per image; its values
  at the points (:meth:`ImagingGrid.at_points`, the same as :meth:`ImagingGrid.ctf_points`) weigh the
  predicted slices, its sign flips the encoder input (ones without a CTF);
- encoder input: the centred, phase-flipped image in real space, ``IDFT[DFT[I] e^{+2πi k·t} · sign C]``
  (the flip undoes the CTF's sign changes, so images of one conformation look alike whatever their defocus;
  as cryoDRGN does), its pixels inside the circle ``|r| < D/2`` around pixel ``D//2`` (MLP encoder) or the
  whole image with the outside set to zero (CNN encoder), normalised to zero mean and unit variance with
  global constants;
- the pose ``R`` (float32); the data are centred, so the prediction needs no shift.

Batches follow the training loop's contract (:mod:`cryoscape.methods.training`): the order of epoch ``e``
is ``torch.randperm(N, generator)`` (:func:`cryoscape.data.loader.shuffled_batches`, or
:class:`cryoscape.data.loader.ParticleLoader` when reading lazily), cut into global batches, and each
``torchrun`` rank takes its contiguous part of every global batch. A batch records where its part starts
in the global batch (``offset``) and the global batch's size (``total``), so that noise drawn for the whole
global batch can be sliced to the same values one process would draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data.loader import ParticleLoader, shuffled_batches
from ...data.particles import ParticleData
from ...io.errors import InputError
from ...physics.imaging import ImagingGrid, centre

__all__ = ["VAEBatch", "ParticleSource", "encoder_mask", "NORM_SAMPLE"]

NORM_SAMPLE = 1000


def encoder_mask(D: int) -> torch.Tensor:
    """``(D·D,)`` bool: the real-space pixels inside the circle ``|r| < D/2`` around pixel ``D//2``."""
    r = torch.arange(D, dtype=torch.float32) - D // 2
    return ((r[:, None] ** 2 + r[None, :] ** 2) < (D / 2) ** 2).reshape(-1)


@dataclass
class VAEBatch:
    """One batch: ``y (B, P, 2)`` normalised centred transforms at the grid's points (real, imaginary),
    ``x`` encoder inputs (``(B, n_pixels)`` or ``(B, D, D)``), ``ctf (B, P)``, ``R (B, 3, 3)`` float32,
    ``index (B,)`` particle indices; ``offset`` and ``total``: where this part starts in its global batch
    and that batch's size (``0`` and ``B`` in one process)."""

    y: torch.Tensor
    x: torch.Tensor
    ctf: torch.Tensor
    R: torch.Tensor
    index: torch.Tensor
    offset: int = 0
    total: int = -1

    def __post_init__(self):
        if self.total < 0:
            self.total = len(self.index)


def _part_offsets(total: int, world_size: int) -> list[int]:
    """Start of each rank's part of a global batch of ``total`` cut by ``torch.tensor_split``."""
    sizes = [len(p) for p in torch.tensor_split(torch.arange(total), world_size)]
    return [sum(sizes[:r]) for r in range(world_size)]


class ParticleSource:
    """Batches of a :class:`ParticleData` with known poses for the VAE.

    Args:
        data: the particles (poses required). grid: the :class:`ImagingGrid` of the box (``pad`` 1, CPU).
        encoder: "mlp" (pixels inside the circle) or "cnn" (the masked image).
        in_memory: prepare every image once and keep it (``N × (12 P + 4 n_pixels)`` bytes); otherwise read
            and prepare the images of each batch when it is reached (:class:`ParticleLoader`, reading
            ``chunk`` images at a time, with a shuffle ``buffer`` of that many images when given).
        use_ctf: multiply by the CTF (when the data have one).
        norm: ``(y_scale, x_mean, x_std)`` to reuse (a resumed run); measured on the first
            :data:`NORM_SAMPLE` images otherwise.
        progress: optional object with ``advance(n)``, advanced while preparing in memory.
    """

    def __init__(self, data: ParticleData, grid: ImagingGrid, encoder: str = "mlp", in_memory: bool = True,
                 chunk: int = 1024, use_ctf: bool = True, norm: tuple | None = None, progress=None,
                 buffer: int | None = None):
        if data.rotations is None:
            raise InputError(data.source, "the VAE needs poses: give a STAR with angles or --poses")
        if grid.pad != 1 or grid.D != data.D:
            raise ValueError(f"need an unpadded {data.D}-pixel grid, got {grid}")
        self.data, self.grid, self.encoder, self.chunk, self.buffer = data, grid, encoder, chunk, buffer
        self.use_ctf = use_ctf and data.ctf is not None
        self.pixels = encoder_mask(data.D)
        self.poses = data.poses
        self.R = data.rotations.to(torch.float32)
        self.norm = tuple(norm) if norm is not None else self._measure_norm()
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

    @property
    def n_pixels(self) -> int:
        return int(self.pixels.sum())

    def _centred_and_ctf(self, idx: np.ndarray, images: torch.Tensor | None = None):
        """``(F, C)``: :func:`centre` of particles ``idx`` and their CTF on the half plane (None without),
        each ``(k, D, D//2+1)``."""
        if images is None:
            images = torch.from_numpy(self.data.images(idx))
        ti = torch.as_tensor(idx)
        f = centre(images, self.poses.subset(ti), self.grid)
        c = self.grid.ctf(self.data.ctf.subset(ti)) if self.use_ctf else None
        return f, c

    def _encoder_input(self, f: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """The centred, phase-flipped images in real space, flattened ``(k, D·D)``."""
        x = self.grid.to_images(f if c is None else f * torch.sign(c))
        return x.reshape(len(f), -1)

    def _measure_norm(self) -> tuple[float, float, float]:
        idx = np.arange(min(len(self.data), NORM_SAMPLE))
        f, c = self._centred_and_ctf(idx)
        y = self.grid.at_points(f)
        x = self._encoder_input(f, c)[:, self.pixels]
        return (float(y.abs().pow(2).mean().sqrt()), float(x.mean()), float(x.std()))

    def _prepare(self, idx: np.ndarray, images: torch.Tensor | None = None) -> VAEBatch:
        D, k = self.data.D, len(idx)
        f, c = self._centred_and_ctf(idx, images)  # the CTF once per image: sign for x, values for the slices
        y = torch.view_as_real(self.grid.at_points(f) / self.norm[0]).contiguous()
        x = (self._encoder_input(f, c) - self.norm[1]) / self.norm[2]
        x = (x * self.pixels).reshape(k, D, D) if self.encoder == "cnn" else x[:, self.pixels].contiguous()
        ctf = torch.ones(k, len(self.grid.points)) if c is None else self.grid.at_points(c)
        ti = torch.as_tensor(idx, dtype=torch.int64)
        return VAEBatch(y, x, ctf.to(torch.float32), self.R[ti], ti)

    def batch(self, idx) -> VAEBatch:
        """The batch of particles ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if self._cache is None:
            return self._prepare(idx)
        ti = torch.as_tensor(idx)
        c = self._cache
        return VAEBatch(c.y[ti], c.x[ti], c.ctf[ti], c.R[ti], ti)

    def batches(self, epoch: int, generator: torch.Generator, batch_size: int, rank: int = 0,
                world_size: int = 1):
        """This rank's :class:`VAEBatch` of every global batch of epoch ``epoch``, in the order
        ``torch.randperm(N, generator)`` (the training loop's batch source)."""
        n = len(self)
        offsets = {}

        def where(j: int) -> tuple[int, int]:
            total = min(batch_size, n - j * batch_size)
            if total not in offsets:
                offsets[total] = _part_offsets(total, world_size)
            return offsets[total][rank], total

        if self._cache is not None:
            for j, idx in enumerate(shuffled_batches(n, batch_size, generator, rank, world_size)):
                yield _with_where(self.batch(idx.numpy()), *where(j))
            return
        loader = ParticleLoader(self.data, batch_size, self.chunk, self.buffer, shuffle=True, rank=rank,
                                world_size=world_size)
        for j, (idx, images) in enumerate(loader.batches(epoch, generator)):
            yield _with_where(self._prepare(idx.numpy(), images), *where(j))

    def in_order(self, batch_size: int = 256):
        """Every particle in file order, in batches (for the latents at the end)."""
        for s in range(0, len(self), batch_size):
            yield self.batch(np.arange(s, min(s + batch_size, len(self))))


def _with_where(batch: VAEBatch, offset: int, total: int) -> VAEBatch:
    batch.offset, batch.total = offset, total
    return batch
