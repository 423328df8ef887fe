"""What every run directory holds besides its results: ``config.yaml``, ``versions.txt`` and a log."""

from __future__ import annotations

import logging
import platform
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["write_config", "write_versions", "run_logger", "close_logger", "to_plain"]

_PACKAGES = ("cryoscape", "torch", "numpy", "scipy", "pandas", "mrcfile", "starfile", "gemmi", "MDAnalysis",
             "typer", "rich", "matplotlib", "pillow")


def to_plain(v):
    """Paths → str, tuples → lists, numpy/torch scalars → Python numbers, recursively (for YAML/JSON)."""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [to_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: to_plain(x) for k, x in v.items()}
    if hasattr(v, "item") and callable(v.item):
        return v.item()
    return v


_plain = to_plain


def write_config(folder: str | Path, config: dict, name: str = "config.yaml") -> Path:
    """Write the resolved options as YAML (plain types only)."""
    import yaml
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(_plain(config), sort_keys=False))
    return path


def write_versions(folder: str | Path) -> Path:
    """Write Python, platform and package versions, one per line."""
    lines = [f"python {sys.version.split()[0]}", f"platform {platform.platform()}"]
    for pkg in _PACKAGES:
        try:
            lines.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    path = Path(folder) / "versions.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_logger(folder: str | Path, name: str = "cryoscape", filename: str = "run.log") -> logging.Logger:
    """A logger that writes timestamped lines to ``folder/filename`` (and nothing to the console)."""
    logger = logging.getLogger(f"{name}.{Path(folder).resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler = logging.FileHandler(Path(folder) / filename)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    """Flush and detach the logger's file handlers (before the folder is renamed)."""
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)
