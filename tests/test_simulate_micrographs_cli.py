"""``cryoscape simulate-micrographs``: the run folder against the library's own simulation (micrographs, CTF,
particle and junk truth), same-seed identical bytes, resuming after an interruption, and bad input refused with
nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli_fails, cli_ok

APIX = 1.5
ARGS = ["--frames", "0:102:40", "-n", "3", "--size", "160x224", "--apix", str(APIX), "--n-particles", "2",
        "--snr", "0.5", "--snr-region", "particles", "--junk-fraction", "0.34", "--gradient", "0.2", "--n-frames",
        "4", "--save-frames", "--save-clean", "--seed", "5", "--no-progress"]


def _files(folder: Path) -> dict:
    """Every file's bytes but the log and the metrics (time stamps and wall times)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("run.log", "metrics.json")}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One run of the command (module-scoped: several tests read it)."""
    from cryoscape.cli.main import main
    out = tmp_path_factory.mktemp("cli") / "mics"
    with pytest.raises(SystemExit) as e:
        main(["simulate-micrographs", *ARGS, "-o", str(out)])
    assert e.value.code == 0
    return out


def test_folder_matches_the_library_simulation(run_dir, adk):
    """The files hold what :func:`simulate_micrographs` makes with the same options: the noisy micrographs,
    frames and clean fields, each particle's centre, pose, conformation and defocus, and the junk."""
    from cryoscape.data.micrographs import MicrographConfig, read_micrographs_ctf, simulate_micrographs
    from cryoscape.data.simulate import AtomSource
    from cryoscape.geometry.rotations import euler_to_matrix
    import mrcfile

    from cryoscape.io.coords import read_coordinates
    from cryoscape.io.mrc import read_micrograph
    from cryoscape.io.star import read_star
    from cryoscape.runs.folder import read_metrics

    frames = list(range(0, 102, 40))
    src = AtomSource(adk.coords[frames], 3.0)
    cfg = MicrographConfig(size=(160, 224), apix=APIX, n_particles=2, snr=0.5, snr_region="particles",
                           junk_fraction=0.34, gradient=0.2, n_frames=4, keep_frames=True, seed=5)
    ms = simulate_micrographs(src, cfg, 3)
    names = [f"micrographs/mic_{m:05d}.mrc" for m in range(3)]
    for m, name in enumerate(names):
        img, apix = read_micrograph(run_dir / name)
        assert apix == pytest.approx(APIX) and img.shape == (160, 224)
        assert np.array_equal(img, ms.noisy[m].numpy())
        assert np.array_equal(read_micrograph(run_dir / "truth" / "clean" / f"mic_{m:05d}.mrc")[0], ms.clean[m].numpy())
        with mrcfile.open(run_dir / "frames" / f"mic_{m:05d}.mrcs") as mrc:  # (T, H, W): not square images
            assert np.array_equal(mrc.data, ms.frames[m].numpy())
    star_names, ctf, apix = read_micrographs_ctf(run_dir / "micrographs_ctf.star")
    assert star_names == names and apix == pytest.approx(APIX)
    np.testing.assert_allclose(ctf.defocus_u.numpy(), ms.ctf.defocus_u.numpy(), atol=1e-5)
    np.testing.assert_allclose(ctf.angle_ast.numpy(), ms.ctf.angle_ast.numpy(), atol=1e-6)
    parts = read_star(run_dir / "truth" / "particles.star").particles
    assert len(parts) == len(ms.coords) == 6
    assert list(parts["rlnMicrographName"]) == [names[m] for m in ms.micrograph]
    np.testing.assert_allclose(parts[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), ms.coords, atol=1e-5)
    R = euler_to_matrix(torch.deg2rad(torch.tensor(parts[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]]
                                                      .to_numpy()))).numpy()
    np.testing.assert_allclose(R, ms.rotations, atol=1e-5)
    np.testing.assert_allclose(parts["rlnDefocusU"].to_numpy(), ms.ctf.defocus_u.numpy()[ms.micrograph], atol=1e-5)
    assert np.array_equal(parts["cryoscapeConformation"].to_numpy(), np.array(frames)[ms.conformation])
    junk = read_star(run_dir / "truth" / "junk.star").particles
    assert len(junk) == len(ms.junk_kind) == 3  # round(2 · 0.34 / 0.66) = 1 per micrograph
    assert list(junk["cryoscapeJunkKind"]) == list(ms.junk_kind)
    np.testing.assert_allclose(junk[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), ms.junk_xy, atol=1e-5)
    # junk is not in the particle table
    pxy = parts[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
    assert np.sqrt(((pxy[:, None] - junk[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()[None]) ** 2)
                   .sum(-1)).min() > 10
    # the truth files read as coordinate files ("relion-multi": micrograph name + RELION coordinates)
    truth = read_coordinates(run_dir / "truth" / "particles.star")
    assert list(truth.micrograph) == [names[m] for m in ms.micrograph]
    np.testing.assert_allclose(truth.xy, ms.coords, atol=1e-5)
    np.testing.assert_allclose(read_coordinates(run_dir / "truth" / "junk.star").xy, ms.junk_xy, atol=1e-5)
    meta = read_metrics(run_dir)
    assert meta["metrics"]["n_particles"] == 6 and meta["metrics"]["n_junk"] == 3
    assert meta["metrics"]["snr_particles"] == pytest.approx(float(np.mean(ms.snr_particles)), rel=1e-6)
    assert (run_dir / "previews" / "micrograph.png").stat().st_size > 1000
    assert not any(p.name.startswith(".") for p in run_dir.rglob("*"))  # no checkpoints or parts left


def test_same_seed_gives_identical_files(run_dir, tmp_path, capsys):
    out = tmp_path / "again"
    cli_ok(capsys, ["simulate-micrographs", *ARGS, "-o", out])
    a, b = _files(run_dir), _files(out)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    other = tmp_path / "other"
    cli_ok(capsys, ["simulate-micrographs", *ARGS[:-3], "--seed", "6", "--no-progress", "-o", other])
    assert _files(other)["micrographs/mic_00000.mrc"] != a["micrographs/mic_00000.mrc"]


def test_resume_after_an_interruption_writes_the_same_bytes(run_dir, tmp_path, capsys, monkeypatch):
    """Interrupted after micrograph 1's files were written but before its checkpoint (as a hard kill there
    would leave it); the same command continues and the folder equals the uninterrupted run's."""
    import cryoscape.runs.simulate_micrographs as rsm
    from cryoscape.cli.main import main

    out = tmp_path / "resumed"
    original = rsm._write_micrograph

    def write_then_die(run, parts, g, *a, **k):
        original(run, parts, g, *a, **k)
        if g.index == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(rsm, "_write_micrograph", write_then_die)
    with pytest.raises(SystemExit) as e:
        main(["simulate-micrographs", *ARGS, "-o", str(out)])
    assert e.value.code == 130 and not out.exists()
    part = tmp_path / ".resumed.part"
    assert (part / "micrographs" / "mic_00001.mrc").is_file() and '"done": 1' in (part / "progress.json").read_text()
    monkeypatch.setattr(rsm, "_write_micrograph", original)
    rendered = []
    sim_render = rsm.MicrographSimulator.render
    monkeypatch.setattr(rsm.MicrographSimulator, "render", lambda self, plan: rendered.append(plan.index)
                        or sim_render(self, plan))
    cli_ok(capsys, ["simulate-micrographs", *ARGS, "-o", out])
    assert rendered == [1, 2]  # micrograph 0 was not simulated again
    a, b = _files(run_dir), _files(out)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert not part.exists()


@pytest.mark.parametrize("extra,text", [
    (["--junk-fraction", "0.95"], "--junk-fraction"),
    (["--size", "60"], "--size"),
    (["--size", "abc"], "--size"),
    (["--n-particles", "60"], "--n-particles"),
    (["--snr", "nan"], "--snr"),
    (["--snr", "0.5", "--dose", "20"], "--snr/--dose"),
    (["--junk-kinds", "second"], "--second-model"),
    (["--n-micrographs", "0"], "--n-micrographs"),
    (["--snr-region", "box"], "--snr-region"),
    (["--second-model", "missing.pdb"], "missing.pdb"),
])
def test_bad_input_exits_2_with_nothing_written(tmp_path, capsys, extra, text):
    out = tmp_path / "bad"
    args = ["simulate-micrographs", "--frames", "0:102:40", "--size", "160x224", "--apix", str(APIX),
            "--n-particles", "2", "--no-progress", *extra, "-o", out]
    cli_fails(capsys, args, text)
    assert list(tmp_path.iterdir()) == []


def test_missing_input_and_existing_output(tmp_path, capsys):
    cli_fails(capsys, ["simulate-micrographs", tmp_path / "nope.pdb", "-o", tmp_path / "x"], "nope.pdb")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x").mkdir()
    cli_fails(capsys, ["simulate-micrographs", "-o", tmp_path / "x"], "already exists")
    assert list((tmp_path / "x").iterdir()) == []
