"""``cryoscape denoise``: run folders for stacks and micrographs, the STAR it writes, metrics against the
simulator's clean images, the input left untouched, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import hashlib

import mrcfile
import numpy as np
import pytest

from cryoscape.cli.main import main
from cryoscape.data.particles import load_particles
from cryoscape.io.mrc import read_micrograph, read_stack, write_micrograph, write_stack
from cryoscape.io.star import read_star
from cryoscape.runs.folder import read_metrics

from conftest import cli_fails, cli_ok

_ok, _fails = cli_ok, cli_fails  # the shared CLI checks (conftest)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """60 AdK images of 32 px, SNR 0.1, 2 defocus groups, with both clean truths."""
    root = tmp_path_factory.mktemp("denoise")
    with pytest.raises(SystemExit) as e:
        main(["simulate", "-o", str(root / "sim"), "-n", "60", "--box", "32", "--snr", "0.1", "--frames", "0",
              "--defocus-groups", "2", "--save-clean", "--no-progress", "--threads", "1"])
    assert e.value.code == 0
    return root / "sim"


def test_stack_denoised_with_truth_metrics_and_star(tmp_path, capsys, sim):
    star = sim / "particles.star"
    before = {p.name: _digest(p) for p in (star, sim / "particles.mrcs")}
    _ok(capsys, ["denoise", star, "-o", tmp_path / "tv", "--method", "tv", "--truth", sim / "truth" / "clean.mrcs",
                 "--no-progress"])
    out = tmp_path / "tv"
    assert {p.name: _digest(p) for p in (star, sim / "particles.mrcs")} == before  # input untouched
    den, apix = read_stack(out / "denoised.mrcs")
    noisy, apix_in = read_stack(sim / "particles.mrcs")
    assert den.shape == noisy.shape and apix == pytest.approx(apix_in)
    payload = read_metrics(out)
    m = payload["metrics"]
    assert payload["inputs"]["method"] == "tv" and m["n_images"] == 60 and not payload["inputs"]["removes_ctf"]
    # the filter must beat the noisy input against the simulator's clean images
    assert m["psnr_vs_truth_dB"] > m["input_psnr_vs_truth_dB"] + 3.0
    assert (out / "comparison.png").stat().st_size > 5000
    # the STAR points at the denoised stack, keeps the CTF (tv leaves it in the images) and loads
    d = load_particles(out / "particles.star", need_poses=False)
    assert np.array_equal(d.images(slice(0, 5)), np.asarray(den[:5]))
    assert d.ctf is not None


def test_ctf_removing_method_drops_defocus_columns(tmp_path, capsys, sim):
    _ok(capsys, ["denoise", sim / "particles.star", "-o", tmp_path / "w", "--method", "wiener",
                 "--truth", sim / "truth" / "clean_noctf.mrcs", "--no-progress"])
    payload = read_metrics(tmp_path / "w")
    m = payload["metrics"]
    assert payload["inputs"]["removes_ctf"] and m["psnr_vs_truth_dB"] > m["input_psnr_vs_truth_dB"]
    assert "rlnDefocusU" not in read_star(tmp_path / "w" / "particles.star").particles.columns


def test_micrographs_of_any_size(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:90, :70]
    clean = np.sin(x / 6.0) * np.cos(y / 9.0)  # smooth, non-square
    for i in range(2):
        write_micrograph(tmp_path / f"mic{i}.mrc", clean + rng.normal(0, 0.5, clean.shape), 1.5)
        write_micrograph(tmp_path / f"clean{i}.mrc", clean, 1.5)
    _ok(capsys, ["denoise", tmp_path / "mic0.mrc", tmp_path / "mic1.mrc", "-o", tmp_path / "out", "-m", "tv",
                 "--truth", tmp_path / "clean0.mrc", "--truth", tmp_path / "clean1.mrc", "--no-progress"])
    for i in range(2):
        img, apix = read_micrograph(tmp_path / "out" / "denoised" / f"mic{i}.mrc")
        assert img.shape == (90, 70) and apix == pytest.approx(1.5)
    m = read_metrics(tmp_path / "out")["metrics"]
    assert m["pearson_vs_truth"] > 0.9 and m["psnr_vs_truth_dB"] > m["input_psnr_vs_truth_dB"]


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, sim):
    star = sim / "particles.star"
    _fails(capsys, ["denoise", star, "-o", tmp_path / "a", "-m", "median"], "unknown denoising method")
    _fails(capsys, ["denoise", star, "-o", tmp_path / "a", "-m", "tv", "-p", "strength=2"], "has no option")
    _fails(capsys, ["denoise", star, "-o", tmp_path / "a", "-m", "tv", "-p", "tv_weight=lots"], "expects")
    nan = np.zeros((4, 16, 16), np.float32)
    nan[2, 3, 3] = np.nan
    write_stack(tmp_path / "nan.mrcs", nan, 1.0)
    _fails(capsys, ["denoise", tmp_path / "nan.mrcs", "-o", tmp_path / "a", "-m", "tv"], "NaN")
    with mrcfile.new(tmp_path / "empty.mrcs") as mrc:  # a header and no images
        mrc.set_data(np.zeros((0, 16, 16), np.float32))
    _fails(capsys, ["denoise", tmp_path / "empty.mrcs", "-o", tmp_path / "a", "-m", "tv"], "empty.mrcs")
    write_micrograph(tmp_path / "m.mrc", np.zeros((40, 50), np.float32), 1.0)
    _fails(capsys, ["denoise", tmp_path / "m.mrc", "-o", tmp_path / "a", "-m", "cwf"], "needs a particle stack")
    (tmp_path / "x.tif").write_bytes(b"II*\x00")
    _fails(capsys, ["denoise", tmp_path / "x.tif", "-o", tmp_path / "a"], "unknown file type")
    _fails(capsys, ["denoise", star, "-o", tmp_path / "a", "-m", "tv", "--truth", tmp_path / "nan.mrcs"], "holds")
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a*"))


def test_unet_trains_saves_and_reapplies_its_model(tmp_path, capsys):
    """A short training on two micrographs writes model.pt and history.json; --model applies the same network
    again without training, giving the same output; a micrograph below the network's minimum is refused."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:96, :80]
    clean = np.sin(x / 5.0) * np.cos(y / 7.0)
    for i in range(2):
        write_micrograph(tmp_path / f"mic{i}.mrc", clean + rng.normal(0, 0.7, clean.shape), 1.0)
    short = ["-p", "epochs=2", "-p", "steps_per_epoch=3", "-p", "batch_size=2", "-p", "crop=32", "--device", "cpu"]
    _ok(capsys, ["denoise", tmp_path / "mic0.mrc", tmp_path / "mic1.mrc", "-o", tmp_path / "a", "-m", "unet",
                 *short, "--no-progress"])
    a = tmp_path / "a"
    assert (a / "model.pt").is_file() and not list(a.glob("checkpoint_*"))
    hist = __import__("json").loads((a / "history.json").read_text())["model.pt"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert read_metrics(a)["metrics"]["training_wall_s"] > 0
    _ok(capsys, ["denoise", tmp_path / "mic1.mrc", "-o", tmp_path / "b", "-m", "unet", "--model", a / "model.pt",
                 "--device", "cpu", "--no-progress"])
    first, _ = read_micrograph(a / "denoised" / "mic1.mrc")
    again, _ = read_micrograph(tmp_path / "b" / "denoised" / "mic1.mrc")
    assert np.allclose(first, again, atol=1e-5 * np.abs(first).max())
    write_micrograph(tmp_path / "tiny.mrc", rng.normal(size=(10, 12)).astype(np.float32), 1.0)
    _fails(capsys, ["denoise", tmp_path / "tiny.mrc", "-o", tmp_path / "c", "-m", "unet"], "minimum")
    _fails(capsys, ["denoise", tmp_path / "mic0.mrc", "-o", tmp_path / "c", "-m", "tv", "--model", a / "model.pt"],
           "unet only")
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c*"))
