"""Run folders: the one place where a command's output folder is made.

A run folder holds the results of one command and, beside them, what every run writes:

- ``config.yaml``: the resolved options (plain YAML);
- ``versions.txt``: Python, platform and package versions;
- ``run.log``: timestamped log lines;
- ``metrics.json``: one summary with the same schema for every command (below).

Work happens in a hidden folder ``.NAME.part`` beside the target ``NAME``. On success it is renamed onto
``NAME`` (an existing ``NAME`` is replaced only with ``overwrite``, and only once the new folder is
complete); on an exception nothing appears at ``NAME``: the ``.part`` folder is deleted, or kept when the
command supports resuming (``resume=True``), so that the same command continues from its checkpoints.

``metrics.json`` schema (every key required, nothing else allowed)::

    {
      "command": str,               # the command that made the folder, e.g. "reconstruct"
      "cryoscape_version": str,     # cryoscape.__version__
      "wall_s": float,              # seconds from entering the run folder to writing metrics.json (≥ 0)
      "inputs": {str: value},       # what was read: paths (as str), sizes, counts; JSON values only
      "metrics": {name: number},    # finite int or float, never bool/None/NaN/inf (omit what is undefined)
      "files": [str, ...]           # every other file of the folder, relative POSIX paths, sorted
    }

Metric names say their unit as a suffix: lower-case words (``a-z0-9_.``) and, for a quantity with a
unit, one of the unit suffixes :data:`UNITS` (``resolution_fsc0.143_A``, ``wall_per_image_ms``,
``images_per_s``, ``mean_angle_error_deg``); dimensionless quantities have no suffix (``fsc_auc``,
``n_images``, ``snr``).

Usage (in a ``runs`` module; methods never write run folders)::

    with RunFolder(out, "reconstruct", config, overwrite=overwrite, inputs={"particles": str(p)}) as run:
        write_map(run.file("map.mrc"), result.volume, result.apix)
        run.log.info("map written")
        run.metrics["resolution_fsc0.143_A"] = result.resolution_0143_A
    # here out/ holds map.mrc, config.yaml, versions.txt, run.log and metrics.json
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shutil
import time
from pathlib import Path, PurePosixPath

from ..io.atomic import atomic_path, check_can_write, replace_dir
from ..io.rundir import close_logger, run_logger, to_plain, write_config, write_versions

__all__ = ["RunFolder", "ProgressFile", "write_metrics", "read_metrics", "validate_metrics", "METRICS_FILE", "SCHEMA_KEYS",
           "UNITS"]

METRICS_FILE = "metrics.json"
SCHEMA_KEYS = ("command", "cryoscape_version", "wall_s", "inputs", "metrics", "files")
#: unit suffixes of metric names: Å, Å², 1/Å, pixels, degrees, radians, seconds, milliseconds, per second,
#: kV, mm, bytes, MB, GB, percent
UNITS = ("A", "A2", "inv_A", "px", "deg", "rad", "s", "ms", "per_s", "kV", "mm", "bytes", "MB", "GB", "pct", "dB")
_NAME = re.compile(r"^[a-z][a-z0-9_.]*?(_(" + "|".join(re.escape(u) for u in UNITS) + r"))?$")


def _version() -> str:
    from .. import __version__
    return __version__


def _relative_ok(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel and str(p) == rel


def validate_metrics(payload: dict, folder: str | Path | None = None) -> None:
    """Check ``payload`` against the ``metrics.json`` schema (module docstring); with ``folder``, also that
    every listed file exists there. Raises ``ValueError`` naming the first problem (a bug in the caller,
    not bad user input)."""
    if not isinstance(payload, dict):
        raise ValueError(f"metrics payload must be a dict, got {type(payload).__name__}")
    keys = set(payload)
    if keys != set(SCHEMA_KEYS):
        missing, extra = sorted(set(SCHEMA_KEYS) - keys), sorted(keys - set(SCHEMA_KEYS))
        raise ValueError(f"metrics payload keys: missing {missing}, unexpected {extra}")
    for k in ("command", "cryoscape_version"):
        if not isinstance(payload[k], str) or not payload[k]:
            raise ValueError(f"metrics payload {k!r} must be a non-empty string, got {payload[k]!r}")
    w = payload["wall_s"]
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
        raise ValueError(f"metrics payload 'wall_s' must be a finite number ≥ 0, got {w!r}")
    if not isinstance(payload["inputs"], dict) or not all(isinstance(k, str) for k in payload["inputs"]):
        raise ValueError("metrics payload 'inputs' must be a dict with string keys")
    try:
        json.dumps(payload["inputs"], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metrics payload 'inputs' is not plain JSON ({exc})") from None
    metrics = payload["metrics"]
    if not isinstance(metrics, dict):
        raise ValueError("metrics payload 'metrics' must be a dict")
    for name, value in metrics.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"metric name {name!r}: lower-case words with a unit suffix ({', '.join(UNITS)}) "
                             "or none for a dimensionless quantity")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"metric {name!r} must be a finite number, got {value!r}")
    files = payload["files"]
    if not isinstance(files, list) or not all(isinstance(f, str) and _relative_ok(f) for f in files):
        raise ValueError(f"metrics payload 'files' must be a list of relative POSIX paths, got {files!r}")
    if len(set(files)) != len(files) or files != sorted(files):
        raise ValueError("metrics payload 'files' must be sorted and without repeats")
    if METRICS_FILE in files:
        raise ValueError(f"metrics payload 'files' must not list {METRICS_FILE} itself")
    if folder is not None:
        missing = [f for f in files if not (Path(folder) / f).is_file()]
        if missing:
            raise ValueError(f"metrics payload lists files that do not exist in {folder}: {missing[:5]}")


def _plain_number(v):
    """numpy / torch scalars → Python numbers (ints stay ints)."""
    v = to_plain(v)
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    return v


def write_metrics(folder: str | Path, payload: dict) -> Path:
    """Validate ``payload`` (:func:`validate_metrics`, files checked in ``folder``) and write it as
    ``folder/metrics.json`` atomically. numpy/torch scalars are converted to Python numbers first."""
    folder = Path(folder)
    payload = dict(payload)
    if isinstance(payload.get("metrics"), dict):
        payload["metrics"] = {k: _plain_number(v) for k, v in payload["metrics"].items()}
    if isinstance(payload.get("inputs"), dict):
        payload["inputs"] = to_plain(payload["inputs"])
    if "wall_s" in payload:
        payload["wall_s"] = _plain_number(payload["wall_s"])
    validate_metrics(payload, folder)
    text = json.dumps({k: payload[k] for k in SCHEMA_KEYS}, indent=1, allow_nan=False)
    path = folder / METRICS_FILE
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n")
    return path


def read_metrics(path: str | Path) -> dict:
    """Read a run folder's ``metrics.json`` (``path`` = the folder or the file) and validate it."""
    from ..io.errors import InputError
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        payload = json.loads(path.read_text())
        validate_metrics(payload, path.parent)
    except ValueError as exc:
        raise InputError(path, f"not a cryoscape metrics.json ({str(exc).splitlines()[0]})") from None
    return payload


def _list_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != METRICS_FILE)


class RunFolder:
    """A run folder under construction (a context manager; see the module docstring).

    Args:
        target: the output folder to create.
        command: the command's name (``metrics.json`` "command").
        config: the resolved options, written to ``config.yaml`` (Paths and numpy scalars allowed).
        overwrite: replace an existing ``target`` (only once the new folder is complete).
        resume: keep a ``.NAME.part`` left by an interrupted run (and keep it again on failure), so the
            command can continue from the checkpoints in it; :attr:`resumed` says whether one was found.
        inputs: the ``metrics.json`` "inputs" (more can be added to :attr:`inputs` inside the block).

    Inside the ``with`` block: :attr:`dir` is the working folder (``.NAME.part``), :meth:`file` a path in
    it, :attr:`log` the ``run.log`` logger, :attr:`metrics` and :attr:`inputs` dicts that end up in
    ``metrics.json``. On a clean exit ``metrics.json`` is written (files listed = every file present) and
    the folder is renamed onto ``target``; :attr:`summary` is then the payload written.

    Raises:
        InputError: on entering, when ``target`` exists and ``overwrite`` is False (before anything is made).
    """

    def __init__(self, target: str | Path, command: str, config: dict, *, overwrite: bool = False,
                 resume: bool = False, inputs: dict | None = None):
        self.target = Path(target)
        self.command, self.config = command, dict(config)
        self.overwrite, self.resume = overwrite, resume
        self.inputs: dict = dict(inputs or {})
        self.metrics: dict = {}
        self.dir = self.target.parent / f".{self.target.name}.part"
        self.resumed = False
        self.summary: dict | None = None
        self.log = None
        self._t0 = None

    def file(self, relative: str | Path) -> Path:
        """``dir / relative``, its parent folders created. ``relative`` must stay inside the folder."""
        rel = Path(relative)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"run folder paths must be relative and inside the folder, got {relative}")
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def __enter__(self) -> "RunFolder":
        check_can_write(self.target, self.overwrite)
        self._t0 = time.perf_counter()
        self.resumed = self.resume and self.dir.is_dir()
        if not self.resumed:
            shutil.rmtree(self.dir, ignore_errors=True)  # a stale .part of a run that cannot resume
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.dir.mkdir()
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self.dir, 0o777 & ~mask)
        try:
            write_config(self.dir, self.config)
            write_versions(self.dir)
            self.log = run_logger(self.dir)
            self.log.info("%s %s (cryoscape %s)", "resuming" if self.resumed else "starting", self.command,
                          _version())
        except BaseException:
            self._discard()
            raise
        return self

    def _discard(self) -> None:
        if self.log is not None:
            close_logger(self.log)
        if not self.resume:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            if self.log is not None:
                self.log.info("failed: %s: %s%s", exc_type.__name__, exc,
                              "; the same command resumes from " + self.dir.name if self.resume else "")
            self._discard()
            return False
        try:
            wall = time.perf_counter() - self._t0
            self.log.info("done in %.2f s", wall)
            close_logger(self.log)
            payload = {"command": self.command, "cryoscape_version": _version(), "wall_s": round(wall, 3),
                       "inputs": self.inputs, "metrics": self.metrics, "files": _list_files(self.dir)}
            write_metrics(self.dir, payload)
            self.summary = json.loads((self.dir / METRICS_FILE).read_text())
            replace_dir(self.dir, self.target)
        except BaseException:
            self._discard()
            raise
        return False


class ProgressFile:
    """``progress.json`` of a partial run (kept in its ``.NAME.part`` folder): the ``fingerprint`` of everything
    that determines the output, and the ``state`` a command needs to go on; subclasses set :attr:`INITIAL`, the
    state of a fresh run. Written atomically (temporary file, then rename)."""

    NAME = "progress.json"
    INITIAL: dict = {}

    def __init__(self, folder: Path, fingerprint: str):
        self.path = Path(folder) / self.NAME
        self.state = {"fingerprint": fingerprint, **json.loads(json.dumps(self.INITIAL))}

    @classmethod
    def load(cls, folder: Path, fingerprint: str):
        """The progress in ``folder`` if it belongs to a run with this ``fingerprint``, else None."""
        ck = cls(folder, fingerprint)
        try:
            state = json.loads(ck.path.read_text())
        except (OSError, ValueError):
            return None
        if state.get("fingerprint") != fingerprint:
            return None
        ck.state = state
        return ck

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.path)
