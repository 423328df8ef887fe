"""Direct Fourier inversion against analytic truth, and the backproject/fsc/downsample commands."""

import json
import math
import pickle

import numpy as np
import pytest
import torch

from cryoscape.analysis.fsc import fsc, fsc_auc, resolution_at
from cryoscape.cli.main import main
from cryoscape.data.particles import load_particles
from cryoscape.data.simulate import AtomSource, SimulationConfig
from cryoscape.io.mrc import read_map, read_stack, write_map, write_stack
from cryoscape.io.star import read_star
from cryoscape.methods.reconstruct import BackprojectConfig, backproject
from cryoscape.methods.downsample import crop_images, crop_volume
from cryoscape.physics import atoms_to_volume, project_atoms_real
from cryoscape.runs.folder import read_metrics
from cryoscape.runs.simulate import simulate_to_folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """1,500 noiseless analytic projections (CTF, offsets) of 150 Gaussian atoms, and their voxel map."""
    g = torch.Generator().manual_seed(0)
    coords = torch.randn(150, 3, generator=g, dtype=torch.float64) * 7
    D, apix, sigma = 48, 1.5, 2.5
    truth = atoms_to_volume(coords - coords.mean(0), sigma, D, apix).numpy()
    out = tmp_path_factory.mktemp("bp") / "sim"
    cfg = SimulationConfig(n_images=1500, box=D, apix=apix, snr=math.inf, sigma=sigma, shift_max_A=4.0,
                           astigmatism_um=0.1, defocus_min_um=0.8, defocus_max_um=2.0, seed=1)
    simulate_to_folder(out, AtomSource(coords.numpy(), sigma), cfg, show_progress=False, previews=False)
    return out, truth


def test_reconstruction_of_analytic_projections(dataset):
    out, truth = dataset
    data = load_particles(out / "particles.star")
    res = backproject(data, BackprojectConfig(mask_radius=0))
    curve = fsc(res.volume, truth)
    D = truth.shape[0]
    assert curve[1:D // 4 + 1].min() > 0.97, curve  # to half Nyquist
    assert curve[1:D // 3 + 1].min() > 0.9, curve  # to 2/3 Nyquist
    # the scale is right to the known bias of pad 1 (see BackprojectConfig): 150 unit-mass atoms
    assert 0.85 < res.volume.sum() * 1.5 ** 3 / 150 < 1.0
    # nearest-neighbour insertion: coarser, still right to half Nyquist
    near = backproject(data, BackprojectConfig(mask_radius=0, interp="nearest"))
    assert fsc(near.volume, truth)[1:D // 4 + 1].min() > 0.9
    # the same from the cryoDRGN pickles instead of the STAR
    data2 = load_particles(out / "particles.mrcs", out / "truth" / "poses.pkl", out / "truth" / "ctf.pkl")
    res2 = backproject(data2, BackprojectConfig(mask_radius=0))
    assert np.allclose(res2.volume, res.volume, atol=1e-4 * np.abs(res.volume).max())


def test_padded_reconstruction_has_exact_amplitudes_without_ctf(tmp_path):
    """pad 2 (oversampled images): the map itself, not only its FSC, matches the truth."""
    g = torch.Generator().manual_seed(5)
    coords = torch.randn(150, 3, generator=g, dtype=torch.float64) * 7
    D, apix, sigma = 48, 1.5, 2.5
    truth = atoms_to_volume(coords - coords.mean(0), sigma, D, apix).numpy()
    cfg = SimulationConfig(n_images=1000, box=D, apix=apix, snr=math.inf, sigma=sigma, shift_max_A=4.0,
                           ctf=False, seed=2)
    simulate_to_folder(tmp_path / "s", AtomSource(coords.numpy(), sigma), cfg, show_progress=False,
                       previews=False)
    res = backproject(load_particles(tmp_path / "s" / "particles.star"), BackprojectConfig(pad=2, mask_radius=0))
    assert abs(res.volume.sum() * apix ** 3 / 150 - 1) < 0.02
    assert np.linalg.norm(res.volume - truth) / np.linalg.norm(truth) < 0.03
    assert fsc(res.volume, truth)[1:int(0.8 * D / 2) + 1].min() > 0.9


def test_half_split_reproducible_and_ctf_matters(dataset):
    out, truth = dataset
    data = load_particles(out / "particles.star").subset(np.arange(600))
    a = backproject(data, BackprojectConfig(seed=3))
    b = backproject(data, BackprojectConfig(seed=3))
    c = backproject(data, BackprojectConfig(seed=4))
    assert np.array_equal(a.half_a, b.half_a) and not np.array_equal(a.half_a, c.half_a)
    assert a.info["n_half_a"] + a.info["n_half_b"] == 600
    wiener = backproject(data, BackprojectConfig(wiener=True, mask_radius=0))
    assert fsc(wiener.volume, truth)[1:12].min() > 0.95  # noiseless: the Wiener filter keeps everything
    no_ctf = backproject(data, BackprojectConfig(ctf=False, mask_radius=0))
    assert fsc(no_ctf.volume, truth)[8] < 0.9 < fsc(a.volume, truth)[8]


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def test_backproject_cli_and_fsc(dataset, tmp_path, capsys):
    out, truth = dataset
    write_map(tmp_path / "truth.mrc", truth, 1.5)
    ind = tmp_path / "ind.pkl"
    pickle.dump(np.arange(0, 1500, 2), open(ind, "wb"))
    code, stdout, err = run(["backproject", out / "particles.star", "--ind", ind, "--truth", tmp_path / "truth.mrc",
                             "--no-progress", "-o", tmp_path / "bp"], capsys)
    assert code in (0, None), err
    summary = json.loads((tmp_path / "bp" / "fsc.json").read_text())
    assert summary["n_images"] == 750 and summary["box_px"] == 48
    assert min(summary["fsc_truth"][1:13]) > 0.98
    vol, apix = read_map(tmp_path / "bp" / "map.mrc")
    assert apix == pytest.approx(1.5) and vol.shape == (48, 48, 48)
    for name in ("half_map_A.mrc", "half_map_B.mrc", "fsc.png", "config.yaml", "versions.txt", "run.log"):
        assert (tmp_path / "bp" / name).exists()
    m = read_metrics(tmp_path / "bp")  # the one schema, validated
    assert m["command"] == "backproject" and m["metrics"]["n_images"] == 750
    for key in ("resolution_fsc0.143_A", "resolution_fsc0.5_A", "fsc_auc", "resolution_truth_fsc0.143_A"):
        assert m["metrics"][key] == pytest.approx(summary[key])  # fsc.json and metrics.json agree
    # the half maps' figures are those of analysis.fsc on the written half maps
    ha, _ = read_map(tmp_path / "bp" / "half_map_A.mrc")
    hb, _ = read_map(tmp_path / "bp" / "half_map_B.mrc")
    curve = fsc(ha, hb)
    assert m["metrics"]["fsc_auc"] == pytest.approx(fsc_auc(curve, 48), abs=1e-6)
    assert m["metrics"]["resolution_fsc0.143_A"] == pytest.approx(resolution_at(curve, 48, 1.5), rel=1e-5)
    assert "map.mrc" in m["files"] and "fsc.json" in m["files"]
    code, stdout, err = run(["fsc", tmp_path / "bp" / "map.mrc", tmp_path / "truth.mrc", "-o", tmp_path / "f.json",
                             "--plot", tmp_path / "f.png"], capsys)
    assert code in (0, None), err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["fsc_auc"] > 0.4 and res["real_space_correlation"] > 0.95
    assert (tmp_path / "f.png").exists()


def _bad(capsys, tmp_path, argv, *needles):
    out = tmp_path / "bad_out"
    code, _, err = run(["backproject", *argv, "--no-progress", "-o", out], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_backproject_bad_inputs(dataset, tmp_path, capsys):
    out, _ = dataset
    rot, trans = pickle.load(open(out / "truth" / "poses.pkl", "rb"))
    pickle.dump((rot[:10], trans[:10]), open(tmp_path / "short.pkl", "wb"))
    _bad(capsys, tmp_path, [out / "particles.mrcs", "--poses", tmp_path / "short.pkl"], "short.pkl", "10 poses")
    ctf = pickle.load(open(out / "truth" / "ctf.pkl", "rb"))
    bad_ctf = ctf.copy()
    bad_ctf[:, 1] = 3.0
    pickle.dump(bad_ctf, open(tmp_path / "apix.pkl", "wb"))
    _bad(capsys, tmp_path, [out / "particles.mrcs", "--poses", out / "truth" / "poses.pkl", "--ctf",
                            tmp_path / "apix.pkl"], "apix.pkl", "pixel size")
    text = (out / "particles.star").read_text().replace("\t48\t2\n", "\t64\t2\n", 1)
    (tmp_path / "box.star").write_text(text)
    (tmp_path / "particles.mrcs").symlink_to(out / "particles.mrcs")
    _bad(capsys, tmp_path, [tmp_path / "box.star"], "box.star", "rlnImageSize 64")
    sub = tmp_path / "apix_sub"  # the stack's header says 2.0 Å, the STAR 1.5 Å
    sub.mkdir()
    stack, apix = read_stack(out / "particles.mrcs")
    write_stack(sub / "particles.mrcs", np.array(stack), 2.0)
    (sub / "p.star").write_text((out / "particles.star").read_text())
    _bad(capsys, tmp_path, [sub / "p.star"], "particles.mrcs", "pixel size 2 Å", "rlnImagePixelSize (1.5 Å)")
    code, _, err = run(["backproject", sub / "p.star", "--apix", "1.5", "--no-progress", "-o", tmp_path / "ok"],
                       capsys)
    assert code in (0, None), err  # --apix settles the disagreement
    np.save(tmp_path / "empty.npy", np.zeros(0, dtype=np.int64))
    _bad(capsys, tmp_path, [out / "particles.star", "--ind", tmp_path / "empty.npy"], "--ind", "empty")
    _bad(capsys, tmp_path, [out / "particles.mrcs"], "no poses")
    stack, apix = read_stack(out / "particles.mrcs")
    nan = np.array(stack[:20])
    nan[7, 3, 3] = np.nan
    write_stack(tmp_path / "nan.mrcs", nan, apix)
    pickle.dump((rot[:20], trans[:20]), open(tmp_path / "p20.pkl", "wb"))
    _bad(capsys, tmp_path, [tmp_path / "nan.mrcs", "--poses", tmp_path / "p20.pkl"], "nan.mrcs", "image 8", "NaN")


def test_backproject_cs_input_ctf_free_star_and_device(dataset, tmp_path, capsys):
    """A cryoSPARC .cs (with --poses) gives the map of the STAR; a STAR without CTF columns runs CTF-free and
    says so in one line; --device is checked before anything is written."""
    out, truth = dataset
    parts = read_star(out / "particles.star").particles
    fields = [("uid", "<u8"), ("blob/path", "S40"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
              ("blob/psize_A", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"),
              ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4")]
    n = len(parts)
    cs = np.zeros(n, dtype=fields)
    cs["uid"], cs["blob/path"], cs["blob/idx"] = np.arange(n), b"particles.mrcs", np.arange(n)
    cs["blob/shape"], cs["blob/psize_A"] = 48, 1.5
    cs["ctf/accel_kv"], cs["ctf/cs_mm"], cs["ctf/amp_contrast"] = 300, 2.7, 0.1
    cs["ctf/df1_A"], cs["ctf/df2_A"] = parts["rlnDefocusU"], parts["rlnDefocusV"]
    cs["ctf/df_angle_rad"] = np.deg2rad(parts["rlnDefocusAngle"])
    cs["ctf/phase_shift_rad"] = np.deg2rad(parts.get("rlnPhaseShift", 0.0))
    with open(out / "particles_test.cs", "wb") as f:
        np.save(f, cs)
    code, _, err = run(["backproject", out / "particles_test.cs", "--poses", out / "truth" / "poses.pkl",
                        "--no-progress", "--device", "cpu", "-o", tmp_path / "cs"], capsys)
    assert code in (0, None), err
    code, _, err = run(["backproject", out / "particles.star", "--no-progress", "-o", tmp_path / "star"], capsys)
    assert code in (0, None), err
    a, _ = read_map(tmp_path / "cs" / "map.mrc")
    b, _ = read_map(tmp_path / "star" / "map.mrc")
    assert np.abs(a - b).max() < 1e-3 * np.abs(b).max()  # defocus stored as float32 in the .cs
    # no CTF columns: one line on stderr, the map of --no-ctf
    from cryoscape.io.star import write_star
    table = read_star(out / "particles.star")
    ctf_cols = [c for c in table.particles if c.startswith(("rlnDefocus", "rlnPhaseShift", "rlnCtf"))]
    write_star(tmp_path / "noctf.star", table.particles.drop(columns=ctf_cols), table.optics)
    (tmp_path / "particles.mrcs").symlink_to(out / "particles.mrcs")
    code, stdout, err = run(["backproject", tmp_path / "noctf.star", "--no-progress", "-o", tmp_path / "free"],
                            capsys)
    assert code in (0, None), err
    assert [ln for ln in err.splitlines() if ln.strip()] == ["noctf.star has no CTF columns: running CTF-free"]
    assert json.loads(stdout.strip().splitlines()[-2])["n_images"] == 1500
    free, _ = read_map(tmp_path / "free" / "map.mrc")
    ref = backproject(load_particles(out / "particles.star"), BackprojectConfig(ctf=False, device="cpu")).volume
    assert np.abs(free - ref).max() < 1e-5 * np.abs(ref).max()
    _bad(capsys, tmp_path, [out / "particles.star", "--device", "banana"], "--device")
    if not torch.cuda.is_available():
        _bad(capsys, tmp_path, [out / "particles.star", "--device", "cuda"], "--device", "GPU")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_backproject_on_cuda_matches_cpu(dataset):
    out, truth = dataset
    data = load_particles(out / "particles.star").subset(np.arange(600))
    cpu = backproject(data, BackprojectConfig(mask_radius=0, device="cpu"))
    gpu = backproject(data, BackprojectConfig(mask_radius=0, device="cuda"))
    assert gpu.info["device"].startswith("cuda")
    assert np.abs(gpu.volume - cpu.volume).max() < 1e-4 * np.abs(cpu.volume).max()


def test_inserter_inserts_the_grid_disc_and_keeps_every_weight():
    """The inserter takes the grid's disc points and Friedel weights; every point's trilinear weights land on
    the grid (the edge of the disc wraps through the margin), so the total weight of one image inserted
    without CTF is the number of points of the whole DFT plane inside the disc, whatever the pose."""
    from cryoscape.geometry.poses import Poses
    from cryoscape.physics.imaging import ImagingGrid, adjoint
    from cryoscape.physics.insert import FourierInserter
    g = torch.Generator().manual_seed(3)
    for D, pad in ((16, 1), (15, 1), (12, 2)):
        grid = ImagingGrid(D, 1.3, pad, dtype=torch.float64)
        ins = FourierInserter(grid)
        assert torch.equal(ins.inside, grid.points)
        assert torch.equal(ins.line_weight, grid.friedel.reshape(-1)[grid.points] / 2)
        q, _ = torch.linalg.qr(torch.randn(4, 3, 3, generator=g, dtype=torch.float64))
        q = q * torch.det(q).sign()[:, None, None]
        f = torch.ones(4, grid.Dp, grid.W, dtype=torch.complex128)
        adjoint(f, Poses(q, torch.zeros(4, 2, dtype=torch.float64)), grid, None, ins)
        _, W = ins.grids()
        k = torch.fft.fftfreq(grid.Dp, d=1.0 / grid.Dp, dtype=torch.float64).round() / pad
        full = int(((k[:, None] ** 2 + k[None, :] ** 2).sqrt() <= D / 2).sum())
        assert float(W.sum()) == pytest.approx(4 * full, rel=1e-12), (D, pad)


def test_fourier_crop_is_exact_for_band_limited_content():
    D, d, apix = 64, 32, 1.0
    coords = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 5
    R = torch.eye(3, dtype=torch.float64)[None]
    big = project_atoms_real(coords, R, 3.0, D, apix)  # σ = 3 px: negligible power beyond d/2
    small = project_atoms_real(coords, R, 3.0, d, apix * D / d)
    assert torch.allclose(crop_images(big, d), small, atol=1e-4 * float(small.max()))
    vb = atoms_to_volume(coords, 3.0, D, apix)
    vs = atoms_to_volume(coords, 3.0, d, apix * D / d)
    assert torch.allclose(crop_volume(vb, d), vs, atol=1e-4 * float(vs.max()))


def test_downsample_cli_stack_map_and_star(dataset, tmp_path, capsys):
    out, truth = dataset
    code, _, err = run(["downsample", out / "particles.mrcs", "-D", 24, "-o", tmp_path / "s.mrcs", "--no-progress"],
                       capsys)
    assert code in (0, None), err
    small, apix = read_stack(tmp_path / "s.mrcs")
    assert small.shape == (1500, 24, 24) and apix == pytest.approx(3.0)
    write_map(tmp_path / "t.mrc", truth, 1.5)
    code, _, err = run(["downsample", tmp_path / "t.mrc", "-D", 24, "-o", tmp_path / "t24.mrc"], capsys)
    assert code in (0, None), err
    v, a = read_map(tmp_path / "t24.mrc")
    assert v.shape == (24, 24, 24) and a == pytest.approx(3.0)
    code, _, err = run(["downsample", out / "particles.star", "-D", 24, "-o", tmp_path / "d.star", "--no-progress"],
                       capsys)
    assert code in (0, None), err
    t = read_star(tmp_path / "d.star")
    assert t.apix[0] == pytest.approx(3.0) and t.box[0] == 24 and len(t) == 1500
    # the downsampled particles still reconstruct the (downsampled) truth
    res = backproject(load_particles(tmp_path / "d.star").subset(np.arange(800)), BackprojectConfig(mask_radius=0))
    assert fsc(res.volume, v)[1:7].min() > 0.98
    code, _, err = run(["downsample", out / "particles.mrcs", "-D", 64, "-o", tmp_path / "x.mrcs"], capsys)
    assert code == 2 and "--box" in err
