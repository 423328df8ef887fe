"""Atomic-structure heterogeneity by spectral decomposition (Esteve-Yagüe et al. 2023): the graph part."""

from .graph import gaussian_affinity, normalized_laplacian, spectral_embedding

__all__ = ["gaussian_affinity", "normalized_laplacian", "spectral_embedding"]
