"""``cryoscape class2d`` and ``cryoscape cluster2d``: run folders, the STAR they write (read back, filtered by
class), class averages against clean projections of the simulator's conformations, clustering against the
simulator's conformation labels, bad input and resume."""

from __future__ import annotations

import json
import math
import shutil

import mrcfile
import numpy as np
import pytest
import torch

from cryoscape.analysis.classes import adjusted_rand, align_to_reference
from cryoscape.cli.main import main
from cryoscape.data.particles import load_particles
from cryoscape.io.star import read_star
from cryoscape.runs.folder import read_metrics

from conftest import cli_fails, cli_ok

N = 150
SIM = ["--frames", "0,50,101", "--box", "32", "--apix", "3.9", "--view-cone-deg", "5", "--no-progress",
       "--threads", "1"]


_ok, _fails = cli_ok, cli_fails


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """150 images of 3 AdK frames (closed, middle, open), 50 each, all viewed within 5° of +z with random
    in-plane rotations, offsets up to 3 Å, one defocus (1.5 µm), SNR 10; and the 3 clean projections along +z
    (views within 0.1° of +z, no CTF, no noise) as references."""
    root = tmp_path_factory.mktemp("class2d")
    for args in (["-o", root / "sim", "-n", N, "--snr", 10, "--shift-max", 3, "--defocus-min", 1.5,
                  "--defocus-max", 1.5, "--sampling", "balanced", *SIM],
                 ["-o", root / "ref", "-n", 3, "--snr", "inf", "--no-ctf", "--sampling", "sequential",
                  *[a if a != "5" else "0.1" for a in SIM]]):
        with pytest.raises(SystemExit) as e:
            main(["simulate", *map(str, args)])
        assert e.value.code == 0
    ref = root / "ref" / "particles.star"
    refs = {int(c): img for c, img in zip(read_star(ref).particles["cryoscapeConformation"],
                                           load_particles(ref, need_poses=False).images(slice(None)))}
    return root / "sim" / "particles.star", refs


def _truth(star):
    return read_star(star).particles["cryoscapeConformation"].to_numpy()


def test_class2d_writes_the_run_folder_and_its_star_filters_by_class(sim, tmp_path, capsys):
    star, refs = sim
    out = tmp_path / "c2d"
    _ok(capsys, ["class2d", star, "-o", out, "--classes", "3", "--iterations", "4", "--threads", "1",
                 "--no-progress"])
    for name in ("class_averages.mrcs", "particles.star", "class_counts.json", "frc.npy", "gallery.png",
                 "history.json", "checkpoint.pt", "config.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    summary = read_metrics(out)
    m = summary["metrics"]
    assert summary["command"] == "class2d" and m["n_classes"] == 3 and m["n_particles"] == N

    # the STAR: input columns kept, classes 1..K, psi in degrees, origins = −shift; images still resolve
    t_in, t = read_star(star), read_star(out / "particles.star")
    assert len(t) == N and set(t_in.particles.columns) <= set(t.particles.columns)
    np.testing.assert_allclose(t.particles["rlnDefocusU"], t_in.particles["rlnDefocusU"])
    cls = t.particles["rlnClassNumber"].to_numpy()
    assert cls.min() >= 1 and cls.max() <= 3
    np.testing.assert_array_equal(load_particles(out / "particles.star", need_poses=False).images(slice(None)),
                                  load_particles(star, need_poses=False).images(slice(None)))

    # the same fit called directly (deterministic for a seed) gives the STAR's numbers
    from cryoscape.methods.class2d.em import Class2DConfig, fit
    data = load_particles(star, need_poses=False)
    torch.set_num_threads(1)
    res = fit(torch.as_tensor(data.images(slice(None))), data.ctf, data.apix,
              Class2DConfig(n_classes=3, n_iterations=4), progress=False)
    np.testing.assert_array_equal(cls, res.labels.numpy() + 1)
    np.testing.assert_allclose(t.particles[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(),
                               -res.shift_A.numpy(), atol=1e-5)
    dpsi = np.mod(t.particles["rlnAnglePsi"].to_numpy() - np.degrees(res.psi.numpy()) + 180, 360) - 180
    assert np.abs(dpsi).max() < 1e-4
    np.testing.assert_allclose(t.particles["rlnMaxValueProbDistribution"], res.max_prob.numpy(), atol=1e-6)

    # counts and FRC files agree with the STAR
    counts = json.loads((out / "class_counts.json").read_text())
    assert [c["count"] for c in counts["classes"]] == [int((cls == k).sum()) for k in (1, 2, 3)]
    assert counts["by_size"][0] == int(np.bincount(cls).argmax())
    assert np.load(out / "frc.npy").shape == (3, 16)

    # averages: K images in class order; average k matches the clean projection of the dominant true
    # conformation of the particles with rlnClassNumber k + 1 better than the other conformations'
    with mrcfile.open(out / "class_averages.mrcs") as f:
        avg = f.data.copy()
        assert avg.shape == (3, 32, 32) and float(f.voxel_size.x) == pytest.approx(data.apix, rel=1e-4)
    truth = _truth(star)
    corr = []
    for k in range(3):
        members = truth[cls == k + 1]
        if len(members) == 0:
            continue
        dominant = np.bincount(members).argmax()
        c = {conf: align_to_reference(avg[k], ref, data.apix, step_deg=4).correlation for conf, ref in refs.items()}
        corr.append(c[dominant])
        assert c[dominant] == max(c.values()), (k, c)
    assert len(corr) >= 2 and min(corr) > 0.9, corr  # measured 0.96 and 0.99 (2 of the 3 classes filled)

    # filter --classes keeps exactly the particles of that class, with resolvable images
    k = int(cls[0])
    _ok(capsys, ["filter", out / "particles.star", "-o", tmp_path / "sel.star", "--classes", str(k)])
    sel = read_star(tmp_path / "sel.star")
    assert len(sel) == int((cls == k).sum()) and set(sel.particles["rlnClassNumber"]) == {k}
    np.testing.assert_array_equal(sel.particles["rlnDefocusU"], t.particles["rlnDefocusU"][cls == k])
    np.testing.assert_array_equal(load_particles(tmp_path / "sel.star", need_poses=False).images(slice(None)),
                                  data.images(np.nonzero(cls == k)[0]))


def test_class_averages_wiener_prior_from_the_half_set_frc():
    """Noiseless identical copies: FRC = 1, the prior vanishes and the average is the image (on the Nyquist
    disc); pure noise: FRC ≈ 0 and the Wiener average is suppressed against the plain least-squares one."""
    from cryoscape.physics.transform2d import Averager2D
    from cryoscape.runs.class2d import class_averages
    D, n = 32, 40
    y, x = torch.meshgrid(torch.arange(D) - D // 2, torch.arange(D) - D // 2, indexing="ij")
    blob = torch.exp(-((x - 2.0) ** 2 + (y + 1.0) ** 2) / (2 * 2.0 ** 2)).double()
    zero = torch.zeros(n)
    out = class_averages(blob.expand(n, D, D), None, 2.0, torch.zeros(n), zero, torch.zeros(n, 2), 1)
    assert np.abs(out["averages"][0] - blob.numpy()).max() < 1e-3 * float(blob.max())
    assert out["resolution_A"][0] == pytest.approx(4.0)  # never below 0.143: Nyquist, 2 apix
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(n, D, D, generator=g, dtype=torch.float64)
    out = class_averages(noise, None, 2.0, torch.zeros(n), zero, torch.zeros(n, 2), 1)
    plain = Averager2D(1, D, 2.0)
    plain.add(noise, None, torch.zeros(n), zero, torch.zeros(n, 2), half=torch.arange(n) % 2)
    ratio = np.linalg.norm(out["averages"][0]) / float(torch.linalg.norm(plain.averages()[0]))
    assert ratio < 0.3, ratio  # measured 0.20


def test_cluster2d_separates_conformations_and_refines(sim, tmp_path, capsys):
    star, _ = sim
    out = tmp_path / "k"
    _ok(capsys, ["cluster2d", star, "-o", out, "--clusters", "3", "--features", "acf", "--threads", "1",
                 "--no-progress"])
    labels = np.load(out / "labels.npy")
    assert labels.shape == (N,) and set(labels.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(np.loadtxt(out / "labels.txt", dtype=np.int64), labels)
    ari = adjusted_rand(labels, _truth(star))
    assert ari > 0.5, ari  # measured 1.0 (one defocus; with defoci 1–2.5 µm the ACF alone gives 0.19)
    m = read_metrics(out)["metrics"]
    assert m["ari_truth"] == pytest.approx(ari)
    emb, pcs = np.load(out / "embedding.npy"), np.load(out / "embedding_pca.npy")
    assert emb.shape[0] == N and pcs.shape == (N, 2) and (out / "embedding.png").is_file()
    np.testing.assert_array_equal(read_star(out / "particles.star").particles["rlnClassNumber"], labels + 1)

    # refined by 2-D EM from those clusters
    out2 = tmp_path / "k2"
    _ok(capsys, ["cluster2d", star, "-o", out2, "--clusters", "3", "--refine-iterations", "2", "--threads", "1",
                 "--no-progress"])
    np.testing.assert_array_equal(np.load(out2 / "labels_features.npy"), labels)
    refined = np.load(out2 / "labels.npy")
    assert adjusted_rand(refined, _truth(star)) > 0.9  # measured 1.0
    with mrcfile.open(out2 / "class_averages.mrcs") as f:
        assert f.data.shape == (3, 32, 32)
    t = read_star(out2 / "particles.star")
    np.testing.assert_array_equal(t.particles["rlnClassNumber"], refined + 1)
    assert "rlnMaxValueProbDistribution" in t.particles.columns


def _bad_stack(star, tmp_path, fill):
    """A copy of ``star`` next to a copy of its stack changed by ``fill(data) -> data``."""
    folder = tmp_path / "bad"
    folder.mkdir()
    with mrcfile.open(star.parent / "particles.mrcs") as f:
        data, vs = fill(f.data.copy()), f.voxel_size.x
    with mrcfile.new(folder / "particles.mrcs") as f:
        f.set_data(np.ascontiguousarray(data, np.float32))
        f.voxel_size = vs
    shutil.copy(star, folder / "particles.star")
    return folder / "particles.star"


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_bad_input_writes_nothing(sim, tmp_path, capsys):
    star, _ = sim
    out = tmp_path / "o"

    def nothing():
        assert not out.exists() and not (tmp_path / ".o.part").exists()

    _fails(capsys, ["class2d", star, "-o", out, "--classes", str(N + 1)], "--classes")
    nothing()
    _fails(capsys, ["cluster2d", star, "-o", out, "--clusters", str(N + 1)], "--clusters")
    nothing()

    def nan(d):
        d[7, 3, 4] = np.nan
        return d
    bad = _bad_stack(star, tmp_path, nan)
    _fails(capsys, ["class2d", bad, "-o", out, "--classes", "3"], "image 8 contains NaN")
    nothing()
    _fails(capsys, ["cluster2d", bad, "-o", out, "--clusters", "3"], "image 8 contains NaN")
    nothing()
    shutil.rmtree(bad.parent)
    bad = _bad_stack(star, tmp_path, lambda d: d[:, :, :30])
    _fails(capsys, ["class2d", bad, "-o", out, "--classes", "3"], "square")
    nothing()


def test_an_interrupted_class2d_resumes_to_the_same_result(sim, tmp_path, capsys, monkeypatch):
    """Interrupted after its second iteration, the run leaves .NAME.part with the checkpoint; the same
    command finishes it with the uninterrupted run's history, labels and averages."""
    import cryoscape.methods.class2d.em as em
    star, _ = sim
    args = ["--classes", "3", "--iterations", "3", "--threads", "1", "--no-progress"]
    _ok(capsys, ["class2d", star, "-o", tmp_path / "whole", *args])
    real, calls = em._iterate, []

    def interrupted(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(em, "_iterate", interrupted)
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in ["class2d", star, "-o", tmp_path / "cut", *args]])
    assert e.value.code == 130
    monkeypatch.setattr(em, "_iterate", real)
    capsys.readouterr()
    part = tmp_path / ".cut.part"
    assert (part / "checkpoint.pt").is_file() and not (tmp_path / "cut").exists()
    _ok(capsys, ["class2d", star, "-o", tmp_path / "cut", *args])
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert json.loads((cut / "history.json").read_text()) == json.loads((whole / "history.json").read_text())
    assert "resuming" in (cut / "run.log").read_text() and not part.exists()
    assert (read_star(cut / "particles.star").particles["rlnClassNumber"].tolist()
            == read_star(whole / "particles.star").particles["rlnClassNumber"].tolist())
    with mrcfile.open(cut / "class_averages.mrcs") as a, mrcfile.open(whole / "class_averages.mrcs") as b:
        np.testing.assert_array_equal(a.data, b.data)
    assert math.isfinite(read_metrics(cut)["metrics"]["mean_max_prob"])
