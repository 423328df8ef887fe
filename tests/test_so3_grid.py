"""Hopf-fibration SO(3) grid: HEALPix geometry and the hierarchy."""

import math

import numpy as np
import torch

from cryoscape.geometry import (healpix_nest_to_angles, rotation_angle_between, so3_grid, so3_grid_children,
                                so3_grid_size)


def test_healpix_pixel_centres_are_equal_area_rings():
    for nside in (1, 2, 4, 8):
        npix = 12 * nside ** 2
        theta, phi = healpix_nest_to_angles(nside, np.arange(npix))
        z = np.cos(theta)
        # HEALPix ring latitudes (Górski et al. 2005, eqs. 4–6): polar caps z = 1 − i²/(3 nside²),
        # equatorial belt z = 4/3 − 2i/(3 nside).
        i = np.arange(1, 4 * nside)
        rings = np.where(i < nside, 1 - i ** 2 / (3 * nside ** 2),
                         np.where(i <= 3 * nside, 4 / 3 - 2 * i / (3 * nside),
                                  -(1 - (4 * nside - i) ** 2 / (3 * nside ** 2))))
        assert np.allclose(np.sort(np.unique(np.round(z, 10))), np.sort(rings), atol=1e-9)
        # every ring in the belt holds 4 nside pixels; the directions are distinct and balanced
        xyz = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), z], -1)
        assert len(np.unique(np.round(xyz, 9), axis=0)) == npix
        assert np.abs(xyz.mean(0)).max() < 1e-12


def test_nested_children_subdivide_their_parent():
    nside = 4
    parents = np.arange(12 * nside ** 2)
    tp, pp = healpix_nest_to_angles(nside, parents)
    tc, pc = healpix_nest_to_angles(2 * nside, np.arange(12 * 4 * nside ** 2))
    vp = np.stack([np.sin(tp) * np.cos(pp), np.sin(tp) * np.sin(pp), np.cos(tp)], -1)
    vc = np.stack([np.sin(tc) * np.cos(pc), np.sin(tc) * np.sin(pc), np.cos(tc)], -1)
    nearest_parent = np.argmax(vc @ vp.T, axis=1)
    assert (nearest_parent == np.arange(len(vc)) // 4).mean() > 0.95


def test_so3_grid_sizes_and_hierarchy():
    for level in (0, 1, 2):
        R, idx = so3_grid(level, torch.float64)
        assert R.shape[0] == so3_grid_size(level) == len(idx)
        assert torch.allclose(torch.linalg.det(R), torch.ones(len(R), dtype=torch.float64))
    R0, idx0 = so3_grid(0, torch.float64)
    Rc, idxc = so3_grid_children(0, idx0, torch.float64)
    R1, idx1 = so3_grid(1, torch.float64)
    # children of all level-0 points are exactly the level-1 grid
    assert sorted(map(tuple, idxc)) == sorted(map(tuple, idx1))
    # every child is close to its parent (within the level-0 spacing)
    ang = rotation_angle_between(R0.repeat_interleave(8, 0), Rc)
    assert float(ang.max()) < math.radians(60)


def test_grid_covering_radius_halves_per_level():
    g = torch.Generator().manual_seed(0)
    from cryoscape.geometry import random_rotations
    Q = random_rotations(300, g, dtype=torch.float64)
    cover = []
    for level in (1, 2):
        R, _ = so3_grid(level, torch.float64)
        # angle to the nearest grid rotation: via trace of Qᵀ R
        tr = torch.einsum("qij,gij->qg", Q, R)
        best = torch.arccos(((tr.max(1).values - 1) / 2).clamp(-1, 1))
        cover.append(float(best.max()))
    assert 1.6 < cover[0] / cover[1] < 2.5
    assert cover[1] < math.radians(20)
