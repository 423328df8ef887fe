"""RELION particle STAR files (3.0, 3.1 and 5; read via starfile), normalised to one table.

Reading gives a :class:`ParticleTable`: one row per particle with the optics-group columns merged in
(``rlnVoltage``, ``rlnSphericalAberration``, ``rlnAmplitudeContrast``, ``rlnImagePixelSize``,
``rlnImageSize``), shifts in Å (``rlnOriginXAngst/YAngst``; RELION 3.0's pixel shifts are converted),
and helpers that give the pose angles, the CTF columns and the image locations as plain arrays (io builds
no physics objects: :func:`cryoscape.data.particles.table_poses` and :func:`~cryoscape.data.particles.table_ctf`
turn them into pose matrices and ``CTFParams``). Writing produces a
RELION 3.1 file with ``data_optics`` and ``data_particles`` blocks.

Meaning of the columns (CONVENTIONS.md): Euler angles ZYZ in degrees with ``R = Rz(psi) Ry(tilt) Rz(rot)``;
``rlnOriginX/YAngst`` is the shift that, applied to the particle image, centres the particle; defoci in Å;
``rlnDefocusAngle`` and ``rlnPhaseShift`` in degrees; images ``k@stack.mrcs`` with ``k`` 1-based.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .errors import InputError

__all__ = ["ParticleTable", "read_star", "write_star", "split_image_names", "OPTICS_COLUMNS",
           "write_micrographs_star", "read_micrographs_star"]

OPTICS_COLUMNS = ("rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
                  "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality")
POSE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
NUMERIC_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift", "rlnCtfBfactor", "rlnVoltage",
                   "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
                   "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                   "rlnOriginX", "rlnOriginY", "rlnOpticsGroup", "rlnDetectorPixelSize", "rlnMagnification")
CTF_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage", "rlnSphericalAberration",
               "rlnAmplitudeContrast")


def split_image_names(names, where=None) -> tuple[np.ndarray, np.ndarray]:
    """``"k@path"`` strings → ``(indices 0-based int64, paths str)``. A bare path means image 1."""
    idx = np.empty(len(names), dtype=np.int64)
    paths = np.empty(len(names), dtype=object)
    for i, name in enumerate(names):
        name = str(name)
        if "@" in name:
            k, p = name.split("@", 1)
            try:
                idx[i] = int(k) - 1
            except ValueError:
                raise InputError(where, f"bad rlnImageName {name!r} in row {i + 1}") from None
        else:
            idx[i], p = 0, name
        paths[i] = p
    if (idx < 0).any():
        raise InputError(where, "rlnImageName index must be ≥ 1")
    return idx, paths


@dataclass
class ParticleTable:
    """Particles of a STAR file, one row each, with optics merged in.

    Attributes:
        particles: DataFrame with every particle column plus the optics columns of its group.
        optics: DataFrame of optics groups (one synthesised group for RELION 3.0 files).
        path: the file read (image paths are relative to its folder unless absolute).
    """

    particles: pd.DataFrame
    optics: pd.DataFrame
    path: Path | None = None
    extra_blocks: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.particles)

    def require(self, columns, what: str) -> None:
        """Raise a one-line :class:`InputError` naming the missing columns (needed for ``what``)."""
        missing = [c for c in columns if c not in self.particles.columns]
        if missing:
            raise InputError(self.path, f"missing column(s) {', '.join(missing)} needed for {what}")

    @property
    def apix(self) -> np.ndarray:
        """``(N,)`` pixel sizes in Å."""
        self.require(["rlnImagePixelSize"], "the pixel size")
        return self.particles["rlnImagePixelSize"].to_numpy(dtype=np.float64, copy=True)

    @property
    def box(self) -> np.ndarray:
        """``(N,)`` image sizes in pixels (0 where the file does not say)."""
        if "rlnImageSize" not in self.particles:
            return np.zeros(len(self), dtype=np.int64)
        return self.particles["rlnImageSize"].to_numpy(dtype=np.int64, copy=True)

    def has_poses(self) -> bool:
        return all(c in self.particles.columns for c in POSE_COLUMNS)

    def euler_deg(self) -> np.ndarray:
        """``(N, 3)`` (rot, tilt, psi) in degrees (all three columns required)."""
        self.require(POSE_COLUMNS, "poses")
        return self.particles[list(POSE_COLUMNS)].to_numpy(dtype=np.float64, copy=True)

    def shifts_angst(self) -> np.ndarray:
        """``(N, 2)`` (rlnOriginXAngst, rlnOriginYAngst) in Å; zeros when absent."""
        cols = ["rlnOriginXAngst", "rlnOriginYAngst"]
        if not all(c in self.particles for c in cols):
            return np.zeros((len(self), 2))
        return self.particles[cols].to_numpy(dtype=np.float64, copy=True)

    def ctf_columns(self) -> dict:
        """The CTF of every particle as plain ``(N,)`` float64 arrays, in the units of
        :class:`cryoscape.physics.ctf.CTFParams` (angles converted to radians): ``defocus_u``,
        ``defocus_v`` (Å), ``angle_ast`` (rad), ``voltage_kv``, ``cs_mm``, ``amp_contrast``,
        ``phase_shift`` (rad; 0 when absent), ``bfactor`` (Å²; 0 when absent). io builds no physics
        objects: :func:`cryoscape.data.particles.table_ctf` turns this into ``CTFParams``."""
        self.require(CTF_COLUMNS, "the CTF")
        p = self.particles
        get = lambda c, d=0.0: p[c].to_numpy(dtype=np.float64, copy=True) if c in p else np.full(len(p), d)  # noqa: E731
        return {"defocus_u": get("rlnDefocusU"), "defocus_v": get("rlnDefocusV"),
                "angle_ast": np.deg2rad(get("rlnDefocusAngle")), "voltage_kv": get("rlnVoltage"),
                "cs_mm": get("rlnSphericalAberration"), "amp_contrast": get("rlnAmplitudeContrast"),
                "phase_shift": np.deg2rad(get("rlnPhaseShift")), "bfactor": get("rlnCtfBfactor")}

    def image_locations(self, datadir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(indices 0-based, resolved stack paths)`` of every particle's image.

        A relative stack path is looked up relative to the STAR file's folder, then the working folder;
        with ``datadir``, first ``datadir/path`` and then ``datadir/<file name>`` (for projects moved
        between machines). Raises :class:`InputError` naming the first stack that cannot be found.
        """
        self.require(["rlnImageName"], "the images")
        idx, paths = split_image_names(self.particles["rlnImageName"].to_numpy(), self.path)
        base = self.path.parent if self.path is not None else Path(".")
        resolved: dict[str, str] = {}
        for p in dict.fromkeys(paths):
            cands = []
            pp = Path(p)
            if datadir is not None:
                cands += [Path(datadir) / pp, Path(datadir) / pp.name]
            cands += [pp] if pp.is_absolute() else [base / pp, pp]
            hit = next((c for c in cands if c.is_file()), None)
            if hit is None:
                hint = " (use --datadir to say where the stacks are)" if datadir is None else ""
                raise InputError(self.path, f"image stack {p} not found{hint}")
            resolved[p] = str(hit)
        return idx, np.array([resolved[p] for p in paths], dtype=object)


def _read_blocks(path: Path) -> dict:
    import starfile
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnImageName",
                                                                         "rlnMicrographName"])
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"not a readable STAR file ({msg})") from None
    blocks = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    if not blocks:
        raise InputError(path, "no data block with a loop found (not a particle STAR file)")
    return blocks


def read_star(path: str | Path, apix: float | None = None) -> ParticleTable:
    """Read a RELION 3.0 / 3.1 / 5 particle STAR file.

    Args:
        path: the ``.star`` file.
        apix: pixel size (Å) to use when the file has none (RELION 3.0 without detector pixel size);
            when given it also overrides the file's value.
    Returns:
        A :class:`ParticleTable`.
    """
    path = Path(path)
    blocks = _read_blocks(path)
    optics = blocks.get("optics")
    if "particles" in blocks:
        parts = blocks["particles"]
    else:
        # RELION 3.0 / other tools: the block that has rlnImageName, else the first one.
        cands = [k for k, v in blocks.items() if "rlnImageName" in v.columns and k != "optics"]
        parts = blocks[cands[0]] if cands else next(v for k, v in blocks.items() if k != "optics")
    parts = parts.copy()
    if len(parts) == 0:
        raise InputError(path, "the particle block is empty")
    if optics is not None:
        if "rlnOpticsGroup" not in optics.columns:
            raise InputError(path, "data_optics block has no rlnOpticsGroup column")
        if "rlnOpticsGroup" not in parts.columns:
            if len(optics) != 1:
                raise InputError(path, "particles have no rlnOpticsGroup but there are several optics groups")
            parts["rlnOpticsGroup"] = optics["rlnOpticsGroup"].iloc[0]
        known = set(optics["rlnOpticsGroup"].tolist())
        unknown = set(parts["rlnOpticsGroup"].tolist()) - known
        if unknown:
            raise InputError(path, f"particles refer to undefined optics group(s) {sorted(unknown)}")
        dup = [c for c in optics.columns if c in parts.columns and c != "rlnOpticsGroup"]
        merged = parts.drop(columns=dup).merge(optics, on="rlnOpticsGroup", how="left", sort=False)
        merged.index = parts.index
        # Particle-level values win over the optics group's (RELION allows both).
        for c in dup:
            merged[c] = parts[c].to_numpy()
        parts = merged
    else:
        optics = _optics_from_v30(parts, path)
        if "rlnImagePixelSize" not in parts and len(optics) and "rlnImagePixelSize" in optics:
            parts["rlnImagePixelSize"] = optics["rlnImagePixelSize"].iloc[0]
        if "rlnOpticsGroup" not in parts:
            parts["rlnOpticsGroup"] = 1
    if apix is not None:
        if not (apix > 0 and math.isfinite(apix)):
            raise InputError("--apix", f"pixel size must be > 0, got {apix}")
        parts["rlnImagePixelSize"] = float(apix)
        optics = optics.copy()
        optics["rlnImagePixelSize"] = float(apix)
    for c in NUMERIC_COLUMNS:  # columns that must be numbers: text there is an error, not a crash later
        if c in parts and not pd.api.types.is_numeric_dtype(parts[c]):
            conv = pd.to_numeric(parts[c], errors="coerce")
            if conv.isna().any():
                row = int(np.nonzero(conv.isna().to_numpy())[0][0])
                raise InputError(path, f"column {c} has a non-numeric value {parts[c].iloc[row]!r} (row {row + 1})")
            parts[c] = conv
    # RELION 3.0 pixel shifts → Å.
    for ax in "XY":
        if f"rlnOrigin{ax}Angst" not in parts and f"rlnOrigin{ax}" in parts:
            if "rlnImagePixelSize" not in parts:
                raise InputError(path, f"rlnOrigin{ax} is in pixels but the pixel size is unknown (give --apix)")
            parts[f"rlnOrigin{ax}Angst"] = parts[f"rlnOrigin{ax}"] * parts["rlnImagePixelSize"]
    num = parts.select_dtypes(include=[np.number])
    bad = [c for c in num.columns if not np.isfinite(num[c].to_numpy(dtype=np.float64, copy=True)).all()]
    if bad:
        raise InputError(path, f"non-finite values (NaN/inf) in column(s) {', '.join(bad)}")
    if "rlnVoltage" in parts and (parts["rlnVoltage"] <= 0).any():
        raise InputError(path, "rlnVoltage must be > 0 kV")
    if "rlnAmplitudeContrast" in parts and ((parts["rlnAmplitudeContrast"] < 0)
                                            | (parts["rlnAmplitudeContrast"] >= 1)).any():
        raise InputError(path, "rlnAmplitudeContrast must be in [0, 1)")
    if "rlnImagePixelSize" in parts and (parts["rlnImagePixelSize"] <= 0).any():
        raise InputError(path, "pixel size must be > 0")
    extra = {k: v for k, v in blocks.items() if k not in ("optics", "particles")}
    return ParticleTable(parts.reset_index(drop=True), optics.reset_index(drop=True), path, extra)


def _optics_from_v30(parts: pd.DataFrame, path: Path) -> pd.DataFrame:
    """One synthetic optics group from a RELION 3.0 table (values of the first particle)."""
    row = {"rlnOpticsGroup": 1, "rlnOpticsGroupName": "opticsGroup1"}
    for c in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
        if c in parts:
            row[c] = float(parts[c].iloc[0])
    if "rlnImagePixelSize" in parts:
        row["rlnImagePixelSize"] = float(parts["rlnImagePixelSize"].iloc[0])
    elif "rlnDetectorPixelSize" in parts and "rlnMagnification" in parts:
        apix = parts["rlnDetectorPixelSize"] * 1e4 / parts["rlnMagnification"]
        parts["rlnImagePixelSize"] = apix
        row["rlnImagePixelSize"] = float(apix.iloc[0])
    return pd.DataFrame([row])


def _format_column(values: pd.Series) -> list[str]:
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        return [str(int(v)) for v in values]
    if pd.api.types.is_float_dtype(values):
        return [f"{v:.6f}" for v in values]
    out = []
    for v in values.astype(str):
        out.append(f'"{v}"' if (not v or any(ch.isspace() for ch in v)) else v)
    return out


def _block_text(name: str, df: pd.DataFrame) -> str:
    lines = [f"data_{name}", "", "loop_"]
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(df.columns)]
    cols = [_format_column(df[c]) for c in df.columns]
    lines += ["\t".join(row) for row in zip(*cols)]
    return "\n".join(lines) + "\n\n"


def write_star(path: str | Path, particles: pd.DataFrame, optics: pd.DataFrame) -> None:
    """Write a RELION 3.1 particle STAR (``data_optics`` + ``data_particles``) atomically.

    Optics columns are dropped from the particle block (they live in ``data_optics``). The text is a
    pure function of the tables (no time stamp), so equal inputs give byte-identical files.
    """
    if "rlnOpticsGroup" not in optics.columns:
        raise ValueError("optics table needs rlnOpticsGroup")
    optics_cols = [c for c in optics.columns if c != "rlnOpticsGroup"]
    parts = particles.drop(columns=[c for c in optics_cols if c in particles.columns])
    text = "# version 30001 (written by cryoscape)\n\n" + _block_text("optics", optics) \
        + "# version 30001\n\n" + _block_text("particles", parts)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


# ---------------------------------------------------------------------------------------------- micrographs STAR

MICROGRAPH_CTF_KEYS = ("defocus_u", "defocus_v", "angle_ast", "voltage_kv", "cs_mm", "amp_contrast", "phase_shift",
                       "bfactor")


def _ctf_value(ctf, key: str, n: int) -> np.ndarray:
    """``(n,)`` float64 values of CTF field ``key`` from a ``CTFParams``-like object (attributes) or a dict of
    columns (io imports no physics: the object is read by its attribute names)."""
    v = ctf[key] if isinstance(ctf, dict) else getattr(ctf, key)
    v = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float64).reshape(-1)
    if v.size == 1:
        v = np.full(n, float(v[0]))
    if v.size != n:
        raise ValueError(f"CTF field {key} has {v.size} values for {n} micrographs")
    return v


def write_micrographs_star(path: str | Path, names, ctf, apix: float) -> None:
    """Write a RELION 3.1+ micrographs STAR (as CtfFind's ``micrographs_ctf.star``), atomically.

    ``data_optics``: one group (rlnOpticsGroupName, rlnOpticsGroup, rlnMicrographOriginalPixelSize, rlnVoltage,
    rlnSphericalAberration, rlnAmplitudeContrast, rlnMicrographPixelSize); ``data_micrographs``: one row per
    micrograph (rlnMicrographName, rlnOpticsGroup, rlnDefocusU, rlnDefocusV, rlnCtfAstigmatism = |U − V|,
    rlnDefocusAngle, rlnPhaseShift, rlnCtfBfactor). Defoci in Å, angles in degrees in the file.

    Args:
        names: ``M`` micrograph names (paths as the reader should resolve them).
        ctf: a :class:`cryoscape.physics.ctf.CTFParams` with ``M`` entries (or a dict of its fields as columns,
            angles in radians); one voltage, Cs and amplitude contrast for all (one optics group).
        apix: micrograph pixel size in Å.
    """
    names = [str(n) for n in names]
    m = len(names)
    if m == 0:
        raise ValueError("no micrographs to write")
    if not (apix > 0 and math.isfinite(apix)):
        raise ValueError(f"pixel size must be > 0, got {apix}")
    col = {k: _ctf_value(ctf, k, m) for k in MICROGRAPH_CTF_KEYS}
    for k in ("voltage_kv", "cs_mm", "amp_contrast"):
        if np.ptp(col[k]) > 0:
            raise ValueError(f"one optics group: {k} must be the same for every micrograph")
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographOriginalPixelSize": [float(apix)], "rlnVoltage": [col["voltage_kv"][0]],
                           "rlnSphericalAberration": [col["cs_mm"][0]],
                           "rlnAmplitudeContrast": [col["amp_contrast"][0]], "rlnMicrographPixelSize": [float(apix)]})
    mics = pd.DataFrame({"rlnMicrographName": names, "rlnOpticsGroup": np.ones(m, dtype=int),
                         "rlnDefocusU": col["defocus_u"], "rlnDefocusV": col["defocus_v"],
                         "rlnCtfAstigmatism": np.abs(col["defocus_u"] - col["defocus_v"]),
                         "rlnDefocusAngle": np.rad2deg(col["angle_ast"]),
                         "rlnPhaseShift": np.rad2deg(col["phase_shift"]), "rlnCtfBfactor": col["bfactor"]})
    text = "# version 30001 (written by cryoscape)\n\n" + _block_text("optics", optics) \
        + "# version 30001\n\n" + _block_text("micrographs", mics)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def read_micrographs_star(path: str | Path) -> tuple[list[str], dict, float]:
    """Read a RELION micrographs STAR (3.1+: ``data_optics`` + ``data_micrographs``; also RELION 3.0's single
    block with the optics columns per row).

    Returns:
        ``(names, ctf_columns, apix)``: the ``M`` rlnMicrographName strings; the CTF as plain ``(M,)`` float64
        arrays in the units of :class:`cryoscape.physics.ctf.CTFParams` (``defocus_u``, ``defocus_v`` Å,
        ``angle_ast`` rad, ``voltage_kv``, ``cs_mm``, ``amp_contrast``, ``phase_shift`` rad, ``bfactor`` Å²; io
        builds no physics objects: ``CTFParams(**ctf_columns)``, or
        :func:`cryoscape.data.micrographs.read_micrographs_ctf`); the pixel size in Å (rlnMicrographPixelSize,
        else rlnImagePixelSize, else rlnMicrographOriginalPixelSize).

    Raises:
        InputError: naming the file: unreadable, no micrograph block or rows, missing columns (name, defoci,
        voltage, Cs, amplitude contrast, pixel size), non-numeric or non-finite values, undefined optics groups,
        several pixel sizes, or values out of range.
    """
    path = Path(path)
    blocks = _read_blocks(path)
    optics = blocks.get("optics")
    mics = blocks.get("micrographs")
    if mics is None:
        cands = [v for k, v in blocks.items() if k != "optics" and "rlnMicrographName" in v.columns]
        if not cands:
            raise InputError(path, "no data_micrographs block (no loop with rlnMicrographName)")
        mics = cands[0]
    mics = mics.copy()
    if len(mics) == 0:
        raise InputError(path, "the micrographs block is empty")
    if "rlnMicrographName" not in mics.columns:
        raise InputError(path, "missing column rlnMicrographName")
    if optics is not None:
        if "rlnOpticsGroup" not in optics.columns:
            raise InputError(path, "data_optics block has no rlnOpticsGroup column")
        if "rlnOpticsGroup" not in mics.columns:
            if len(optics) != 1:
                raise InputError(path, "micrographs have no rlnOpticsGroup but there are several optics groups")
            mics["rlnOpticsGroup"] = optics["rlnOpticsGroup"].iloc[0]
        unknown = set(mics["rlnOpticsGroup"].tolist()) - set(optics["rlnOpticsGroup"].tolist())
        if unknown:
            raise InputError(path, f"micrographs refer to undefined optics group(s) {sorted(unknown)}")
        dup = [c for c in optics.columns if c in mics.columns and c != "rlnOpticsGroup"]
        merged = mics.drop(columns=dup).merge(optics, on="rlnOpticsGroup", how="left", sort=False)
        for c in dup:  # per-micrograph values win over the optics group's
            merged[c] = mics[c].to_numpy()
        mics = merged
    apix_col = next((c for c in ("rlnMicrographPixelSize", "rlnImagePixelSize", "rlnMicrographOriginalPixelSize")
                     if c in mics.columns), None)
    need = ["rlnDefocusU", "rlnDefocusV", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"]
    missing = [c for c in need if c not in mics.columns] + ([] if apix_col else ["rlnMicrographPixelSize"])
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)} needed for the micrographs' CTF")
    numeric = need + [apix_col] + [c for c in ("rlnDefocusAngle", "rlnPhaseShift", "rlnCtfBfactor") if c in mics]
    vals = {}
    for c in numeric:
        conv = pd.to_numeric(mics[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(conv)
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise InputError(path, f"column {c} has a non-numeric or non-finite value {mics[c].iloc[row]!r} "
                                   f"(row {row + 1})")
        vals[c] = conv
    apixes = np.unique(vals[apix_col])
    if len(apixes) != 1 or apixes[0] <= 0:
        raise InputError(path, f"expected one pixel size > 0, found {apixes.tolist()}")
    if (vals["rlnVoltage"] <= 0).any():
        raise InputError(path, "rlnVoltage must be > 0 kV")
    if ((vals["rlnAmplitudeContrast"] < 0) | (vals["rlnAmplitudeContrast"] >= 1)).any():
        raise InputError(path, "rlnAmplitudeContrast must be in [0, 1)")
    names = [str(n) for n in mics["rlnMicrographName"].tolist()]
    if len(set(names)) != len(names):
        raise InputError(path, "rlnMicrographName has repeated names")
    m = len(names)
    get = lambda c: vals[c] if c in vals else np.zeros(m)  # noqa: E731
    cols = {"defocus_u": vals["rlnDefocusU"], "defocus_v": vals["rlnDefocusV"],
            "angle_ast": np.deg2rad(get("rlnDefocusAngle")), "voltage_kv": vals["rlnVoltage"],
            "cs_mm": vals["rlnSphericalAberration"], "amp_contrast": vals["rlnAmplitudeContrast"],
            "phase_shift": np.deg2rad(get("rlnPhaseShift")), "bfactor": get("rlnCtfBfactor")}
    return names, cols, float(apixes[0])
