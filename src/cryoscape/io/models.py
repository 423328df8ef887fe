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

Chains: every :class:`Conformations` carries chain ids that are distinct per chain (:func:`distinct_chains`): two
copies of a protein under one letter, a chain letter reused after another chain, or a GRO/PSF topology without
chain identifiers all come out as separate, differently named chains, in file order. gemmi, when it reads a PDB,
appends an atom to an earlier residue of the same chain with the same number and name (a second copy under the
same letter lands inside the first copy's residues; the duplicate atom names then fall to the alternative-
conformation filter, so half of a homodimer's atoms vanished); :func:`read_model` therefore cuts a PDB chain
where its residue numbers go back, before gemmi groups residues. Writers make each chain's id unambiguous:
:func:`write_pdb` one character per chain and a TER record after each, :func:`write_cif` the ids as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["Conformations", "read_model", "read_trajectory", "read_structure", "write_pdb", "write_cif",
           "models_filename",
           "write_models", "write_dcd", "distinct_chains", "chain_starts", "pdb_chain_ids", "SELECTIONS",
           "check_pdb_coordinates", "check_cif_coordinates"]

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


PLACEHOLDER_CHAINS = ("", "SYSTEM")  # ids that name no chain: blank, MDAnalysis's segid for GRO files
PDB_CHAIN_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"  # one character per chain


def _fresh_ids(taken: set[str]):
    """Chain ids A–Z, a–z, 0–9, then two characters AA, AB, … in that order, skipping those in ``taken``."""
    import itertools
    for n in itertools.count(1):
        for letters in itertools.product(PDB_CHAIN_IDS, repeat=n):
            cid = "".join(letters)
            if cid not in taken:
                yield cid


def chain_starts(chains, resids, residues=None, icodes=None) -> np.ndarray:
    """Where chains start, the rule of :func:`distinct_chains`: ``(A,)`` bool, True at atom 0 and at each atom
    ``i`` where the chain id differs from atom ``i − 1``'s, or the residue number is smaller than atom ``i − 1``'s,
    or a new residue begins with the same number and insertion code as atom ``i − 1``'s residue."""
    ids = np.char.strip(np.asarray(chains).astype(str))
    num = np.asarray(resids).astype(np.int64)
    A = len(ids)
    if len(num) != A:
        raise InputError("model", f"{A} chain ids but {len(num)} residue numbers")
    starts = np.zeros(A, dtype=bool)
    if A == 0:
        return starts
    starts[0] = True
    res = num if residues is None else np.asarray(residues)
    code = np.zeros(A, dtype=int) if icodes is None else np.char.strip(np.asarray(icodes).astype(str))
    new_residue = res[1:] != res[:-1]
    starts[1:] = ((ids[1:] != ids[:-1]) | (num[1:] < num[:-1])
                  | (new_residue & (num[1:] == num[:-1]) & (code[1:] == code[:-1])))
    return starts


def distinct_chains(chains, resids, residues=None, icodes=None) -> np.ndarray:
    """Chain ids made unambiguous: one id per chain, different chains never share one.

    Chains are runs of consecutive atoms (file order). Atom ``i`` starts a new chain when

    - its chain id differs from atom ``i − 1``'s, or
    - its residue number is smaller than atom ``i − 1``'s (the numbering restarts: a second copy written under
      the same id), or
    - it begins a new residue (``residues`` changes) whose number and insertion code equal those of atom
      ``i − 1``'s residue (a copy restarting at the number where the previous one ended, e.g. Cα atoms
      ``… 5, 1, 2 …`` or ``… 5, 5, 6 …``). Without ``residues`` a residue is a run of equal numbers, so all-atom
      arrays (numbers repeat within a residue) need nothing more; residue numbers that only repeat through
      insertion codes (52, 52A) stay in one chain when ``icodes`` is given.

    Naming, with ``placeholder`` ids ``""`` and ``"SYSTEM"`` (a topology without chain identifiers: GRO, or
    MDAnalysis's default segid):

    - when every atom carries the same id and that id is a placeholder or covers several chains (one PSF segid
      over two copies), the chains are named ``A, B, C, …`` in order;
    - otherwise the first chain with an id keeps it; a chain whose id is a placeholder or was already used by
      an earlier chain gets a fresh id: the first of ``A … Z, a … z, 0 … 9, AA, AB, …`` not used anywhere in
      the input nor given before.

    Args:
        chains: ``(A,)`` chain ids (str; surrounding blanks ignored). resids: ``(A,)`` residue numbers (int).
        residues: ``(A,)`` residue index per atom (any values; a change marks a new residue) or None.
        icodes: ``(A,)`` insertion codes or None (all blank).
    Returns:
        ``(A,)`` str array: each chain's id, distinct between chains.
    """
    ids = np.char.strip(np.asarray(chains).astype(str))
    starts = chain_starts(ids, resids, residues, icodes)
    first = np.flatnonzero(starts)
    if len(first) == 0:
        return ids
    run_ids = [str(c) for c in ids[first]]
    same = len(set(run_ids)) == 1
    if same and (run_ids[0] in PLACEHOLDER_CHAINS or len(run_ids) > 1):
        fresh = _fresh_ids(set())
        names = [next(fresh) for _ in run_ids]
    else:
        taken = {c for c in run_ids if c not in PLACEHOLDER_CHAINS}
        fresh, seen, names = _fresh_ids(taken), set(), []
        for c in run_ids:
            if c in PLACEHOLDER_CHAINS or c in seen:
                c = next(fresh)
            seen.add(c)
            names.append(c)
    lengths = np.diff(np.append(first, len(ids)))
    return np.repeat(np.array(names, dtype=str), lengths)


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

    Atoms come in file order. Chain ids: the file's (PDB column 22, mmCIF ``auth_asym_id``), made distinct per
    chain by :func:`distinct_chains` on the selected atoms (gemmi's residues mark residue changes); chains whose
    numbering restarts under one id are cut before gemmi groups residues (module docstring).

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
    original = {}  # temporary chain name → the file's chain id (mmCIF chains cut at restarts)
    try:
        if _is_pdb(path):
            st = gemmi.read_pdb_string(_pdb_text_cut_at_restarts(path), split_chain_on_ter=True)
        elif _is_cif(path):
            st, original = _cif_structure_cut_at_restarts(path)
        else:
            st = gemmi.read_structure(str(path), merge_chain_parts=False)
    except Exception as exc:
        raise InputError(path, f"not a readable PDB/mmCIF file ({str(exc).splitlines()[0]})") from None
    if len(st) == 0:
        raise InputError(path, "contains no model")
    st.remove_alternative_conformations()
    frames, meta = [], None
    for model in st:
        rows, xyz, n_res = [], [], 0
        for chain in model:
            for res in chain:
                n_res += 1
                for atom in res:
                    rows.append((atom.name, res.name, res.seqid.num, original.get(chain.name, chain.name),
                                 _element_for(atom.name, res.name, atom.element.name if atom.element else ""),
                                 n_res, res.seqid.icode))
                    xyz.append((atom.pos.x, atom.pos.y, atom.pos.z))
        if meta is None:
            meta = rows
        elif len(rows) != len(meta):
            raise InputError(path, f"model {model.num} has {len(rows)} atoms, the first has {len(meta)}")
        frames.append(np.asarray(xyz, dtype=np.float64).reshape(-1, 3))
    if not meta:
        raise InputError(path, "contains no atoms")
    names, resnames, resids, chains, elements, residues, icodes = (np.asarray(c) for c in zip(*meta))
    all_coords = np.stack(frames)
    _check_finite_coords(all_coords, path, np.arange(len(frames)), names, resids)
    mask = _select_mask(names, resnames, elements, selection, path)
    coords = all_coords[:, mask]
    chains = distinct_chains(chains[mask], resids[mask], residues[mask], icodes[mask])
    return Conformations(coords, names[mask], resnames[mask], resids[mask].astype(int), chains,
                         elements[mask], f"{path.name} ({selection})", np.arange(len(frames)))


def _cif_structure_cut_at_restarts(path: Path):
    """gemmi's Structure of an mmCIF file whose chains are cut where residue numbers go back, and the map from
    the temporary names of the cut-off parts to the file's chain ids.

    gemmi groups ``_atom_site`` rows into residues by chain (``auth_asym_id``) and number, so a second copy
    under the same chain id (even with its own ``label_asym_id``) falls into the first copy's residues. Rows
    from such a restart (``auth_seq_id``, else ``label_seq_id``, smaller than the previous row's, same chain
    and model) up to the next change of chain are renamed ``<id>~<k>`` in the document before the structure is
    made; :func:`distinct_chains` names them afterwards."""
    import gemmi
    block = gemmi.cif.read(str(path)).sole_block()
    cols = {tag: block.find_values(f"_atom_site.{tag}") for tag in
            ("auth_asym_id", "label_asym_id", "auth_seq_id", "label_seq_id", "pdbx_PDB_model_num")}
    n = len(block.find_values("_atom_site.Cartn_x"))

    def values(*tags):
        for tag in tags:
            if len(cols[tag]) == n:
                return list(cols[tag])
        return [""] * n

    chains, seqs, models = values("auth_asym_id", "label_asym_id"), values("auth_seq_id", "label_seq_id"), \
        values("pdbx_PDB_model_num")
    taken, original = set(chains), {}
    current, prev_seq = None, None  # temporary name of the rows now being renamed; previous row's number
    for r in range(n):
        try:
            seq = int(seqs[r])
        except ValueError:
            seq = None
        if r == 0 or chains[r] != chains[r - 1] or models[r] != models[r - 1]:
            current = None
        elif seq is not None and prev_seq is not None and seq < prev_seq:
            k = 1
            while f"{chains[r]}~{k}" in taken:
                k += 1
            current = f"{chains[r]}~{k}"
            taken.add(current)
            original[current] = chains[r]
        if current is not None:
            for tag in ("auth_asym_id", "label_asym_id"):
                if len(cols[tag]) == n:
                    cols[tag][r] = current
        prev_seq = seq
    return gemmi.make_structure_from_block(block), original


def _pdb_text_cut_at_restarts(path: Path) -> str:
    """The PDB file's text with a TER record inserted before each ATOM/HETATM record whose residue number
    (columns 23–26) is smaller than the previous record's in the same chain (column 22) and model.

    gemmi reads a chain's atoms into an earlier residue of that chain with the same number, insertion code and
    name, so a second copy of a protein under the same chain letter would vanish into the first; read with
    ``split_chain_on_ter``, the inserted TER starts a new chain part instead. Numbers that cannot be parsed
    (hybrid-36) are not compared."""
    out, prev = [], None  # prev: (chain column, residue number) of the last record, None after TER/MODEL/ENDMDL
    with _open_text(path) as f:
        for line in f:
            if line.startswith(("ATOM  ", "HETATM")):
                try:
                    key = (line[21:22], int(line[22:26]))
                except ValueError:
                    key = None
                if prev is not None and key is not None and key[0] == prev[0] and key[1] < prev[1]:
                    out.append("TER\n")
                prev = key
            elif line.startswith(("TER", "MODEL", "ENDMDL")):
                prev = None
            out.append(line if line.endswith("\n") else line + "\n")
    return "".join(out)


def read_trajectory(topology: str | Path, trajectory: str | Path | None = None, selection: str = "ca",
                    frames=None, stride: int = 1) -> Conformations:
    """Read an MD trajectory with MDAnalysis.

    Args:
        topology: PSF / PDB / GRO / PRMTOP / TPR file.
        trajectory: DCD / XTC / TRR / NetCDF file (None: the topology's own coordinates).
        selection: ``"ca"``, ``"heavy"`` or ``"all"``.
        frames: explicit frame indices (0-based), else every ``stride``-th frame.

    Chain ids: the topology's chainIDs (PDB, mmCIF) unless all blank, else its segids (PSF; GRO has only
    "SYSTEM"), made distinct per chain by :func:`distinct_chains` on the selected atoms (MDAnalysis's residues
    mark residue changes): a GRO dimer reads as chains A and B.
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
    chains = distinct_chains(_mda_chain_ids(atoms)[mask], sel.resids, sel.resindices,
                             sel.icodes if hasattr(sel, "icodes") else None)
    src = f"{topology.name}" + (f" + {Path(trajectory).name}" if trajectory else "") + f" ({selection})"
    return Conformations(coords, np.asarray(sel.names), np.asarray(sel.resnames), np.asarray(sel.resids),
                         chains, elements[mask], src, idx)


def _mda_chain_ids(atoms) -> np.ndarray:
    """``(A,)`` chain ids of an MDAnalysis AtomGroup: its chainIDs (PDB, mmCIF, TPR) when it has them and they
    are not all blank, else its segids (PSF; "SYSTEM" for GRO), else blanks. :func:`distinct_chains` then
    names chains that share one id or have none."""
    for attr in ("chainIDs", "segids"):
        if hasattr(atoms, attr):
            ids = np.char.strip(np.asarray(getattr(atoms, attr)).astype(str))
            if len(ids) and (ids != "").any():
                return ids
    return np.full(len(atoms), "")


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


def _chain_runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First atom index ``(C,)`` and id ``(C,)`` of each run of equal ids."""
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=int)
    return first, ids[first]


def _check_conf(conf: Conformations, bfactors) -> np.ndarray:
    """The B-factor column ``(A,)`` (zeros when None), after checking the per-atom arrays' lengths."""
    A = conf.n_atoms
    for name in ("names", "resnames", "resids", "chains", "elements"):
        if len(getattr(conf, name)) != A:
            raise InputError("model", f"{A} atoms but {len(getattr(conf, name))} {name}")
    bf = np.zeros(A) if bfactors is None else np.asarray(bfactors, dtype=float).reshape(-1)
    if len(bf) != A:
        raise InputError("model", f"{A} atoms but {len(bf)} B-factors")
    return bf


def pdb_chain_ids(conf: Conformations, where="model") -> np.ndarray:
    """``(A,)`` one-character chain ids for a PDB file, one distinct id per chain.

    Chains are those of :func:`distinct_chains` (``conf.chains`` and ``conf.resids``). When every chain's id is
    already one character they are kept; otherwise the chains are named ``A … Z, a … z, 0 … 9`` in order of
    appearance. More than 62 chains do not fit the PDB's one column: :class:`InputError` naming ``where``, which
    asks for mmCIF.
    """
    ids = distinct_chains(conf.chains, conf.resids)
    first, run_ids = _chain_runs(ids)
    if len(run_ids) > len(PDB_CHAIN_IDS):
        raise InputError(where, f"{len(run_ids)} chains do not fit a PDB file (one character per chain, at most "
                                f"{len(PDB_CHAIN_IDS)}); write mmCIF (.cif) instead")
    if all(len(c) == 1 for c in run_ids):
        return ids
    letters = np.array(list(PDB_CHAIN_IDS[:len(run_ids)]), dtype=str)
    return np.repeat(letters, np.diff(np.append(first, len(ids))))


def write_pdb(path: str | Path, conf: Conformations, bfactors: np.ndarray | None = None) -> None:
    """Write the frames as a multi-model PDB (atomic; B-factor column from ``bfactors`` ``(A,)``).

    Chain ids: :func:`pdb_chain_ids` (one character, distinct per chain; more than 62 chains is an
    :class:`InputError`: use :func:`write_cif`). A TER record closes each chain in each model and takes the next
    serial number, as the PDB format has it. Columns: serial 7–11, name 13–16, residue name 18–20, chain 22,
    residue number 23–26 (modulo 10000), x y z 31–54 (``%8.3f`` Å), occupancy 55–60, B-factor 61–66,
    element 77–78.
    """
    from .atomic import atomic_path
    bf = _check_conf(conf, bfactors)
    chains = pdb_chain_ids(conf, path)
    last = np.r_[chains[1:] != chains[:-1], True] if conf.n_atoms else np.zeros(0, dtype=bool)
    lines = []
    for m, xyz in enumerate(conf.coords, start=1):
        lines.append(f"MODEL     {m:4d}")
        serial = 0
        for i, (x, y, z) in enumerate(xyz):
            serial += 1
            name = str(conf.names[i])
            name = f" {name:<3s}" if len(name) < 4 else name[:4]
            resname, chain, resid = str(conf.resnames[i])[:3], chains[i], int(conf.resids[i]) % 10000
            lines.append(f"ATOM  {serial % 100000:5d} {name:4s} {resname:>3s} {chain}"
                         f"{resid:4d}    {x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{bf[i]:6.2f}"
                         f"          {str(conf.elements[i])[:2]:>2s}")
            if last[i]:
                serial += 1
                lines.append(f"TER   {serial % 100000:5d}      {resname:>3s} {chain}{resid:4d}")
        lines.append("ENDMDL")
    lines.append("END")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def write_cif(path: str | Path, conf: Conformations, bfactors: np.ndarray | None = None) -> None:
    """Write the frames as a multi-model mmCIF file with gemmi (atomic; any number of chains).

    Chain ids are those of :func:`distinct_chains` (``conf.chains`` as they are when they already name each
    chain once), written as both ``label_asym_id`` and ``auth_asym_id``; residue numbers as ``auth_seq_id``;
    one ``_atom_site`` row per atom and frame with ``pdbx_PDB_model_num`` = frame + 1; B-factors from
    ``bfactors`` ``(A,)``. Residues are runs of atoms with equal chain, number and name; amino acids and
    nucleotides are ATOM records, everything else HETATM. gemmi, MDAnalysis and ChimeraX read it.
    """
    import re

    import gemmi

    from .atomic import atomic_path
    bf = _check_conf(conf, bfactors)
    chains = distinct_chains(conf.chains, conf.resids)
    resids = np.asarray(conf.resids).astype(np.int64)
    resnames = np.asarray(conf.resnames).astype(str)
    new_res = np.r_[True, (chains[1:] != chains[:-1]) | (resids[1:] != resids[:-1])
                    | (resnames[1:] != resnames[:-1])] if conf.n_atoms else np.zeros(0, dtype=bool)
    polymer = _AMINO | _NUCLEIC
    st = gemmi.Structure()
    st.name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).name.split(".")[0]) or "model"
    for m, xyz in enumerate(conf.coords, start=1):
        model, chain, res = gemmi.Model(str(m)), None, None
        for i in range(conf.n_atoms):
            if chain is None or chains[i] != chain.name:
                if chain is not None:
                    chain.add_residue(res)
                    model.add_chain(chain)
                chain, res = gemmi.Chain(str(chains[i])), None
            if new_res[i]:
                if res is not None:
                    chain.add_residue(res)
                res = gemmi.Residue()
                res.name, res.seqid, res.subchain = resnames[i], gemmi.SeqId(int(resids[i]), " "), chain.name
                res.het_flag = "A" if resnames[i].upper() in polymer else "H"
            atom = gemmi.Atom()
            atom.name = str(conf.names[i])
            atom.element = gemmi.Element(str(conf.elements[i]) or "X")
            atom.pos = gemmi.Position(*map(float, xyz[i]))
            atom.occ, atom.b_iso = 1.0, float(bf[i])
            res.add_atom(atom)
        if chain is not None:
            chain.add_residue(res)
            model.add_chain(chain)
        st.add_model(model)
    st.setup_entities()
    groups = gemmi.MmcifOutputGroups(True)
    groups.cell = groups.symmetry = False  # no crystal: no unit cell, no space group
    doc = st.make_mmcif_document(groups)
    with atomic_path(path) as tmp:
        doc.write_file(str(tmp))


def models_filename(conf: Conformations, stem: str = "models") -> str:
    """``<stem>.pdb`` when the chains fit a PDB file (at most 62), else ``<stem>.cif``."""
    n_chains = len(_chain_runs(distinct_chains(conf.chains, conf.resids))[1])
    return f"{stem}.pdb" if n_chains <= len(PDB_CHAIN_IDS) else f"{stem}.cif"


def write_models(path: str | Path, conf: Conformations, bfactors: np.ndarray | None = None) -> None:
    """Write the frames as a multi-model PDB (``.pdb``, at most 62 chains) or mmCIF (``.cif``, ``.mmcif``),
    chosen by the suffix of ``path``; see :func:`write_pdb` and :func:`write_cif`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pdb":
        write_pdb(path, conf, bfactors)
    elif suffix in {".cif", ".mmcif"}:
        write_cif(path, conf, bfactors)
    else:
        raise InputError(path, f"unknown model format {suffix!r} (write .pdb, .cif or .mmcif)")


def write_dcd(path: str | Path, conf: Conformations) -> Path:
    """Write the frames as a DCD trajectory (float32 Å, atomic; MDAnalysis's writer), and beside it a
    single-model topology (atom names, residues, chains of ``conf``): ``<stem>_topology.pdb``, or
    ``<stem>_topology.cif`` when the model has more chains than a PDB file can name (62), so that
    ``read_trajectory(topology, path)``, ChimeraX or MDAnalysis (mmCIF topologies since 2.11, through gemmi)
    open the pair. Returns the topology path.

    Much smaller and faster than a multi-model PDB for many particles: 12 bytes per atom and frame.
    """
    import warnings

    import MDAnalysis as mda

    from .atomic import atomic_path
    path = Path(path)
    first = Conformations(conf.coords[:1], conf.names, conf.resnames, conf.resids, conf.chains, conf.elements,
                          conf.source, None if conf.frames is None else conf.frames[:1])
    n_chains = len(_chain_runs(distinct_chains(conf.chains, conf.resids))[0])
    if n_chains > len(PDB_CHAIN_IDS):
        topology = path.with_name(f"{path.stem}_topology.cif")
        write_cif(topology, first)
    else:
        topology = path.with_name(f"{path.stem}_topology.pdb")
        write_pdb(topology, first)
    u = mda.Universe.empty(conf.n_atoms, trajectory=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MDAnalysis warns about the empty universe's missing unit cell
        with mda.Writer(str(tmp), n_atoms=conf.n_atoms) as w:
            for xyz in conf.coords:
                u.atoms.positions = xyz
                w.write(u.atoms)
    return topology
