"""cryoDRGN pose and CTF pickles (read and write).

- Poses: a tuple ``(rot (N, 3, 3), trans (N, 2))``, or ``rot`` alone; ``trans`` in fractions of the box.
- CTF: an ``(N, 9)`` array ``[D, apix, ΔfU (Å), ΔfV (Å), α_ast (deg), kV, Cs (mm), w, φ (deg)]``.

How cryoDRGN's arrays relate to ours (checked by the round trips in the tests and benchmarks):
cryoDRGN's rotation is our pose matrix, ``rot = R`` (it samples the volume's transform at ``k @ rot``,
i.e. at ``Rᵀ k``; checked against cryoDRGN's toy projections in the tests), and its translation is
RELION's origin shift in box fractions, ``trans = origin / (D · apix)``: the shift that, applied to the
image, centres the particle (as cryoDRGN's ``parse_pose_star`` converts it; the interop benchmark's
``cryodrgn backproject_voxel`` round trip checks the sign).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError

__all__ = ["read_poses_pkl", "write_poses_pkl", "read_ctf_pkl", "write_ctf_pkl",
           "poses_from_cryodrgn", "poses_to_cryodrgn"]


def _load(path: Path):
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as exc:
        raise InputError(path, f"not a readable pickle ({type(exc).__name__})") from None


def _numeric(obj, path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} are not numeric arrays (found {type(obj).__name__})") from None


def read_poses_pkl(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read cryoDRGN poses. Returns ``(rot (N, 3, 3) float64, trans (N, 2) box fractions or None)``.

    The rotations must be proper rotation matrices (orthonormal to 1e-3, determinant +1).
    """
    path = Path(path)
    obj = _load(path)
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2:
            raise InputError(path, f"expected (rot, trans), found a sequence of {len(obj)} items")
        rot, trans = _numeric(obj[0], path, "rotations"), _numeric(obj[1], path, "translations")
    else:
        rot, trans = _numeric(obj, path, "rotations"), None
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise InputError(path, f"rotations must have shape (N, 3, 3), found {rot.shape}")
    if trans is not None and trans.shape != (rot.shape[0], 2):
        raise InputError(path, f"translations must have shape ({rot.shape[0]}, 2), found {trans.shape}")
    if not np.isfinite(rot).all() or (trans is not None and not np.isfinite(trans).all()):
        raise InputError(path, "poses contain NaN or infinite values")
    err = np.abs(rot @ np.transpose(rot, (0, 2, 1)) - np.eye(3)).max(axis=(1, 2))
    bad = np.nonzero((err > 1e-3) | (np.linalg.det(rot) <= 0))[0]
    if len(bad):
        raise InputError(path, f"pose {bad[0] + 1} is not a rotation matrix ({len(bad)} such poses)")
    return rot, trans


def write_poses_pkl(path: str | Path, rot: np.ndarray, trans: np.ndarray) -> None:
    """Write ``(rot, trans)`` as cryoDRGN does (float32 arrays in a tuple), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump((np.asarray(rot, np.float32), np.asarray(trans, np.float32)), f)


def read_ctf_pkl(path: str | Path) -> np.ndarray:
    """Read a cryoDRGN CTF table ``(N, 9)``."""
    path = Path(path)
    ctf = _numeric(_load(path), path, "CTF parameters")
    if ctf.ndim != 2 or ctf.shape[1] != 9:
        raise InputError(path, f"CTF table must have shape (N, 9), found {ctf.shape}")
    if not np.isfinite(ctf).all():
        raise InputError(path, "CTF table contains NaN or infinite values")
    if (ctf[:, 0] < 1).any() or (ctf[:, 1] <= 0).any() or (ctf[:, 5] <= 0).any() or \
            ((ctf[:, 7] < 0) | (ctf[:, 7] >= 1)).any():
        raise InputError(path, "CTF table has impossible values (box < 1, pixel size or voltage ≤ 0, or "
                               "amplitude contrast outside [0, 1))")
    return ctf


def write_ctf_pkl(path: str | Path, ctf: np.ndarray) -> None:
    """Write an ``(N, 9)`` CTF table as float32, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(np.asarray(ctf, np.float32), f)


def poses_from_cryodrgn(rot: np.ndarray, trans: np.ndarray | None, D: int, apix: float):
    """cryoDRGN ``(rot, trans)`` → our ``(R (N, 3, 3), origin shifts (N, 2) in Å)``."""
    R = np.array(rot, dtype=np.float64)
    shifts = np.zeros((len(rot), 2)) if trans is None else np.asarray(trans) * D * apix
    return R, shifts


def poses_to_cryodrgn(R: np.ndarray, shifts_angst: np.ndarray, D: int, apix: float):
    """Our ``(R, origin shifts in Å)`` → cryoDRGN ``(rot, trans)``."""
    return np.array(R, dtype=np.float64), np.asarray(shifts_angst) / (D * apix)
