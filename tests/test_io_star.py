"""RELION STAR files: round trips, the shared third-party files, image lookup, bad input, poses.

Independent truths: ``starfile.read`` for files we write, and for the shared files a minimal loop parser
written here (whitespace-separated tokens under ``data_``/``loop_``), plus RELION's Euler formula
evaluated by hand with numpy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from cryoscape.data.particles import table_ctf, table_poses
from cryoscape.geometry import euler_to_matrix
from cryoscape.io.errors import InputError
from cryoscape.io.star import read_star, write_star


def _parse_loops(path) -> dict[str, pd.DataFrame]:
    """Every ``data_`` block with a loop → DataFrame of strings (columns without the leading ``_``)."""
    blocks: dict[str, pd.DataFrame] = {}
    name, cols, rows = None, [], []

    def flush():
        if name is not None and cols:
            blocks[name] = pd.DataFrame(rows, columns=cols)

    for line in Path(path).read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("data_"):
            flush()
            name, cols, rows = s[5:], [], []
        elif s == "loop_":
            continue
        elif s.startswith("_"):
            cols.append(s.split()[0][1:])
        else:
            toks = s.split()
            assert len(toks) == len(cols), f"{path}: row with {len(toks)} tokens, {len(cols)} columns"
            rows.append(toks)
    flush()
    return blocks


def _num(series) -> np.ndarray | None:
    try:
        return series.astype(float).to_numpy()
    except ValueError:
        return None


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _ry(b):
    c, s = np.cos(b), np.sin(b)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def _relion_matrix(rot_deg, tilt_deg, psi_deg):
    """CONVENTIONS.md: A = Rz(psi) · Ry(tilt) · Rz(rot), angles in degrees."""
    r, t, p = np.deg2rad([rot_deg, tilt_deg, psi_deg])
    return _rz(p) @ _ry(t) @ _rz(r)


# --------------------------------------------------------------------------- round trip


def _example_tables():
    rng = np.random.default_rng(0)
    n = 6
    parts = pd.DataFrame({
        "rlnImageName": [f"{i + 1}@stacks/part.mrcs" for i in range(n)],
        "rlnDefocusU": np.round(rng.uniform(8000, 20000, n), 3),
        "rlnDefocusV": np.round(rng.uniform(8000, 20000, n), 3),
        "rlnDefocusAngle": np.round(rng.uniform(-180, 180, n), 4),
        "rlnPhaseShift": np.zeros(n),
        "rlnAngleRot": np.round(rng.uniform(-180, 180, n), 4),
        "rlnAngleTilt": np.round(rng.uniform(0, 180, n), 4),
        "rlnAnglePsi": np.round(rng.uniform(-180, 180, n), 4),
        "rlnOriginXAngst": np.round(rng.normal(0, 3, n), 4),
        "rlnOriginYAngst": np.round(rng.normal(0, 3, n), 4),
        "rlnOpticsGroup": np.array([1, 2, 1, 2, 2, 1]),
        "cryoscapeConformation": np.arange(n) * 7,
    })
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1, 2],
        "rlnOpticsGroupName": ["opticsGroup1", "opticsGroup2"],
        "rlnVoltage": [300.0, 200.0],
        "rlnSphericalAberration": [2.7, 2.0],
        "rlnAmplitudeContrast": [0.1, 0.07],
        "rlnImagePixelSize": [1.5, 2.25],
        "rlnImageSize": [64, 48],
        "rlnImageDimensionality": [2, 2],
    })
    return parts, optics


def _assert_frame_values(got: pd.DataFrame, want: pd.DataFrame, what: str):
    for c in want.columns:
        assert c in got.columns, f"{what}: column {c} missing"
        w, g = want[c].to_numpy(), got[c].to_numpy()
        if np.issubdtype(w.dtype, np.number):
            np.testing.assert_allclose(g.astype(float), w.astype(float), atol=1e-6, err_msg=f"{what}: {c}")
        else:
            assert [str(v) for v in g] == [str(v) for v in w], f"{what}: {c}"


def test_write_read_round_trip(tmp_path):
    parts, optics = _example_tables()
    path = tmp_path / "p.star"
    write_star(path, parts, optics)
    t = read_star(path)
    assert len(t) == len(parts)
    _assert_frame_values(t.particles, parts, "particles")
    _assert_frame_values(t.optics, optics, "optics")
    # Optics columns merged into every particle from its own group.
    by_group = optics.set_index("rlnOpticsGroup")
    for c in ("rlnVoltage", "rlnImagePixelSize", "rlnImageSize", "rlnSphericalAberration"):
        want = by_group.loc[parts["rlnOpticsGroup"], c].to_numpy()
        np.testing.assert_allclose(t.particles[c].to_numpy(dtype=float), want, err_msg=c)
    np.testing.assert_allclose(t.apix, by_group.loc[parts["rlnOpticsGroup"], "rlnImagePixelSize"])
    np.testing.assert_allclose(t.shifts_angst(), parts[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy())
    np.testing.assert_allclose(t.euler_deg(), parts[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]])


def test_written_file_reads_the_same_in_starfile(tmp_path):
    parts, optics = _example_tables()
    path = tmp_path / "p.star"
    write_star(path, parts, optics)
    blocks = starfile.read(path, always_dict=True)
    assert set(blocks) == {"optics", "particles"}
    _assert_frame_values(blocks["optics"], optics, "starfile optics")
    _assert_frame_values(blocks["particles"], parts, "starfile particles")
    # Optics values live only in data_optics.
    assert "rlnVoltage" not in blocks["particles"].columns
    # Our own parser agrees too, and the text is deterministic.
    mine = _parse_loops(path)
    np.testing.assert_allclose(_num(mine["particles"]["rlnDefocusU"]), parts["rlnDefocusU"], atol=1e-6)
    again = tmp_path / "q.star"
    write_star(again, parts, optics)
    assert again.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.star", "q.star"]  # no temp files left


# --------------------------------------------------------------------------- shared files

SHARED_COUNTS = {
    "relion31.star": 5,
    "relion31.v2.star": 5,
    "relion31.6opticsgroups.star": 139,
    "relion5.star": 17,
    "toy_projections.star": 1000,
    "empiar_10076_7.star": 7,
}


def _particle_block(blocks):
    if "particles" in blocks:
        return blocks["particles"]
    return next(v for k, v in blocks.items() if k != "optics")


def test_shared_star_files_are_all_covered(cryodrgn_data):
    assert sorted(p.name for p in cryodrgn_data.glob("*.star")) == sorted(SHARED_COUNTS)


@pytest.mark.parametrize("name", sorted(SHARED_COUNTS))
def test_shared_star_loads_with_right_numbers(cryodrgn_data, name):
    path = cryodrgn_data / name
    t = read_star(path)
    truth = _particle_block(_parse_loops(path))
    assert len(truth) == SHARED_COUNTS[name]
    assert len(t) == SHARED_COUNTS[name]
    # Every numeric column of the particle block is read with the file's values, in the file's order.
    for c in truth.columns:
        assert c in t.particles.columns, c
        want = _num(truth[c])
        if want is not None:
            np.testing.assert_allclose(t.particles[c].to_numpy(dtype=float), want, rtol=1e-12, err_msg=c)
        else:
            assert t.particles[c].astype(str).tolist() == truth[c].tolist(), c
    assert t.particles["rlnOpticsGroup"].notna().all()


def test_v2_particles_block_first_same_table(cryodrgn_data):
    text = (cryodrgn_data / "relion31.v2.star").read_text()
    assert text.index("data_particles") < text.index("data_optics")  # the case under test
    a, b = read_star(cryodrgn_data / "relion31.star"), read_star(cryodrgn_data / "relion31.v2.star")
    pd.testing.assert_frame_equal(a.particles, b.particles)
    pd.testing.assert_frame_equal(a.optics, b.optics)
    assert a.apix == pytest.approx(np.full(5, 2.806))


def test_six_optics_groups_merged_per_particle(cryodrgn_data):
    path = cryodrgn_data / "relion31.6opticsgroups.star"
    t = read_star(path)
    blocks = _parse_loops(path)
    optics = blocks["optics"].set_index("rlnOpticsGroup")
    assert len(optics) == 6 and len(t.optics) == 6
    # The groups really differ, so a wrong merge would show.
    assert len(set(optics["rlnImagePixelSize"])) > 1 and len(set(optics["rlnSphericalAberration"])) > 1
    groups = blocks["particles"]["rlnOpticsGroup"].tolist()
    assert len(set(groups)) > 1
    for c in ("rlnImagePixelSize", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
              "rlnImageSize"):
        want = optics.loc[groups, c].astype(float).to_numpy()
        np.testing.assert_allclose(t.particles[c].to_numpy(dtype=float), want, err_msg=c)
    k = groups.index("4")  # a particle of group 4 (Cs 2.6 in the file)
    assert t.particles["rlnSphericalAberration"].iloc[k] == pytest.approx(
        float(optics.loc["4", "rlnSphericalAberration"]))


def test_relion30_toy_projections(cryodrgn_data):
    path = cryodrgn_data / "toy_projections.star"
    assert "data_optics" not in path.read_text()
    t = read_star(path)
    assert len(t) == 1000 and len(t.optics) == 1
    assert (t.particles["rlnVoltage"] == 300).all() and (t.particles["rlnPhaseShift"] == 90).all()
    assert "rlnImagePixelSize" not in t.particles  # the file gives no pixel size ...
    with pytest.raises(InputError, match="rlnImagePixelSize"):
        t.apix
    t1 = read_star(path, apix=1.0)  # ... so the caller supplies one
    np.testing.assert_array_equal(t1.apix, np.ones(1000))
    with pytest.raises(InputError, match="rlnAngleRot"):  # no poses in this file
        table_poses(t)[0]


def test_relion30_apix_from_detector(cryodrgn_data):
    path = cryodrgn_data / "empiar_10076_7.star"
    t = read_star(path)
    truth = _parse_loops(path)[""]
    want = _num(truth["rlnDetectorPixelSize"]) * 1e4 / _num(truth["rlnMagnification"])
    np.testing.assert_allclose(t.apix, want, rtol=1e-12)
    assert t.apix == pytest.approx(np.full(7, 1.31), abs=1e-3)
    assert t.optics["rlnImagePixelSize"].iloc[0] == pytest.approx(5e4 / 38168)


def test_relion30_pixel_shifts_converted(tmp_path):
    path = tmp_path / "old.star"
    path.write_text("data_\nloop_\n_rlnImageName\n_rlnOriginX\n_rlnOriginY\n_rlnDetectorPixelSize\n"
                    "_rlnMagnification\n1@a.mrcs 2.0 -3.0 5.0 25000\n2@a.mrcs -1.5 0.5 5.0 25000\n")
    t = read_star(path)
    np.testing.assert_allclose(t.apix, [2.0, 2.0])
    np.testing.assert_allclose(t.shifts_angst(), [[4.0, -6.0], [-3.0, 1.0]])


# --------------------------------------------------------------------------- images


def test_image_locations_relion31(cryodrgn_data):
    path = cryodrgn_data / "relion31.star"
    truth = _parse_loops(path)["particles"]
    # What the file really says: rlnImageName points at relion31.mrcs beside it, the Extract/ paths
    # are only in rlnImageOriginalName.
    assert all(v.endswith("@relion31.mrcs") for v in truth["rlnImageName"])
    assert all("@Extract/" in v for v in truth["rlnImageOriginalName"])
    idx, stacks = read_star(path).image_locations()
    np.testing.assert_array_equal(idx, np.arange(5))
    assert {Path(s).resolve() for s in stacks} == {(cryodrgn_data / "relion31.mrcs").resolve()}


def test_image_locations_need_datadir_for_moved_project(cryodrgn_data, tmp_path):
    src = (cryodrgn_data / "relion31.star").read_text()
    moved = tmp_path / "moved.star"
    moved.write_text(src.replace("@relion31.mrcs", "@Extract/job133/Micrographs/relion31.mrcs"))
    t = read_star(moved)
    assert t.particles["rlnImageName"].iloc[0] == "000001@Extract/job133/Micrographs/relion31.mrcs"
    with pytest.raises(InputError) as ei:
        t.image_locations()
    assert "--datadir" in str(ei.value) and str(moved) in str(ei.value)
    idx, stacks = t.image_locations(datadir=cryodrgn_data)
    np.testing.assert_array_equal(idx, np.arange(5))
    assert {Path(s).resolve() for s in stacks} == {(cryodrgn_data / "relion31.mrcs").resolve()}


def test_image_locations_polish_paths_not_found(cryodrgn_data):
    t = read_star(cryodrgn_data / "relion31.6opticsgroups.star")
    with pytest.raises(InputError, match="--datadir"):
        t.image_locations()


def test_image_locations_relion5_two_stacks(cryodrgn_data):
    path = cryodrgn_data / "relion5.star"
    truth = _parse_loops(path)["particles"]["rlnImageName"].tolist()
    idx, stacks = read_star(path).image_locations()
    assert [f"{i + 1}@{Path(s).name}" for i, s in zip(idx, stacks)] == truth
    assert {Path(s).name for s in stacks} == {"toy_images_a.mrcs", "toy_images_b.mrcs"}
    assert all(Path(s).is_file() for s in stacks)


# --------------------------------------------------------------------------- bad input


def test_missing_columns_named(tmp_path):
    parts, optics = _example_tables()
    path = tmp_path / "noctf.star"
    write_star(path, parts.drop(columns=["rlnDefocusU", "rlnAngleTilt"]), optics)
    t = read_star(path)
    with pytest.raises(InputError) as ei:
        table_ctf(t)
    assert "rlnDefocusU" in str(ei.value) and str(path) in str(ei.value)
    with pytest.raises(InputError, match="rlnAngleTilt"):
        table_poses(t)[0]
    no_names = tmp_path / "nonames.star"
    write_star(no_names, parts.drop(columns=["rlnImageName"]), optics)
    with pytest.raises(InputError, match="rlnImageName"):
        read_star(no_names).image_locations()


def test_nan_rejected(tmp_path):
    path = tmp_path / "nan.star"
    path.write_text("data_particles\nloop_\n_rlnImageName\n_rlnDefocusU\n_rlnVoltage\n"
                    "1@a.mrcs 10000.0 300\n2@a.mrcs nan 300\n")
    with pytest.raises(InputError) as ei:
        read_star(path)
    assert "rlnDefocusU" in str(ei.value) and str(path) in str(ei.value)
    parts, optics = _example_tables()
    parts.loc[2, "rlnAngleRot"] = np.nan
    written = tmp_path / "nan2.star"
    write_star(written, parts, optics)
    with pytest.raises(InputError, match="rlnAngleRot"):
        read_star(written)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_star(tmp_path / "missing.star")
    junk = tmp_path / "junk.star"
    junk.write_text("hello world\nthis is not a STAR file\n")
    with pytest.raises(InputError) as ei:
        read_star(junk)
    assert str(junk) in str(ei.value)
    bad_group = tmp_path / "group.star"
    bad_group.write_text("data_optics\nloop_\n_rlnOpticsGroup\n_rlnVoltage\n1 300\n\n"
                         "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@a.mrcs 2\n")
    with pytest.raises(InputError, match="optics group"):
        read_star(bad_group)


# --------------------------------------------------------------------------- poses


def test_euler_rows_match_relion_formula(cryodrgn_data):
    path = cryodrgn_data / "relion31.6opticsgroups.star"
    t = read_star(path)
    truth = _parse_loops(path)["particles"]
    ang = np.stack([_num(truth[c]) for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")], 1)
    np.testing.assert_allclose(t.euler_deg(), ang, rtol=1e-12)
    R = table_poses(t)[0].numpy()
    assert R.shape == (139, 3, 3)
    for k in (0, 1, 57, 138):
        A = _relion_matrix(*ang[k])
        np.testing.assert_allclose(R[k], A, atol=1e-12)
        rot, tilt = math.radians(ang[k, 0]), math.radians(ang[k, 1])
        np.testing.assert_allclose(A[2], [math.sin(tilt) * math.cos(rot), math.sin(tilt) * math.sin(rot),
                                          math.cos(tilt)], atol=1e-12)
    by_lib = euler_to_matrix(torch.as_tensor(np.deg2rad(ang))).numpy()
    np.testing.assert_allclose(R, by_lib, atol=1e-12)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)


def test_euler_relion31_known_row(cryodrgn_data):
    path = cryodrgn_data / "relion31.star"
    t = read_star(path)
    row = _parse_loops(path)["particles"].iloc[2]
    rot, tilt, psi = (float(row[c]) for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"))
    np.testing.assert_allclose(table_poses(t)[0].numpy()[2], _relion_matrix(rot, tilt, psi), atol=1e-12)
    np.testing.assert_allclose(t.shifts_angst()[2],
                               [float(row["rlnOriginXAngst"]), float(row["rlnOriginYAngst"])])
