"""Rotations and SO(3) grids (pure torch / numpy, no I/O)."""

from .rotations import (axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle, matrix_to_euler,
                        matrix_to_quaternion, quaternion_to_matrix, random_quaternions, random_rotations,
                        rotation_angle_between)
from .so3_grid import healpix_nest_to_angles, so3_grid, so3_grid_children, so3_grid_size

__all__ = [
    "axis_angle_to_matrix", "euler_to_matrix", "matrix_to_axis_angle", "matrix_to_euler",
    "matrix_to_quaternion", "quaternion_to_matrix", "random_quaternions", "random_rotations",
    "rotation_angle_between", "healpix_nest_to_angles", "so3_grid", "so3_grid_children", "so3_grid_size",
]
