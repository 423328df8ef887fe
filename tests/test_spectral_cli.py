"""`cryoscape spectral` end to end on a small simulated AdK set, and its bad inputs."""

import json

import numpy as np
import pytest

from cryoscape.cli.main import main
from cryoscape.io.models import read_model, read_trajectory


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sp") / "sim"
    with pytest.raises(SystemExit):
        main(["simulate", "--frames", "0:102:3", "-n", "160", "--box", "48", "--apix", "2.5", "--snr", "1",
              "--no-progress", "-o", str(out)])
    return out


def test_spectral_improves_the_models(simulated, tmp_path, capsys):
    code, stdout, err = run(["spectral", simulated / "particles.star", "--reference", simulated / "truth/models.pdb",
                             "--truth-models", simulated / "truth/models.pdb", "--epochs", 8, "--k", 4, "--optimizer", "adam", "--lr", 0.01,
                             "--test-fraction", 0.2, "--no-progress", "-o", tmp_path / "sp"], capsys)
    assert code in (0, None), err
    m = json.loads((tmp_path / "sp" / "metrics.json").read_text())
    assert m["test_trained"]["avg_error_A"] < m["test_initial"]["avg_error_A"]
    models = read_model(tmp_path / "sp" / "models.pdb")
    assert models.n_frames == 160 and models.n_atoms == 214
    assert np.load(tmp_path / "sp" / "embedding.npy").shape == (160, 4)
    for name in ("embedding.png", "training.png", "projections.png", "structures.png", "training.json", "config.yaml"):
        assert (tmp_path / "sp" / name).exists()


def test_spectral_cartesian_model(simulated, tmp_path, capsys):
    code, stdout, err = run(["spectral", simulated / "particles.star", "--reference", simulated / "truth/models.pdb",
                             "--truth-models", simulated / "truth/models.pdb", "--features", "oracle",
                             "--model", "cartesian", "--k", 3, "--epochs", 80, "--refine-modes", 30,
                             "--test-fraction", 0.2, "--no-progress", "-o", tmp_path / "cart"], capsys)
    assert code in (0, None), err
    m = json.loads((tmp_path / "cart" / "metrics.json").read_text())
    assert m["test_trained"]["avg_error_A"] < 0.8 * m["test_initial"]["avg_error_A"], m
    history = json.loads((tmp_path / "cart" / "training.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 161))  # both stages
    code, _, err = run(["spectral", simulated / "particles.star", "--reference", simulated / "truth/models.pdb",
                        "--model", "spline", "--no-progress", "-o", tmp_path / "bad"], capsys)
    assert code == 2 and "--model" in err and not (tmp_path / "bad").exists()


def test_spectral_from_images_alone(simulated, tmp_path, capsys):
    """Real-data mode: the graph from the images (no truth anywhere), models anchored at the reference."""
    code, stdout, err = run(["spectral", simulated / "particles.star", "--reference", simulated / "truth/models.pdb",
                             "--epochs", 2, "--k", 3, "--optimizer", "adam", "--lr", 0.01, "--no-progress",
                             "--models-format", "dcd", "-o", tmp_path / "img"], capsys)
    assert code in (0, None), err
    dcd = read_trajectory(tmp_path / "img" / "models_topology.pdb", tmp_path / "img" / "models.dcd")
    ref = read_model(simulated / "truth/models.pdb")
    assert dcd.n_frames == 160 and list(dcd.resids) == list(ref.resids)
    # the models start at the reference and move by a few Å at most after two epochs
    assert np.abs(dcd.coords - dcd.coords.mean(1, keepdims=True) - (ref.coords[0] - ref.coords[0].mean(0))).max() < 10
    assert not (tmp_path / "img" / "models.pdb").exists()
    assert json.loads((tmp_path / "img" / "metrics.json").read_text())["test_trained"] == {}


def _bad(capsys, tmp_path, argv, *needles):
    code, _, err = run(["spectral", *argv, "--no-progress", "-o", tmp_path / "bad"], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (tmp_path / "bad").exists()


def test_spectral_bad_inputs(simulated, tmp_path, capsys):
    star, models = simulated / "particles.star", simulated / "truth/models.pdb"
    _bad(capsys, tmp_path, [star, "--reference", models, "--features", "oracle"], "--truth-models")  # needs truth
    # a reference with a different number of Cα
    text = models.read_text().split("ENDMDL")[0]
    short = "\n".join(ln for ln in text.splitlines() if not ln.startswith("ATOM") or int(ln[22:26]) <= 200)
    (tmp_path / "short.pdb").write_text(short + "\nENDMDL\nEND\n")
    _bad(capsys, tmp_path, [star, "--reference", tmp_path / "short.pdb", "--truth-models", models], "214")
    # a chain with a gap
    lines = text.splitlines()
    gap = []
    for ln in lines:
        if ln.startswith("ATOM") and int(ln[22:26]) > 100:
            ln = ln[:30] + f"{float(ln[30:38]) + 30:8.3f}" + ln[38:]
        gap.append(ln)
    (tmp_path / "gap.pdb").write_text("\n".join(gap) + "\nENDMDL\nEND\n")
    _bad(capsys, tmp_path, [star, "--reference", tmp_path / "gap.pdb", "--truth-models", models], "gap")
    # a STAR without poses
    star_text = star.read_text()
    for col in ("_rlnAngleRot", "_rlnAngleTilt", "_rlnAnglePsi"):
        star_text = star_text.replace(col, "_rlnUnused" + col[-3:])
    (simulated / "noposes.star").write_text(star_text)
    _bad(capsys, tmp_path, [simulated / "noposes.star", "--reference", models, "--truth-models", models], "poses")
