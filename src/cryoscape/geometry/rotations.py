"""Rotations: RELION Euler angles, quaternions, axis-angle, uniform random rotations.

All functions are batched over leading dimensions, differentiable where the maths is, and keep the dtype
and device of their input. Angles are in radians.

Conventions (see CONVENTIONS.md, "Rotations and poses"):
- A pose matrix ``R`` rotates the reference into the view of the particle:
  ``image(x, y) = ∫ V(Rᵀ (x, y, z)ᵀ) dz``.
- RELION's ZYZ Euler angles (rot, tilt, psi) give ``R = Rz(psi) · Ry(tilt) · Rz(rot)`` with
  ``Rz(a) = [[cos a, sin a, 0], [-sin a, cos a, 0], [0, 0, 1]]`` and
  ``Ry(b) = [[cos b, 0, -sin b], [0, 1, 0], [sin b, 0, cos b]]`` (Heymann, Chagoyen & Belnap 2005).
  The last row of ``R`` is ``(sin tilt cos rot, sin tilt sin rot, cos tilt)``: the viewing direction.
- Quaternions are ``(w, x, y, z)`` with ``w`` the scalar part; ``q`` and ``-q`` are the same rotation and
  the matrix is the active rotation ``v ↦ q v q*``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "random_quaternions",
    "random_rotations",
    "rotation_angle_between",
]


def _rz(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, s, z, -s, c, z, z, z, o], dim=-1).reshape(*a.shape, 3, 3)


def _ry(b: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(b), torch.sin(b)
    z, o = torch.zeros_like(b), torch.ones_like(b)
    return torch.stack([c, z, -s, z, o, z, s, z, c], dim=-1).reshape(*b.shape, 3, 3)


def euler_to_matrix(euler: torch.Tensor) -> torch.Tensor:
    """RELION ZYZ Euler angles → pose matrices.

    Args:
        euler: ``(..., 3)`` angles ``(rot, tilt, psi)`` in radians.
    Returns:
        ``(..., 3, 3)`` matrices ``R = Rz(psi) · Ry(tilt) · Rz(rot)``.
    """
    rot, tilt, psi = euler.unbind(-1)
    return _rz(psi) @ _ry(tilt) @ _rz(rot)


def matrix_to_euler(R: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pose matrices → RELION ZYZ Euler angles ``(rot, tilt, psi)`` in radians.

    ``tilt ∈ [0, π]``, ``rot, psi ∈ (-π, π]``. At the poles (``sin tilt < eps``) only ``rot + psi``
    (or ``psi - rot``) is defined; there ``rot = 0`` and ``psi`` carries the in-plane angle.

    Args:
        R: ``(..., 3, 3)`` proper rotation matrices.
    Returns:
        ``(..., 3)`` angles.
    """
    sin_tilt = torch.sqrt(R[..., 2, 0] ** 2 + R[..., 2, 1] ** 2)
    tilt = torch.atan2(sin_tilt, R[..., 2, 2])
    rot = torch.atan2(R[..., 2, 1], R[..., 2, 0])
    psi = torch.atan2(R[..., 1, 2], -R[..., 0, 2])
    # Gimbal lock: R = Rz(psi) Ry(0) or Rz(psi) Ry(pi), rot := 0.
    pole = sin_tilt < eps
    north = R[..., 2, 2] > 0
    psi_pole = torch.where(
        north,
        torch.atan2(R[..., 0, 1], R[..., 0, 0]),
        torch.atan2(R[..., 0, 1], -R[..., 0, 0]),
    )
    rot = torch.where(pole, torch.zeros_like(rot), rot)
    psi = torch.where(pole, psi_pole, psi)
    return torch.stack([rot, tilt, psi], dim=-1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` as ``(w, x, y, z)`` → rotation matrices ``(..., 3, 3)``.

    The quaternion is normalised first, so any non-zero ``q`` is accepted.
    """
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    m = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(m, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` → unit quaternions ``(..., 4)`` with ``w ≥ 0``.

    Uses the numerically stable branch (largest of ``w, x, y, z``) for every element.
    """
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # 4 * each squared component, clamped for round-off.
    t = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                     1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1).clamp_min(1e-12)
    r = torch.sqrt(t)  # 2 * |component|
    d21, d02, d10 = R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]
    s21, s02, s10 = R[..., 2, 1] + R[..., 1, 2], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 0] + R[..., 0, 1]
    cands = torch.stack([
        torch.stack([r[..., 0] ** 2, d21, d02, d10], -1) / (2 * r[..., 0:1]),
        torch.stack([d21, r[..., 1] ** 2, s10, s02], -1) / (2 * r[..., 1:2]),
        torch.stack([d02, s10, r[..., 2] ** 2, s21], -1) / (2 * r[..., 2:3]),
        torch.stack([d10, s02, s21, r[..., 3] ** 2], -1) / (2 * r[..., 3:4]),
    ], dim=-2)
    best = t.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rotation vectors (axis × angle, radians) ``(..., 3)`` → matrices, by Rodrigues' formula.

    ``R = I + sin θ K + (1 − cos θ) K²`` with ``K`` the cross-product matrix of the unit axis; series
    expansions keep it exact and differentiable near ``θ = 0``.
    """
    theta2 = (v * v).sum(-1)
    theta = torch.sqrt(theta2.clamp_min(1e-30))
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-30))
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(K)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices → rotation vectors ``(..., 3)`` with angle in ``[0, π]``.

    Goes through the quaternion, ``θ = 2 atan2(|q_xyz|, w)``, which is stable at 0 and at π.
    """
    q = matrix_to_quaternion(R)
    w, xyz = q[..., 0], q[..., 1:]
    n = xyz.norm(dim=-1)
    theta = 2 * torch.atan2(n, w)
    scale = torch.where(n < 1e-8, 2 / w.clamp_min(1e-12), theta / n.clamp_min(1e-30))
    return xyz * scale[..., None]


def random_quaternions(n: int, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(n, 4)`` uniformly distributed unit quaternions (normalised 4-D Gaussian vectors), ``w ≥ 0``."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64, device=device)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.to(dtype)


def random_rotations(n: int, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(n, 3, 3)`` rotation matrices drawn from the Haar (uniform) measure on SO(3)."""
    return quaternion_to_matrix(random_quaternions(n, generator, torch.float64, device)).to(dtype)


def rotation_angle_between(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (radians, ``[0, π]``) between rotations: the angle of ``R1ᵀ R2``."""
    return matrix_to_axis_angle(R1.transpose(-1, -2) @ R2).norm(dim=-1)


def degrees(x: torch.Tensor) -> torch.Tensor:
    """Radians → degrees."""
    return x * (180.0 / math.pi)
