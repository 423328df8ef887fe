"""MRC maps and MRCS stacks (via mrcfile), validated on read and written atomically.

Volumes are ``(D, D, D)`` float32 indexed ``[z, y, x]``; stacks are ``(N, D, D)`` indexed ``[n, y, x]``.
The voxel size in the header is the pixel size in Å; the origin is written as 0.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from .atomic import atomic_path
from .errors import InputError

__all__ = ["read_map", "read_stack", "read_stack_header", "write_map", "write_stack", "StackWriter", "StackFile",
           "read_header_apix", "read_micrograph", "write_micrograph"]


def _open(path: str | Path, mmap: bool):
    """Open an MRC file read-only. Files from older tools that lack the ``MAP`` id string are accepted
    when their header and data size are consistent (mrcfile's permissive mode); anything else is an
    :class:`InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected an MRC file")
    if path.stat().st_size < 1024:
        raise InputError(path, "not an MRC file (shorter than the 1024-byte header)")
    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        mrc, problems = _open_recording(opener, path, permissive=False)
        if not problems:
            return mrc
        mrc.close()
        strict_msg = problems[0]
    except Exception as exc:
        strict_msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    header_problem = _header_problem(path)
    if header_problem:
        raise InputError(path, f"not a readable MRC file ({header_problem})")
    try:
        mrc, problems = _open_recording(opener, path, permissive=True)
    except Exception:
        raise InputError(path, f"not a readable MRC file ({strict_msg})") from None
    tolerated = ("map id", "machine stamp", "rms", "exttyp", "nversion")
    if mrc.data is None or any(not any(t in p.lower() for t in tolerated) for p in problems):
        mrc.close()
        raise InputError(path, f"not a readable MRC file ({problems[0] if problems else strict_msg})")
    return mrc


def _open_recording(opener, path: Path, permissive: bool):
    """Open with mrcfile and return ``(mrc, problems)``: the first lines of the RuntimeWarnings mrcfile
    raised about this file. Warnings are recorded, never turned into errors, and only mrcfile's count: a
    warning from elsewhere that fires meanwhile (a lazy import, an object garbage-collected, even an
    earlier mrcfile object flushing its statistics) says nothing about this file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mrc = opener(path, mode="r", permissive=permissive)
    problems = [str(w.message).splitlines()[0] for w in caught
                if issubclass(w.category, RuntimeWarning) and "mrcfile" in str(w.filename)
                and not str(w.message).startswith("Data array contains")]
    return mrc, problems


_MODE_BYTES = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}


def _header_problem(path: Path) -> str | None:
    """Check the raw 1024-byte header: positive sizes, a known mode, and a file long enough."""
    header = np.fromfile(path, dtype=np.int32, count=256)
    if header.size < 256:
        return "shorter than the 1024-byte header"
    for h in (header, header.byteswap()):  # either byte order
        nx, ny, nz, mode = (int(v) for v in h[:4])
        if mode in _MODE_BYTES and nx > 0 and ny > 0 and nz > 0:
            nsymbt = int(h[23])
            expected = 1024 + max(nsymbt, 0) + nx * ny * nz * _MODE_BYTES[mode]
            size = path.stat().st_size
            if size < expected:
                return f"truncated: {size} bytes, the header describes {expected}"
            return None
    return "the header does not describe an image (bad sizes or data mode)"


def _apix(mrc, path) -> float:
    vs = mrc.voxel_size
    apix = float(vs.x)
    if not np.isfinite(apix) or apix <= 0:
        return 0.0
    return apix


def read_header_apix(path: str | Path) -> float:
    """Voxel size (Å) in an MRC header; 0.0 when the header does not set one."""
    with _open(path, mmap=True) as mrc:
        return _apix(mrc, path)


def read_map(path: str | Path) -> tuple[np.ndarray, float]:
    """Read a volume. Returns ``(array (D, D, D) float32, apix in Å; 0.0 if unset)``."""
    with _open(path, mmap=False) as mrc:
        data = np.array(mrc.data, dtype=np.float32)  # a writable copy
        apix = _apix(mrc, path)
        order = (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps))
    if data.ndim != 3:
        raise InputError(path, f"expected a 3-D map, found shape {data.shape}")
    if order != (1, 2, 3):
        # file axes (sections, rows, columns) hold the axes (maps, mapr, mapc); we want [z, y, x]
        file_axes = (order[2], order[1], order[0])
        if sorted(file_axes) != [1, 2, 3]:
            raise InputError(path, f"invalid axis order mapc/mapr/maps = {order}")
        data = np.ascontiguousarray(data.transpose([file_axes.index(a) for a in (3, 2, 1)]))
    if not np.isfinite(data).all():
        raise InputError(path, "map contains NaN or infinite values")
    return data, apix


def read_stack(path: str | Path, mmap: bool = True) -> tuple[np.ndarray, float]:
    """Read a particle stack, memory-mapped by default (nothing loaded until indexed).

    Returns ``(array (N, D, D), apix in Å; 0.0 if unset)``. A single 2-D image becomes ``(1, D, D)``.
    The array stays valid after return (the map keeps the file open until it is garbage collected).
    """
    mrc = _open(path, mmap=mmap)
    data = mrc.data
    apix = _apix(mrc, path)
    order = (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps))
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[1] != data.shape[2]:
        mrc.close()
        raise InputError(path, f"expected a stack of square images (N, D, D), found shape {data.shape}")
    if order not in ((1, 2, 3), (0, 0, 0)):
        mrc.close()
        raise InputError(path, f"image stacks with axis order mapc/mapr/maps = {order} are not supported")
    return data, apix


def read_micrograph(path: str | Path) -> tuple[np.ndarray, float]:
    """Read one micrograph (any size ``H × W``; a file with one section). Returns ``(array (H, W) float32, apix in
    Å; 0.0 if unset)``, a copy in memory. A stack of several sections, a non-standard axis order or NaN/inf
    pixels is an :class:`InputError` naming the file."""
    with _open(path, mmap=True) as mrc:
        data = np.array(mrc.data, dtype=np.float32)
        apix = _apix(mrc, path)
        order = (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps))
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise InputError(path, f"expected one micrograph (H, W), found shape {data.shape}")
    if order not in ((1, 2, 3), (0, 0, 0)):
        raise InputError(path, f"micrographs with axis order mapc/mapr/maps = {order} are not supported")
    if not np.isfinite(data).all():
        raise InputError(path, "micrograph contains NaN or infinite values")
    return data, apix


def write_micrograph(path: str | Path, image, apix: float) -> None:
    """Write one ``(H, W)`` micrograph as float32 with pixel size ``apix`` (Å), atomically."""
    arr = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"a micrograph is (H, W), got {arr.shape}")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr)
            _set_header(mrc, apix)


def read_stack_header(path: str | Path) -> tuple[int, int, float]:
    """``(number of images, box, apix)`` of a stack, validated as :func:`read_stack` does; the file is
    closed again (for particle sets spread over thousands of stacks)."""
    with _open(path, mmap=True) as mrc:
        shape = mrc.data.shape
        apix = _apix(mrc, path)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise InputError(path, f"expected a stack of square images (N, D, D), found shape {shape}")
    return shape[0], shape[-1], apix


def _set_header(mrc, apix: float):
    """Voxel size, zero origin, and a fixed label (no time stamp: equal data give equal files)."""
    mrc.voxel_size = apix
    mrc.header.origin = (0.0, 0.0, 0.0)
    mrc.header.label[:] = b""
    mrc.header.label[0] = b"written by cryoscape"
    mrc.header.nlabl = 1


def write_map(path: str | Path, volume, apix: float) -> None:
    """Write a ``(D, D, D)`` volume as float32 with voxel size ``apix`` (Å), atomically."""
    arr = np.ascontiguousarray(np.asarray(volume, dtype=np.float32))
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr)
            _set_header(mrc, apix)


def write_stack(path: str | Path, images, apix: float) -> None:
    """Write an ``(N, D, D)`` stack (marked as an image stack) atomically."""
    arr = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr)
            mrc.set_image_stack()
            _set_header(mrc, apix)


class StackFile:
    """A float32 stack of ``n`` images of ``D²`` pixels on disk, written by position in chunks.

    Data go to disk with plain writes (no memory map, so resident memory stays at one chunk); header
    statistics (min, max, mean, rms) accumulate in :attr:`stats` (a plain dict, so a caller can save it
    and reopen the file later with ``create=False, stats=...`` to continue after an interruption).
    :meth:`finish` writes the statistics into the header and closes the file.
    """

    def __init__(self, path: str | Path, n: int, D: int, apix: float, create: bool = True,
                 stats: dict | None = None):
        self.path, self.n, self.D, self.apix = Path(path), int(n), int(D), float(apix)
        if create:
            with mrcfile.new_mmap(self.path, shape=(self.n, self.D, self.D), mrc_mode=2, overwrite=True) as mrc:
                mrc.set_image_stack()
                _set_header(mrc, self.apix)
        with mrcfile.open(self.path, mode="r", header_only=True, permissive=True) as mrc:
            self._offset = 1024 + int(mrc.header.nsymbt)
            if (int(mrc.header.nz), int(mrc.header.ny), int(mrc.header.nx)) != (self.n, self.D, self.D):
                raise ValueError(f"{self.path}: existing stack does not have shape ({n}, {D}, {D})")
        self.stats = dict(stats) if stats else {"min": math.inf, "max": -math.inf, "sum": 0.0, "sumsq": 0.0}
        self._file = open(self.path, "r+b")

    def write_at(self, start: int, chunk) -> None:
        """Write ``(k, D, D)`` images as images ``start .. start + k − 1``."""
        chunk = np.ascontiguousarray(np.asarray(chunk, dtype=np.float32))
        k = chunk.shape[0]
        if chunk.shape[1:] != (self.D, self.D):
            raise ValueError(f"{self.path}: chunk of shape {chunk.shape}, expected (k, {self.D}, {self.D})")
        if start < 0 or start + k > self.n:
            raise ValueError(f"{self.path}: writing images {start}..{start + k - 1} of {self.n}")
        self._file.seek(self._offset + start * self.D * self.D * 4)
        self._file.write(chunk.tobytes())
        st = self.stats
        st["min"] = min(st["min"], float(chunk.min()))
        st["max"] = max(st["max"], float(chunk.max()))
        c64 = chunk.astype(np.float64)
        st["sum"] += float(c64.sum())
        st["sumsq"] += float((c64 * c64).sum())

    def flush(self) -> None:
        """Push written data to the operating system (before saving :attr:`stats` as a checkpoint)."""
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def finish(self) -> None:
        """Write the header statistics and close."""
        self.close()
        npx = self.n * self.D * self.D
        mean = self.stats["sum"] / npx
        with mrcfile.mmap(self.path, mode="r+") as mrc:
            mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = self.stats["min"], self.stats["max"], mean
            mrc.header.rms = float(np.sqrt(max(self.stats["sumsq"] / npx - mean * mean, 0.0)))


class StackWriter:
    """Write a stack of known size chunk by chunk with bounded memory, atomically.

    Usage::

        with StackWriter("particles.mrcs", n=100_000, D=128, apix=1.5) as w:
            for chunk in chunks:
                w.write(chunk)          # (n_chunk, D, D), in order

    The file appears under its name only after every image was written and the context exits cleanly
    (a :class:`StackFile` on a temporary name).
    """

    def __init__(self, path: str | Path, n: int, D: int, apix: float):
        self.path, self.n, self.D, self.apix = Path(path), int(n), int(D), float(apix)
        self._pos = 0

    def __enter__(self):
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        try:
            self._stack = StackFile(tmp, self.n, self.D, self.apix)
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, chunk) -> None:
        """Append ``(k, D, D)`` images."""
        k = np.shape(chunk)[0]
        if self._pos + k > self.n:
            raise ValueError(f"{self.path}: writing past the declared {self.n} images")
        self._stack.write_at(self._pos, chunk)
        self._pos += k

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self._pos != self.n:
            self._stack.close()
            exc = ValueError(f"{self.path}: wrote {self._pos} of {self.n} images")
            self._ctx.__exit__(ValueError, exc, None)
            raise exc
        if exc_type is None:
            self._stack.finish()
        else:
            self._stack.close()
        self._ctx.__exit__(exc_type, exc, tb)
        return False
