"""Chain identity through every model file (io/models.py): read from PDB, mmCIF, GRO + DCD, PSF; written back
unambiguously; read back atom for atom.

Independent truths: the AdK trajectory (MDAnalysisTests: 214 residues, one segid 4AKE) copied twice by hand,
the fixed PDB columns sliced by hand, gemmi's and MDAnalysis's own views of the files we write, and hand-made
chain/residue arrays whose chains are known.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cryoscape.data.embedded import adk_files
from cryoscape.io.errors import InputError
from cryoscape.io.models import (Conformations, distinct_chains, read_model, read_structure, read_trajectory,
                                 write_cif, write_dcd, write_models, write_pdb)

SHIFT = np.array([60.0, 0.0, 0.0])  # Å between the two copies of the dimer


def _stack(parts: list[Conformations], chains: list[str] | None = None, shifts=None) -> Conformations:
    """Conformations made of ``parts`` side by side (atoms concatenated), copy ``k`` moved by ``shifts[k]``
    and named ``chains[k]`` (else keeping its own chain ids)."""
    shifts = [np.zeros(3)] * len(parts) if shifts is None else shifts
    coords = np.concatenate([p.coords + s for p, s in zip(parts, shifts)], axis=1)
    cat = [np.concatenate([getattr(p, a) for p in parts]) for a in ("names", "resnames", "resids")]
    ch = (np.concatenate([p.chains for p in parts]) if chains is None
          else np.concatenate([np.full(p.n_atoms, c) for p, c in zip(parts, chains)]))
    return Conformations(coords, cat[0], cat[1], cat[2], ch, np.concatenate([p.elements for p in parts]),
                         "stacked", np.arange(coords.shape[0]))


@pytest.fixture(scope="module")
def dimer(adk) -> Conformations:
    """Two copies of AdK's Cα (frames 0 and 60), the second 60 Å along x, both with AdK's segid 4AKE."""
    one = Conformations(adk.coords[[0, 60]], adk.names, adk.resnames, adk.resids, adk.chains, adk.elements)
    return _stack([one, one], shifts=[np.zeros(3), SHIFT])


@pytest.fixture(scope="module")
def heavy_adk() -> Conformations:
    psf, dcd = adk_files()
    return read_trajectory(psf, dcd, "heavy", frames=[0, 60])


def _runs(chains) -> list[tuple[str, int]]:
    """(id, length) of each run of equal chain ids."""
    chains = np.asarray(chains)
    first = np.flatnonzero(np.r_[True, chains[1:] != chains[:-1]])
    return [(str(chains[a]), int(b - a)) for a, b in zip(first, np.append(first[1:], len(chains)))]


def _assert_same_atoms(back: Conformations, truth: Conformations, atol: float = 1e-3) -> None:
    assert back.coords.shape == truth.coords.shape
    np.testing.assert_allclose(back.coords, truth.coords, atol=atol)
    np.testing.assert_array_equal(back.names, truth.names)
    np.testing.assert_array_equal(back.resnames, truth.resnames)
    np.testing.assert_array_equal(back.resids, truth.resids)


# --------------------------------------------------------------------------- distinct_chains


def test_distinct_chains_restart_and_reuse():
    # a second copy under the same id: the numbering goes back
    np.testing.assert_array_equal(distinct_chains(["A"] * 6, [1, 2, 3, 1, 2, 3]), list("AAABBB"))
    # an id reused after another chain gets a fresh id not used anywhere in the input
    out = distinct_chains(list("AABBAA"), [1, 2, 1, 2, 3, 4])
    np.testing.assert_array_equal(out, list("AABBCC"))
    out = distinct_chains(list("AABBCCAA"), [1, 2, 1, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(out, list("AABBCCDD"))
    # distinct ids are kept as they are, multi-character ones too
    ids = ["PROA"] * 3 + ["PROB"] * 3
    np.testing.assert_array_equal(distinct_chains(ids, [1, 2, 3, 1, 2, 3]), ids)
    # one real id over one chain is kept; over two copies the chains are lettered
    np.testing.assert_array_equal(distinct_chains(["4AKE"] * 3, [1, 2, 3]), ["4AKE"] * 3)
    np.testing.assert_array_equal(distinct_chains(["4AKE"] * 4, [1, 2, 1, 2]), list("AABB"))


def test_distinct_chains_blanks():
    # no chain identifiers at all (GRO: "SYSTEM"; blank PDB column): A, B, … in order
    np.testing.assert_array_equal(distinct_chains(["SYSTEM"] * 3, [5, 6, 7]), list("AAA"))
    np.testing.assert_array_equal(distinct_chains([""] * 5, [1, 2, 3, 1, 2]), list("AAABB"))
    np.testing.assert_array_equal(distinct_chains([" "] * 2, [1, 1], residues=[0, 1]), list("AB"))
    # a blank chain among named ones gets the first id nobody uses
    np.testing.assert_array_equal(distinct_chains(["A", "A", "", ""], [1, 2, 1, 2]), list("AABB"))
    np.testing.assert_array_equal(distinct_chains(["B", "B", "", ""], [1, 2, 1, 2]), list("BBAA"))
    # past 62 chains: two characters
    out = distinct_chains([""] * 70, np.ones(70, dtype=int), residues=np.arange(70))
    assert len(set(out)) == 70 and list(out[:3]) == list("ABC") and out[61] == "9" and out[62] == "AA"


def test_distinct_chains_residues():
    # all atoms: numbers repeat within a residue; a restart is a smaller number
    resids = [1, 1, 1, 2, 2, 1, 1, 2]
    np.testing.assert_array_equal(distinct_chains(["A"] * 8, resids), list("AAAAABBB"))
    # Cα atoms (one per residue): a copy that restarts at the number where the other ended
    np.testing.assert_array_equal(distinct_chains(["A"] * 5, [1, 2, 3, 3, 4], residues=np.arange(5)),
                                  list("AAABB"))
    # ... which atom arrays alone cannot tell from one residue
    np.testing.assert_array_equal(distinct_chains(["A"] * 5, [1, 2, 3, 3, 4]), list("AAAAA"))
    # insertion codes: 52, 52A are two residues of one chain
    out = distinct_chains(["H"] * 4, [51, 52, 52, 53], residues=np.arange(4), icodes=["", "", "A", ""])
    np.testing.assert_array_equal(out, list("HHHH"))


# --------------------------------------------------------------------------- PDB


def test_pdb_dimer_round_trip(dimer, tmp_path):
    path = tmp_path / "dimer.pdb"
    write_pdb(path, dimer)
    lines = path.read_text().splitlines()
    atoms = [l for l in lines if l.startswith("ATOM")]
    assert len(atoms) == 2 * 428
    # one character per chain, by hand from column 22: A for the first copy, B for the second, in both models
    assert "".join(l[21] for l in atoms[:428]) == "A" * 214 + "B" * 214
    assert sum(l.startswith("TER") for l in lines) == 4  # after each chain of each model
    xyz = np.array([[float(l[30:38]), float(l[38:46]), float(l[46:54])] for l in atoms]).reshape(2, 428, 3)
    np.testing.assert_allclose(xyz, dimer.coords, atol=5e-4 + 1e-9)
    back = read_model(path, "ca")
    _assert_same_atoms(back, dimer)
    assert _runs(back.chains) == [("A", 214), ("B", 214)]
    # MDAnalysis reads the same file (models as frames) to the same chains and atoms
    mda_back = read_trajectory(path)
    _assert_same_atoms(mda_back, dimer)
    np.testing.assert_array_equal(mda_back.chains, back.chains)


def test_pdb_one_letter_for_two_copies(dimer, tmp_path):
    """A PDB file that names both copies with one letter and no TER (as the writer did before): gemmi alone
    puts the second copy's atoms into the first copy's residues; read_model keeps 2 × 214 atoms, in order."""
    import gemmi
    write_pdb(tmp_path / "dimer.pdb", dimer)
    old = [l[:21] + "4" + l[22:] if l.startswith("ATOM") else l
           for l in (tmp_path / "dimer.pdb").read_text().splitlines() if not l.startswith("TER")]
    path = tmp_path / "one_letter.pdb"
    path.write_text("\n".join(old) + "\n")
    st = gemmi.read_structure(str(path))
    assert [(ch.name, len(ch), ch.count_atom_sites()) for ch in st[0]] == [("4", 214, 428)]  # merged
    back = read_model(path, "ca")
    _assert_same_atoms(back, dimer)
    assert _runs(back.chains) == [("A", 214), ("B", 214)]
    mda_back = read_trajectory(path)
    np.testing.assert_array_equal(mda_back.chains, back.chains)


def test_pdb_chain_letters(dimer, tmp_path):
    # single-character ids already distinct are kept; longer ones become letters in order
    for given, expect in ((["X", "Y"], "XY"), (["PROA", "PROB"], "AB"), (["Q", "Q"], "AB")):
        conf = _named(dimer, given)
        write_pdb(tmp_path / "c.pdb", conf)
        col = {l[21] for l in (tmp_path / "c.pdb").read_text().splitlines() if l.startswith("ATOM")}
        assert col == set(expect), (given, col)
        assert [c for c, _ in _runs(read_model(tmp_path / "c.pdb").chains)] == list(expect)


def _named(dimer: Conformations, ids: list[str]) -> Conformations:
    chains = np.repeat(np.array(ids), dimer.n_atoms // len(ids))
    return Conformations(dimer.coords, dimer.names, dimer.resnames, dimer.resids, chains, dimer.elements)


def test_heavy_atom_dimer(heavy_adk, tmp_path):
    """All heavy atoms (numbers repeat within each residue): two chains of equal size, PDB and mmCIF."""
    assert heavy_adk.n_atoms == 1656
    conf = _stack([heavy_adk, heavy_adk], shifts=[np.zeros(3), SHIFT])
    np.testing.assert_array_equal(conf.chains, ["4AKE"] * 3312)
    for name in ("heavy.pdb", "heavy.cif"):
        write_models(tmp_path / name, conf)
        back = read_model(tmp_path / name, "heavy")
        _assert_same_atoms(back, conf)
        assert _runs(back.chains) == [("A", 1656), ("B", 1656)], name
        ca = read_model(tmp_path / name, "ca")
        assert _runs(ca.chains) == [("A", 214), ("B", 214)], name


# --------------------------------------------------------------------------- mmCIF


def test_cif_dimer_round_trip(dimer, tmp_path):
    conf = _named(dimer, ["PROA", "PROB"])  # mmCIF keeps ids as they are
    path = tmp_path / "dimer.cif"
    write_cif(path, conf)
    back = read_model(path, "ca")
    _assert_same_atoms(back, conf, atol=1e-5)
    assert _runs(back.chains) == [("PROA", 214), ("PROB", 214)]
    np.testing.assert_array_equal(read_structure(path, frames=[1]).coords[0], back.coords[1])
    # label_asym_id and auth_asym_id, read with gemmi's CIF parser
    import gemmi
    block = gemmi.cif.read(str(path)).sole_block()
    assert list(block.find_values("_atom_site.label_asym_id")) == list(conf.chains) * 2
    assert list(block.find_values("_atom_site.auth_asym_id")) == list(conf.chains) * 2
    assert list(block.find_values("_atom_site.pdbx_PDB_model_num")) == ["1"] * 428 + ["2"] * 428
    # MDAnalysis (its mmCIF parser) reads the chains too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mda_back = read_trajectory(path)
    assert _runs(mda_back.chains) == [("PROA", 214), ("PROB", 214)]
    np.testing.assert_allclose(mda_back.coords[0], conf.coords[0], atol=1e-3)


def test_cif_one_chain_id_for_two_copies(dimer, tmp_path):
    """An mmCIF file naming both copies alike (auth and label asym ids): read as two chains, all atoms."""
    import gemmi
    path = tmp_path / "same.cif"
    write_cif(path, _named(dimer, ["A", "B"]))
    doc = gemmi.cif.read(str(path))
    block = doc.sole_block()
    for tag in ("_atom_site.auth_asym_id", "_atom_site.label_asym_id"):
        col = block.find_values(tag)
        for i in range(len(col)):
            col[i] = "A"
    doc.write_file(str(path))
    st = gemmi.read_structure(str(path))
    assert st[0].count_atom_sites() == 428 and len(st[0][0]) == 214  # gemmi merges the copies' residues
    back = read_model(path, "ca")
    _assert_same_atoms(back, dimer)
    assert _runs(back.chains) == [("A", 214), ("B", 214)]


def test_seventy_chains(adk, tmp_path):
    """70 chains of 5 residues: mmCIF keeps every id; PDB refuses (one character per chain); DCD's topology
    becomes mmCIF."""
    piece = Conformations(adk.coords[:2, :5], adk.names[:5], adk.resnames[:5], adk.resids[:5],
                          adk.chains[:5], adk.elements[:5])
    ids = [f"C{k}" for k in range(1, 71)]
    conf = _stack([piece] * 70, chains=ids, shifts=[np.array([0.0, 0.0, 12.0 * k]) for k in range(70)])
    assert conf.n_atoms == 350
    path = tmp_path / "many.cif"
    write_models(path, conf)
    back = read_model(path, "ca")
    _assert_same_atoms(back, conf, atol=1e-5)
    np.testing.assert_array_equal(back.chains, conf.chains)
    for writer in (write_pdb, write_models):
        with pytest.raises(InputError) as ei:
            writer(tmp_path / "many.pdb", conf)
        msg = str(ei.value)
        assert "70 chains" in msg and ".cif" in msg and str(tmp_path / "many.pdb") in msg and "\n" not in msg
    with pytest.raises(InputError, match="unknown model format"):
        write_models(tmp_path / "many.xyz", conf)
    # the same chains, blank: lettered A … 9, then AA … AH
    blank = Conformations(conf.coords, conf.names, conf.resnames, conf.resids, np.full(350, ""), conf.elements)
    write_cif(tmp_path / "blank.cif", blank)
    names = [c for c, _ in _runs(read_model(tmp_path / "blank.cif").chains)]
    assert len(set(names)) == 70 and names[0] == "A" and names[-1] == "AH"
    # DCD + topology
    topology = write_dcd(tmp_path / "many.dcd", conf)
    assert topology == tmp_path / "many_topology.cif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = read_trajectory(topology, tmp_path / "many.dcd")
    _assert_same_atoms(traj, conf)
    np.testing.assert_array_equal(traj.chains, conf.chains)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.cif", "many.cif", "many.dcd",
                                                           "many_topology.cif"]


# --------------------------------------------------------------------------- topologies without chain ids


@pytest.fixture(scope="module")
def gro_dimer(tmp_path_factory):
    """AdK twice (all atoms), written by MDAnalysis as a GRO (no chain identifiers) and a 2-frame DCD; the
    second copy 60 Å along x. Returns (gro, dcd, coordinates (2, 2·3341, 3) in Å)."""
    import MDAnalysis as mda
    folder = tmp_path_factory.mktemp("gro")
    psf, dcd = adk_files()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(psf), str(dcd))
        both = mda.Merge(u.atoms, u.atoms)
        n = len(u.atoms)
        frames = []
        for f in (0, 60):
            u.trajectory[f]
            frames.append(np.concatenate([u.atoms.positions, u.atoms.positions + SHIFT]).astype(np.float64))
        both.atoms.positions = frames[0]
        both.atoms.write(str(folder / "dimer.gro"))
        with mda.Writer(str(folder / "dimer.dcd"), n_atoms=2 * n) as w:
            for xyz in frames:
                both.atoms.positions = xyz
                w.write(both.atoms)
    return folder / "dimer.gro", folder / "dimer.dcd", np.stack(frames)


def test_gro_dcd_dimer(gro_dimer, adk, tmp_path):
    gro, dcd, coords = gro_dimer
    import MDAnalysis as mda
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the GRO's empty box
        assert {str(s) for s in mda.Universe(str(gro)).segments.segids} == {"SYSTEM"}  # no chain identifiers
    ca = read_trajectory(gro, dcd, "ca")
    assert ca.n_atoms == 428 and ca.n_frames == 2
    assert _runs(ca.chains) == [("A", 214), ("B", 214)]
    np.testing.assert_array_equal(ca.resids, np.r_[adk.resids, adk.resids])
    np.testing.assert_allclose(ca.coords[:, :214], adk.coords[[0, 60]], atol=1e-3)
    np.testing.assert_allclose(ca.coords[:, 214:], adk.coords[[0, 60]] + SHIFT, atol=1e-3)
    heavy = read_trajectory(gro, dcd, "heavy")
    assert _runs(heavy.chains) == [("A", 1656), ("B", 1656)]
    every = read_trajectory(gro, dcd, "all")
    assert _runs(every.chains) == [("A", 3341), ("B", 3341)]
    np.testing.assert_allclose(every.coords, coords, atol=1e-3)
    # our DCD + topology read back atom for atom
    topology = write_dcd(tmp_path / "out.dcd", every)
    assert topology == tmp_path / "out_topology.pdb"
    back = read_trajectory(topology, tmp_path / "out.dcd", "all")
    _assert_same_atoms(back, every)
    np.testing.assert_array_equal(back.chains, every.chains)
    np.testing.assert_array_equal(read_model(topology, "all").chains, every.chains)
