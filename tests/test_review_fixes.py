"""Bad input found in review: each is a one-line error with exit 2 and nothing written, or a fixed result."""

import pickle

import numpy as np
import pytest
import torch

from cryoscape.cli.main import main
from cryoscape.data.particles import OPEN_STACKS, load_particles
from cryoscape.data.simulate import AtomSource, MapSource, SimulationConfig, plan_simulation
from cryoscape.io.errors import InputError
from cryoscape.io.mrc import read_map, write_map, write_stack
from cryoscape.io.star import read_star, write_star
from cryoscape.physics import atoms_to_volume


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return exc.value.code, cap.err


def one_line_error(code, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_pose_and_ctf_pickles_are_checked(tmp_path):
    from cryoscape.io.cryodrgn_pkl import read_ctf_pkl, read_poses_pkl
    pickle.dump((np.ones((4, 3, 3)), np.zeros((4, 2))), open(tmp_path / "p.pkl", "wb"))
    with pytest.raises(InputError, match="not a rotation matrix"):
        read_poses_pkl(tmp_path / "p.pkl")
    pickle.dump({"a": 1}, open(tmp_path / "d.pkl", "wb"))
    with pytest.raises(InputError, match="not numeric"):
        read_poses_pkl(tmp_path / "d.pkl")
    pickle.dump("abc", open(tmp_path / "c.pkl", "wb"))
    with pytest.raises(InputError, match="not numeric"):
        read_ctf_pkl(tmp_path / "c.pkl")
    bad = np.tile([64, 1.5, 1e4, 1e4, 0, 300, 2.7, 1.5, 0], (3, 1))
    pickle.dump(bad, open(tmp_path / "w.pkl", "wb"))
    with pytest.raises(InputError, match="impossible"):
        read_ctf_pkl(tmp_path / "w.pkl")


def _star(tmp_path, **col):
    import pandas as pd
    write_stack(tmp_path / "s.mrcs", np.zeros((3, 16, 16), np.float32), 2.0)
    parts = pd.DataFrame({"rlnImageName": [f"{i}@s.mrcs" for i in (1, 2, 3)], "rlnDefocusU": [1e4] * 3,
                          "rlnDefocusV": [1e4] * 3, "rlnDefocusAngle": [0.0] * 3, "rlnOpticsGroup": [1] * 3,
                          "rlnAngleRot": [0.0] * 3, "rlnAngleTilt": [0.0] * 3, "rlnAnglePsi": [0.0] * 3})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                           "rlnAmplitudeContrast": [0.1], "rlnImagePixelSize": [2.0], "rlnImageSize": [16]})
    for k, v in col.items():
        (optics if k in optics else parts)[k] = v
    write_star(tmp_path / "p.star", parts, optics)
    return tmp_path / "p.star"


def test_star_values_are_checked(tmp_path):
    with pytest.raises(InputError, match="rlnDefocusU has a non-numeric value 'abc'"):
        read_star(_star(tmp_path, rlnDefocusU=["abc", "1e4", "1e4"]))
    with pytest.raises(InputError, match="rlnVoltage"):
        read_star(_star(tmp_path, rlnVoltage=[0.0]))
    with pytest.raises(InputError, match="rlnAmplitudeContrast"):
        read_star(_star(tmp_path, rlnAmplitudeContrast=[1.5]))


def test_cli_option_checks(tmp_path, capsys):
    for argv, needle in ((["--cs", "nan"], "--cs"), (["--bfactor", "inf"], "--bfactor"),
                         (["--defocus-max", "inf"], "--defocus-max"), (["--seed", "-1"], "--seed")):
        code, err = run(["simulate", "-n", 5, "--no-progress", "-o", tmp_path / "o", *argv], capsys)
        one_line_error(code, err, needle)
        assert not (tmp_path / "o").exists()
    write_stack(tmp_path / "s.mrcs", np.zeros((3, 16, 16), np.float32), 2.0)
    code, err = run(["downsample", tmp_path / "s.mrcs", "-D", 8, "--chunk", 0, "-o", tmp_path / "d.mrcs"], capsys)
    one_line_error(code, err, "--chunk")
    code, err = run(["downsample", tmp_path / "s.mrcs", "-D", 8, "-o", "/proc/cryoscape/d.mrcs"], capsys)
    one_line_error(code, err, "/proc")
    v = np.zeros((8, 8, 8), np.float32)
    write_map(tmp_path / "m.mrc", v, 1.0)
    code, err = run(["fsc", tmp_path / "m.mrc", tmp_path / "m.mrc", "--apix", -1], capsys)
    one_line_error(code, err, "--apix")
    code, err = run(["backproject", _star(tmp_path), "--seed", -1, "--no-progress", "-o", tmp_path / "b"], capsys)
    one_line_error(code, err, "--seed")


def test_balanced_sampling_uses_distinct_frames_when_few_images():
    src = AtomSource(np.random.default_rng(0).normal(0, 5, (100, 20, 3)), 3.0)
    plan = plan_simulation(SimulationConfig(n_images=10, sampling="balanced", seed=3), src)
    assert len(set(plan.conformation.tolist())) == 10 and plan.conformation.max() > 20
    plan = plan_simulation(SimulationConfig(n_images=250, sampling="balanced", seed=3), src)
    counts = np.bincount(plan.conformation, minlength=100)
    assert counts.min() == 2 and counts.max() == 3 and counts.sum() == 250


def test_noisy_map_is_accepted_as_a_source():
    vol = atoms_to_volume(torch.randn(30, 3, dtype=torch.float64) * 4, 2.0, 32, 1.5).numpy()
    vol = vol + 0.01 * vol.max() * np.random.default_rng(0).standard_normal(vol.shape)
    plan_simulation(SimulationConfig(n_images=4), MapSource(vol, 1.5))  # no "box smaller" refusal


def test_map_axis_order_is_honoured(tmp_path):
    import mrcfile
    v = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)  # [z, y, x]
    with mrcfile.new(tmp_path / "swap.mrc") as m:  # stored with columns = z, rows = y, sections = x
        m.set_data(np.ascontiguousarray(v.transpose(2, 1, 0)))
        m.header.mapc, m.header.mapr, m.header.maps = 3, 2, 1
    got, _ = read_map(tmp_path / "swap.mrc")
    assert np.array_equal(got, v)


def test_downsampled_star_has_no_stale_pixel_columns(tmp_path, capsys):
    star = _star(tmp_path, rlnOriginX=[1.0, 2.0, 3.0], rlnOriginY=[0.0, 0.0, 0.0])
    code, err = run(["downsample", star, "-D", 8, "--no-progress", "-o", tmp_path / "d.star"], capsys)
    assert code in (0, None), err
    t = read_star(tmp_path / "d.star")
    assert "rlnOriginX" not in t.particles and np.allclose(t.particles["rlnOriginXAngst"], [2.0, 4.0, 6.0])
    code, err = run(["downsample", star, "-D", 8, "--no-progress", "--overwrite", "-o", tmp_path / "d.star"], capsys)
    assert code in (0, None), err


def test_many_stacks_keep_few_files_open(tmp_path):
    import pandas as pd
    n = OPEN_STACKS + 10
    for i in range(n):
        write_stack(tmp_path / f"s{i}.mrcs", np.full((1, 8, 8), i, np.float32), 1.0)
    parts = pd.DataFrame({"rlnImageName": [f"1@s{i}.mrcs" for i in range(n)], "rlnOpticsGroup": [1] * n})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0], "rlnImageSize": [8]})
    write_star(tmp_path / "many.star", parts, optics)
    data = load_particles(tmp_path / "many.star", need_poses=False)
    imgs = data.images(slice(0, n))
    assert np.array_equal(imgs[:, 0, 0], np.arange(n, dtype=np.float32))
    assert len(data._cache._maps) <= OPEN_STACKS
