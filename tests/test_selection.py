"""Particle selection: region tests on known points, and STAR subsets that read back with their images."""

import pickle

import numpy as np
import pytest
import torch

from cryoscape.analysis.selection import by_cluster, in_box, in_polygon, write_indices_pkl, write_star_subset
from cryoscape.data.particles import load_particles
from cryoscape.io.errors import InputError
from cryoscape.io.star import read_star


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """40 noisy 32-px particles of random Gaussian atoms (STAR + one stack, relative image names)."""
    from cryoscape.data.simulate import AtomSource, SimulationConfig
    from cryoscape.runs.simulate import simulate_to_folder
    g = torch.Generator().manual_seed(0)
    coords = torch.randn(60, 3, generator=g, dtype=torch.float64) * 5
    cfg = SimulationConfig(n_images=40, box=32, apix=2.0, snr=1.0, sigma=2.5, shift_max_A=2.0, seed=3)
    out = tmp_path_factory.mktemp("sel") / "sim"
    simulate_to_folder(out, AtomSource(coords.numpy(), 2.5), cfg, show_progress=False, previews=False)
    return out


def test_by_cluster_and_box():
    labels = np.array([0, 2, 1, 2, 0, 3])
    assert by_cluster(labels, [0, 2]).tolist() == [0, 1, 3, 4]
    assert by_cluster(labels, 3).tolist() == [5]
    assert by_cluster(labels, [7]).tolist() == []
    p = np.array([[0, 0], [1, 1], [2, 2], [1, 3], [-1, 1]], float)
    assert in_box(p, 0, 2, 0, 2).tolist() == [0, 1, 2]  # edges included
    with pytest.raises(ValueError):
        in_box(p, 2, 0, 0, 1)


def test_polygon_square_and_concave():
    square = [(0, 0), (2, 0), (2, 2), (0, 2)]
    p = np.array([[1, 1], [0.1, 1.9], [3, 1], [-0.5, 1], [1, 2.5], [1.99, 0.01]])
    assert in_polygon(p, square).tolist() == [0, 1, 5]
    assert in_polygon(p, square[::-1]).tolist() == [0, 1, 5]  # orientation does not matter
    # a "U": the notch x in (1, 2), y > 1 is outside
    u = [(0, 0), (3, 0), (3, 3), (2, 3), (2, 1), (1, 1), (1, 3), (0, 3)]
    q = np.array([[0.5, 2.5], [1.5, 2.5], [2.5, 2.5], [1.5, 0.5], [1.5, 1.5], [3.5, 0.5], [1.5, 1.0 - 1e-9]])
    assert in_polygon(q, u).tolist() == [0, 2, 3, 6]
    # a ray through a vertex (y = 1 at the notch's corners) is counted once
    assert in_polygon(np.array([[0.5, 1.0], [2.5, 1.0], [-1, 1.0]]), u).tolist() == [0, 1]
    # against an independent grid test: a triangle's area by counting lattice points
    g = np.stack(np.meshgrid(np.linspace(0, 1, 401), np.linspace(0, 1, 401)), -1).reshape(-1, 2) + 1e-7
    assert len(in_polygon(g, [(0, 0), (1, 0), (0, 1)])) / len(g) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError):
        in_polygon(p, [(0, 0), (1, 1)])


def test_star_subset_reads_back_with_images(sim, tmp_path):
    full = load_particles(sim / "particles.star")
    t_in = read_star(sim / "particles.star")
    sel = np.array([7, 3, 30, 3])
    out = tmp_path / "deep" / "er" / "subset.star"  # elsewhere: image names must be rewritten
    info = write_star_subset(sim / "particles.star", sel, out)
    assert info["n_selected"] == 3 and info["n_input"] == 40 and info["rewritten_stacks"] == 1
    t = read_star(out)
    assert len(t) == 3 and len(t.optics) == len(t_in.optics)
    cols = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU", "rlnOriginXAngst"]
    np.testing.assert_allclose(t.particles[cols].to_numpy(), t_in.particles[cols].to_numpy()[[3, 7, 30]], atol=1e-5)
    assert not str(t.particles["rlnImageName"][0]).split("@")[1].startswith("/")  # still relative
    sub = load_particles(out)
    np.testing.assert_array_equal(sub.images(np.arange(3)), full.images(np.array([3, 7, 30])))
    # refuses to overwrite; empty and out-of-range selections are errors
    with pytest.raises(InputError, match="already exists"):
        write_star_subset(sim / "particles.star", [1], out)
    with pytest.raises(InputError, match="empty"):
        write_star_subset(sim / "particles.star", [], tmp_path / "e.star")
    with pytest.raises(InputError, match="40"):
        write_star_subset(sim / "particles.star", [40], tmp_path / "e.star")
    assert not (tmp_path / "e.star").exists()
    # same folder as the input: names kept as they were
    info = write_star_subset(sim / "particles.star", [0, 1], sim / "two.star")
    assert info["rewritten_stacks"] == 0
    assert read_star(sim / "two.star").particles["rlnImageName"].tolist() == \
        t_in.particles["rlnImageName"].tolist()[:2]


def test_star_subset_with_datadir_and_missing_stacks(sim, tmp_path, monkeypatch):
    # a STAR whose stack lives in another folder, found through datadir: the output needs no datadir
    star = tmp_path / "moved" / "p.star"
    star.parent.mkdir()
    star.write_text((sim / "particles.star").read_text())
    info = write_star_subset(star, [5, 6], tmp_path / "o" / "s.star", datadir=sim)
    assert info["rewritten_stacks"] == 1 and info["unresolved_stacks"] == 0
    monkeypatch.chdir(tmp_path / "moved")  # resolution must not depend on the working folder
    assert len(load_particles(tmp_path / "o" / "s.star")) == 2
    # without datadir the stack is not found: names are kept and reported
    info = write_star_subset(star, [5], tmp_path / "o" / "t.star")
    assert info["unresolved_stacks"] == 1 and info["rewritten_stacks"] == 0


def test_indices_pkl(tmp_path):
    p = write_indices_pkl(tmp_path / "ind.pkl", [4, 1, 9])
    with open(p, "rb") as f:
        a = pickle.load(f)
    assert a.dtype == np.int64 and a.tolist() == [4, 1, 9]
    with pytest.raises(InputError):
        write_indices_pkl(p, [1])
