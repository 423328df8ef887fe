"""``cryoscape filter``: keep the particles of a STAR selected by cluster label, by 2-D class (the STAR's own
``rlnClassNumber``), by a box or polygon in a 2-D embedding (UMAP, two PCs), or by an index file; write them
as a RELION 3.1 STAR (image paths kept resolvable) and a cryoDRGN index ``.pkl``. Both files or neither:
every input is checked before either is written."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["filter_run"]


def _load_array(path: Path, what: str):
    """An array from ``.npy``, ``.pkl`` (cryoDRGN z/umap/labels pickles) or text (whitespace or commas)."""
    import pickle

    import numpy as np

    from ..io.errors import InputError
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        if path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
        elif path.suffix == ".pkl":
            with open(path, "rb") as f:
                a = np.asarray(pickle.load(f))
        else:
            text = path.read_text().replace(",", " ")
            a = np.loadtxt(text.splitlines(), ndmin=1)
    except Exception as exc:
        raise InputError(path, f"cannot read {what} ({type(exc).__name__})") from None
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise InputError(path, f"{what} must be finite numbers")
    return a


def _floats(option: str, text: str, n: int | None = None) -> list[float]:
    from ..io.errors import InputError
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(option, f"expected comma-separated numbers, got {text!r}") from None
    if n is not None and len(vals) != n:
        raise InputError(option, f"expected {n} comma-separated numbers, got {text!r}")
    return vals


def _read_polygon(path: Path):
    """Vertices ``(m, 2)`` from JSON (``[[x, y], ...]`` or ``{"vertices": [...]}``) or text (one ``x y`` per line)."""
    import numpy as np

    from ..io.errors import InputError
    if path.suffix.lower() == ".json":
        if not path.exists():
            raise InputError(path, "file not found")
        try:
            obj = json.loads(path.read_text())
            v = np.asarray(obj["vertices"] if isinstance(obj, dict) else obj, dtype=np.float64)
        except Exception as exc:
            raise InputError(path, f"cannot read polygon vertices ({type(exc).__name__})") from None
    else:
        v = _load_array(path, "polygon vertices")
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.isfinite(v).all():
        raise InputError(path, f"polygon needs at least 3 finite (x, y) vertices, got shape {v.shape}")
    return v


def _check_rows(path: Path, a, n: int, star: Path, what: str) -> None:
    from ..io.errors import InputError
    if len(a) != n:
        raise InputError(path, f"{what} has {len(a)} rows but {star.name} has {n} particles")


def filter_run(particles: Path, out: Path, *, labels: Path | None = None, clusters: str | None = None,
               classes: str | None = None, embedding: Path | None = None, box: str | None = None,
               polygon: Path | None = None, ind: Path | None = None, invert: bool = False,
               datadir: Path | None = None, overwrite: bool = False) -> dict:
    """Select and write (module docstring); exactly one of ``labels`` (with ``clusters``, e.g. ``"0,2"``),
    ``classes`` (``rlnClassNumber`` values to keep, 1-based as RELION writes them, e.g. ``"1,3"``),
    ``embedding`` (with ``box`` ``"xmin,xmax,ymin,ymax"`` or ``polygon``) or ``ind``. Returns the summary of
    :func:`cryoscape.analysis.selection.write_star_subset` plus ``indices`` (the ``.pkl`` path)."""
    import numpy as np

    from ..analysis.selection import by_cluster, in_box, in_polygon, write_indices_pkl, write_star_subset
    from ..data.particles import read_indices
    from ..io.atomic import check_can_write
    from ..io.errors import InputError
    from ..io.star import read_star

    sources = [s for s, given in (("--labels", labels), ("--classes", classes), ("--embedding", embedding),
                                  ("--ind", ind)) if given]
    if len(sources) != 1:
        raise InputError("--labels/--classes/--embedding/--ind",
                         f"give exactly one selection source, got {len(sources)}")
    if (clusters is not None) != (labels is not None):
        raise InputError("--clusters", "--labels and --clusters go together")
    if embedding is not None and (box is None) == (polygon is None):
        raise InputError("--box/--polygon", "with --embedding give exactly one of --box or --polygon")
    if embedding is None and (box is not None or polygon is not None):
        raise InputError("--box/--polygon", "need --embedding")
    if out.suffix.lower() != ".star":
        raise InputError(out, "the output must be a .star file")
    ind_out = out.with_name(out.stem + "_indices.pkl")
    check_can_write(out, overwrite)
    check_can_write(ind_out, overwrite)
    table = read_star(particles)
    n = len(table)
    if labels is not None:
        lab = _load_array(labels, "labels").ravel()
        _check_rows(labels, lab, n, particles, "labels")
        if not (lab == np.round(lab)).all():
            raise InputError(labels, "labels must be integers")
        want = [int(c) for c in _floats("--clusters", clusters)]
        missing = sorted(set(want) - set(np.unique(lab).astype(int).tolist()))
        if missing:
            raise InputError("--clusters", f"cluster(s) {missing} not in {labels.name} "
                                           f"(labels there: {np.unique(lab).astype(int).tolist()[:20]})")
        sel = by_cluster(lab.astype(np.int64), want)
    elif classes is not None:
        if "rlnClassNumber" not in table.particles.columns:
            raise InputError(particles, "has no rlnClassNumber column (no 2-D classes to select by)")
        cls = table.particles["rlnClassNumber"].to_numpy()
        if not np.issubdtype(cls.dtype, np.number) or not (np.isfinite(cls) & (cls == np.round(cls))).all():
            raise InputError(particles, "rlnClassNumber must be whole numbers")
        want_f = _floats("--classes", classes)
        if not want_f or any(c != round(c) for c in want_f):
            raise InputError("--classes", f"expected comma-separated class numbers, got {classes!r}")
        present = np.unique(cls).astype(np.int64).tolist()
        missing = sorted(set(int(c) for c in want_f) - set(present))
        if missing:
            raise InputError("--classes", f"class(es) {missing} not in {particles.name} "
                                          f"(rlnClassNumber there: {present[:20]})")
        sel = by_cluster(cls.astype(np.int64), [int(c) for c in want_f])
    elif embedding is not None:
        emb = _load_array(embedding, "embedding")
        if emb.ndim != 2 or emb.shape[1] != 2:
            raise InputError(embedding, f"embedding must be (N, 2), got shape {emb.shape}")
        _check_rows(embedding, emb, n, particles, "embedding")
        if box is not None:
            x0, x1, y0, y1 = _floats("--box", box, 4)
            if not (x0 <= x1 and y0 <= y1):
                raise InputError("--box", f"need xmin ≤ xmax and ymin ≤ ymax, got {box!r}")
            sel = in_box(emb, x0, x1, y0, y1)
        else:
            sel = in_polygon(emb, _read_polygon(polygon))
    else:
        sel = np.unique(read_indices(ind))
        if len(sel) and (sel[0] < 0 or sel[-1] >= n):
            raise InputError(ind, f"indices must be in 0..{n - 1} ({particles.name} has {n} particles)")
    if invert:
        sel = np.setdiff1d(np.arange(n), sel)
    if len(sel) == 0:
        raise InputError(sources[0], "the selection is empty" + (" after --invert" if invert else ""))
    summary = write_star_subset(table, sel, out, datadir, overwrite)
    try:
        write_indices_pkl(ind_out, sel, overwrite)
    except BaseException:
        out.unlink(missing_ok=True)  # both files or neither
        raise
    summary["indices"] = str(ind_out)
    return summary
