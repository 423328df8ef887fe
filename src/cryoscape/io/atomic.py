"""Atomic writes: write to a temporary name in the destination folder, rename on success.

A crash or an error in the middle leaves the destination untouched (no partial or damaged file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError

__all__ = ["atomic_path", "atomic_dir", "check_can_write", "replace_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_can_write(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse to overwrite an existing file or folder unless ``overwrite``; return the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "already exists (pass --overwrite to replace it)")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on clean exit rename it onto ``path``, else delete it.

    The temporary name keeps the suffix, so libraries that look at it (mrcfile, starfile) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Rename the finished folder ``src`` onto ``dst``; an existing ``dst`` is removed only afterwards."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    else:
        os.replace(src, dst)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False):
    """Yield a temporary folder beside ``path``; on clean exit it becomes ``path``, else it is removed.

    With ``overwrite`` an existing ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    check_can_write(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
