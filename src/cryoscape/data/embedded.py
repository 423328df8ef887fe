"""The embedded default dataset: adenylate kinase (AdK) closed → open, from the MDAnalysisTests package.

``adk.psf`` + ``adk_dims2.dcd``: 102 frames of a 3,341-atom system with 214 Cα atoms (Beckstein et al.
2009), the same data as the seed notebook. The files are located without importing the package (fast).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..io.errors import InputError

__all__ = ["adk_files"]


def adk_files() -> tuple[Path, Path]:
    """Paths ``(topology PSF, trajectory DCD)`` of the AdK transition, or :class:`InputError` if absent."""
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("MDAnalysisTests", "package not installed: it ships the embedded AdK trajectory "
                                            "(pip install MDAnalysisTests)")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    psf, dcd = data / "adk.psf", data / "adk_dims2.dcd"
    for p in (psf, dcd):
        if not p.exists():
            raise InputError(p, "missing from the MDAnalysisTests package")
    return psf, dcd
