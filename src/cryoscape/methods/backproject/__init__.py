"""Homogeneous reconstruction by direct Fourier inversion, with half maps and FSC."""

from .core import BackprojectConfig, BackprojectResult, backproject, write_result

__all__ = ["BackprojectConfig", "BackprojectResult", "backproject", "write_result"]
