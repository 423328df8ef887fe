"""Particle coordinate files, read and written: RELION STAR (one file per micrograph, one file for many
micrographs, and RELION 4/5's index of coordinate files), EMAN ``.box``, Topaz text and crYOLO ``.cbox``.

Our convention (CONVENTIONS.md): a particle centre is ``(x, y)`` float64 in micrograph pixels, 0-based pixel
centres, ``x`` the column and ``y`` the row, so pixel ``[r, c]`` of an ``(H, W)`` micrograph array (rows as
stored in the MRC file) is the point ``(x, y) = (c, r)``. Files are converted to it here and nowhere else.

What each format means, and where that comes from
-------------------------------------------------
- **RELION** ``rlnCoordinateX/Y``: the 0-based index of the micrograph pixel (column, row of the array as
  stored) that becomes the box centre ``D // 2`` on extraction; fractional values are allowed in the file.
  So ours = RELION's, unchanged. Source: RELION ``src/preprocessing.cpp``,
  ``Preprocessing::extractParticlesFromOneFrame``: ``xpos = (long int) rlnCoordinateX``, the window runs from
  ``xpos + FIRST_XMIPP_INDEX(D) = xpos - D/2`` to ``xpos + LAST_XMIPP_INDEX(D)`` on the micrograph array
  (logical origin 0), and the edge filling compares ``j + xpos`` with ``0`` and ``XSIZE - 1``, so box pixel
  ``D // 2`` is micrograph pixel ``xpos``, counted from 0. RELION's pickers write the same index
  (``src/autopicker.cpp``: a score-map peak at array column ``jmax`` is written as
  ``jmax - FIRST_XMIPP_INDEX(size)`` for a map with a centred logical origin). RELION truncates a fractional
  coordinate when it extracts (and re-extraction with re-centring moves the rounded shift into the
  coordinate); we keep the fraction.
- **RELION index of coordinate files** (RELION 4/5, the ``autopick.star`` / ``manualpick.star`` of a picking
  job): a ``data_coordinate_files`` block with ``rlnMicrographName`` and ``rlnMicrographCoordinates`` (the path
  of each micrograph's coordinate STAR, relative to the project folder). Sources: ``src/autopicker.cpp``
  (``generatePDFLogfile``), ``src/preprocessing.cpp`` (``--coord_list``), ``src/metadata_label.h``.
- **RELION many-micrograph STAR**: any block with ``rlnMicrographName`` + ``rlnCoordinateX/Y`` (e.g. the
  ``data_particles`` block of a particle STAR written by extraction), same coordinate meaning as above.
- **EMAN** ``.box``: one line per particle, ``x  y  w  h`` (tab separated), ``(x, y)`` the lower-left corner of
  the box = its smallest column and row index, in the same pixel frame as RELION (no flip of y for MRC
  micrographs); centre ``= corner + w // 2``. Sources: RELION ``Preprocessing::readCoordinates``
  (``xpos = x + w / 2`` in integers), Topaz ``topaz/utils/conversions.py`` (``boxes_to_coordinates``:
  ``x_lo + width // 2``; ``coordinates_to_boxes``: ``x - width // 2``; "EMAN2 only inverts the y-axis for
  .tiff images"), EMAN2 ``programs/e2boxer.py`` (``write_boxfiles``: ``int(x - box/2)``) and
  ``programs/e2import.py`` (RELION coordinates imported unchanged as EMAN2 box centres). The corners are
  integers (EMAN2 writes integers, RELION reads them with ``textToInteger``): we write
  ``corner = round(x) - box // 2`` (round half up), so a sub-pixel centre is rounded to a whole pixel; reading
  accepts fractional corners (crYOLO writes them). For an odd box EMAN2's importer adds ``w / 2`` (half a
  pixel more); we follow RELION and Topaz (``w // 2``), which agrees with extraction's box centre ``D // 2``.
- **Topaz** text: tab separated with a header, ``image_name  x_coord  y_coord  [score]``; "coordinates index
  images from the top left" (Topaz README, "File formats"): ``x_coord`` the column, ``y_coord`` the row, both
  0-based (``topaz/algorithms.py``, ``non_maximum_suppression``: ``x = i % width``, ``y = i // width``;
  ``topaz/utils/data/memory_mapped_data.py`` keeps ``0 <= x_coord < width``). ``image_name`` is the image's
  file name without folder and extension (``topaz/extract.py``). Topaz writes integers
  (``np.round(coords * scale).astype(int)``) and rounds targets to integers for training; RELION's Topaz
  wrapper takes ``x_coord`` (times the downscaling) as ``rlnCoordinateX`` unchanged
  (``AutoPicker::readTopazCoordinates``). We write rounded integers and the score with full precision, and
  read fractional values.
- **crYOLO** ``.cbox`` (a STAR file since crYOLO 1.8): ``data_global`` (``_cbox_format_version 1.0``),
  ``data_cryolo`` with ``_CoordinateX _CoordinateY _CoordinateZ _Width _Height _Depth _EstWidth _EstHeight
  _Confidence _NumBoxes _Angle`` and an empty ``data_cryolo_include``; missing values are ``<NA>``.
  ``_CoordinateX/Y`` is the lower-left corner and the centre is ``corner + width / 2`` in floats, as crYOLO's
  own RELION writer computes it (``cryolo/CoordsIO.py``, ``write_star_file``:
  ``rlnCoordinateX = box.x + box.w / 2``); ``_Confidence`` is the score. Sub-pixel values are kept. Older
  ``.cbox`` files are whitespace columns ``x y w h confidence est_w est_h`` (``read_cbox_boxfile_old``);
  both are read, the STAR form is written.

Files and names
---------------
Formats ``"relion"``, ``"eman"`` and ``"cryolo"`` hold one micrograph per file; its name is ``micrograph=``
or the file's stem (a RELION file whose block has ``rlnMicrographName`` names itself). ``"relion-multi"`` and
``"topaz"`` hold many. Writing a per-micrograph format to a path with the format's suffix writes that one file
(one micrograph at most); any other path is a folder that receives ``<name><suffix>`` per micrograph, where
``<name>`` is :func:`micrograph_key` of the micrograph, plus, for RELION, the index
``coordinate_files.star``. Writes are atomic (temporary file + rename; several files are renamed only once
all are written) and refuse to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, check_can_write
from .errors import InputError

__all__ = ["Coordinates", "read_coordinates", "write_coordinates", "micrograph_key", "FORMATS", "INDEX_NAME"]

FORMATS = ("relion", "relion-multi", "eman", "topaz", "cryolo")
PER_MICROGRAPH = ("relion", "eman", "cryolo")
SUFFIX = {"relion": ".star", "relion-multi": ".star", "eman": ".box", "topaz": ".txt", "cryolo": ".cbox"}
INDEX_NAME = "coordinate_files.star"
FOM = "rlnAutopickFigureOfMerit"
CBOX_COLUMNS = ("CoordinateX", "CoordinateY", "CoordinateZ", "Width", "Height", "Depth", "EstWidth", "EstHeight",
                "Confidence", "NumBoxes", "Angle")
_EXTENSIONS = {".mrc", ".mrcs", ".tif", ".tiff", ".eer", ".dm4", ".hdf", ".png", ".jpg", ".jpeg", ".npy",
               ".star", ".box", ".cbox", ".txt"}
_STAR_FLOAT = "%.12g"


def micrograph_key(name) -> str:
    """The name a micrograph is known by across formats: its file name without folders and without an image or
    coordinate-file extension (``"Movies/mic_001.mrc"`` → ``"mic_001"``), as Topaz names images."""
    base = re.split(r"[\\/]", str(name))[-1]
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in _EXTENSIONS and stem else base


@dataclass
class Coordinates:
    """Particle positions on one or more micrographs (``P`` particles).

    Attributes:
        micrograph: ``(P,)`` str, the micrograph of each particle (the name as in the file, or as given).
        xy: ``(P, 2)`` float64 ``(x, y)`` in pixels, 0-based pixel centres, ``x`` the column (our convention).
        score: ``(P,)`` float64 figure of merit (higher = more confident), or None when the picks carry none.
    """

    micrograph: np.ndarray
    xy: np.ndarray
    score: np.ndarray | None = None

    def __post_init__(self):
        xy = np.asarray(self.xy, dtype=np.float64)
        if xy.size == 0:
            xy = xy.reshape(0, 2)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"xy must be (P, 2), got {xy.shape}")
        mic = np.asarray(self.micrograph, dtype=str)
        if mic.ndim == 0:
            mic = np.full(len(xy), str(mic))
        if mic.shape != (len(xy),):
            raise ValueError(f"micrograph must be ({len(xy)},), got {mic.shape}")
        score = None
        if self.score is not None:
            score = np.asarray(self.score, dtype=np.float64).reshape(-1)
            if score.shape != (len(xy),):
                raise ValueError(f"score must be ({len(xy)},), got {score.shape}")
        self.micrograph, self.xy, self.score = mic, xy, score

    def __len__(self) -> int:
        return len(self.xy)

    @classmethod
    def for_micrograph(cls, name: str, xy, score=None) -> "Coordinates":
        """Picks of one micrograph: ``xy`` ``(n, 2)``, ``score`` ``(n,)`` or None."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return cls(np.full(len(xy), str(name)), xy, score)

    @classmethod
    def concat(cls, parts) -> "Coordinates":
        """Join several sets (in order). Scores are kept when every non-empty part has them."""
        parts = list(parts)
        if not parts:
            return cls(np.zeros(0, dtype=str), np.zeros((0, 2)), None)
        filled = [p for p in parts if len(p)]
        with_score = [p.score is not None for p in filled]
        if any(with_score) and not all(with_score):
            raise ValueError("cannot join coordinates with and without scores")
        score = np.concatenate([p.score for p in filled]) if filled and all(with_score) else None
        if not filled and all(p.score is not None for p in parts):
            score = np.zeros(0)
        return cls(np.concatenate([p.micrograph for p in parts]), np.concatenate([p.xy for p in parts]), score)

    def names(self) -> list[str]:
        """The micrographs present, in order of first appearance."""
        _, first = np.unique(self.micrograph, return_index=True)
        return [str(self.micrograph[i]) for i in np.sort(first)]

    def take(self, index) -> "Coordinates":
        """The particles selected by a boolean mask or integer indices."""
        return Coordinates(self.micrograph[index], self.xy[index],
                           None if self.score is None else self.score[index])

    def of(self, name: str) -> "Coordinates":
        """The particles of micrograph ``name`` (exact name)."""
        return self.take(self.micrograph == str(name))

    def groups(self):
        """Yield ``(name, Coordinates)`` per micrograph, in order of first appearance."""
        for name in self.names():
            yield name, self.of(name)


# -- reading -----------------------------------------------------------------------------------------------------
def read_coordinates(path: str | Path, fmt: str | None = None, *, micrograph: str | None = None,
                     box: int | None = None) -> Coordinates:
    """Read a coordinate file (or a folder of per-micrograph files) into our convention.

    Args:
        path: the file; or a folder of per-micrograph files (all files with the format's suffix, sorted by
            name; for RELION, the folder's ``coordinate_files.star`` index when there is one).
        fmt: one of :data:`FORMATS`; None: from the extension (``.box`` eman, ``.cbox`` cryolo, ``.txt``/``.tsv``
            topaz) or, for ``.star``, from the content (an index, a block with ``rlnMicrographName``, or a
            per-micrograph block).
        micrograph: the micrograph's name for per-micrograph formats (default: the file stem).
        box: box size (px) to assume for EMAN/crYOLO rows whose width/height is missing; else unused.

    Returns:
        :class:`Coordinates` (``score`` from ``rlnAutopickFigureOfMerit``, Topaz ``score`` or crYOLO
        ``_Confidence``; None when the file has none).

    Raises:
        InputError: missing file, unknown format or extension, missing columns, non-numeric or non-finite
            coordinates or scores, empty micrograph names.
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise InputError(path, f"unknown coordinate format {fmt!r} (one of {', '.join(FORMATS)})")
    if path.is_dir():
        return _read_folder(path, fmt, box)
    if not path.is_file():
        raise InputError(path, "coordinate file not found")
    fmt = fmt or _format_from_name(path)
    if micrograph is not None and fmt not in PER_MICROGRAPH:
        raise InputError("micrograph", f"names the micrograph of a per-micrograph file, not of a {fmt} file")
    if micrograph is not None and not str(micrograph).strip():
        raise InputError("micrograph", "empty micrograph name")
    name = str(micrograph) if micrograph is not None else path.stem
    if fmt in ("relion", "relion-multi"):
        return _read_relion(path, fmt, micrograph)
    if fmt == "eman":
        return _read_eman(path, name, box)
    if fmt == "topaz":
        return _read_topaz(path)
    return _read_cbox(path, name, box)


def _format_from_name(path: Path) -> str:
    ext = path.suffix.lower()
    formats = {".star": "relion", ".box": "eman", ".cbox": "cryolo", ".txt": "topaz", ".tsv": "topaz"}
    if ext not in formats:
        raise InputError(path, f"unknown coordinate file extension {ext or '(none)'!r}: use .star, .box, .cbox "
                               "or .txt, or name the format")
    return formats[ext]


def _read_folder(folder: Path, fmt: str | None, box) -> Coordinates:
    if fmt in (None, "relion") and (folder / INDEX_NAME).is_file():
        return _read_relion(folder / INDEX_NAME, "relion", None)
    if fmt is None:
        found = {_format_from_name(p) for p in folder.iterdir()
                 if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".star", ".box", ".cbox")}
        if len(found) != 1:
            raise InputError(folder, "cannot tell the coordinate format of this folder (name it)")
        fmt = found.pop()
    if fmt not in PER_MICROGRAPH:
        raise InputError(folder, f"a folder holds per-micrograph files; {fmt} is one file for many micrographs")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() == SUFFIX[fmt])
    return Coordinates.concat([read_coordinates(p, fmt, box=box) for p in files])


def _star_blocks(path: Path) -> dict:
    import starfile
    try:
        blocks = starfile.read(path, always_dict=True,
                               parse_as_string=["rlnMicrographName", "rlnMicrographCoordinates"])
    except Exception as e:  # starfile raises many kinds on malformed text
        raise InputError(path, f"not a readable STAR file ({type(e).__name__}: {e})".splitlines()[0]) from None
    return {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}


def _numbers(values, path, column: str) -> np.ndarray:
    """A column → finite float64, or InputError naming the column and the first bad row."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raw = pd.Series(values).iloc[i]
        raise InputError(path, f"{column} must be a finite number, got {raw!r} in row {i + 1}")
    return v


def _scores(values, path, column: str) -> np.ndarray | None:
    """A score column → float64, None when every value is missing; a partly missing or non-finite one is bad."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    if len(v) and np.isnan(v).all():
        return None
    return _numbers(values, path, column)


def _names(values, path, column: str) -> np.ndarray:
    s = pd.Series(values)
    names = s.astype(str).str.strip()
    bad = s.isna().to_numpy() | (names == "").to_numpy()
    if bad.any():
        raise InputError(path, f"empty {column} in row {int(np.flatnonzero(bad)[0]) + 1}")
    return names.to_numpy(dtype=str)


def _read_relion(path: Path, fmt: str, micrograph: str | None) -> Coordinates:
    blocks = _star_blocks(path)
    index = [df for df in blocks.values() if "rlnMicrographCoordinates" in df.columns]
    if index:
        if micrograph is not None:
            raise InputError("micrograph", f"{path} is an index of coordinate files; it names its micrographs")
        return _read_index(path, index[0])
    xy_cols = ("rlnCoordinateX", "rlnCoordinateY")
    candidates = [(k, df) for k, df in blocks.items() if all(c in df.columns for c in xy_cols)]
    if fmt == "relion-multi":
        candidates = [(k, df) for k, df in candidates if "rlnMicrographName" in df.columns]
        need = "rlnMicrographName, rlnCoordinateX and rlnCoordinateY"
    else:
        need = "rlnCoordinateX and rlnCoordinateY"
    if not candidates:
        raise InputError(path, f"no data block with {need}")
    candidates.sort(key=lambda kv: kv[0] != "particles")  # a particle STAR's data_particles first
    df = candidates[0][1]
    xy = np.stack([_numbers(df[c], path, c) for c in xy_cols], axis=1) if len(df) else np.zeros((0, 2))
    score = _scores(df[FOM], path, FOM) if FOM in df.columns and len(df) else None
    if micrograph is not None:
        mic = np.full(len(df), str(micrograph))
    elif "rlnMicrographName" in df.columns:
        mic = _names(df["rlnMicrographName"], path, "rlnMicrographName")
    else:
        mic = np.full(len(df), path.stem)
    return Coordinates(mic, xy, score)


def _resolve_listed(index_path: Path, listed: str) -> Path:
    """A path listed in an index: as given (RELION runs in its project folder), beside the index, or relative to
    any folder above the index (the project folder)."""
    p = Path(listed)
    if p.is_absolute():
        return p
    for base in (Path.cwd(), index_path.parent, *index_path.resolve().parents):
        if (base / p).is_file():
            return base / p
    return index_path.parent / p


def _read_index(path: Path, df: pd.DataFrame) -> Coordinates:
    for c in ("rlnMicrographName", "rlnMicrographCoordinates"):
        if c not in df.columns:
            raise InputError(path, f"index of coordinate files without column {c}")
    mics = _names(df["rlnMicrographName"], path, "rlnMicrographName") if len(df) else []
    files = _names(df["rlnMicrographCoordinates"], path, "rlnMicrographCoordinates") if len(df) else []
    parts = []
    for mic, listed in zip(mics, files):
        f = _resolve_listed(path, listed)
        if not f.is_file():
            raise InputError(f, f"coordinate file listed in {path} not found")
        ext = f.suffix.lower()
        if ext not in (".star", ".box"):
            raise InputError(f, f"listed in {path}: only .star and .box coordinate files are read")
        parts.append(read_coordinates(f, "relion" if ext == ".star" else "eman", micrograph=mic))
    return Coordinates.concat(parts)


def _text_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({type(e).__name__})") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def _float(word: str, path: Path, n: int, what: str) -> float:
    try:
        v = float(word)
    except ValueError:
        raise InputError(path, f"line {n}: {what} must be a number, got {word!r}") from None
    if not np.isfinite(v):
        raise InputError(path, f"line {n}: {what} must be finite, got {word!r}")
    return v


def _box_size(values: np.ndarray, box, path: Path, what: str) -> np.ndarray:
    """Width/height per row: the file's value, or ``box`` where the file has none; positive."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    if missing.any():
        if box is None:
            raise InputError(path, f"{what} missing in row {int(np.flatnonzero(missing)[0]) + 1} (give box=)")
        values = np.where(missing, float(box), values)
    if (~np.isfinite(values) | (values <= 0)).any():
        raise InputError(path, f"{what} must be a positive finite number")
    return values


def _read_eman(path: Path, name: str, box) -> Coordinates:
    rows = []
    for n, words in _text_rows(path):
        if len(words) < 2 or (len(words) < 4 and box is None):
            raise InputError(path, f"line {n}: expected x y width height, got {len(words)} value(s)")
        v = [_float(w, path, n, what) for w, what in zip(words[:4], ("x", "y", "width", "height"))]
        rows.append(v + [np.nan] * (4 - len(v)))
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    w = _box_size(a[:, 2], box, path, "width")
    h = _box_size(a[:, 3], box, path, "height")
    xy = np.stack([a[:, 0] + np.floor(w / 2), a[:, 1] + np.floor(h / 2)], axis=1)
    return Coordinates(np.full(len(a), name), xy, None)


def _read_topaz(path: Path) -> Coordinates:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({type(e).__name__})") from None
    if not lines:
        raise InputError(path, "empty Topaz file (expected a header: image_name x_coord y_coord [score])")
    sep = "\t" if "\t" in lines[0] else r"\s+"
    try:
        df = pd.read_csv(_io.StringIO("\n".join(lines)), sep=sep, dtype={"image_name": str}, engine="python")
    except Exception as e:
        raise InputError(path, f"not a readable table ({type(e).__name__})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("image_name", "x_coord", "y_coord") if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)} (Topaz header: image_name x_coord y_coord "
                               "[score])")
    if not len(df):
        return Coordinates(np.zeros(0, dtype=str), np.zeros((0, 2)), np.zeros(0) if "score" in df else None)
    xy = np.stack([_numbers(df[c], path, c) for c in ("x_coord", "y_coord")], axis=1)
    score = _scores(df["score"], path, "score") if "score" in df.columns else None
    return Coordinates(_names(df["image_name"], path, "image_name"), xy, score)


def _read_cbox(path: Path, name: str, box) -> Coordinates:
    try:
        is_star = any(line.lstrip().startswith("data_") for line in path.read_text().splitlines())
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({type(e).__name__})") from None
    if not is_star:  # crYOLO < 1.8: x y w h [confidence est_w est_h]
        rows = []
        for n, words in _text_rows(path):
            if len(words) < 4:
                raise InputError(path, f"line {n}: expected x y width height [confidence ...]")
            rows.append([_float(w, path, n, what) for w, what in
                         zip(words[:5], ("x", "y", "width", "height", "confidence"))] + [np.nan] * (5 - len(words)))
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        df = pd.DataFrame(a, columns=["CoordinateX", "CoordinateY", "Width", "Height", "Confidence"])
    else:
        blocks = _star_blocks(path)
        if "cryolo" not in blocks:
            raise InputError(path, "no data_cryolo block (crYOLO .cbox)")
        df = blocks["cryolo"]
    for c in ("CoordinateX", "CoordinateY"):
        if c not in df.columns:
            raise InputError(path, f"missing column _{c}")
    if not len(df):
        return Coordinates(np.zeros(0, dtype=str), np.zeros((0, 2)), None)
    if "CoordinateZ" in df.columns and np.isfinite(pd.to_numeric(df["CoordinateZ"], errors="coerce")).any():
        raise InputError(path, "3-D (tomogram) .cbox coordinates are not supported")
    corner = np.stack([_numbers(df[c], path, f"_{c}") for c in ("CoordinateX", "CoordinateY")], axis=1)
    size = [pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64) if c in df.columns
            else np.full(len(df), np.nan) for c in ("Width", "Height")]
    w = _box_size(size[0], box, path, "_Width")
    h = _box_size(size[1], box, path, "_Height")
    score = _scores(df["Confidence"], path, "_Confidence") if "Confidence" in df.columns else None
    xy = corner + np.stack([w, h], axis=1) / 2
    return Coordinates(np.full(len(df), name), xy, score)


# -- writing -----------------------------------------------------------------------------------------------------
def write_coordinates(path: str | Path, coords: Coordinates, fmt: str | None = None, *, box: int | None = None,
                      overwrite: bool = False) -> list[Path]:
    """Write coordinates in a format others read (see the module docstring for each format's meaning).

    Args:
        path: a file, or (per-micrograph formats, any path without the format's suffix) a folder that receives
            one ``<micrograph_key><suffix>`` file per micrograph (+ ``coordinate_files.star`` for RELION).
        coords: the particles (our convention).
        fmt: one of :data:`FORMATS`; None: from the suffix (``.star`` relion-multi, ``.box``, ``.cbox``, ``.txt``).
        box: box size in pixels, needed for ``"eman"`` and ``"cryolo"`` (width and height of every box).
        overwrite: replace existing files (otherwise an existing target is an error and nothing is written).

    Returns:
        The files written. EMAN and Topaz coordinates are rounded to whole pixels (half up); EMAN drops scores.

    Raises:
        InputError: unknown format, missing or bad ``box``, several micrographs for a single-file path, names
            that collide, an existing file without ``overwrite``, non-finite coordinates or scores.
    """
    path = Path(path)
    if fmt is None:
        ext = path.suffix.lower()
        fmt = {".star": "relion-multi", ".box": "eman", ".cbox": "cryolo", ".txt": "topaz"}.get(ext)
        if fmt is None:
            raise InputError(path, f"cannot tell the coordinate format from {ext or 'no extension'!r}: name it")
    if fmt not in FORMATS:
        raise InputError(path, f"unknown coordinate format {fmt!r} (one of {', '.join(FORMATS)})")
    if len(coords) and not np.isfinite(coords.xy).all():
        raise InputError(path, "coordinates must be finite")
    if coords.score is not None and not np.isfinite(coords.score).all():
        raise InputError(path, "scores must be finite")
    if any(not n.strip() for n in coords.micrograph):
        raise InputError(path, "empty micrograph name")
    if fmt in ("eman", "cryolo"):
        if box is None or int(box) != box or box <= 0:
            raise InputError(path, f"writing {fmt} boxes needs the box size in pixels (box=, a positive integer)")
        box = int(box)
    if fmt in PER_MICROGRAPH:
        if path.suffix.lower() == SUFFIX[fmt] and not path.is_dir():
            names = coords.names()
            if len(names) > 1:
                raise InputError(path, f"holds {len(names)} micrographs: give a folder to write one file each")
            files = {path: _text(fmt, coords, box)}
        else:
            if path.exists() and not path.is_dir():
                raise InputError(path, "is a file; per-micrograph coordinates need a folder here")
            files = _per_micrograph_files(path, coords, fmt, box)
    else:
        if path.is_dir():
            raise InputError(path, f"is a folder; {fmt} coordinates are one file")
        files = {path: _text(fmt, coords, box)}
    for p in files:
        check_can_write(p, overwrite)
    with contextlib.ExitStack() as stack:  # all temporary files written first, renamed together at the end
        for p, text in files.items():
            tmp = stack.enter_context(atomic_path(p))
            Path(tmp).write_text(text)
    return list(files)


def _per_micrograph_files(folder: Path, coords: Coordinates, fmt: str, box) -> dict[Path, str]:
    files: dict[Path, str] = {}
    owner: dict[str, str] = {}
    index_rows = []
    for name, part in coords.groups():
        fname = micrograph_key(name) + SUFFIX[fmt]
        if fname in owner or (fmt == "relion" and fname == INDEX_NAME):
            other = owner.get(fname, "the RELION index")
            raise InputError(folder, f"micrographs {other!r} and {name!r} would both be written to {fname}")
        owner[fname] = name
        files[folder / fname] = _text(fmt, part, box)
        index_rows.append((name, str(folder / fname)))
    if fmt == "relion" and index_rows:
        df = pd.DataFrame(index_rows, columns=["rlnMicrographName", "rlnMicrographCoordinates"])
        files[folder / INDEX_NAME] = _star_text({"coordinate_files": df})
    return files


def _round_half_up(v: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.int64)


def _star_text(blocks: dict) -> str:
    from starfile.writer import StarWriter
    return StarWriter(blocks, float_format=_STAR_FLOAT).to_string()


def _text(fmt: str, c: Coordinates, box) -> str:
    if fmt in ("relion", "relion-multi"):
        cols = {"rlnCoordinateX": c.xy[:, 0], "rlnCoordinateY": c.xy[:, 1]}
        if c.score is not None:
            cols[FOM] = c.score
        df = pd.DataFrame(cols)
        if fmt == "relion":
            return _star_text({"": df})
        df.insert(0, "rlnMicrographName", c.micrograph)
        return _star_text({"particles": df})
    if fmt == "eman":
        corner = _round_half_up(c.xy) - box // 2
        return "".join(f"{x}\t{y}\t{box}\t{box}\n" for x, y in corner)
    if fmt == "topaz":
        xy = _round_half_up(c.xy)
        head = "image_name\tx_coord\ty_coord" + ("\tscore" if c.score is not None else "") + "\n"
        names = [micrograph_key(n) for n in c.micrograph]
        if c.score is None:
            return head + "".join(f"{n}\t{x}\t{y}\n" for n, (x, y) in zip(names, xy))
        return head + "".join(f"{n}\t{x}\t{y}\t{float(s)!r}\n" for n, (x, y), s in zip(names, xy, c.score))
    # cryolo: corner = centre - box / 2, sub-pixel kept
    n = len(c)
    nan = np.full(n, np.nan)
    df = pd.DataFrame({"CoordinateX": c.xy[:, 0] - box / 2, "CoordinateY": c.xy[:, 1] - box / 2,
                       "CoordinateZ": nan, "Width": np.full(n, box), "Height": np.full(n, box), "Depth": nan,
                       "EstWidth": nan, "EstHeight": nan,
                       "Confidence": nan if c.score is None else c.score, "NumBoxes": nan, "Angle": nan},
                      columns=list(CBOX_COLUMNS))
    return _star_text({"global": {"cbox_format_version": "1.0"}, "cryolo": df,
                       "cryolo_include": pd.DataFrame({"slice_index": np.zeros(0)})})
