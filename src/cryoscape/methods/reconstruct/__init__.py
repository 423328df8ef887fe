"""Homogeneous reconstruction: direct Fourier inversion with half maps (:mod:`.fourier_inversion`)."""

from .fourier_inversion import BackprojectConfig, BackprojectResult, backproject, check_config, split_halves

__all__ = ["BackprojectConfig", "BackprojectResult", "backproject", "check_config", "split_halves"]
