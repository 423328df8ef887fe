"""`cryoscape spectral` end to end on a small simulated AdK set, and its bad inputs."""

import json

import numpy as np
import pytest
import torch

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
    """The paper's angle model (by options), scored on held-out particles; one metrics.json schema."""
    from cryoscape.runs import read_metrics
    code, stdout, err = run(["spectral", simulated / "particles.star", "--reference", simulated / "truth/models.pdb",
                             "--truth-models", simulated / "truth/models.pdb", "--model", "angles", "--epochs", 8,
                             "--k", 4, "--optimizer", "adam", "--lr", 0.01,
                             "--test-fraction", 0.2, "--no-progress", "-o", tmp_path / "sp"], capsys)
    assert code in (0, None), err
    payload = read_metrics(tmp_path / "sp")  # validates the schema
    m = payload["metrics"]
    assert payload["command"] == "spectral" and m["n_particles"] == 160 and m["n_test"] == 32
    assert m["test_trained_avg_error_A"] < m["test_initial_avg_error_A"]
    errors = json.loads((tmp_path / "sp" / "errors.json").read_text())
    assert errors["test_trained"]["avg_error_A"] == m["test_trained_avg_error_A"]
    assert len(errors["test_trained"]["per_residue_error_A"]) == 214
    printed = json.loads(stdout.strip().splitlines()[0])
    assert printed["test_trained_avg_error_A"] == round(m["test_trained_avg_error_A"], 3)
    models = read_model(tmp_path / "sp" / "models.pdb")
    assert models.n_frames == 160 and models.n_atoms == 214
    assert np.load(tmp_path / "sp" / "embedding.npy").shape == (160, 4)
    for name in ("embedding.png", "training.png", "projections.png", "structures.png", "training.json", "config.yaml",
                 "versions.txt", "run.log"):
        assert (tmp_path / "sp" / name).exists()
    assert [h["epoch"] for h in json.loads((tmp_path / "sp" / "training.json").read_text())] == list(range(1, 9))


def test_spectral_cartesian_model(simulated, tmp_path, capsys):
    code, stdout, err = run(["spectral", simulated / "particles.star", "--reference", simulated / "truth/models.pdb",
                             "--truth-models", simulated / "truth/models.pdb", "--features", "oracle",
                             "--model", "cartesian", "--k", 3, "--epochs", 80, "--refine-modes", 30,
                             "--test-fraction", 0.2, "--no-progress", "-o", tmp_path / "cart"], capsys)
    assert code in (0, None), err
    m = json.loads((tmp_path / "cart" / "metrics.json").read_text())["metrics"]
    assert m["test_trained_avg_error_A"] < 0.8 * m["test_initial_avg_error_A"], m
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
    m = json.loads((tmp_path / "img" / "metrics.json").read_text())["metrics"]
    assert not any(key.startswith("test_") for key in m) and not (tmp_path / "img" / "errors.json").exists()


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
    # gaps cut the chain into segments; one of two residues cannot carry a bend angle
    lines = text.splitlines()
    gap = []
    for ln in lines:
        if ln.startswith("ATOM") and int(ln[22:26]) > 2:
            ln = ln[:30] + f"{float(ln[30:38]) + 30:8.3f}" + ln[38:]
        gap.append(ln)
    (tmp_path / "gap.pdb").write_text("\n".join(gap) + "\nENDMDL\nEND\n")
    _bad(capsys, tmp_path, [star, "--reference", tmp_path / "gap.pdb"], "residues 1–2", "fewer than 3")
    # a reference whose chains are not the true models' chains
    two = [ln[:21] + "B" + ln[22:] if ln.startswith("ATOM") and int(ln[22:26]) > 100 else ln for ln in lines]
    (tmp_path / "two.pdb").write_text("\n".join(two) + "\nENDMDL\nEND\n")
    _bad(capsys, tmp_path, [star, "--reference", tmp_path / "two.pdb", "--truth-models", models], "models.pdb",
         "chains")
    # a STAR without poses
    star_text = star.read_text()
    for col in ("_rlnAngleRot", "_rlnAngleTilt", "_rlnAnglePsi"):
        star_text = star_text.replace(col, "_rlnUnused" + col[-3:])
    (simulated / "noposes.star").write_text(star_text)
    _bad(capsys, tmp_path, [simulated / "noposes.star", "--reference", models, "--truth-models", models], "poses")
    if not torch.cuda.is_available():
        _bad(capsys, tmp_path, [star, "--reference", models, "--device", "cuda"], "--device", "GPU")
    _bad(capsys, tmp_path, [star, "--reference", models, "--k", 0], "--k")
    _bad(capsys, tmp_path, [star, "--reference", models, "--test-fraction", 1.5], "--test-fraction")


def test_defaults_are_the_measured_best_the_demo_runs(simulated, tmp_path, capsys, monkeypatch):
    """`cryoscape spectral` without options builds SpectralConfig() — the measured-best setting (cartesian model,
    k = 3, 20 then 60 cosines, Adam 1.0 on a cosine schedule, image features on one variability mode) — and the
    paper's model stays reachable by options (--model angle --k 10: Adam 0.01, constant steps, no refit)."""
    from dataclasses import asdict

    import cryoscape.runs.spectral as runs_spectral
    from cryoscape.methods.spectral import SpectralConfig
    seen = []

    def capture(particles, reference, out, cfg, **kw):
        seen.append(cfg)
        return {"metrics": {}, "wall_s": 0.0}

    monkeypatch.setattr(runs_spectral, "spectral_run", capture)
    args = [simulated / "particles.star", "--reference", simulated / "truth/models.pdb", "-o", tmp_path / "x"]
    assert run(["spectral", *args], capsys)[0] in (0, None)
    assert asdict(seen[0]) == asdict(SpectralConfig())
    d = SpectralConfig()
    assert (d.model, d.k, d.smooth_modes, d.refine_modes, d.features, d.variability_modes) == \
        ("cartesian", 3, 20, 60, "images", 1)
    assert (d.fit.optimizer, d.fit.lr, d.fit.schedule, d.fit.epochs) == ("adam", 1.0, "cosine", 30) and d.refines
    assert run(["spectral", *args, "--model", "angle", "--k", "10"], capsys)[0] in (0, None)
    paper = seen[1]
    assert (paper.model, paper.k, paper.fit.lr, paper.fit.schedule, paper.refines) == ("angles", 10, 0.01, "constant",
                                                                                     False)


def test_star_without_ctf_runs_ctf_free_and_says_so(simulated, tmp_path, capsys):
    star_text = (simulated / "particles.star").read_text()
    for col in ("_rlnDefocusU", "_rlnDefocusV", "_rlnDefocusAngle"):
        star_text = star_text.replace(col + " ", "_rlnUnused" + col[4:] + " ")
    noctf = simulated / "noctf.star"
    noctf.write_text(star_text)
    code, stdout, err = run(["spectral", noctf, "--reference", simulated / "truth/models.pdb", "--epochs", 1,
                             "--refine-modes", 0, "--no-progress", "-o", tmp_path / "nc"], capsys)
    assert code in (0, None), err
    notes = [ln for ln in err.splitlines() if ln.strip()]
    assert notes == ["note: noctf.star has no CTF columns: running CTF-free"], err
    payload = json.loads((tmp_path / "nc" / "metrics.json").read_text())
    assert payload["inputs"]["ctf_free"] is True
    assert "running CTF-free" in (tmp_path / "nc" / "run.log").read_text()


def _write_cs(path, stack: str, n: int, D: int, apix: float):
    """A cryoSPARC particle table (no CTF fields) for images 0..n-1 of ``stack`` (cryoSPARC's field names)."""
    fields = [("uid", "<u8"), ("blob/path", "S200"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
              ("blob/psize_A", "<f4")]
    a = np.zeros(n, dtype=fields)
    a["uid"] = np.arange(n)
    a["blob/path"] = [stack.encode()] * n
    a["blob/idx"] = np.arange(n)
    a["blob/shape"] = D
    a["blob/psize_A"] = apix
    with open(path, "wb") as f:
        np.save(f, a)


def test_cs_and_stack_with_pickles_give_the_star_result(simulated, tmp_path, capsys):
    """The same particles as a STAR, a cryoSPARC .cs with poses and CTF pickles, and a stack with pickles give the
    same models (one epoch, no refit)."""
    import shutil
    shutil.copy(simulated / "particles.mrcs", tmp_path / "particles.mrcs")
    _write_cs(tmp_path / "p.cs", "particles.mrcs", 160, 48, 2.5)
    common = ["--reference", simulated / "truth/models.pdb", "--epochs", 1, "--refine-modes", 0, "--no-progress"]
    pk = ["--poses", simulated / "truth/poses.pkl", "--ctf", simulated / "truth/ctf.pkl"]
    for name, inp, extra in (("star", simulated / "particles.star", []), ("cs", tmp_path / "p.cs", pk),
                             ("stack", simulated / "particles.mrcs", pk)):
        code, _, err = run(["spectral", inp, *common, *extra, "-o", tmp_path / name], capsys)
        assert code in (0, None), err
    star = read_model(tmp_path / "star" / "models.pdb").coords
    for name in ("cs", "stack"):
        other = read_model(tmp_path / name / "models.pdb").coords
        assert np.abs(other - star).max() < 1e-2, name  # PDB precision 1e-3 Å; pickles hold float32 CTF values


def test_reference_with_unparseable_coordinates_is_refused(simulated, tmp_path, capsys):
    text = (simulated / "truth/models.pdb").read_text().split("ENDMDL")[0]
    lines = text.splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.startswith("ATOM"))
    for token in ("     nan", "     abc"):
        bad_lines = list(lines)
        bad_lines[k] = bad_lines[k][:30] + token + bad_lines[k][38:]
        bad = tmp_path / "bad_ref.pdb"
        bad.write_text("\n".join(bad_lines) + "\nENDMDL\nEND\n")
        _bad(capsys, tmp_path, [simulated / "particles.star", "--reference", bad], "bad_ref.pdb", "coordinate")
