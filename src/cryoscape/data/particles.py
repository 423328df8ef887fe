"""ParticleData: a particle stack with its poses and CTF, read lazily from a RELION STAR, a cryoSPARC
``.cs`` table, or a stack with cryoDRGN pickles.

Images stay on disk (memory-mapped MRC stacks, one or many) and are read in chunks by index. Poses are
pose matrices ``R (N, 3, 3)`` and RELION origin shifts ``(N, 2)`` in Å (the shift that centres the
particle); the CTF is a :class:`cryoscape.physics.ctf.CTFParams` or None.

Every inconsistency between the files — lengths, box, pixel sizes — is an :class:`InputError` naming the
file and the problem. A pixel size that is 0, negative or not finite is refused (from ``--apix``, a STAR
column, a pickle or an MRC header, whichever gives the size used). NaN/inf pixels are refused when read
(:meth:`ParticleData.images`) and, before a command creates any output, by the up-front scan
:meth:`ParticleData.check_finite` (``load_particles(..., check_finite=True)``).

A particle set without CTF parameters (a STAR or ``.cs`` without the defocus columns, a stack without
``--ctf``) loads with ``ctf = None``; :attr:`ParticleData.notes` then holds the one line a command prints,
e.g. ``"particles.star has no CTF columns: running CTF-free"``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..geometry.poses import Poses
from ..geometry.rotations import euler_to_matrix
from ..io.errors import InputError
from ..io.mrc import read_stack, read_stack_header
from ..physics.ctf import CTFParams

__all__ = ["ParticleData", "load_particles", "read_indices", "table_poses", "table_ctf"]

_APIX_RTOL = 0.01
OPEN_STACKS = 64
SCAN_BYTES = 64 * 2 ** 20  # bytes of pixels per block in check_finite
PARTICLE_SUFFIXES = (".star", ".cs", ".mrcs", ".mrc")


class _StackCache:
    """Memory maps of the most recently used stacks (least recently used ones are dropped)."""

    def __init__(self, size: int = OPEN_STACKS):
        self.size, self._maps = size, OrderedDict()

    def get(self, path: str) -> np.ndarray:
        if path in self._maps:
            self._maps.move_to_end(path)
            return self._maps[path]
        data, _ = read_stack(path)
        self._maps[path] = data
        if len(self._maps) > self.size:
            self._maps.popitem(last=False)  # the dropped memory map closes its file when collected
        return data


@dataclass
class ParticleData:
    """Particles ready for a method.

    Attributes:
        stacks: stack path → number of images in it (stacks are opened on demand, at most
            :data:`OPEN_STACKS` at a time, so a set spread over thousands of stacks stays within the
            limit of open files).
        stack_of: ``(N,)`` stack path of each particle. index_in_stack: ``(N,)`` 0-based.
        rotations: ``(N, 3, 3)`` float64 torch pose matrices, or None.
        origins_A: ``(N, 2)`` RELION origin shifts in Å (zeros when unknown).
        ctf: :class:`CTFParams` or None (CTF-free). apix: Å/pixel. D: box in pixels.
        source: description of the inputs, for logs.
        notes: one-line messages a command prints before it starts (e.g. that the set is CTF-free).
    """

    stacks: dict
    stack_of: np.ndarray
    index_in_stack: np.ndarray
    rotations: torch.Tensor | None
    origins_A: np.ndarray
    ctf: CTFParams | None
    apix: float
    D: int
    source: str = ""
    notes: list = field(default_factory=list)

    def __post_init__(self):
        self._cache = _StackCache()

    def __len__(self) -> int:
        return len(self.index_in_stack)

    def subset(self, indices: np.ndarray) -> "ParticleData":
        """The particles at ``indices`` (0-based), in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise InputError("--ind", "indices must be a 1-D list")
        if len(idx) == 0:
            raise InputError("--ind", "the selection is empty")
        if idx.min() < 0 or idx.max() >= len(self):
            raise InputError("--ind", f"indices out of range 0..{len(self) - 1}")
        return ParticleData(self.stacks, self.stack_of[idx], self.index_in_stack[idx],
                            None if self.rotations is None else self.rotations[torch.as_tensor(idx)],
                            self.origins_A[idx], None if self.ctf is None else self.ctf.subset(torch.as_tensor(idx)),
                            self.apix, self.D, self.source, list(self.notes))

    @property
    def poses(self) -> Poses | None:
        """The poses as :class:`cryoscape.geometry.poses.Poses` (float64, CPU; ``shift_A = −origins_A``),
        or None when the set has none."""
        if self.rotations is None:
            return None
        return Poses.from_relion(self.rotations, self.origins_A)

    def check_finite(self, block_bytes: int = SCAN_BYTES, progress=None) -> None:
        """Scan every image of the set for NaN/inf pixels, in blocks of about ``block_bytes`` read in file
        order from the memory maps (so memory stays at one block); raise :class:`InputError` naming the
        stack and the first bad image (1-based, as in ``k@stack.mrcs``). Integer stacks cannot hold
        NaN/inf and are skipped. Only the images the set refers to are checked.

        Commands call it (or ``load_particles(..., check_finite=True)``) before creating any output.
        ``progress``: optional callable ``progress(n_images_done)``.
        """
        for path in dict.fromkeys(self.stack_of):
            k = np.unique(self.index_in_stack[self.stack_of == path])
            data = self._cache.get(path)
            if not np.issubdtype(data.dtype, np.floating):
                if progress is not None:
                    progress(len(k))
                continue
            step = max(1, int(block_bytes) // max(1, data[0].nbytes))
            for start in range(0, len(k), step):
                kk = k[start:start + step]
                if kk[-1] - kk[0] + 1 == len(kk):  # a contiguous run: one sequential read
                    block = data[kk[0]:kk[-1] + 1]
                else:
                    block = data[kk]
                ok = np.isfinite(block).all(axis=(1, 2))
                if not ok.all():
                    bad = int(kk[np.argmin(ok)])
                    raise InputError(path, f"image {bad + 1} contains NaN or inf pixels")
                if progress is not None:
                    progress(len(kk))

    def images(self, sel: slice | np.ndarray) -> np.ndarray:
        """Read the images of particles ``sel`` → ``(k, D, D)`` float32 (a copy)."""
        idx = np.arange(len(self))[sel] if isinstance(sel, slice) else np.asarray(sel)
        out = np.empty((len(idx), self.D, self.D), dtype=np.float32)
        paths = self.stack_of[idx]
        for p in np.unique(paths):
            rows = np.nonzero(paths == p)[0]
            k = self.index_in_stack[idx[rows]]
            order = np.argsort(k)  # memory maps read fastest in file order
            out[rows[order]] = self._cache.get(p)[k[order]]
        if not np.isfinite(out).all():
            bad = idx[~np.isfinite(out).all(axis=(1, 2))][0]
            raise InputError(self.stack_of[bad], f"image {self.index_in_stack[bad] + 1} contains NaN or inf")
        return out


def table_poses(table) -> tuple[torch.Tensor, np.ndarray]:
    """Poses of a :class:`cryoscape.io.star.ParticleTable`: ``(R (N, 3, 3) float64 tensor, RELION origins
    (N, 2) Å)``, ``R = Rz(psi) Ry(tilt) Rz(rot)`` from the ZYZ Euler angles in degrees (CONVENTIONS.md).
    Raises :class:`InputError` naming the file when an angle column is missing."""
    R = euler_to_matrix(torch.as_tensor(np.deg2rad(table.euler_deg())))
    return R, table.shifts_angst()


def table_ctf(table) -> CTFParams:
    """:class:`CTFParams` of every particle of a :class:`cryoscape.io.star.ParticleTable` (its
    :meth:`~cryoscape.io.star.ParticleTable.ctf_columns`; angles in radians)."""
    return CTFParams(**table.ctf_columns())


def _open_stacks(paths, where) -> tuple[dict, int, float]:
    """Validate every stack once (closing it again): ``({path: n_images}, box, apix of the first)``."""
    stacks, D, apix = {}, None, None
    for p in dict.fromkeys(paths):
        n, d, a = read_stack_header(p)
        if D is None:
            D, apix = d, a
        elif d != D:
            raise InputError(p, f"images are {d} px but other stacks have {D} px")
        stacks[p] = n
    return stacks, D, apix


def read_indices(path: str | Path) -> np.ndarray:
    """Particle indices (0-based) from ``.pkl`` (cryoDRGN), ``.npy`` or a text file (one per line)."""
    import pickle
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                idx = np.asarray(pickle.load(f))
        elif path.suffix == ".npy":
            idx = np.load(path)
        else:
            idx = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except Exception as exc:
        raise InputError(path, f"cannot read indices ({type(exc).__name__})") from None
    if idx.dtype == bool:
        idx = np.nonzero(idx)[0]
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(path, "indices must be integers")
    return idx.astype(np.int64).ravel()


def _positive_apix(value, where, what: str) -> float:
    """``value`` as a float when it is a finite pixel size > 0, else :class:`InputError` at ``where``."""
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InputError(where, f"{what} must be a finite number > 0 Å, got {value}")
    return v


def _check_apix(value: float, reference: float, what: str, where, hint: str = "") -> None:
    if value > 0 and reference > 0 and abs(value - reference) > _APIX_RTOL * reference:
        raise InputError(where, f"pixel size {value:.4g} Å disagrees with {what} ({reference:.4g} Å){hint}")


def load_particles(particles: str | Path, poses: str | Path | None = None, ctf: str | Path | None = None,
                   datadir: str | Path | None = None, apix: float | None = None,
                   need_poses: bool = True, check_finite: bool = False) -> ParticleData:
    """Load a particle set from a RELION STAR file or a cryoSPARC ``.cs`` table (poses/CTF from their
    columns, unless pickles are given) or from a stack (``.mrcs``) with cryoDRGN pickles.

    Args:
        particles: ``.star``, ``.cs`` or ``.mrcs``. poses, ctf: cryoDRGN ``.pkl`` files (override the
            table's). A ``.cs`` file's poses are not converted (see :mod:`cryoscape.io.cryosparc`): give
            ``poses`` with it when poses are needed.
        datadir: where the stacks of a STAR or ``.cs`` are (paths in the file are relative to the file's
            folder unless this is given). apix: pixel size (Å) when no file states one; it overrides the
            files' value and must be a finite number > 0.
        need_poses: raise when no poses are available.
        check_finite: scan every image for NaN/inf now (:meth:`ParticleData.check_finite`).
    Returns:
        A :class:`ParticleData`; ``ctf`` is None and ``notes`` says so when the set has no CTF.
    Raises:
        InputError: naming the file (or option) and the problem, for anything inconsistent or unknown.
    """
    from ..io.cryodrgn_pkl import poses_from_cryodrgn, read_ctf_pkl, read_poses_pkl
    particles = Path(particles)
    if apix is not None:
        apix = _positive_apix(apix, "--apix", "the pixel size")
    if not particles.exists():
        raise InputError(particles, "file not found")
    if particles.is_dir():
        raise InputError(particles, "is a folder, expected a .star, .cs or .mrcs particle file")
    suffix = particles.suffix.lower()
    if suffix not in PARTICLE_SUFFIXES:
        raise InputError(particles, f"unknown particle file type {suffix or '(no suffix)'!r} (expected a RELION "
                                    ".star, a cryoSPARC .cs, or an .mrcs stack with cryoDRGN pickles)")
    R = origins = ctf_params = None
    notes = []
    if suffix in (".star", ".cs"):
        if suffix == ".star":
            from ..io.star import read_star
            table = read_star(particles, apix=apix)
        else:
            from ..io.cryosparc import read_cs
            table = read_cs(particles)  # stack paths: relative to the .cs file's folder or to datadir
            if apix is not None:
                table.particles["rlnImagePixelSize"] = apix
        idx, paths = table.image_locations(datadir)
        stacks, D, header_apix = _open_stacks(paths, particles)
        file_apix = float(table.apix[0]) if "rlnImagePixelSize" in table.particles else 0.0
        if apix is None and header_apix not in (0.0, 1.0):  # 0 and 1 Å: the usual "unset" header values
            what = "the STAR's rlnImagePixelSize" if suffix == ".star" else "the .cs file's blob/psize_A"
            _check_apix(header_apix, file_apix, what, next(iter(stacks)),
                        "; give --apix to choose")
        a = apix or file_apix or header_apix
        unknown = (f"pixel size unknown: no rlnImagePixelSize (or detector pixel size) in the file, the MRC "
                   f"header of {Path(next(iter(stacks))).name} gives none (0) and no CTF pickle does; give --apix")
        box = table.box
        if (box > 0).any() and not (box[box > 0] == D).all():
            col = "rlnImageSize" if suffix == ".star" else "blob/shape"
            raise InputError(particles, f"{col} {int(box[box > 0][0])} does not match the {D} px images")
        if "rlnImagePixelSize" in table.particles and len(np.unique(table.apix)) > 1:
            raise InputError(particles, "particles have different pixel sizes; process optics groups separately")
        if poses is None and table.has_poses():
            R, origins = table_poses(table)
        flipped = table.particles.get("rlnCtfDataArePhaseFlipped")
        if ctf is None and flipped is not None and (np.asarray(flipped, dtype=np.float64) != 0).any():
            raise InputError(particles, "the images are phase-flipped (rlnCtfDataArePhaseFlipped 1); cryoscape's "
                                        "methods model the full CTF: extract the particles without phase flipping")
        if ctf is None:
            if all(c in table.particles for c in ("rlnDefocusU", "rlnDefocusV")):
                ctf_params = table_ctf(table)
            else:
                what = "CTF columns" if suffix == ".star" else "CTF fields"
                notes.append(f"{particles.name} has no {what}: running CTF-free")
        stack_of, index_in_stack = paths, idx
    else:
        stacks, D, header_apix = _open_stacks([str(particles)], particles)
        n = stacks[str(particles)]
        a = apix or header_apix
        unknown = "pixel size unknown: the MRC header gives none (0) and no CTF pickle does; give --apix"
        stack_of, index_in_stack = np.array([str(particles)] * n, dtype=object), np.arange(n)
        if ctf is None:
            notes.append(f"{particles.name} is a stack and no CTF pickle (--ctf) was given: running CTF-free")
    n = len(index_in_stack)
    for p, i in zip(*np.unique(stack_of, return_index=True)):
        m = stacks[p]
        top = index_in_stack[stack_of == p].max()
        if top >= m:
            raise InputError(p, f"has {m} images but the particle list refers to image {top + 1}")
    if ctf is not None:
        tab = read_ctf_pkl(ctf)
        if len(tab) != n:
            raise InputError(ctf, f"has {len(tab)} rows but there are {n} particles")
        if not (tab[:, 0] == D).all():
            raise InputError(ctf, f"box {int(tab[0, 0])} does not match the {D} px images")
        _check_apix(float(tab[0, 1]), a, "the particle files", ctf)
        a = a or _positive_apix(tab[0, 1], ctf, "the pixel size (column 2)")
        ctf_params = CTFParams(tab[:, 2], tab[:, 3], np.deg2rad(tab[:, 4]), tab[:, 5], tab[:, 6], tab[:, 7],
                               np.deg2rad(tab[:, 8]))
    if not a:
        raise InputError(particles, unknown)
    a = _positive_apix(a, particles, "the pixel size")
    if header_apix and suffix not in (".star", ".cs"):
        _check_apix(header_apix, a, "--apix" if apix else "the CTF file", particles)
    if poses is not None:
        rot, trans = read_poses_pkl(poses)
        if len(rot) != n:
            raise InputError(poses, f"has {len(rot)} poses but there are {n} particles")
        Rn, origins = poses_from_cryodrgn(rot, trans, D, a)
        R = torch.as_tensor(Rn)
    if R is None:
        if need_poses:
            what = {".star": "the STAR has no rlnAngleRot/Tilt/Psi",
                    ".cs": "poses in a .cs file are not converted (their convention is unverified)"}.get(
                suffix, "a stack carries none")
            raise InputError(particles, f"no poses: {what}; give --poses")
        origins = np.zeros((n, 2))
    src = f"{particles}" + (f" + {Path(poses).name}" if poses else "") + (f" + {Path(ctf).name}" if ctf else "")
    data = ParticleData(stacks, np.asarray(stack_of, dtype=object), np.asarray(index_in_stack, dtype=np.int64), R,
                        np.asarray(origins, dtype=np.float64), ctf_params, float(a), int(D), src, notes)
    if check_finite:
        data.check_finite()
    return data
