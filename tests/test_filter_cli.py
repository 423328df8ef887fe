"""``cryoscape filter``, and the filtered STAR read by cryoDRGN."""

import json
import math
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cryoscape.cli.main import app, main
from cryoscape.data.particles import load_particles
from cryoscape.io.errors import InputError
from cryoscape.io.star import read_star

ROOT = Path(__file__).resolve().parents[1]
CRYODRGN = ROOT / ".venv-peers" / "cryodrgn" / "bin" / "cryodrgn"

def _simulate(out, n, D, snr, seed=3):
    from cryoscape.data.simulate import AtomSource, SimulationConfig
    from cryoscape.runs.simulate import simulate_to_folder
    g = torch.Generator().manual_seed(0)
    coords = torch.randn(80, 3, generator=g, dtype=torch.float64) * 6
    cfg = SimulationConfig(n_images=n, box=D, apix=2.0, snr=snr, sigma=2.5, shift_max_A=3.0, astigmatism_um=0.1,
                           seed=seed)
    simulate_to_folder(out, AtomSource(coords.numpy(), 2.5), cfg, show_progress=False, previews=False)
    return out / "particles.star"


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    return _simulate(tmp_path_factory.mktemp("filter") / "sim", 30, 32, 1.0)


def run(*args):
    return CliRunner().invoke(app, ["filter", *[str(a) for a in args]])


def _ok(*args):
    res = run(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(res.output.strip().splitlines()[-1])


def _check_subset(star, out, rows):
    t_in, t = read_star(star), read_star(out)
    assert len(t) == len(rows)
    np.testing.assert_allclose(t.particles["rlnDefocusU"], t_in.particles["rlnDefocusU"].to_numpy()[rows])
    np.testing.assert_allclose(t.particles["rlnAngleTilt"], t_in.particles["rlnAngleTilt"].to_numpy()[rows])
    with open(out.with_name(out.stem + "_indices.pkl"), "rb") as f:
        ind = pickle.load(f)
    assert ind.dtype == np.int64 and ind.tolist() == list(rows)
    full, sub = load_particles(star), load_particles(out)  # images resolve from the output's folder
    np.testing.assert_array_equal(sub.images(np.arange(len(rows))), full.images(np.asarray(rows)))


def test_filter_by_indices_box_polygon_labels(star, tmp_path):
    (tmp_path / "ind.txt").write_text("12\n3\n7\n3\n")
    s = _ok(star, "--ind", tmp_path / "ind.txt", "-o", tmp_path / "a" / "by_ind.star")
    assert s["n_selected"] == 3 and s["n_input"] == 30 and s["rewritten_stacks"] == 1
    _check_subset(star, tmp_path / "a" / "by_ind.star", [3, 7, 12])

    emb = np.stack([np.arange(30.0), np.arange(30.0) % 5], 1)  # x = index, y = index mod 5
    np.save(tmp_path / "emb.npy", emb)
    _ok(star, "--embedding", tmp_path / "emb.npy", "--box", "10,19,0,1", "-o", tmp_path / "box.star")
    _check_subset(star, tmp_path / "box.star", [10, 11, 15, 16])

    (tmp_path / "poly.txt").write_text("-0.5 -0.5\n9.5 -0.5\n9.5 2.5\n-0.5 2.5\n")
    _ok(star, "--embedding", tmp_path / "emb.npy", "--polygon", tmp_path / "poly.txt", "-o", tmp_path / "poly.star")
    _check_subset(star, tmp_path / "poly.star", [0, 1, 2, 5, 6, 7])
    (tmp_path / "poly.json").write_text(json.dumps({"vertices": [[-0.5, -0.5], [9.5, -0.5], [9.5, 2.5], [-0.5, 2.5]]}))
    _ok(star, "--embedding", tmp_path / "emb.npy", "--polygon", tmp_path / "poly.json", "--invert",
        "-o", tmp_path / "poly_inv.star")
    _check_subset(star, tmp_path / "poly_inv.star", sorted(set(range(30)) - {0, 1, 2, 5, 6, 7}))

    labels = np.arange(30) % 4
    with open(tmp_path / "labels.pkl", "wb") as f:
        pickle.dump(labels, f)
    _ok(star, "--labels", tmp_path / "labels.pkl", "--clusters", "0,2", "-o", tmp_path / "lab.star")
    _check_subset(star, tmp_path / "lab.star", [i for i in range(30) if i % 4 in (0, 2)])

    # refuses to overwrite, then replaces with --overwrite
    res = run(star, "--ind", tmp_path / "ind.txt", "-o", tmp_path / "lab.star")
    assert isinstance(res.exception, InputError) and "already exists" in str(res.exception)
    _ok(star, "--ind", tmp_path / "ind.txt", "-o", tmp_path / "lab.star", "--overwrite")
    _check_subset(star, tmp_path / "lab.star", [3, 7, 12])


@pytest.mark.parametrize("case, needle", [
    ("short_labels", "labels.npy"), ("unknown_cluster", "--clusters"), ("bad_box", "--box"),
    ("empty", "--embedding"), ("poly2", "poly2.txt"), ("two_sources", "exactly one"), ("bad_ind", "bad_ind.txt"),
    ("box_without_embedding", "--box"), ("short_embedding", "emb_short.npy"),
])
def test_filter_bad_input(star, tmp_path, case, needle):
    np.save(tmp_path / "labels.npy", np.arange(29) % 3)
    np.save(tmp_path / "labels30.npy", np.arange(30) % 3)
    np.save(tmp_path / "emb.npy", np.zeros((30, 2)))
    np.save(tmp_path / "emb_short.npy", np.zeros((20, 2)))
    (tmp_path / "poly2.txt").write_text("0 0\n1 1\n")
    (tmp_path / "bad_ind.txt").write_text("1\n30\n")
    args = {
        "short_labels": ["--labels", tmp_path / "labels.npy", "--clusters", "0"],
        "unknown_cluster": ["--labels", tmp_path / "labels30.npy", "--clusters", "0,5"],
        "bad_box": ["--embedding", tmp_path / "emb.npy", "--box", "0,1,2"],
        "empty": ["--embedding", tmp_path / "emb.npy", "--box", "1,2,1,2"],
        "poly2": ["--embedding", tmp_path / "emb.npy", "--polygon", tmp_path / "poly2.txt"],
        "two_sources": ["--ind", tmp_path / "bad_ind.txt", "--labels", tmp_path / "labels30.npy", "--clusters", "0"],
        "bad_ind": ["--ind", tmp_path / "bad_ind.txt"],
        "box_without_embedding": ["--ind", tmp_path / "bad_ind.txt", "--box", "0,1,0,1"],
        "short_embedding": ["--embedding", tmp_path / "emb_short.npy", "--box", "0,1,0,1"],
    }[case]
    out = tmp_path / "o.star"
    res = run(star, *args, "-o", out)
    assert isinstance(res.exception, InputError), (res.output, res.exception)
    assert needle in str(res.exception) and "\n" not in str(res.exception)
    assert not out.exists() and not (tmp_path / "o_indices.pkl").exists()


def test_filter_bad_input_exits_2_with_one_line(star, tmp_path, capsys):
    (tmp_path / "bad_ind.txt").write_text("1\n30\n")
    with pytest.raises(SystemExit) as e:
        main(["filter", str(star), "--ind", str(tmp_path / "bad_ind.txt"), "-o", str(tmp_path / "o.star")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "bad_ind.txt" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.star").exists()


@pytest.mark.slow
@pytest.mark.skipif(not CRYODRGN.exists(), reason="cryoDRGN venv not found at .venv-peers/cryodrgn")
def test_cryodrgn_backprojects_the_filtered_star(tmp_path):
    """cryoDRGN reads the filtered STAR with its own parsers (stacks found from the STAR's folder, no
    --datadir) and reconstructs the same map as cryoscape from it."""
    from cryoscape.analysis.fsc import fsc
    from cryoscape.io.mrc import read_map
    from cryoscape.methods.reconstruct import BackprojectConfig, backproject
    star = _simulate(tmp_path / "sim", 1200, 32, math.inf, seed=5)
    (tmp_path / "ind.txt").write_text("\n".join(str(i) for i in range(0, 1200, 3)))
    out = tmp_path / "sel" / "subset.star"
    _ok(star, "--ind", tmp_path / "ind.txt", "--invert", "-o", out)  # 800 particles, in another folder
    for cmd in (["parse_pose_star", out, "-o", tmp_path / "poses.pkl"],
                ["parse_ctf_star", out, "-o", tmp_path / "ctf.pkl"],
                ["backproject_voxel", out, "--poses", tmp_path / "poses.pkl", "--ctf", tmp_path / "ctf.pkl",
                 "--no-half-maps", "-o", tmp_path / "bp"]):
        res = subprocess.run([str(c) for c in [CRYODRGN, *cmd]], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
    theirs, _ = read_map(tmp_path / "bp" / "backproject.mrc")
    data = load_particles(out)
    assert len(data) == 800
    ours = backproject(data, BackprojectConfig(mask_radius=0, half_maps=False)).volume
    curve = fsc(ours, theirs)
    assert curve[1:32 // 4 + 1].min() > 0.9, curve  # to half Nyquist (measured ≥ 0.98; noiseless data)


@pytest.fixture(scope="module")
def class_star(star):
    """The simulated STAR with RELION 2-D classes ``rlnClassNumber = i % 4 + 1`` (1-based) beside it."""
    from cryoscape.io.star import write_star
    table = read_star(star)
    parts = table.particles.copy()
    parts["rlnClassNumber"] = np.arange(len(parts)) % 4 + 1
    out = star.parent / "with_classes.star"
    write_star(out, parts, table.optics)
    return out


def test_filter_by_class_number(class_star, tmp_path):
    s = _ok(class_star, "--classes", "1,3", "-o", tmp_path / "c13.star")
    rows = [i for i in range(30) if i % 4 in (0, 2)]
    assert s["n_selected"] == len(rows) == 15
    _check_subset(class_star, tmp_path / "c13.star", rows)
    assert sorted(set(read_star(tmp_path / "c13.star").particles["rlnClassNumber"])) == [1, 3]
    _ok(class_star, "--classes", "1,3", "--invert", "-o", tmp_path / "not13.star")
    _check_subset(class_star, tmp_path / "not13.star", [i for i in range(30) if i % 4 in (1, 3)])
    _ok(class_star, "--classes", "4", "-o", tmp_path / "c4.star")
    _check_subset(class_star, tmp_path / "c4.star", list(range(3, 30, 4)))


@pytest.mark.parametrize("case, needle", [
    ("unknown_class", "class(es) [5]"), ("no_class_column", "rlnClassNumber"), ("not_a_number", "--classes"),
    ("with_labels", "exactly one"),
])
def test_filter_by_class_bad_input(star, class_star, tmp_path, case, needle):
    np.save(tmp_path / "labels30.npy", np.arange(30) % 3)
    src, args = {
        "unknown_class": (class_star, ["--classes", "1,5"]),
        "no_class_column": (star, ["--classes", "1"]),
        "not_a_number": (class_star, ["--classes", "1,a"]),
        "with_labels": (class_star, ["--classes", "1", "--labels", tmp_path / "labels30.npy", "--clusters", "0"]),
    }[case]
    out = tmp_path / "o.star"
    res = run(src, *args, "-o", out)
    assert isinstance(res.exception, InputError), (res.output, res.exception)
    assert needle in str(res.exception) and "\n" not in str(res.exception)
    assert not out.exists() and not (tmp_path / "o_indices.pkl").exists()


def test_filter_unknown_class_exits_2_with_one_line(class_star, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["filter", str(class_star), "--classes", "2,9", "-o", str(tmp_path / "o.star")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "[9]" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.star").exists()
