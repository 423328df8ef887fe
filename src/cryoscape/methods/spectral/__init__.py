"""Atomic-structure heterogeneity by spectral decomposition (Esteve-Yagüe et al. 2023)."""

from .features import oracle_maps, variability_coordinates
from .graph import gaussian_affinity, normalized_laplacian, spectral_embedding
from .model import (FitConfig, LinearAngleModel, CartesianModel, fit_model, image_error, mean_power,
                    refine_cartesian, render_fourier, render_particles)
from .run import SpectralConfig, SpectralResult, default_fit, run_spectral

__all__ = ["gaussian_affinity", "normalized_laplacian", "spectral_embedding", "FitConfig", "LinearAngleModel",
           "CartesianModel", "refine_cartesian", "fit_model", "render_particles", "render_fourier", "image_error",
           "mean_power", "oracle_maps", "variability_coordinates", "SpectralConfig", "SpectralResult",
           "default_fit", "run_spectral"]
