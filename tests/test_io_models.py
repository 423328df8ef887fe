"""Atomic models and trajectories: AdK PSF + DCD, CHARMM-style PDBs, multi-model PDBs, frame selection.

Independent truths: the PSF atom table and the DCD's Fortran records decoded here with numpy, the
fixed PDB columns sliced by hand, and protein geometry (consecutive Cα atoms are 3.8 Å apart).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoscape.data.embedded import adk_files
from cryoscape.io.errors import InputError
from cryoscape.io.models import read_model, read_structure, read_trajectory, write_dcd, write_pdb


def _psf_atoms(psf):
    """(names, resids, masses) from the !NATOM section of a PSF."""
    lines = Path(psf).read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if "!NATOM" in l)
    n = int(lines[start].split()[0])
    rows = [lines[start + 1 + k].split() for k in range(n)]
    return (np.array([r[4] for r in rows]), np.array([int(r[2]) for r in rows]),
            np.array([float(r[7]) for r in rows]))


def _dcd_frames(dcd, natom):
    """Coordinates ``(F, natom, 3)`` from a CHARMM/NAMD DCD: Fortran records, X, Y, Z per frame."""
    raw = Path(dcd).read_bytes()
    pos, records = 0, []
    while pos < len(raw):
        n = int(np.frombuffer(raw, "<i4", 1, pos)[0])
        records.append(raw[pos + 4: pos + 4 + n])
        assert int(np.frombuffer(raw, "<i4", 1, pos + 4 + n)[0]) == n
        pos += n + 8
    assert records[0][:4] == b"CORD"
    assert int(np.frombuffer(records[2], "<i4")[0]) == natom
    coords = [np.frombuffer(r, "<f4") for r in records[3:] if len(r) == 4 * natom]
    xyz = np.array(coords, dtype=np.float64).reshape(-1, 3, natom)
    return xyz.transpose(0, 2, 1)


@pytest.fixture(scope="module")
def adk_paths():
    return adk_files()


@pytest.fixture(scope="module")
def adk_truth(adk_paths):
    psf, dcd = adk_paths
    names, resids, masses = _psf_atoms(psf)
    return dict(names=names, resids=resids, masses=masses, coords=_dcd_frames(dcd, len(names)))


# --------------------------------------------------------------------------- AdK


def test_adk_calpha_trajectory(adk, adk_truth):
    assert adk.coords.shape == (102, 214, 3)
    assert adk.n_frames == 102 and adk.n_atoms == 214
    np.testing.assert_array_equal(adk.frames, np.arange(102))
    ca = adk_truth["names"] == "CA"
    assert ca.sum() == 214
    np.testing.assert_allclose(adk.coords, adk_truth["coords"][:, ca], atol=1e-4)
    np.testing.assert_array_equal(adk.resids, adk_truth["resids"][ca])
    assert set(adk.elements) == {"C"} and set(adk.names) == {"CA"}
    # Å: consecutive Cα atoms of a protein are 3.8 Å apart (trans peptides).
    d = np.linalg.norm(np.diff(adk.coords, axis=1), axis=-1)
    consecutive = np.diff(adk.resids) == 1
    assert consecutive.sum() == 213
    assert abs(d[:, consecutive].mean() - 3.8) < 0.1, d[:, consecutive].mean()
    assert 2.5 < d[:, consecutive].min() and d[:, consecutive].max() < 4.3  # nothing broken or absurd


def test_adk_selections(adk_paths, adk_truth):
    psf, dcd = adk_paths
    all_atoms = read_trajectory(psf, dcd, "all", frames=[0, 101])
    assert all_atoms.n_atoms == 3341
    np.testing.assert_allclose(all_atoms.coords, adk_truth["coords"][[0, 101]], atol=1e-4)
    heavy = read_trajectory(psf, dcd, "heavy", frames=[0])
    is_heavy = adk_truth["masses"] > 1.5  # hydrogens weigh 1.008 in the PSF
    assert heavy.n_atoms == is_heavy.sum() == 1656
    assert "H" not in set(heavy.elements)
    np.testing.assert_allclose(heavy.coords[0], adk_truth["coords"][0, is_heavy], atol=1e-4)
    with pytest.raises(InputError, match="selection"):
        read_trajectory(psf, dcd, "backbone")


def test_adk_files_are_the_embedded_ones(adk_paths):
    psf, dcd = adk_paths
    assert psf.name == "adk.psf" and dcd.name == "adk_dims2.dcd"
    assert psf.is_file() and dcd.is_file()


# --------------------------------------------------------------------------- frame selection


def test_trajectory_frames_and_stride(adk, adk_paths):
    psf, dcd = adk_paths
    strided = read_structure(dcd, topology=psf, stride=10)
    np.testing.assert_array_equal(strided.frames, np.arange(0, 102, 10))
    np.testing.assert_allclose(strided.coords, adk.coords[::10])
    picked = read_structure(dcd, topology=psf, frames=[101, 0, 50])
    np.testing.assert_array_equal(picked.frames, [101, 0, 50])
    np.testing.assert_allclose(picked.coords, adk.coords[[101, 0, 50]])
    for bad in ([102], [-1], []):
        with pytest.raises(InputError, match="out of range"):
            read_structure(dcd, topology=psf, frames=bad)
    with pytest.raises(InputError, match="stride"):
        read_structure(dcd, topology=psf, stride=0)


def test_trajectory_needs_topology(adk_paths):
    _, dcd = adk_paths
    with pytest.raises(InputError) as ei:
        read_structure(dcd)
    assert str(dcd) in str(ei.value) and "topology" in str(ei.value)


def test_topology_trajectory_mismatch(adk_paths):
    from MDAnalysisTests.datafiles import DCD_TRICLINIC
    psf, _ = adk_paths
    assert len(_psf_atoms(psf)[0]) == 3341
    with pytest.raises(InputError) as ei:
        read_structure(DCD_TRICLINIC, topology=psf)
    msg = str(ei.value)
    assert str(DCD_TRICLINIC) in msg and "\n" not in msg, msg


def test_missing_and_unknown_files(tmp_path, adk_paths):
    psf, _ = adk_paths
    odd = tmp_path / "model.xyz9"
    odd.write_text("1\n\nC 0 0 0\n")
    with pytest.raises(InputError, match="unknown model type"):
        read_structure(odd)
    with pytest.raises(InputError, match="not found"):
        read_structure(tmp_path / "missing.pdb")
    with pytest.raises(InputError, match="not found"):
        read_structure(tmp_path / "missing.dcd", topology=psf)


def test_topology_without_coordinates(adk_paths):
    psf, _ = adk_paths
    with pytest.raises(InputError) as ei:
        read_structure(psf)
    assert str(psf) in str(ei.value)


# --------------------------------------------------------------------------- PDB


def _atom(rec, serial, name, resn, chain, resi, xyz, elem=""):
    x, y, z = xyz
    return (f"{rec:<6s}{serial:5d} {name:4s} {resn:>3s} {chain}{resi:4d}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {elem:>2s}")


def test_charmm_pdb_without_elements(tmp_path):
    lines = [
        _atom("ATOM", 1, " N  ", "ALA", "A", 1, (0.0, 0.0, 0.0)),
        _atom("ATOM", 2, " CA ", "ALA", "A", 1, (1.458, 0.0, 0.0)),
        _atom("ATOM", 3, " C  ", "ALA", "A", 1, (2.0, 1.4, 0.0)),
        _atom("ATOM", 4, " CA ", "GLY", "A", 2, (3.2, 3.6, 0.5)),
        _atom("ATOM", 5, " CA ", "HSD", "A", 3, (6.5, 5.0, 0.7)),  # CHARMM histidine name
        _atom("HETATM", 6, "CA  ", "CAL", "A", 101, (10.0, 10.0, 10.0)),  # calcium ions
        _atom("HETATM", 7, "CA  ", " CA", "A", 102, (14.0, 10.0, 10.0)),
    ]
    assert all(l[76:78] == "  " for l in lines)  # element columns 77-78 blank
    path = tmp_path / "charmm.pdb"
    path.write_text("\n".join(lines) + "\nEND\n")
    conf = read_model(path, "all")
    assert conf.n_atoms == 7
    protein_ca = (conf.names == "CA") & np.isin(conf.resnames, ["ALA", "GLY", "HSD"])
    assert protein_ca.sum() == 3
    assert set(conf.elements[protein_ca]) == {"C"}
    assert list(conf.elements[conf.resnames == "CAL"]) == ["CA"]
    assert list(conf.elements[conf.resnames == "CA"]) == ["CA"]
    assert list(conf.elements[:3]) == ["N", "C", "C"]
    ca = read_model(path, "ca")  # the Cα selection skips the ions
    assert list(ca.resnames) == ["ALA", "GLY", "HSD"]
    np.testing.assert_allclose(ca.coords[0], [[1.458, 0, 0], [3.2, 3.6, 0.5], [6.5, 5.0, 0.7]])
    heavy = read_model(path, "heavy")
    assert heavy.n_atoms == 7


def test_charmm_pdb_misaligned_ca_name(tmp_path):
    """A protein CA written left-aligned (as calcium would be) is still carbon inside an amino acid."""
    path = tmp_path / "shifted.pdb"
    path.write_text(_atom("ATOM", 1, "CA  ", "LYS", "A", 1, (1.0, 2.0, 3.0)) + "\nEND\n")
    conf = read_model(path, "all")
    assert list(conf.elements) == ["C"]


def _multi_model_text(coords):
    lines = []
    for m, xyz in enumerate(coords, start=1):
        lines.append(f"MODEL     {m:4d}")
        for i, p in enumerate(xyz):
            lines.append(_atom("ATOM", i + 1, " CA ", "ALA", "A", i + 1, p, "C"))
        lines.append("ENDMDL")
    return "\n".join(lines) + "\nEND\n"


def test_multi_model_pdb_frames(tmp_path):
    rng = np.random.default_rng(0)
    coords = np.round(rng.uniform(-30, 30, size=(4, 5, 3)), 3)
    path = tmp_path / "models.pdb"
    path.write_text(_multi_model_text(coords))
    conf = read_model(path)
    assert conf.coords.shape == (4, 5, 3)
    np.testing.assert_allclose(conf.coords, coords, atol=1e-6)
    np.testing.assert_array_equal(conf.frames, np.arange(4))
    sel = read_structure(path, stride=2)
    np.testing.assert_array_equal(sel.frames, [0, 2])
    np.testing.assert_allclose(sel.coords, coords[[0, 2]], atol=1e-6)
    one = read_structure(path, frames=[3])
    np.testing.assert_allclose(one.coords, coords[[3]], atol=1e-6)
    with pytest.raises(InputError, match="out of range"):
        read_structure(path, frames=[4])


def test_multi_model_pdb_with_unequal_models(tmp_path):
    text = _multi_model_text(np.zeros((2, 3, 3)))
    lines = text.splitlines()
    del lines[-3]  # drop the last atom of model 2
    path = tmp_path / "ragged.pdb"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as ei:
        read_model(path)
    assert str(path) in str(ei.value)


def test_write_pdb_round_trip(adk, tmp_path):
    conf = adk
    sub = type(conf)(conf.coords[:3], conf.names, conf.resnames, conf.resids, conf.chains, conf.elements,
                     conf.source, conf.frames[:3])
    bf = np.linspace(0, 99.5, conf.n_atoms)
    path = tmp_path / "out.pdb"
    write_pdb(path, sub, bfactors=bf)
    # The fixed columns, sliced by hand.
    atoms = [l for l in path.read_text().splitlines() if l.startswith("ATOM")]
    assert len(atoms) == 3 * 214
    xyz = np.array([[float(l[30:38]), float(l[38:46]), float(l[46:54])] for l in atoms]).reshape(3, 214, 3)
    np.testing.assert_allclose(xyz, sub.coords, atol=5e-4 + 1e-9)
    np.testing.assert_allclose([float(l[60:66]) for l in atoms[:214]], bf, atol=5e-3 + 1e-9)
    assert {l[12:16] for l in atoms} == {" CA "} and {l[76:78] for l in atoms} == {" C"}
    # Read back.
    back = read_model(path, "ca")
    assert back.coords.shape == (3, 214, 3)
    np.testing.assert_allclose(back.coords, sub.coords, atol=5e-4 + 1e-9)
    np.testing.assert_array_equal(back.resids, sub.resids)
    np.testing.assert_array_equal(back.resnames, sub.resnames)
    np.testing.assert_array_equal(back.names, sub.names)
    assert set(back.elements) == {"C"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pdb"]


def test_write_dcd_round_trip(adk, tmp_path):
    """DCD + topology written by us, read back by MDAnalysis: float32 coordinates, same residues."""
    rng = np.random.default_rng(0)
    coords = adk.coords[:5] + rng.normal(0, 0.3, (5, 214, 3))  # not the DCD's own float32 values
    sub = type(adk)(coords, adk.names, adk.resnames, adk.resids, adk.chains, adk.elements, adk.source,
                    adk.frames[:5])
    topology = write_dcd(tmp_path / "m.dcd", sub)
    assert topology == tmp_path / "m_topology.pdb"
    back = read_trajectory(topology, tmp_path / "m.dcd")
    assert back.coords.shape == (5, 214, 3)
    np.testing.assert_allclose(back.coords, coords, atol=1e-5 * np.abs(coords).max())
    np.testing.assert_array_equal(back.resids, adk.resids)
    assert set(back.elements) == {"C"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dcd", "m_topology.pdb"]
