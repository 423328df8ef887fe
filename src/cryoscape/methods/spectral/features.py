"""Per-particle features for the spectral graph.

``oracle_maps`` is the paper's "oracle" source, kept only to reproduce it: each particle's *true*
conformation voxelised at low resolution (Gaussian atoms of width ``blur``) with white noise added. Real data
have no such thing; sources computed from the images alone belong next to it.
"""

from __future__ import annotations

import torch

from ...physics.gaussian import atoms_to_volume

__all__ = ["oracle_maps"]


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
