"""Atomic models and MD trajectories → atom coordinates in Å.

- PDB / mmCIF (single or multi-model) are read with gemmi.
- Trajectories (DCD, XTC, TRR, or a multi-frame PDB/GRO) with a topology (PSF, PDB, GRO) are read with
  MDAnalysis.

Either way the result is a :class:`Conformations`: coordinates ``(F, A, 3)`` for ``F`` frames and ``A``
selected atoms (Cα by default), with per-atom names, residue names and numbers, chain ids and elements.

Elements: CHARMM-style PDBs often leave the element column blank. A blank or implausible element in a
standard amino-acid or nucleotide residue is taken from the first letter of the atom name (``CA`` →
carbon, not calcium); outside polymers gemmi's own rule applies.

Coordinates are checked before anything else is done with them: gemmi reads an unparseable PDB
coordinate ("abc", blanks) as 0 without a word, so the x, y, z columns (31–54) of every ATOM/HETATM
record are parsed here first, and a value that is not a finite number is an :class:`InputError` naming
the file and the line. mmCIF ``Cartn_x/y/z`` values and coordinates from MDAnalysis (GRO, trajectories)
must be finite too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["Conformations", "read_model", "read_trajectory", "read_structure", "write_pdb", "write_dcd",
           "SELECTIONS", "check_pdb_coordinates", "check_cif_coordinates"]

SELECTIONS = ("ca", "heavy", "all")
TRAJ_SUFFIXES = {".dcd", ".xtc", ".trr", ".nc", ".ncdf"}
TOPOLOGY_SUFFIXES = {".psf", ".pdb", ".gro", ".prmtop", ".parm7", ".top", ".tpr"}
_AMINO = {"ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "HIE", "HID", "HIP", "HSD",
          "HSE", "HSP", "ILE", "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
          "MSE", "SEC", "PYL"}
_NUCLEIC = {"A", "C", "G", "U", "T", "DA", "DC", "DG", "DT", "DU", "ADE", "CYT", "GUA", "THY", "URA"}


@dataclass
class Conformations:
    """Coordinates of selected atoms over frames.

    Attributes:
        coords: ``(F, A, 3)`` float64, Å, ``(x, y, z)``.
        names, resnames, elements, chains: ``(A,)`` str arrays. resids: ``(A,)`` int array.
        source: description of the input (file names, selection).
        frames: ``(F,)`` indices of the frames in the input.
    """

    coords: np.ndarray
    names: np.ndarray
    resnames: np.ndarray
    resids: np.ndarray
    chains: np.ndarray
    elements: np.ndarray
    source: str = ""
    frames: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return self.coords.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.coords.shape[1]

    def radius(self) -> float:
        """Largest distance (Å) of any atom in any frame from that frame's centroid."""
        c = self.coords - self.coords.mean(axis=1, keepdims=True)
        return float(np.sqrt((c ** 2).sum(-1)).max())


def _element_for(name: str, resname: str, element: str) -> str:
    name, resname, element = name.strip().upper(), resname.strip().upper(), element.strip().upper()
    polymer = resname in _AMINO or resname in _NUCLEIC
    if polymer and name and (not element or element not in {"C", "N", "O", "S", "P", "H", "SE"}):
        return name.lstrip("0123456789")[:1] or element
    return element or name.lstrip("0123456789")[:1]


def _select_mask(names, resnames, elements, selection: str, where) -> np.ndarray:
    if selection not in SELECTIONS:
        raise InputError("--atoms", f"unknown selection {selection!r} (choose from {', '.join(SELECTIONS)})")
    names = np.char.strip(np.asarray(names, dtype=str))
    if selection == "ca":
        mask = (names == "CA") & np.isin(np.char.upper(np.asarray(resnames, dtype=str)), list(_AMINO))
    elif selection == "heavy":
        mask = np.asarray(elements, dtype=str) != "H"
    else:
        mask = np.ones(len(names), dtype=bool)
    if not mask.any():
        raise InputError(where, f"no atoms match the selection {selection!r}")
    return mask


def _open_text(path: Path):
    import gzip
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", errors="replace")
    return open(path, errors="replace")


def _is_pdb(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".pdb", ".ent", ".pdb.gz", ".ent.gz"))


def _is_cif(path: Path) -> bool:
    return path.name.lower().endswith((".cif", ".mmcif", ".cif.gz", ".mmcif.gz"))


def check_pdb_coordinates(path: str | Path) -> None:
    """Every ATOM/HETATM record of a PDB file has three finite numbers in columns 31–38, 39–46, 47–54
    (x, y, z in Å), else :class:`InputError` ``"<file>: line <n>: ..."``. Vectorised; the slow per-line
    parse runs only to name the first bad line."""
    path = Path(path)
    lines, fields = [], []
    with _open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if line.startswith(("ATOM  ", "HETATM")):
                lines.append(number)
                fields.append((line[30:38], line[38:46], line[46:54]))
    if not fields:
        return
    try:
        xyz = np.array(fields).astype(np.float64)
        bad_rows = np.nonzero(~np.isfinite(xyz).all(axis=1))[0]
        if len(bad_rows) == 0:
            return
        first = int(bad_rows[0])
    except ValueError:
        first = None
    for k, row in enumerate(fields) if first is None else [(first, fields[first])]:
        for axis, text in zip("xyz", row):
            if not _is_finite_number(text):
                what = "missing" if not text.strip() else f"not a finite number: {text.strip()!r}"
                raise InputError(path, f"line {lines[k]}: {axis} coordinate (columns "
                                       f"{ {'x': '31-38', 'y': '39-46', 'z': '47-54'}[axis]}) {what}")


def _cif_row_line(path: Path, row: int, width: int) -> int | None:
    """1-based line of data row ``row`` of the ``_atom_site`` loop, when each of its rows is one line."""
    with _open_text(path) as f:
        lines = f.read().splitlines()
    tags = [i for i, line in enumerate(lines) if line.startswith("_atom_site.")]
    if not tags:
        return None
    first = tags[-1] + 1
    for k in range(first, min(first + row + 1, len(lines))):
        if len(lines[k].split()) != width:  # a row over several lines, quoted blanks, or the loop's end
            return None
    return first + row + 1 if first + row < len(lines) else None


def check_cif_coordinates(path: str | Path) -> None:
    """Every ``_atom_site.Cartn_x/y/z`` of an mmCIF file is a finite number, else :class:`InputError`
    naming the file and the line of the atom (or its row in ``_atom_site`` when rows span lines)."""
    import gemmi
    path = Path(path)
    try:
        block = gemmi.cif.read(str(path)).sole_block()
    except Exception:
        return  # not one readable block: gemmi.read_structure reports it
    table = block.find("_atom_site.", ["Cartn_x", "Cartn_y", "Cartn_z"])
    for r, row in enumerate(table):
        for axis, text in zip("xyz", row):
            if not _is_finite_number(text):
                width = len(table.loop.tags) if table.loop is not None else -1
                line = _cif_row_line(path, r, width)
                where = f"line {line}" if line else f"row {r + 1} of _atom_site"
                raise InputError(path, f"{where}: Cartn_{axis} is not a finite number: {text!r}")


def _is_finite_number(text: str) -> bool:
    """Whether ``text`` reads as a finite float (a coordinate field of a PDB or mmCIF file)."""
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def _check_finite_coords(coords: np.ndarray, path, frames, names, resids) -> None:
    bad = np.nonzero(~np.isfinite(coords).all(axis=-1))
    if len(bad[0]):
        f, a = int(bad[0][0]), int(bad[1][0])
        raise InputError(path, f"frame {int(frames[f])}: atom {names[a]} of residue {int(resids[a])} has "
                               "non-finite coordinates")


def read_model(path: str | Path, selection: str = "ca") -> Conformations:
    """Read a PDB or mmCIF file (every model becomes a frame) with gemmi.

    Raises :class:`InputError` when the file is missing or unreadable, when models differ in atom
    count, or when no atom matches the selection.
    """
    import gemmi
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if _is_pdb(path):
        check_pdb_coordinates(path)
    elif _is_cif(path):
        check_cif_coordinates(path)
    try:
        st = gemmi.read_structure(str(path))
    except Exception as exc:
        raise InputError(path, f"not a readable PDB/mmCIF file ({str(exc).splitlines()[0]})") from None
    if len(st) == 0:
        raise InputError(path, "contains no model")
    st.remove_alternative_conformations()
    frames, meta = [], None
    for model in st:
        rows, xyz = [], []
        for chain in model:
            for res in chain:
                for atom in res:
                    rows.append((atom.name, res.name, res.seqid.num, chain.name,
                                 _element_for(atom.name, res.name, atom.element.name if atom.element else "")))
                    xyz.append((atom.pos.x, atom.pos.y, atom.pos.z))
        if meta is None:
            meta = rows
        elif len(rows) != len(meta):
            raise InputError(path, f"model {model.num} has {len(rows)} atoms, the first has {len(meta)}")
        frames.append(np.asarray(xyz, dtype=np.float64).reshape(-1, 3))
    if not meta:
        raise InputError(path, "contains no atoms")
    names, resnames, resids, chains, elements = (np.asarray(c) for c in zip(*meta))
    all_coords = np.stack(frames)
    _check_finite_coords(all_coords, path, np.arange(len(frames)), names, resids)
    mask = _select_mask(names, resnames, elements, selection, path)
    coords = all_coords[:, mask]
    return Conformations(coords, names[mask], resnames[mask], resids[mask].astype(int), chains[mask],
                         elements[mask], f"{path.name} ({selection})", np.arange(len(frames)))


def read_trajectory(topology: str | Path, trajectory: str | Path | None = None, selection: str = "ca",
                    frames=None, stride: int = 1) -> Conformations:
    """Read an MD trajectory with MDAnalysis.

    Args:
        topology: PSF / PDB / GRO / PRMTOP / TPR file.
        trajectory: DCD / XTC / TRR / NetCDF file (None: the topology's own coordinates).
        selection: ``"ca"``, ``"heavy"`` or ``"all"``.
        frames: explicit frame indices (0-based), else every ``stride``-th frame.
    """
    import warnings

    import MDAnalysis as mda
    topology = Path(topology)
    for p in (topology, trajectory):
        if p is not None and not Path(p).exists():
            raise InputError(p, "file not found")
    if stride < 1:
        raise InputError("--stride", f"must be ≥ 1, got {stride}")
    for p in (topology, trajectory):
        if p is not None and _is_pdb(Path(p)):
            check_pdb_coordinates(p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = mda.Universe(str(topology), str(trajectory)) if trajectory else mda.Universe(str(topology))
    except Exception as exc:
        where = trajectory if trajectory else topology
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(where, f"cannot be read with topology {Path(topology).name} ({msg})") from None
    if not hasattr(u, "trajectory"):
        raise InputError(topology, "has no coordinates; give a trajectory (DCD/XTC/TRR) or a PDB/GRO")
    atoms = u.atoms
    try:
        raw_el = atoms.elements
    except Exception:
        raw_el = np.array([""] * len(atoms))
    elements = np.array([_element_for(a, r, e) for a, r, e in zip(atoms.names, atoms.resnames, raw_el)])
    mask = _select_mask(atoms.names, atoms.resnames, elements, selection, topology)
    sel = atoms[mask]
    n = len(u.trajectory)
    idx = np.arange(0, n, stride) if frames is None else np.asarray(frames, dtype=int)
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= n:
        raise InputError("--frames", f"out of range: {Path(trajectory or topology).name} has {n} frames")
    coords = np.empty((len(idx), len(sel), 3))
    for k, f in enumerate(idx):
        u.trajectory[int(f)]
        coords[k] = sel.positions
    _check_finite_coords(coords, trajectory or topology, idx, np.asarray(sel.names), np.asarray(sel.resids))
    chains = sel.segids if hasattr(sel, "segids") else np.array([""] * len(sel))
    src = f"{topology.name}" + (f" + {Path(trajectory).name}" if trajectory else "") + f" ({selection})"
    return Conformations(coords, np.asarray(sel.names), np.asarray(sel.resnames), np.asarray(sel.resids),
                         np.asarray(chains), elements[mask], src, idx)


def read_structure(path: str | Path, topology: str | Path | None = None, selection: str = "ca",
                   frames=None, stride: int = 1) -> Conformations:
    """Read any supported model or trajectory, choosing the reader by suffix.

    ``path`` is a PDB/mmCIF (gemmi) unless it is a trajectory (DCD/XTC/TRR/NetCDF), which needs
    ``topology``. Frame selection applies to both.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TRAJ_SUFFIXES:
        if topology is None:
            raise InputError(path, "a trajectory needs a topology (--topology PSF/PDB/GRO)")
        return read_trajectory(topology, path, selection, frames, stride)
    if suffix in {".pdb", ".ent", ".cif", ".mmcif"} or path.name.lower().endswith((".pdb.gz", ".cif.gz")):
        conf = read_model(path, selection)
    elif suffix in TOPOLOGY_SUFFIXES:
        return read_trajectory(path, None, selection, frames, stride)
    else:
        raise InputError(path, f"unknown model type {suffix!r} (expected PDB, mmCIF, or a trajectory "
                               "DCD/XTC/TRR with --topology)")
    idx = np.arange(0, conf.n_frames, stride) if frames is None else np.asarray(frames, dtype=int)
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= conf.n_frames:
        raise InputError("--frames", f"out of range: {path.name} has {conf.n_frames} models")
    conf.coords, conf.frames = conf.coords[idx], idx
    return conf


def write_pdb(path: str | Path, conf: Conformations, bfactors: np.ndarray | None = None) -> None:
    """Write the frames as a multi-model PDB (atomic; B-factor column from ``bfactors`` ``(A,)``)."""
    from .atomic import atomic_path
    lines = []
    bf = np.zeros(conf.n_atoms) if bfactors is None else np.asarray(bfactors, dtype=float)
    for m, xyz in enumerate(conf.coords, start=1):
        lines.append(f"MODEL     {m:4d}")
        for i, (x, y, z) in enumerate(xyz):
            name = str(conf.names[i])
            name = f" {name:<3s}" if len(name) < 4 else name[:4]
            chain = (str(conf.chains[i]) or "A")[:1]
            lines.append(f"ATOM  {(i + 1) % 100000:5d} {name:4s} {str(conf.resnames[i])[:3]:>3s} {chain}"
                         f"{int(conf.resids[i]) % 10000:4d}    {x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{bf[i]:6.2f}"
                         f"          {str(conf.elements[i])[:2]:>2s}")
        lines.append("ENDMDL")
    lines.append("END")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def write_dcd(path: str | Path, conf: Conformations) -> Path:
    """Write the frames as a DCD trajectory (float32 Å, atomic; MDAnalysis's writer), and beside it a
    single-model PDB topology ``<stem>_topology.pdb`` (atom names, residues, chains of ``conf``), so that
    ``read_trajectory(topology, path)``, VMD, ChimeraX or MDAnalysis open the pair. Returns the topology path.

    Much smaller and faster than a multi-model PDB for many particles: 12 bytes per atom and frame.
    """
    import warnings

    import MDAnalysis as mda

    from .atomic import atomic_path
    path = Path(path)
    topology = path.with_name(f"{path.stem}_topology.pdb")
    first = Conformations(conf.coords[:1], conf.names, conf.resnames, conf.resids, conf.chains, conf.elements,
                          conf.source, None if conf.frames is None else conf.frames[:1])
    write_pdb(topology, first)
    u = mda.Universe.empty(conf.n_atoms, trajectory=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MDAnalysis warns about the empty universe's missing unit cell
        with mda.Writer(str(tmp), n_atoms=conf.n_atoms) as w:
            for xyz in conf.coords:
                u.atoms.positions = xyz
                w.write(u.atoms)
    return topology
