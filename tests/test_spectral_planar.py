"""The planar test case: the whole spectral method (graph → linear model → fit) in a second."""

import math

import numpy as np
import torch

from cryoscape.methods.spectral import spectral_embedding
from cryoscape.methods.spectral.planar import (PlanarModel, internal_to_planar, planar_to_internal,
                                               project_planar)


def _reference(L=14):
    """A zig-zag planar chain with 3.8 Å bonds, centred."""
    a = np.where(np.arange(L - 1) % 2 == 0, 0.5, -0.5)
    steps = 3.8 * np.stack([np.cos(a), np.sin(a)], -1)
    x = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
    return torch.as_tensor(x - x.mean(0))


def test_planar_round_trip_any_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.cumsum(torch.randn(5, 10, 2, generator=g, dtype=torch.float64) * 3, 1)
    for r in (0, 4, 8):
        back = internal_to_planar(*planar_to_internal(x, r)[:2], r, *planar_to_internal(x, r)[2:])
        assert torch.allclose(back, x, atol=1e-10)


def test_planar_pipeline_recovers_two_flexible_joints():
    ref_chain, r = _reference(), 6
    model_true = PlanarModel(ref_chain, r, 1)
    joints = torch.zeros(12, 1, dtype=torch.float64)
    joints[3, 0], joints[9, 0] = 0.6, -0.5  # two flexible joints
    model_true.gamma.data = joints
    g = torch.Generator().manual_seed(1)
    N, D, apix, sigma = 300, 48, 1.0, 1.5
    s = torch.rand(N, 1, generator=g, dtype=torch.float64) * 2 - 1
    alpha = torch.rand(N, generator=g, dtype=torch.float64) * 2 * math.pi
    with torch.no_grad():
        x = model_true(s)
        clean = project_planar(x, alpha, sigma, D, apix)
    images = clean + 0.2 * clean.std() * torch.randn(clean.shape, generator=g, dtype=torch.float64)

    # oracle features: a noisy low-resolution 2-D picture of each conformation (model frame)
    grid = (torch.arange(16, dtype=torch.float64) - 8) * 3.0
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    pics = torch.exp(-((xx[None, None] - x[..., 0, None, None]) ** 2 + (yy[None, None] - x[..., 1, None, None]) ** 2)
                     / (2 * 3.0 ** 2)).sum(1).reshape(N, -1)
    pics = pics + 0.1 * pics.std() * torch.randn(pics.shape, generator=g, dtype=torch.float64)
    v, _, _ = spectral_embedding(pics, 3)
    assert abs(np.corrcoef(v[:, 1].numpy(), s[:, 0].numpy())[0, 1]) > 0.9

    model = PlanarModel(ref_chain, r, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    train, test = slice(0, 250), slice(250, N)
    scale = 1 / float((images[train] ** 2).mean())
    with torch.no_grad():
        start = float((model(v[test]) - x[test]).norm(dim=-1).mean())
    for _ in range(300):
        opt.zero_grad()
        loss = ((project_planar(model(v[train]), alpha[train], sigma, D, apix) - images[train]) ** 2).mean() * scale
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = float((model(v[test]) - x[test]).norm(dim=-1).mean())
    assert start > 1.0 and err < 0.3, (start, err)
