"""Particle images for training: a torch ``Dataset`` over :class:`~cryoscape.data.particles.ParticleData`, the
order of each epoch, its split over ``torchrun`` ranks, and a loader that reads in contiguous chunks.

The order of an epoch is a function of ``(seed, epoch)`` only — never of the number of processes:

- full shuffle (``buffer=None``, or a buffer that holds everything): ``torch.randperm(N, generator)``;
- with a shuffle buffer of ``buffer`` images: the ``⌈N / chunk⌉`` chunks of consecutive indices (file order)
  are visited in a random order; the buffer is filled with ``k = max(1, buffer // chunk)`` whole chunks, its
  images are emitted in a random order, and it is filled again. Reads are then whole chunks, sequential on
  disk, and at most ``k · chunk`` images are held.

Global batches are consecutive ``batch_size`` pieces of that order. Under ``torchrun`` every global batch is
cut into ``world_size`` contiguous parts (sizes differing by at most one; ``torch.tensor_split``) and rank ``r``
takes part ``r``: the ranks' shards are disjoint, together they are the whole epoch, every rank sees the same
number of batches (a part may be empty when a last batch has fewer images than ranks), and the ranks' parts
put together in rank order are the batch one process would see. This is what ``DistributedSampler`` does,
except that it pads the shards to equal length with repeated images; here nothing is repeated.

Memory bound of :class:`ParticleLoader`, per process: at most ``max(buffer, chunk) + batch_size`` images
(``D² · 4`` bytes each; ``buffer = None`` counts as 0), and under ``torchrun`` each rank holds only its share
of those.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..io.errors import InputError
from .particles import ParticleData

__all__ = ["epoch_generator", "epoch_order", "split_batch", "local_batches", "shuffled_batches",
           "ParticleDataset", "ShardSampler", "ParticleLoader"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of epoch ``epoch`` (1-based) of a run seeded ``seed``: seeded
    ``seed · 1_000_003 + epoch``, so every epoch has its own stream and a resumed run repeats it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_order(n: int, generator: torch.Generator, chunk: int = 1024, buffer: int | None = None
                ) -> torch.Tensor:
    """The visiting order ``(n,)`` int64 of one epoch (see the module docstring): a full
    ``torch.randperm(n, generator=generator)`` when ``buffer`` is None or ``≥ n``, else chunks of ``chunk``
    consecutive indices in a random order, shuffled within fills of ``max(1, buffer // chunk)`` chunks."""
    if buffer is None or buffer >= n:
        return torch.randperm(n, generator=generator)
    if chunk < 1 or buffer < 1:
        raise InputError("--chunk" if chunk < 1 else "--buffer", "must be ≥ 1")
    k = max(1, buffer // chunk)
    n_chunks = -(-n // chunk)
    chunks = torch.randperm(n_chunks, generator=generator)
    parts = []
    for s in range(0, n_chunks, k):
        members = torch.cat([torch.arange(c * chunk, min((c + 1) * chunk, n)) for c in chunks[s:s + k].tolist()])
        parts.append(members[torch.randperm(len(members), generator=generator)])
    return torch.cat(parts)


def split_batch(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous part of a global batch (``torch.tensor_split`` into ``world_size`` parts)."""
    return torch.tensor_split(batch, world_size)[rank]


def local_batches(order: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """This rank's part of each global batch of ``order`` (consecutive pieces of ``batch_size``)."""
    if batch_size < 1:
        raise InputError("--batch-size", f"must be ≥ 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return [split_batch(order[s:s + batch_size], rank, world_size) for s in range(0, len(order), batch_size)]


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        from ..utils.devices import dist_info
        info = dist_info()
        return (info.rank if rank is None else rank), (info.world_size if world_size is None else world_size)
    return rank, world_size


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, rank: int | None = None,
                     world_size: int | None = None) -> list[torch.Tensor]:
    """Index batches of a data set held in memory: this rank's parts of the global batches of
    ``torch.randperm(n, generator=generator)`` (rank and world size from ``torchrun``'s environment when None)."""
    return local_batches(torch.randperm(n, generator=generator), batch_size, *_rank_world(rank, world_size))


class ParticleDataset(Dataset):
    """The images of a :class:`ParticleData` by index: item ``i`` is ``(i, image (D, D) float32 tensor)``.

    ``__getitems__`` (used by ``torch.utils.data.DataLoader`` for a whole batch) and :meth:`read` read many
    images at once, in file order within each stack.
    """

    def __init__(self, data: ParticleData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def read(self, indices) -> torch.Tensor:
        """Images of particles ``indices`` (in that order) → ``(k, D, D)`` float32."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            return torch.zeros(0, self.data.D, self.data.D)
        return torch.from_numpy(self.data.images(idx))

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return int(i), self.read([i])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[int, torch.Tensor]]:
        images = self.read(indices)
        return [(int(i), im) for i, im in zip(indices, images)]


class ShardSampler(Sampler):
    """A batch sampler with ``DistributedSampler``'s interface (``num_replicas``, ``rank``, ``shuffle``,
    ``seed``, :meth:`set_epoch`): yields this rank's index list of every global batch of the epoch.

    Use with ``DataLoader(ParticleDataset(data), batch_sampler=sampler, collate_fn=...)``, or use
    :class:`ParticleLoader`, which reads in chunks.
    """

    def __init__(self, n: int, batch_size: int, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, chunk: int = 1024, buffer: int | None = None):
        self.rank, self.num_replicas = _rank_world(rank, num_replicas)
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.chunk, self.buffer, self.epoch = chunk, buffer, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The global order of ``epoch`` (``generator``: default :func:`epoch_generator`)."""
        if not self.shuffle:
            return torch.arange(self.n)
        gen = generator if generator is not None else epoch_generator(self.seed, epoch)
        return epoch_order(self.n, gen, self.chunk, self.buffer)

    def batches(self, epoch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return local_batches(self.order(epoch, generator), self.batch_size, self.rank, self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        return iter([b.tolist() for b in self.batches(self.epoch)])

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


class ParticleLoader:
    """Batches ``(indices (b,) int64, images (b, D, D) float32)`` of a :class:`ParticleData` for one rank.

    Args:
        data: the particles (or a :class:`ParticleDataset`). batch_size: the global batch (all ranks).
        chunk: images read at a time. With a shuffle ``buffer`` a read is this rank's images of ``chunk``
            consecutive particles (file order); without, it is the next ``chunk`` images of this rank's order,
            read sorted in file order.
        buffer: shuffle-buffer size in images (None: full shuffle). seed: of :func:`epoch_generator`.
        shuffle: False visits the particles in file order. rank, world_size: default from ``torchrun``.

    ``batches(epoch, generator)`` has the signature the training loop asks of a batch source; iterating the
    loader itself gives the batches of the epoch set by :meth:`set_epoch`. Memory bound: module docstring.
    """

    def __init__(self, data: ParticleData | ParticleDataset, batch_size: int, chunk: int = 1024,
                 buffer: int | None = None, seed: int = 0, shuffle: bool = True, rank: int | None = None,
                 world_size: int | None = None):
        if chunk < 1:
            raise InputError("--chunk", f"must be ≥ 1, got {chunk}")
        if buffer is not None and buffer < 1:
            raise InputError("--buffer", f"must be ≥ 1, got {buffer}")
        self.dataset = data if isinstance(data, ParticleDataset) else ParticleDataset(data)
        self.sampler = ShardSampler(len(self.dataset), batch_size, world_size, rank, shuffle, seed, chunk, buffer)
        self.chunk = chunk

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return self.batches(self.sampler.epoch)

    def batches(self, epoch: int, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of ``epoch`` in the order drawn from ``generator`` (default
        :func:`epoch_generator`): ``(indices (b,) int64, images (b, D, D) float32)``, ``b`` possibly 0 for
        the last batch under torchrun. Each read unit is read whole when its first image is due."""
        mine = self.sampler.batches(epoch, generator)
        flat = torch.cat(mine).numpy() if mine else np.zeros(0, np.int64)
        s = self.sampler
        chunked_file = s.shuffle and s.buffer is not None and s.buffer < s.n
        unit = flat // self.chunk if chunked_file else np.arange(len(flat)) // self.chunk
        members, unit_of = {}, {}  # read unit → this rank's indices in it; index → its read unit
        for u, i in zip(unit.tolist(), flat.tolist()):
            members.setdefault(u, []).append(i)
            unit_of[i] = u
        held, D = {}, self.dataset.data.D
        for b in mine:
            for i in b.tolist():
                if i not in held:  # first image of a read unit: read all of this rank's images in it
                    idx = sorted(members.pop(unit_of[i]))  # ParticleData reads each stack in file order
                    held.update(zip(idx, self.dataset.read(idx)))
            images = torch.stack([held.pop(i) for i in b.tolist()]) if len(b) else torch.zeros(0, D, D)
            yield b, images
