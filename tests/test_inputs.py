"""Inputs every command reads (issue 11, item 7): a cryoSPARC .cs as particles, NaN/inf pixels, pixel sizes
of 0, unparseable PDB coordinates and CTF-free STAR files.

Independent truths: the simulator's own ground truth (``truth/ctf.pkl``, ``truth/poses.pkl``) and the
images read straight from the stack with mrcfile; bad files are written here, byte by byte where it matters.
"""

from __future__ import annotations

import math
import pickle
import shutil

import mrcfile
import numpy as np
import pytest
import torch

from cryoscape.data.particles import load_particles
from cryoscape.data.simulate import AtomSource, SimulationConfig
from cryoscape.io.errors import InputError
from cryoscape.io.models import read_model, read_structure, read_trajectory
from cryoscape.io.mrc import write_stack
from cryoscape.io.star import read_star, write_star
from cryoscape.runs import RunFolder

from cryoscape.runs.simulate import simulate_to_folder

D, APIX, N = 32, 2.0, 24


def _simulate(out, ctf=True):
    g = torch.Generator().manual_seed(4)
    coords = (torch.randn(30, 3, generator=g, dtype=torch.float64) * 4).numpy()
    cfg = SimulationConfig(n_images=N, box=D, apix=APIX, snr=10.0, sigma=2.0, shift_max_A=2.0,
                           astigmatism_um=0.2, seed=3, chunk=8, ctf=ctf)
    simulate_to_folder(out, AtomSource(coords, cfg.sigma), cfg, show_progress=False, previews=False)
    return out


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A small simulated dataset: particles.star + particles.mrcs + truth/ (poses.pkl, ctf.pkl)."""
    return _simulate(tmp_path_factory.mktemp("inputs") / "sim")


@pytest.fixture(scope="module")
def sim_noctf(tmp_path_factory):
    """The same without CTF: the STAR has no defocus columns."""
    return _simulate(tmp_path_factory.mktemp("inputs") / "sim_noctf", ctf=False)


def _one_line(exc: InputError) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def _raw_stack(path):
    with mrcfile.open(path, permissive=True) as m:
        return np.array(m.data, dtype=np.float32)


def _pkl(path):
    with open(path, "rb") as f:
        return pickle.load(f)


# --------------------------------------------------------------------------- cryoSPARC .cs


def _write_cs(path, stack_rel: str, ctf_tab: np.ndarray, order: np.ndarray, psize=APIX, with_ctf=True):
    """A cryoSPARC particle table for the stack's images ``order`` (cryoSPARC's field names and units)."""
    fields = [("uid", "<u8"), ("blob/path", "S200"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
              ("blob/psize_A", "<f4")]
    if with_ctf:
        fields += [("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"),
                   ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"),
                   ("ctf/phase_shift_rad", "<f4")]
    a = np.zeros(len(order), dtype=fields)
    a["uid"] = 1000 + order
    a["blob/path"] = [f">{stack_rel}".encode()] * len(order)  # cryoSPARC's ">" on imported paths
    a["blob/idx"] = order
    a["blob/shape"] = D
    a["blob/psize_A"] = psize
    if with_ctf:
        t = ctf_tab[order]
        a["ctf/df1_A"], a["ctf/df2_A"] = t[:, 2], t[:, 3]
        a["ctf/df_angle_rad"] = np.deg2rad(t[:, 4])
        a["ctf/accel_kv"], a["ctf/cs_mm"], a["ctf/amp_contrast"] = t[:, 5], t[:, 6], t[:, 7]
        a["ctf/phase_shift_rad"] = np.deg2rad(t[:, 8])
    with open(path, "wb") as f:  # np.save(name) would append .npy
        np.save(f, a)
    return path


def test_cs_particles_match_the_star_and_the_truth(sim, tmp_path):
    project = tmp_path / "project"
    (project / "J1" / "imported").mkdir(parents=True)
    shutil.copy(sim / "particles.mrcs", project / "J1" / "imported" / "particles.mrcs")
    ctf_tab = np.asarray(_pkl(sim / "truth" / "ctf.pkl"), dtype=np.float64)
    order = np.arange(N)[::-1].copy()  # a different order from the stack's
    (project / "J2").mkdir()
    cs = _write_cs(project / "J2" / "J2_particles.cs", "J1/imported/particles.mrcs", ctf_tab, order)
    # the stack paths are relative to the project folder: without --datadir they are not found ...
    with pytest.raises(InputError, match="--datadir") as ei:
        load_particles(cs, need_poses=False)
    _one_line(ei.value)
    # ... with it they are
    data = load_particles(cs, datadir=project, need_poses=False)
    assert len(data) == N and data.D == D and data.apix == pytest.approx(APIX, rel=1e-6)
    assert data.rotations is None and data.notes == []  # .cs poses are not converted
    raw = _raw_stack(sim / "particles.mrcs")
    np.testing.assert_array_equal(data.images(slice(None)), raw[order])
    for name, col in (("defocus_u", 2), ("defocus_v", 3), ("voltage_kv", 5), ("cs_mm", 6),
                      ("amp_contrast", 7)):
        np.testing.assert_allclose(getattr(data.ctf, name).numpy(), ctf_tab[order, col], rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(data.ctf.angle_ast.numpy(), np.deg2rad(ctf_tab[order, 4]), atol=1e-6)
    # the same particles from the simulator's STAR: identical CTF to float32 precision
    ref = load_particles(sim / "particles.star").subset(order)
    np.testing.assert_allclose(data.ctf.defocus_u.numpy(), ref.ctf.defocus_u.numpy(), rtol=1e-6)
    # poses come from a cryoDRGN pickle; without one a command that needs poses is told so in one line
    with pytest.raises(InputError, match="no poses.*--poses") as ei:
        load_particles(cs, datadir=project)
    assert str(cs) in _one_line(ei.value)
    rot, trans = _pkl(sim / "truth" / "poses.pkl")
    poses = tmp_path / "poses.pkl"
    with open(poses, "wb") as f:
        pickle.dump((rot[order], trans[order]), f)
    posed = load_particles(cs, poses=poses, datadir=project)
    np.testing.assert_allclose(posed.rotations.numpy(), ref.rotations.numpy(), atol=1e-6)
    np.testing.assert_allclose(posed.origins_A, ref.origins_A, atol=1e-5)


def test_cs_stack_paths_relative_to_the_cs_file(sim, tmp_path):
    shutil.copy(sim / "particles.mrcs", tmp_path / "stack.mrcs")
    ctf_tab = np.asarray(_pkl(sim / "truth" / "ctf.pkl"), dtype=np.float64)
    cs = _write_cs(tmp_path / "p.cs", "stack.mrcs", ctf_tab, np.arange(5), with_ctf=False)
    data = load_particles(cs, need_poses=False)
    assert len(data) == 5 and data.ctf is None
    assert data.notes == ["p.cs has no CTF fields: running CTF-free"]
    np.testing.assert_array_equal(data.images([4, 0]), _raw_stack(sim / "particles.mrcs")[[4, 0]])


def test_unknown_particle_types_are_refused(tmp_path):
    for name in ("particles.txt", "particles.npy", "particles"):
        p = tmp_path / name
        p.write_text("1 2 3\n")
        with pytest.raises(InputError, match="unknown particle file type") as ei:
            load_particles(p)
        assert _one_line(ei.value).startswith(str(p))
    with pytest.raises(InputError, match="is a folder"):
        load_particles(tmp_path)


# --------------------------------------------------------------------------- NaN / inf pixels


def _bad_copy(sim, tmp_path, image: int, value: float):
    """The simulated set with pixel (3, 4) of image ``image`` (0-based) set to ``value``."""
    imgs = _raw_stack(sim / "particles.mrcs")
    imgs[image, 3, 4] = value
    write_stack(tmp_path / "particles.mrcs", imgs, APIX)
    shutil.copy(sim / "particles.star", tmp_path / "particles.star")
    return tmp_path / "particles.star", tmp_path / "particles.mrcs"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # mrcfile and numpy warn about the bad pixel we write
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_pixels_are_refused_before_any_output(sim, tmp_path, value):
    star, stack = _bad_copy(sim, tmp_path, 17, value)
    data = load_particles(star)  # lazy: nothing read yet
    for block in (1 << 26, 3 * D * D * 4, 1):  # one block, blocks of 3 images, one image per block
        with pytest.raises(InputError, match="image 18 contains NaN or inf") as ei:
            data.check_finite(block_bytes=block)
        assert _one_line(ei.value).startswith(str(stack))
    with pytest.raises(InputError, match="image 18"):
        data.images([0, 17])
    # a subset without the bad image passes, contiguous or not
    data.subset(np.arange(17)).check_finite()
    data.subset(np.array([20, 2, 9, 23])).check_finite(block_bytes=2 * D * D * 4)
    with pytest.raises(InputError, match="image 18"):
        data.subset(np.array([20, 17, 2])).check_finite(block_bytes=D * D * 4)
    # the pattern commands follow: load with the scan, then create the run folder
    out = tmp_path / "run"
    with pytest.raises(InputError, match="image 18"):
        d = load_particles(star, check_finite=True)
        with RunFolder(out, "test", {}):
            d.images(slice(None))
    assert not out.exists() and not (tmp_path / ".run.part").exists()


def test_finite_scan_passes_clean_data_and_counts_every_image(sim):
    data = load_particles(sim / "particles.star")
    seen = []
    data.check_finite(block_bytes=5 * D * D * 4, progress=seen.append)
    assert sum(seen) == N and max(seen) == 5
    load_particles(sim / "particles.star", check_finite=True)


def test_integer_stacks_skip_the_scan(tmp_path):
    with mrcfile.new(tmp_path / "ints.mrcs") as m:
        m.set_data(np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8))
        m.set_image_stack()
        m.voxel_size = 1.5
    data = load_particles(tmp_path / "ints.mrcs", need_poses=False, check_finite=True)
    assert data.images([2])[0, 0, 0] == 128


# --------------------------------------------------------------------------- pixel size 0


@pytest.mark.parametrize("apix", [0, 0.0, -1.5, math.nan, math.inf])
def test_apix_option_must_be_positive(sim, apix):
    for particles in (sim / "particles.star", sim / "particles.mrcs"):
        with pytest.raises(InputError, match="must be a finite number > 0") as ei:
            load_particles(particles, sim / "truth" / "poses.pkl", apix=apix)
        assert _one_line(ei.value).startswith("--apix:")


def test_zero_pixel_size_in_a_star_column(sim, tmp_path):
    t = read_star(sim / "particles.star")
    optics = t.optics.copy()
    optics["rlnImagePixelSize"] = 0.0
    shutil.copy(sim / "particles.mrcs", tmp_path / "particles.mrcs")
    star = tmp_path / "zero.star"
    write_star(star, t.particles, optics)
    with pytest.raises(InputError, match="pixel size must be > 0") as ei:
        load_particles(star)
    assert _one_line(ei.value).startswith(str(star))
    assert load_particles(star, apix=APIX).apix == APIX  # another source gives one


@pytest.mark.parametrize("header", [0.0, -1.5, math.nan])
def test_unusable_pixel_size_in_an_mrc_header(sim, tmp_path, header):
    imgs = _raw_stack(sim / "particles.mrcs")
    stack = tmp_path / "particles.mrcs"
    write_stack(stack, imgs, 1.0)
    with mrcfile.open(stack, mode="r+") as m:  # the header as another program may have left it
        m.header.cella = (header * D, header * D, header)
    poses = sim / "truth" / "poses.pkl"
    with pytest.raises(InputError, match="pixel size unknown.*give --apix") as ei:
        load_particles(stack, poses)
    assert _one_line(ei.value).startswith(str(stack))
    assert load_particles(stack, poses, apix=APIX).apix == APIX
    assert load_particles(stack, poses, sim / "truth" / "ctf.pkl").apix == pytest.approx(APIX)  # from the pickle
    # a STAR without a pixel-size column over that stack: the STAR is named
    t = read_star(sim / "particles.star")
    star = tmp_path / "nopix.star"
    write_star(star, t.particles.drop(columns=["rlnImagePixelSize"]),
               t.optics.drop(columns=["rlnImagePixelSize"]))
    with pytest.raises(InputError, match="pixel size unknown") as ei:
        load_particles(star)
    assert _one_line(ei.value).startswith(str(star))


def test_zero_pixel_size_in_a_ctf_pickle_or_cs(sim, tmp_path):
    tab = np.asarray(_pkl(sim / "truth" / "ctf.pkl"), dtype=np.float64).copy()
    tab[:, 1] = 0.0
    bad = tmp_path / "ctf.pkl"
    with open(bad, "wb") as f:
        pickle.dump(tab.astype(np.float32), f)
    with pytest.raises(InputError, match="pixel size") as ei:
        load_particles(sim / "particles.mrcs", sim / "truth" / "poses.pkl", bad)
    assert _one_line(ei.value).startswith(str(bad))
    shutil.copy(sim / "particles.mrcs", tmp_path / "stack.mrcs")
    cs = _write_cs(tmp_path / "p.cs", "stack.mrcs", tab, np.arange(3), psize=0.0)
    with pytest.raises(InputError, match="psize_A") as ei:
        load_particles(cs, need_poses=False)
    assert _one_line(ei.value).startswith(str(cs))


# --------------------------------------------------------------------------- PDB coordinates


_PDB = ("ATOM      1  CA  ALA A   1      11.104  13.207   2.100  1.00  0.00           C\n"
        "ATOM      2  CA  GLY A   2      12.560  14.100   3.300  1.00  0.00           C\n"
        "ATOM      3  CA  SER A   3      15.100  15.700   4.100  1.00  0.00           C\n"
        "END\n")


@pytest.mark.parametrize("old, new, line, axis", [
    ("  14.100", "     abc", 2, "y"),    # text in the y column
    ("  12.560", "     nan", 2, "x"),    # NaN
    ("   4.100", "     inf", 3, "z"),
    ("  13.207", "        ", 1, "y"),    # blank
])
def test_unparseable_pdb_coordinates_name_file_and_line(tmp_path, old, new, line, axis):
    good = tmp_path / "good.pdb"
    good.write_text(_PDB)
    assert read_model(good).coords.shape == (1, 3, 3)
    bad = tmp_path / "bad.pdb"
    bad.write_text(_PDB.replace(old, new, 1))
    # the raw gemmi reader would give 0 for "abc" and blanks: the check must come first
    for reader in (read_model, read_structure, lambda p: read_trajectory(p)):
        with pytest.raises(InputError, match=f"line {line}: {axis} coordinate") as ei:
            reader(bad)
        assert _one_line(ei.value).startswith(str(bad))


def test_short_atom_record_and_gzip(tmp_path):
    import gzip
    bad = tmp_path / "short.pdb.gz"
    with gzip.open(bad, "wt") as f:
        f.write(_PDB.replace("  15.700   4.100  1.00  0.00           C", "  15.7", 1))
    with pytest.raises(InputError, match=r"line 3: z coordinate \(columns 47-54\) missing") as ei:
        read_structure(bad)
    assert str(bad) in _one_line(ei.value)


def test_unparseable_mmcif_coordinates(tmp_path):
    import gemmi
    good = tmp_path / "good.pdb"
    good.write_text(_PDB)
    st = gemmi.read_structure(str(good))
    st.setup_entities()
    st.make_mmcif_document().write_file(str(tmp_path / "good.cif"))
    text = (tmp_path / "good.cif").read_text()
    assert read_model(tmp_path / "good.cif").coords.shape == (1, 3, 3)
    lines = text.splitlines()
    k = next(i for i, l in enumerate(lines) if l.startswith("ATOM 2 "))
    for token in ("abc", "?"):
        lines2 = list(lines)
        lines2[k] = lines2[k].replace(" 12.56 ", f" {token} ", 1)
        bad = tmp_path / "bad.cif"
        bad.write_text("\n".join(lines2) + "\n")
        with pytest.raises(InputError, match=f"line {k + 1}: Cartn_x is not a finite number") as ei:
            read_structure(bad)
        assert _one_line(ei.value).startswith(str(bad))


# --------------------------------------------------------------------------- CTF-free STAR


def test_star_without_ctf_columns_runs_ctf_free(sim_noctf, sim):
    star = sim_noctf / "particles.star"
    assert "rlnDefocusU" not in read_star(star).particles
    data = load_particles(star)
    assert data.ctf is None
    assert data.notes == ["particles.star has no CTF columns: running CTF-free"]
    assert data.subset(np.arange(3)).notes == data.notes
    # with a CTF: no note, and a CTF pickle given beside a CTF-free STAR supplies one
    assert load_particles(sim / "particles.star").notes == []
    given = load_particles(star, ctf=sim / "truth" / "ctf.pkl")
    assert given.ctf is not None and given.notes == []
    # a stack without --ctf says so too
    stack = load_particles(sim / "particles.mrcs", sim / "truth" / "poses.pkl")
    assert stack.ctf is None and stack.notes == [
        "particles.mrcs is a stack and no CTF pickle (--ctf) was given: running CTF-free"]


# --------------------------------------------------------------------------- poses and CTF from tables


def test_poses_and_ctf_from_the_star_match_the_simulator_truth(sim):
    data = load_particles(sim / "particles.star")
    poses = data.poses
    np.testing.assert_allclose(poses.R.numpy(), np.load(sim / "truth" / "rotations.npy"), atol=1e-5)
    # shift_A is the particle's offset from the box centre, as the simulator drew it
    np.testing.assert_allclose(poses.shift_A.numpy(), np.load(sim / "truth" / "offsets_A.npy"), atol=1e-5)
    tab = np.asarray(_pkl(sim / "truth" / "ctf.pkl"), dtype=np.float64)
    np.testing.assert_allclose(data.ctf.defocus_u.numpy(), tab[:, 2], rtol=1e-6)
    np.testing.assert_allclose(data.ctf.angle_ast.numpy(), np.deg2rad(tab[:, 4]), atol=1e-6)
    np.testing.assert_allclose(data.ctf.phase_shift.numpy(), np.deg2rad(tab[:, 8]), atol=1e-6)
    assert load_particles(sim / "particles.mrcs", need_poses=False, apix=APIX).poses is None
