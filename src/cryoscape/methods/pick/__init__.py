"""Particle picking on micrographs: a blob picker, a template matcher and a learned picker, with one calling
convention, plus extraction of the picked particles.

Every picker is ``fn(micrograph, apix, cfg, *, ctf=None, progress=None) -> (xy, score)``: ``micrograph``
``(H, W)`` float32, ``apix`` Å/px, ``cfg`` the picker's config dataclass, ``ctf`` the micrograph's
:class:`~cryoscape.physics.ctf.CTFParams` (one entry; the template matcher uses it); it returns ``xy``
``(n, 2)`` float64 ``(x, y)`` centres in pixels (0-based pixel centres, ``x`` the column) and ``score (n,)``,
best first. The learned picker also needs its trained model (``model=``, from
:func:`cryoscape.methods.pick.learned.fit_picker` or a saved file).

The modules are imported when first used (:func:`get`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ...io.errors import InputError

__all__ = ["Picker", "PICKERS", "get", "picker_names"]


@dataclass(frozen=True)
class Picker:
    """A registry entry: ``module.function`` with config class ``module.config``, whether it trains from
    labelled particles (``learned``), and one line for ``--help``."""

    name: str
    module: str
    function: str
    config: str
    learned: bool
    summary: str

    def load(self):
        """``(function, config class)``, imported now."""
        mod = importlib.import_module(f"{__name__}.{self.module}")
        return getattr(mod, self.function), getattr(mod, self.config)


PICKERS: dict[str, Picker] = {p.name: p for p in (
    Picker("blob", "blob", "pick_blob", "BlobConfig", False,
           "Laplacian/difference-of-Gaussians blob detector at the particle's size; needs no labels"),
    Picker("template", "template", "pick_template", "TemplateConfig", False,
           "CTF-aware template matching (projections of a map or model, or class averages), locally normalised"),
    Picker("learned", "learned", "pick_learned", "PickerConfig", True,
           "small CNN score map trained positive-unlabelled from a few labelled particles (as Topaz)"),
)}


def picker_names() -> list[str]:
    """Names of the registered pickers."""
    return list(PICKERS)


def get(name: str) -> Picker:
    """The registry entry ``name``; :class:`InputError` naming the known ones otherwise."""
    if name not in PICKERS:
        raise InputError("--method", f"unknown picker {name!r}; choose one of {', '.join(PICKERS)}")
    return PICKERS[name]
