"""cryoSPARC particle tables (``.cs``) → a :class:`~cryoscape.io.star.ParticleTable`.

A ``.cs`` file is a numpy structured array saved with ``np.save`` (one row per particle, fields named
``group/field``). :func:`read_cs` turns the image and CTF fields into the RELION columns used everywhere
else in cryoscape, so the result behaves like a table read from a STAR file:

=========================  ================================================================
cryoSPARC field            column (unit)
=========================  ================================================================
``blob/path, blob/idx``    ``rlnImageName`` = ``"{idx + 1}@{path}"`` (cryoSPARC's leading ``>``
                           on imported paths is removed; ``datadir`` is prepended if given)
``blob/psize_A``           ``rlnImagePixelSize`` (Å)
``blob/shape``             ``rlnImageSize`` (pixels; the images must be square)
``ctf/accel_kv``           ``rlnVoltage`` (kV)
``ctf/cs_mm``              ``rlnSphericalAberration`` (mm)
``ctf/amp_contrast``       ``rlnAmplitudeContrast`` (fraction)
``ctf/df1_A, ctf/df2_A``   ``rlnDefocusU``, ``rlnDefocusV`` (Å)
``ctf/df_angle_rad``       ``rlnDefocusAngle`` (degrees)
``ctf/phase_shift_rad``    ``rlnPhaseShift`` (degrees)
``ctf/bfactor``            ``rlnCtfBfactor`` (Å², when present)
``location/micrograph_path``  ``rlnMicrographName`` (when present)
``uid``                    ``csUid``
=========================  ================================================================

CTF fields are optional (a table without them simply lacks those columns, and
:meth:`ParticleTable.ctf_columns` then says which are missing); the ``blob`` fields are required.

Optics groups: the table gets one optics group per distinct combination of voltage, Cs, amplitude
contrast, pixel size and box size (one group for an ordinary single-dataset export), numbered from 1
in order of first appearance; the per-particle columns keep every particle's own values.

Poses are **not** converted. cryoSPARC stores ``alignments3D/pose`` as a rotation vector (radians) and
``alignments3D/shift`` in pixels, but which rotation it is relative to our pose matrix ``R`` (``R`` or
``Rᵀ``) and the sign of the shift could not be verified here: no .cs file with poses comes with its
images and reference map to check them against. They are kept as raw columns ``csPoseRotvec0``,
``csPoseRotvec1``, ``csPoseRotvec2`` (radians) and ``csShiftX``, ``csShiftY`` (pixels, as stored), and
:meth:`ParticleTable.has_poses` is False. Convert them only after checking the convention on data.
(For reference, cryoDRGN's ``parse_pose_csparc`` takes ``rot = exp(rotvec)ᵀ`` and ``trans = shift / D``;
that too is unverified here.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .star import ParticleTable

__all__ = ["read_cs"]

_REQUIRED = ("blob/path", "blob/idx", "blob/psize_A", "blob/shape")
_OPTICAL = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize",
            "rlnImageSize")
# cryoSPARC field → (column, factor applied to the value)
_SCALAR_FIELDS = (
    ("ctf/accel_kv", "rlnVoltage", 1.0),
    ("ctf/cs_mm", "rlnSphericalAberration", 1.0),
    ("ctf/amp_contrast", "rlnAmplitudeContrast", 1.0),
    ("ctf/df1_A", "rlnDefocusU", 1.0),
    ("ctf/df2_A", "rlnDefocusV", 1.0),
    ("ctf/df_angle_rad", "rlnDefocusAngle", 180.0 / np.pi),
    ("ctf/phase_shift_rad", "rlnPhaseShift", 180.0 / np.pi),
    ("ctf/bfactor", "rlnCtfBfactor", 1.0),
)


def _as_str(values, path: Path, field: str) -> np.ndarray:
    """Decode a bytes (or str) field to an object array of Python str."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, (bytes, np.bytes_)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(path, f"field {field} of row {i + 1} is not valid UTF-8 text") from None
        out[i] = str(v)
    return out


def _load(path: Path) -> np.ndarray:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a cryoSPARC .cs file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"not a cryoSPARC .cs file (numpy cannot load it: {msg})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        close = getattr(arr, "close", None)
        if close is not None:
            close()
        raise InputError(path, "not a cryoSPARC .cs file (a numpy archive, expected one structured array)")
    if arr.dtype.names is None:
        raise InputError(path, f"not a cryoSPARC .cs file (a plain {arr.dtype} array, expected a "
                               "structured array with named fields)")
    if arr.ndim != 1:
        raise InputError(path, f"expected a 1-D table of particles, found shape {arr.shape}")
    missing = [f for f in _REQUIRED if f not in arr.dtype.names]
    if missing:
        raise InputError(path, f"missing field(s) {', '.join(missing)} (not a cryoSPARC particle table)")
    if len(arr) == 0:
        raise InputError(path, "contains no particles")
    return arr


def read_cs(path: str | Path, datadir: str | Path | None = None) -> ParticleTable:
    """Read a cryoSPARC ``.cs`` particle table.

    Args:
        path: the ``.cs`` file.
        datadir: folder the image paths in the file are relative to (usually the cryoSPARC project
            folder). When given, relative paths become ``datadir/path`` in ``rlnImageName``; otherwise
            they are kept as written, and :meth:`ParticleTable.image_locations` looks them up relative
            to the ``.cs`` file's folder (or its own ``datadir``).
    Returns:
        A :class:`ParticleTable` (``path`` = the ``.cs`` file) with RELION columns as described in the
        module docstring; poses stay in the raw columns ``csPoseRotvec0..2`` and ``csShiftX/Y``.
    Raises:
        InputError: missing file, not a structured numpy array, missing ``blob`` fields, non-square
            images, or non-finite values.
    """
    path = Path(path)
    if datadir is not None and not Path(datadir).is_dir():
        raise InputError(datadir, "--datadir is not an existing folder")
    arr = _load(path)
    names = set(arr.dtype.names)
    n = len(arr)
    cols: dict[str, np.ndarray] = {}

    # Images.
    stacks = _as_str(arr["blob/path"], path, "blob/path")
    stacks = np.array([p[1:] if p.startswith(">") else p for p in stacks], dtype=object)
    if any(not p for p in stacks):
        raise InputError(path, "empty blob/path in some rows")
    if datadir is not None:
        stacks = np.array([p if Path(p).is_absolute() else str(Path(datadir) / p) for p in stacks],
                          dtype=object)
    idx = np.asarray(arr["blob/idx"]).astype(np.int64)
    if (idx < 0).any():
        raise InputError(path, "negative blob/idx")
    cols["rlnImageName"] = np.array([f"{k + 1}@{p}" for k, p in zip(idx, stacks)], dtype=object)
    shape = np.asarray(arr["blob/shape"]).reshape(n, -1).astype(np.int64)
    if shape.shape[1] != 2 or (shape[:, 0] != shape[:, 1]).any() or (shape <= 0).any():
        raise InputError(path, f"blob/shape must give square images, found e.g. {shape[0].tolist()}")
    cols["rlnImageSize"] = shape[:, 0]
    cols["rlnImagePixelSize"] = np.asarray(arr["blob/psize_A"], dtype=np.float64)

    # CTF (each field optional).
    for field, column, factor in _SCALAR_FIELDS:
        if field in names:
            cols[column] = np.asarray(arr[field], dtype=np.float64) * factor
    if "location/micrograph_path" in names:
        mics = _as_str(arr["location/micrograph_path"], path, "location/micrograph_path")
        cols["rlnMicrographName"] = np.array([m[1:] if m.startswith(">") else m for m in mics], dtype=object)
    if "uid" in names:
        cols["csUid"] = np.asarray(arr["uid"]).astype(np.uint64)

    # Poses: raw, unconverted (see the module docstring).
    if "alignments3D/pose" in names:
        pose = np.asarray(arr["alignments3D/pose"], dtype=np.float64).reshape(n, -1)
        if pose.shape[1] != 3:
            raise InputError(path, f"alignments3D/pose must have 3 values per particle, found {pose.shape[1]}")
        for k in range(3):
            cols[f"csPoseRotvec{k}"] = pose[:, k]
    if "alignments3D/shift" in names:
        shift = np.asarray(arr["alignments3D/shift"], dtype=np.float64).reshape(n, -1)
        if shift.shape[1] != 2:
            raise InputError(path, f"alignments3D/shift must have 2 values per particle, found {shift.shape[1]}")
        cols["csShiftX"], cols["csShiftY"] = shift[:, 0], shift[:, 1]

    parts = pd.DataFrame(cols)
    num = parts.select_dtypes(include=[np.number])
    bad = [c for c in num.columns if not np.isfinite(num[c].to_numpy(dtype=np.float64)).all()]
    if bad:
        raise InputError(path, f"non-finite values (NaN/inf) in column(s) {', '.join(bad)}")
    if (parts["rlnImagePixelSize"] <= 0).any():
        raise InputError(path, "blob/psize_A (pixel size) must be > 0")

    # Optics groups: one per distinct combination of the optical columns present.
    optical = [c for c in _OPTICAL if c in parts.columns]
    keys = list(zip(*(parts[c].tolist() for c in optical)))
    group_of: dict[tuple, int] = {}
    for key in keys:
        group_of.setdefault(key, len(group_of) + 1)
    parts["rlnOpticsGroup"] = np.array([group_of[k] for k in keys], dtype=np.int64)
    rows = []
    for key, g in group_of.items():
        row = {"rlnOpticsGroup": g, "rlnOpticsGroupName": f"opticsGroup{g}"}
        row.update(dict(zip(optical, key)))
        row["rlnImageSize"] = int(row["rlnImageSize"])
        row["rlnImageDimensionality"] = 2
        rows.append(row)
    optics = pd.DataFrame(rows)
    return ParticleTable(parts, optics, path)
