"""Image formation: pure, batched, differentiable torch functions (no I/O, no global state)."""

from .ctf import CTFParams, ctf_2d, ctf_from_params, electron_wavelength
from .fourier import (fft2_centered, fft3_centered, freq_1d, freq_grid_2d, ifft2_centered, ifft3_centered,
                      irfft2_centered, rfft2_centered, rfreq_grid_2d)
from .gaussian import (atoms_to_volume, project_atoms_fourier, project_atoms_real, project_atoms_splat,
                       rotate_atoms, splat_atoms, splat_filter)
from .noise import RunningVariance, add_noise, noise_sigma
from .shift import phase_ramp, shift_images
from .slice import FourierSliceProjector

__all__ = [
    "CTFParams", "ctf_2d", "ctf_from_params", "electron_wavelength", "fft2_centered", "fft3_centered",
    "freq_1d", "freq_grid_2d", "ifft2_centered", "ifft3_centered", "irfft2_centered", "rfft2_centered",
    "rfreq_grid_2d", "atoms_to_volume", "project_atoms_fourier", "project_atoms_real", "project_atoms_splat",
    "rotate_atoms", "splat_atoms", "splat_filter",
    "RunningVariance", "add_noise", "noise_sigma", "phase_ramp", "shift_images", "FourierSliceProjector",
]
