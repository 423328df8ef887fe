"""Atomic-structure heterogeneity by spectral decomposition (Esteve-Yagüe et al. 2023)."""

from .features import oracle_maps, variability_coordinates
from .graph import gaussian_affinity, normalized_laplacian, spectral_embedding
from .model import (FitConfig, LinearAngleModel, CartesianModel, fit_model, refine_cartesian,
                    render_particles)

__all__ = ["gaussian_affinity", "normalized_laplacian", "spectral_embedding", "FitConfig", "LinearAngleModel",
           "CartesianModel", "refine_cartesian", "fit_model", "render_particles", "oracle_maps", "variability_coordinates"]
