"""Select particles from a latent space or a 2-D embedding of it, and write the selection.

Selections are sorted, unique ``int64`` particle indices (0-based rows of the particle STAR), so a
written subset keeps the input's order. Region tests work on ``points2d`` of shape ``(N, 2)`` in the
embedding's own units (x = first column, y = second).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io.atomic import check_can_write
from ..io.errors import InputError

__all__ = ["by_cluster", "in_box", "in_polygon", "write_star_subset", "write_indices_pkl"]


def by_cluster(labels, clusters) -> np.ndarray:
    """Indices ``i`` with ``labels[i]`` in ``clusters`` (an int or a sequence of them)."""
    labels = np.asarray(labels).ravel()
    return np.nonzero(np.isin(labels, np.atleast_1d(clusters)))[0].astype(np.int64)


def _xy(points2d) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points2d, np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got shape {p.shape}")
    return p[:, 0], p[:, 1]


def in_box(points2d, xmin: float, xmax: float, ymin: float, ymax: float) -> np.ndarray:
    """Indices of the points with ``xmin ≤ x ≤ xmax`` and ``ymin ≤ y ≤ ymax`` (edges included)."""
    if not (xmin <= xmax and ymin <= ymax):
        raise ValueError(f"empty box: x {xmin}..{xmax}, y {ymin}..{ymax}")
    x, y = _xy(points2d)
    return np.nonzero((x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax))[0].astype(np.int64)


def in_polygon(points2d, vertices) -> np.ndarray:
    """Indices of the points inside the polygon ``vertices`` (m, 2) (m ≥ 3, closed implicitly; any
    orientation, may be concave or self-intersecting), by the even–odd rule.

    A horizontal ray from each point to ``+x`` crosses edge ``(x₁, y₁)–(x₂, y₂)`` when
    ``(y₁ > y) ≠ (y₂ > y)`` and ``x < x₁ + (y − y₁)(x₂ − x₁)/(y₂ − y₁)``; an odd number of crossings
    means inside. The half-open test counts a vertex on the ray once; points exactly on an edge may fall
    either side.
    """
    v = np.asarray(vertices, np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.isfinite(v).all():
        raise ValueError(f"polygon needs (m, 2) finite vertices with m ≥ 3, got shape {v.shape}")
    x, y = _xy(points2d)
    inside = np.zeros(len(x), dtype=bool)
    for (x1, y1), (x2, y2) in zip(v, np.roll(v, -1, axis=0)):
        if y1 == y2:
            continue  # a horizontal edge never straddles the ray
        straddle = (y1 > y) != (y2 > y)
        cross = x < x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= straddle & cross
    return np.nonzero(inside)[0].astype(np.int64)


def write_indices_pkl(path: str | Path, indices, overwrite: bool = False) -> Path:
    """Write ``indices`` as a cryoDRGN index pickle (a 1-D ``np.int64`` array), atomically."""
    import pickle

    from ..io.atomic import atomic_path
    path = check_can_write(path, overwrite)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(np.asarray(indices, np.int64).ravel(), f)
    return path


def _rewrite_names(table, datadir, out_dir: Path) -> tuple[list, int, int]:
    """New ``rlnImageName`` strings valid from ``out_dir``; ``(names, n_rewritten_stacks, n_unresolved)``.

    Rules for each stack path ``p`` (``k@p``), in the order the readers look: absolute — kept; found as
    ``datadir/p`` or ``datadir/<name>`` (with ``datadir``) or as ``<input STAR folder>/p`` — rewritten as
    a path relative to ``out_dir`` (the output resolves without ``--datadir``); found only relative to
    the working folder (RELION's project-relative names) or not found — kept as written.
    """
    from ..io.star import split_image_names
    idx, paths = split_image_names(table.particles["rlnImageName"].to_numpy(), table.path)
    base = table.path.parent if table.path is not None else Path(".")
    new, rewritten, unresolved = {}, 0, 0
    for p in dict.fromkeys(paths):
        pp = Path(p)
        new[p] = p
        if pp.is_absolute():
            unresolved += not pp.is_file()
            continue
        cands = ([Path(datadir) / pp, Path(datadir) / pp.name] if datadir is not None else []) + [base / pp]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            unresolved += not pp.is_file()
            continue
        rel = os.path.relpath(hit.resolve(), out_dir.resolve())
        if rel != p:
            new[p], rewritten = rel, rewritten + 1
    old = table.particles["rlnImageName"].astype(str).tolist()
    names = [o if new[p] == p else f"{k + 1:06d}@{new[p]}" for o, k, p in zip(old, idx, paths)]
    return names, rewritten, unresolved


def write_star_subset(star_in, indices, star_out: str | Path, datadir: str | Path | None = None,
                      overwrite: bool = False) -> dict:
    """Write the particles ``indices`` (0-based rows) of ``star_in`` (a path or a
    :class:`~cryoscape.io.star.ParticleTable` already read) to ``star_out`` (RELION 3.1, with the
    optics block; every optics group of the input is kept), atomically; refuses to replace ``star_out``
    unless ``overwrite``.

    Image names are made to resolve from the output's folder: a stack path relative to the input STAR's
    folder (or found through ``datadir``) is rewritten relative to the output's folder; absolute paths and
    paths relative to the working folder (RELION project style) are kept (see :func:`_rewrite_names`).
    Returns ``{"n_input", "n_selected", "output", "rewritten_stacks", "unresolved_stacks"}``.
    """
    from ..io.star import ParticleTable, read_star, write_star
    star_out = check_can_write(star_out, overwrite)
    table = star_in if isinstance(star_in, ParticleTable) else read_star(star_in)
    n = len(table)
    idx = np.unique(np.asarray(indices, np.int64).ravel())
    if len(idx) == 0:
        raise InputError(star_out, "the selection is empty: nothing to write")
    if idx[0] < 0 or idx[-1] >= n:
        raise InputError(table.path, f"selection refers to particle {int(idx[-1] if idx[-1] >= n else idx[0])}, "
                                  f"the file has {n} (0-based indices 0..{n - 1})")
    table.require(["rlnImageName"], "a particle subset")
    names, rewritten, unresolved = _rewrite_names(table, datadir, Path(star_out).parent)
    parts = table.particles.iloc[idx].copy()
    parts["rlnImageName"] = [names[i] for i in idx]
    write_star(star_out, parts.reset_index(drop=True), table.optics)
    return {"n_input": n, "n_selected": int(len(idx)), "output": str(star_out), "rewritten_stacks": rewritten,
            "unresolved_stacks": unresolved}
