"""The particle loader: every particle once per epoch, disjoint rank shards that make up one process's batches,
the pixels of ParticleData.images, reads in contiguous chunks, and the stated memory bound."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cryoscape.data.loader import (ParticleDataset, ParticleLoader, ShardSampler, epoch_generator, epoch_order,
                                   local_batches, shuffled_batches)
from cryoscape.data.particles import ParticleData
from cryoscape.io.mrc import write_stack

N, D = 53, 6


@pytest.fixture(scope="module")
def particles(tmp_path_factory) -> ParticleData:
    """53 random images in two stacks; particle i is image index_in_stack[i] of stack stack_of[i], the two
    stacks interleaved and each read out of file order (so a loader mixing up indices gets other pixels)."""
    folder = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    a, b = str(folder / "a.mrcs"), str(folder / "b.mrcs")
    write_stack(a, rng.standard_normal((30, D, D)).astype(np.float32), 1.5)
    write_stack(b, rng.standard_normal((26, D, D)).astype(np.float32), 1.5)
    stack_of = np.array([a if i % 2 == 0 else b for i in range(N)], dtype=object)
    index = np.empty(N, dtype=np.int64)
    index[stack_of == a] = rng.permutation(30)[:27]
    index[stack_of == b] = rng.permutation(26)
    return ParticleData({a: 30, b: 26}, stack_of, index, None, np.zeros((N, 2)), None, 1.5, D, "test")


@pytest.mark.parametrize("buffer,chunk", [(None, 8), (20, 8), (5, 8), (1000, 8), (16, 1)])
def test_epoch_order_visits_every_particle_once(buffer, chunk):
    for epoch in (1, 2):
        order = epoch_order(N, epoch_generator(4, epoch), chunk, buffer)
        assert sorted(order.tolist()) == list(range(N))
    assert not torch.equal(epoch_order(N, epoch_generator(4, 1), chunk, buffer),
                           epoch_order(N, epoch_generator(4, 2), chunk, buffer))  # epochs differ
    assert torch.equal(epoch_order(N, epoch_generator(4, 1), chunk, buffer),
                       epoch_order(N, epoch_generator(4, 1), chunk, buffer))  # and repeat


def test_full_shuffle_is_randperm_and_buffer_keeps_chunks_together():
    assert torch.equal(epoch_order(N, epoch_generator(2, 3)), torch.randperm(N, generator=epoch_generator(2, 3)))
    order = epoch_order(48, epoch_generator(2, 3), chunk=8, buffer=16)  # 3 fills of 2 chunks of 8
    for s in range(0, 48, 16):
        fill = order[s:s + 16]
        assert len(set((fill // 8).tolist())) <= 2  # every fill comes from two chunks only
    assert not torch.equal(order, torch.sort(order).values)  # and is shuffled


@pytest.mark.parametrize("batch", [1, 4, 7, 53, 60])
def test_rank_shards_are_disjoint_and_make_up_the_global_batches(batch):
    order = epoch_order(N, epoch_generator(0, 1))
    single = local_batches(order, batch)
    assert torch.equal(torch.cat(single), order)
    for world in (1, 2, 3):
        shards = [local_batches(order, batch, r, world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1  # the same number of steps on every rank
        seen = torch.cat([torch.cat(s) for s in shards]).tolist()
        assert sorted(seen) == list(range(N))  # disjoint, and together everything
        for k, b in enumerate(single):  # rank parts in rank order = the one-process batch
            assert torch.equal(torch.cat([s[k] for s in shards]), b)
            assert max(len(s[k]) for s in shards) - min(len(s[k]) for s in shards) <= 1


def test_shuffled_batches_default_to_one_process():
    g1, g2 = epoch_generator(1, 1), epoch_generator(1, 1)
    assert all(torch.equal(a, b) for a, b in zip(shuffled_batches(N, 8, g1), local_batches(torch.randperm(N, generator=g2), 8)))


@pytest.mark.parametrize("buffer,chunk,batch", [(None, 10, 4), (None, 64, 8), (12, 4, 5), (8, 8, 3), (4, 1, 6)])
def test_loader_pixels_coverage_chunked_reads_and_memory(particles, buffer, chunk, batch):
    for world in (1, 2, 3):
        got = []
        for rank in range(world):
            loader = ParticleLoader(particles, batch, chunk=chunk, buffer=buffer, seed=5, rank=rank,
                                    world_size=world)
            reads, read = [], loader.dataset.read
            loader.dataset.read = lambda idx: (reads.append(list(idx)), read(idx))[1]
            yielded, n_batches = 0, 0
            for idx, images in loader.batches(2):
                n_batches += 1
                assert images.dtype == torch.float32 and images.shape == (len(idx), D, D)
                np.testing.assert_array_equal(images.numpy(), particles.images(idx.numpy()))
                held = sum(map(len, reads)) - yielded  # images in memory before this batch left
                assert held <= max(buffer or 0, chunk) + batch
                yielded += len(idx)
                got.append(idx)
            assert n_batches == len(loader) == -(-N // batch)
            for r in reads:  # each read is in index order; with a buffer, within one chunk of the file
                assert r == sorted(r) and len(r) <= chunk
                if buffer is not None and buffer < N:
                    assert r[-1] // chunk == r[0] // chunk
        assert sorted(torch.cat(got).tolist()) == list(range(N))  # all ranks: every particle once


def test_loader_follows_the_training_loop_generator(particles):
    """``batches(epoch, generator)`` uses the generator it is given (the training loop's), and without one
    the epoch's own; both give the same order as ShardSampler."""
    loader = ParticleLoader(particles, 8, chunk=16, seed=9)
    a = [i for i, _ in loader.batches(3, epoch_generator(9, 3))]
    b = [i for i, _ in loader.batches(3)]
    loader.set_epoch(3)
    c = [i for i, _ in loader]
    s = ShardSampler(N, 8, 1, 0, seed=9)
    s.set_epoch(3)
    assert all(torch.equal(x, y) and torch.equal(x, z) and x.tolist() == w for x, y, z, w in zip(a, b, c, s))


def test_dataset_with_torch_dataloader_and_shard_sampler(particles):
    ds = ParticleDataset(particles)
    i, im = ds[5]
    np.testing.assert_array_equal(im.numpy(), particles.images([5])[0])
    for world in (1, 2):
        seen = []
        for rank in range(world):
            sampler = ShardSampler(N, 6, num_replicas=world, rank=rank, seed=1)
            sampler.set_epoch(4)
            dl = DataLoader(ds, batch_sampler=sampler,
                            collate_fn=lambda items: (torch.tensor([i for i, _ in items], dtype=torch.int64),
                                                      torch.stack([x for _, x in items]) if items else torch.zeros(0, D, D)))
            for idx, images in dl:
                np.testing.assert_array_equal(images.numpy(), particles.images(idx.numpy()))
                seen += idx.tolist()
        assert sorted(seen) == list(range(N))


def test_sequential_loader_is_file_order(particles):
    loader = ParticleLoader(particles, 10, chunk=20, shuffle=False)
    idx = torch.cat([i for i, _ in loader.batches(1)])
    assert idx.tolist() == list(range(N))
