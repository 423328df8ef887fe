"""Per-particle features for the spectral graph.

``oracle_maps`` is the paper's "oracle" source, kept only to reproduce it: each particle's *true*
conformation voxelised at low resolution (Gaussian atoms of width ``blur``) with white noise added. Real data
have no such thing. ``variability_coordinates`` is computed from the images and their known poses and CTF
only: the coordinates of each particle on the main modes of 3-D variability.
"""

from __future__ import annotations

import torch

from ...physics.gaussian import atoms_to_volume

__all__ = ["oracle_maps", "variability_coordinates"]


def oracle_maps(coords: torch.Tensor, box: int, apix: float, blur: float, noise_std: float = 0.0,
                seed: int = 0) -> torch.Tensor:
    """Low-resolution noisy maps of the true conformations, flattened.

    Args:
        coords: ``(N, A, 3)`` true atom positions (Å, centred). box, apix: grid of the maps.
        blur: Gaussian atom width (Å) of the maps. noise_std: white noise, in units of the maps' overall
            standard deviation. seed: noise seed.
    Returns:
        ``(N, box³)`` float64 features.
    """
    gen = torch.Generator().manual_seed(seed)
    maps = torch.stack([atoms_to_volume(c.to(torch.float64), blur, box, apix).reshape(-1) for c in coords])
    if noise_std > 0:
        maps = maps + noise_std * float(maps.std()) * torch.randn(maps.shape, generator=gen, dtype=maps.dtype)
    return maps


def variability_coordinates(data, box: int = 32, k: int = 2, resolution_A: float = 10.0, iterations: int = 5,
                            seed: int = 0, reg: float = 0.01) -> torch.Tensor:
    """Per-particle coordinates of the main modes of 3-D variability, from the images, poses and CTF only.

    At low resolution (images Fourier-cropped to ``box``, frequencies below ``1/resolution_A``):

    1. the consensus ``μ`` by CTF-weighted direct Fourier inversion; residuals ``r_n = y_n − c_n P_n μ``
       (``P_n`` the projection at the particle's pose, ``c_n`` its CTF, ``y_n`` its centred image);
    2. ``k`` volumes spanning the dominant variability, by subspace iteration on
       ``X ↦ B[Σ_n r_n ⟨c_n P_n X, r_n⟩]`` (``B`` the normalised backprojection), re-orthonormalised
       (QR) after each of ``iterations`` steps (the idea of 3-D variability analysis, Punjani & Fleet 2021);
    3. each particle's coordinates ``z_n = argmin |r_n − Σ_j z_j c_n P_n X_j|²`` (a ``k × k`` solve).

    Args:
        data: :class:`cryoscape.data.particles.ParticleData` with poses (and CTF when the images have one).
    Returns:
        ``(N, k)`` float64 coordinates, to use as graph features.
    """
    from ...geometry.poses import Poses
    from ...methods.downsample import crop_images
    from ...physics.imaging import ImagingGrid, VoxelMap, adjoint, centre, forward
    from ...physics.insert import FourierInserter, invert

    N, D = len(data), data.D
    box = min(box, D)
    imgs = torch.from_numpy(data.images(slice(0, N)))
    imgs = crop_images(imgs, box) if box < D else imgs.to(torch.float64)
    grid = ImagingGrid(box, data.apix * D / box, dtype=torch.float64)
    poses = data.poses.to(dtype=torch.float64)
    y = centre(imgs, poses, grid)
    centred = Poses(poses.R, torch.zeros_like(poses.shift_A))  # residuals live in the centred frame
    low = ((grid.kx * grid.kx + grid.ky * grid.ky).sqrt() < 1.0 / resolution_A).to(torch.float64)

    def backproject(f):
        ins = FourierInserter(grid, torch.float64)
        adjoint(f, centred, grid, data.ctf, ins)
        num, W = ins.grids()
        return invert(num, W, reg * float(W[W > 0].mean()), box)

    def project(vol):
        return forward(VoxelMap(vol, grid.apix), centred, grid, data.ctf) * low

    res = (y - project(backproject(y))) * low
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(box ** 3, k, generator=gen, dtype=torch.float64)
    for _ in range(iterations):
        coef = [(project(X[:, j].reshape(box, box, box)).conj() * res).real.sum((-1, -2)) for j in range(k)]
        Y = torch.stack([backproject(res * c[:, None, None]).reshape(-1) for c in coef], 1)
        X, _ = torch.linalg.qr(Y)
    AX = torch.stack([project(X[:, j].reshape(box, box, box)) for j in range(k)], 1)  # (N, k, box, W)
    G = torch.einsum("nidw,njdw->nij", AX.conj(), AX).real
    b = torch.einsum("nidw,ndw->ni", AX.conj(), res).real
    lam = 1e-3 * float(G.diagonal(dim1=1, dim2=2).mean())
    return torch.linalg.solve(G + lam * torch.eye(k, dtype=G.dtype), b[..., None])[..., 0]
