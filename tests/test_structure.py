"""Cα-chain internal coordinates and Kabsch alignment against exact truths."""

import math

import pytest
import torch

from cryoscape.geometry import random_rotations
from cryoscape.structure import (aligned_rmsd, chain_to_internal, internal_to_chain, kabsch, rmsd,
                                 transition)


def test_round_trip_on_every_adk_frame(adk):
    x = torch.as_tensor(adk.coords, dtype=torch.float64)  # (102, 214, 3)
    c = chain_to_internal(x)
    back = internal_to_chain(c)
    assert float((back - x).norm(dim=-1).max()) < 1e-3  # Å (issue figure); in practice ~1e-12
    assert c.psi.shape == (102, 212) and c.bonds.shape == (102, 213)
    # bends are the angles between consecutive bonds; Cα–Cα bonds are 3.8 Å
    v = x[:, 1:] - x[:, :-1]
    cosang = (v[:, :-1] * v[:, 1:]).sum(-1) / (v[:, :-1].norm(dim=-1) * v[:, 1:].norm(dim=-1))
    assert torch.allclose(c.psi.abs(), torch.arccos(cosang), atol=1e-9)
    assert abs(float(c.bonds.mean()) - 3.8) < 0.1
    assert float(c.theta[:, 0].abs().max()) < 1e-9  # b_0 := b_1


def test_rebuild_does_not_depend_on_the_reference_frame(adk):
    x = torch.as_tensor(adk.coords[:5], dtype=torch.float64)
    ref = [internal_to_chain(chain_to_internal(x, ref=r)) for r in (0, 50, 107, 212)]
    for y in ref[1:]:
        assert float((y - ref[0]).abs().max()) < 1e-9


def test_angles_are_invariant_under_rigid_motion(adk):
    x = torch.as_tensor(adk.coords[:3], dtype=torch.float64)
    R = random_rotations(3, torch.Generator().manual_seed(0), dtype=torch.float64)
    y = x @ R.transpose(-1, -2) + torch.tensor([3.0, -2.0, 7.0], dtype=torch.float64)
    a, b = chain_to_internal(x), chain_to_internal(y)
    assert torch.allclose(a.psi, b.psi, atol=1e-9) and torch.allclose(a.theta, b.theta, atol=1e-9)
    assert torch.allclose(a.ref_frame @ R.transpose(-1, -2), b.ref_frame, atol=1e-9)


def test_transition_matches_the_two_rotations():
    psi, theta = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-1.1, dtype=torch.float64)
    c, s = math.cos(0.7), math.sin(0.7)
    Y = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    c, s = math.cos(-1.1), math.sin(-1.1)
    Z = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(transition(psi, theta), Y @ Z)


def test_rebuild_gradient_wrt_angles():
    g = torch.Generator().manual_seed(1)
    x = torch.cumsum(torch.randn(1, 8, 3, generator=g, dtype=torch.float64) * 2, dim=1)
    c = chain_to_internal(x, ref=3)
    psi, theta = c.psi.clone().requires_grad_(True), c.theta.clone().requires_grad_(True)

    def f(p, t):
        c.psi, c.theta = p, t
        return internal_to_chain(c)

    assert torch.autograd.gradcheck(f, (psi, theta))


def test_kabsch_recovers_a_rigid_motion_and_refuses_reflections():
    g = torch.Generator().manual_seed(2)
    P = torch.randn(4, 30, 3, generator=g, dtype=torch.float64) * 5
    R = random_rotations(4, g, dtype=torch.float64)
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    Q = P @ R.transpose(-1, -2) + t[:, None]
    Rk, tk = kabsch(P, Q)
    assert torch.allclose(Rk, R, atol=1e-10) and torch.allclose(tk, t, atol=1e-10)
    assert float(aligned_rmsd(P, Q).max()) < 1e-10
    # a mirror image cannot be superposed by a proper rotation
    M = P * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    Rm, _ = kabsch(M, P)
    assert torch.allclose(torch.linalg.det(Rm), torch.ones(4, dtype=torch.float64))
    assert float(aligned_rmsd(M, P).min()) > 0.5
    # rmsd without alignment of a pure translation is its length
    assert torch.allclose(rmsd(P, P + torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)),
                          torch.full((4,), 5.0, dtype=torch.float64))


def test_short_chain_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        chain_to_internal(torch.zeros(1, 2, 3))
