"""The command line: a real run from files, and bad input → one line, exit 2, nothing written."""

import numpy as np
import pytest
import torch

from cryoscape.cli.main import main
from cryoscape.io.mrc import read_stack, write_map
from cryoscape.io.star import read_star
from cryoscape.physics import atoms_to_volume


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def test_help_and_version(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "simulate" in out
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip()


def test_simulate_from_trajectory_frames(tmp_path, capsys):
    from cryoscape.data.embedded import adk_files
    psf, dcd = adk_files()
    out = tmp_path / "sim"
    code, stdout, err = run(["simulate", dcd, "--topology", psf, "--frames", "0:102:10", "-n", 40, "--box", 64,
                             "--snr", 0.5, "--shift-max", 3, "--sampling", "balanced", "--no-progress",
                             "-o", out], capsys)
    assert code in (0, None), err
    t = read_star(out / "particles.star")
    assert len(t) == 40
    assert set(t.particles["cryoscapeConformation"]) == set(range(0, 102, 10))
    stack, apix = read_stack(out / "particles.mrcs")
    assert stack.shape == (40, 64, 64) and apix == pytest.approx(float(t.apix[0]))
    assert (out / "config.yaml").exists() and (out / "versions.txt").exists() and (out / "run.log").exists()
    assert "projection: splat" in (out / "config.yaml").read_text()  # σ = 3 Å ≥ 1.5 px here
    # refuses to overwrite without --overwrite, and leaves the folder as it was
    before = (out / "particles.mrcs").read_bytes()
    code, _, err = run(["simulate", dcd, "--topology", psf, "-n", 5, "--no-progress", "-o", out], capsys)
    assert code == 2 and "already exists" in err
    assert (out / "particles.mrcs").read_bytes() == before


def test_simulate_projection_option(tmp_path, capsys):
    """--projection exact and the default splat write the same noiseless images to 1e-3."""
    stacks = {}
    for mode in ("exact", "auto"):
        out = tmp_path / mode
        code, _, err = run(["simulate", "-n", 12, "--snr", "inf", "--shift-max", 3, "--projection", mode,
                            "--no-progress", "-o", out], capsys)
        assert code in (0, None), err
        stacks[mode] = np.asarray(read_stack(out / "particles.mrcs")[0], np.float64)
    assert "projection: exact" in (tmp_path / "exact" / "config.yaml").read_text()
    err = np.linalg.norm(stacks["auto"] - stacks["exact"]) / np.linalg.norm(stacks["exact"])
    assert 1e-7 < err < 1e-3, err


def test_simulate_from_map(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    vol = atoms_to_volume(torch.randn(50, 3, generator=g, dtype=torch.float64) * 5, 2.5, 48, 1.5)
    write_map(tmp_path / "m.mrc", vol.numpy(), 1.5)
    code, _, err = run(["simulate", tmp_path / "m.mrc", "-n", 10, "--no-progress", "-o", tmp_path / "o"], capsys)
    assert code in (0, None), err
    assert read_stack(tmp_path / "o" / "particles.mrcs")[0].shape == (10, 48, 48)


def _bad(capsys, tmp_path, argv, *needles):
    out = tmp_path / "out"
    code, _, err = run(["simulate", *argv, "--no-progress", "-o", out], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp left over


def test_bad_inputs(tmp_path, capsys):
    from cryoscape.data.embedded import adk_files
    psf, dcd = adk_files()
    _bad(capsys, tmp_path, [tmp_path / "missing.pdb"], "missing.pdb", "not found")
    (tmp_path / "x.xyz").write_text("hello")
    _bad(capsys, tmp_path, [tmp_path / "x.xyz"], "x.xyz", "unknown model type")
    write_map(tmp_path / "m.mrc", np.zeros((16, 16, 16), np.float32), 1.0)
    data = (tmp_path / "m.mrc").read_bytes()
    (tmp_path / "trunc.mrc").write_bytes(data[:3000])
    _bad(capsys, tmp_path, [tmp_path / "trunc.mrc"], "trunc.mrc", "truncated")
    (tmp_path / "text.mrc").write_text("not a map" * 200)
    _bad(capsys, tmp_path, [tmp_path / "text.mrc"], "text.mrc", "not a readable MRC")
    _bad(capsys, tmp_path, [dcd, "--topology", psf, "--snr", 0], "--snr")
    _bad(capsys, tmp_path, [dcd, "--topology", psf, "--snr", -2], "--snr")
    _bad(capsys, tmp_path, [dcd, "--topology", psf, "--box", 32, "--apix", 1.0], "--box", "smaller than the particle")
    _bad(capsys, tmp_path, [dcd], "topology")
    from MDAnalysisTests.datafiles import PSF_TRICLINIC
    _bad(capsys, tmp_path, [dcd, "--topology", PSF_TRICLINIC], "adk_dims2.dcd")
    _bad(capsys, tmp_path, [dcd, "--topology", psf, "--frames", "0:500"], "frame")
    _bad(capsys, tmp_path, [dcd, "--topology", psf, "--atoms", "banana"], "--atoms")
    _bad(capsys, tmp_path, [dcd, "--topology", psf, "--projection", "fast"], "--projection")


def test_console_entry_exit_codes_and_output(tmp_path):
    """The installed entry point (python -m cryoscape.cli.main → entry) ends with the command's status,
    its output flushed and its files complete, although it skips the interpreter's teardown."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    vol = atoms_to_volume(torch.randn(30, 3, dtype=torch.float64) * 5, 2.0, 32, 1.5).numpy()
    write_map(tmp_path / "a.mrc", vol, 1.5)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    cmd = [sys.executable, "-m", "cryoscape.cli.main", "fsc", str(tmp_path / "a.mrc"), str(tmp_path / "a.mrc"),
           "--plot", str(tmp_path / "f.png")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["real_space_correlation"] == pytest.approx(1.0)
    from PIL import Image
    assert Image.open(tmp_path / "f.png").size == (600, 400)  # complete, readable PNG
    res = subprocess.run(cmd[:5] + [str(tmp_path / "missing.mrc")], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "missing.mrc" in res.stderr
