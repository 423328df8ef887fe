"""Rotations against independent truths: RELION's matrix written out by hand, round trips, Haar statistics."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from cryoscape.geometry import (axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle, matrix_to_euler,
                                matrix_to_quaternion, quaternion_to_matrix, random_rotations,
                                rotation_angle_between)


def relion_matrix(rot, tilt, psi):
    """RELION's Euler_angles2matrix written out element by element (degrees in)."""
    a, b, g = np.deg2rad([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([[cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
                     [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
                     [sc, ss, cb]])


@pytest.mark.parametrize("angles", [(0, 0, 0), (90, 0, 0), (30, 60, -45), (-170, 120, 10), (45, 180, 20)])
def test_euler_matches_relion_elementwise(angles):
    R = euler_to_matrix(torch.tensor(np.deg2rad(angles), dtype=torch.float64)).numpy()
    np.testing.assert_allclose(R, relion_matrix(*angles), atol=1e-12)
    rot, tilt, _ = np.deg2rad(angles)
    np.testing.assert_allclose(R[2], [math.sin(tilt) * math.cos(rot), math.sin(tilt) * math.sin(rot),
                                      math.cos(tilt)], atol=1e-12)


def test_rz_90_is_the_conventions_matrix():
    R = euler_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(R, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)


def test_round_trips_matrix_euler_quaternion_axis_angle():
    g = torch.Generator().manual_seed(0)
    R = random_rotations(2000, g, dtype=torch.float64)
    assert torch.allclose(euler_to_matrix(matrix_to_euler(R)), R, atol=1e-10)
    assert torch.allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)
    assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-10)
    # det +1 and orthonormal
    assert torch.allclose(torch.linalg.det(R), torch.ones(2000, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-12)


def test_euler_round_trip_at_the_poles():
    for tilt in (0.0, math.pi):
        e = torch.tensor([[0.7, tilt, -0.3]], dtype=torch.float64)
        R = euler_to_matrix(e)
        assert torch.allclose(euler_to_matrix(matrix_to_euler(R)), R, atol=1e-12)


def test_quaternion_and_axis_angle_agree_with_closed_forms():
    axis = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64) / 3.0
    theta = 1.2
    q = torch.cat([torch.tensor([math.cos(theta / 2)], dtype=torch.float64), math.sin(theta / 2) * axis])
    Rq = quaternion_to_matrix(q)
    Rv = axis_angle_to_matrix(theta * axis)
    assert torch.allclose(Rq, Rv, atol=1e-12)
    # rotating the axis leaves it fixed; a perpendicular vector turns by theta
    assert torch.allclose(Rv @ axis, axis, atol=1e-12)
    perp = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64) / math.sqrt(5)
    assert math.isclose(float(perp @ (Rv @ perp)), math.cos(theta), abs_tol=1e-12)
    # small angles: exact to first order, no NaN
    v = torch.tensor([1e-9, -2e-9, 0.5e-9], dtype=torch.float64)
    assert torch.allclose(matrix_to_axis_angle(axis_angle_to_matrix(v)), v, atol=1e-15)


def test_axis_angle_near_pi():
    v = torch.tensor([0.0, math.pi - 1e-9, 0.0], dtype=torch.float64)
    R = axis_angle_to_matrix(v)
    assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-8)


def test_haar_uniform_rotations_pass_statistical_tests():
    g = torch.Generator().manual_seed(123)
    R = random_rotations(20000, g, dtype=torch.float64)
    view = R[:, 2, :].numpy()  # viewing directions: uniform on S² ⇒ z uniform in [-1, 1]
    assert stats.kstest(view[:, 2], "uniform", args=(-1, 2)).pvalue > 1e-3
    phi = np.arctan2(view[:, 1], view[:, 0])
    assert stats.kstest(phi, "uniform", args=(-math.pi, 2 * math.pi)).pvalue > 1e-3
    # rotation angle density (1 − cos θ)/π on [0, π] ⇒ CDF (θ − sin θ)/π
    theta = rotation_angle_between(torch.eye(3, dtype=torch.float64).expand_as(R), R).numpy()
    assert stats.kstest(theta, lambda t: (t - np.sin(t)) / math.pi).pvalue > 1e-3
    # and the test has power: rotations about z only fail it
    Rz = euler_to_matrix(torch.stack([torch.rand(2000, generator=g, dtype=torch.float64) * 6,
                                      torch.zeros(2000, dtype=torch.float64),
                                      torch.zeros(2000, dtype=torch.float64)], -1))
    assert stats.kstest(Rz[:, 2, 2].numpy(), "uniform", args=(-1, 2)).pvalue < 1e-6


def test_rotations_are_differentiable():
    e = torch.tensor([0.3, 0.8, -1.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(euler_to_matrix, (e,))
    v = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (v,))
