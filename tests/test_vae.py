"""The VAE against independent truths: a known map from its exact projections, the slice convention
against the Fourier-slice projector, the data side against the forward model of the simulated truth, two
states separated in the latent, exact resume, the run folders of the commands, and bad input."""

import json
import math
import pickle
import shutil

import numpy as np
import pytest
import torch

from cryoscape.analysis.fsc import fsc
from cryoscape.analysis.latent import kmeans
from cryoscape.cli.main import main
from cryoscape.data.particles import load_particles
from cryoscape.data.simulate import AtomSource, SimulationConfig
from cryoscape.geometry.poses import Poses
from cryoscape.geometry.rotations import random_rotations
from cryoscape.io.errors import InputError
from cryoscape.io.mrc import read_map
from cryoscape.methods.vae import ParticleSource, VAEConfig, decode_volumes, train_vae
from cryoscape.methods.vae.networks import FourierDecoder
from cryoscape.methods.vae.train import build_model
from cryoscape.physics import atoms_to_volume
from cryoscape.physics.imaging import GaussianAtoms, ImagingGrid, VoxelMap, forward_points
from cryoscape.runs import read_metrics
from cryoscape.runs.simulate import simulate_to_folder


def _blob(seed: int, n: int = 80, spread: float = 7.0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, 3, generator=g, dtype=torch.float64) * spread
    return (c - c.mean(0)).numpy()


def _simulate(folder, coords, n, D, apix, snr, sigma=3.0, shift=3.0, seed=1, ctf=True, projection="auto"):
    cfg = SimulationConfig(n_images=n, box=D, apix=apix, snr=snr, sigma=sigma, shift_max_A=shift, seed=seed,
                           sampling="balanced", ctf=ctf)
    simulate_to_folder(folder, AtomSource(coords, sigma, projection=projection), cfg, show_progress=False,
                       previews=False)
    return folder


@pytest.fixture(scope="module")
def homogeneous(tmp_path_factory):
    """600 noiseless projections (CTF, offsets) of 80 Gaussian atoms at 24 px, and their voxel map."""
    coords = _blob(0, spread=6.0)
    D, apix, sigma = 24, 3.0, 3.0
    folder = _simulate(tmp_path_factory.mktemp("vae") / "homog", coords, 600, D, apix, math.inf, sigma)
    return folder, atoms_to_volume(torch.from_numpy(coords), sigma, D, apix).numpy()


def test_decoder_reproduces_known_map_from_its_projections(homogeneous):
    folder, truth = homogeneous
    data = load_particles(folder / "particles.star")
    cfg = VAEConfig(zdim=0, dec_dim=64, dec_layers=3, epochs=6, batch_size=16, lr=2e-3)
    result = train_vae(data, cfg)
    assert result.history[-1]["mse"] < 0.03  # relative to the images' mean square (1 after normalisation)
    vol = decode_volumes(result.model, np.zeros((1, 0)))[0]
    curve = fsc(vol, truth)
    assert curve[: data.D // 4].min() > 0.9, np.round(curve, 3)  # up to half Nyquist


def test_data_side_is_the_forward_model_of_the_truth(tmp_path):
    """Noiseless images centred by the VAE's data side, times its normalisation, equal the one forward model
    of the true atoms at the true rotations without shift, with the CTF the data side computed once per
    image (exact Gaussians of 2 px, so the sampled images are band-limited to ~1e-8, in a box wide enough for
    the shifted particle; measured relative error 5e-7)."""
    coords = _blob(2, n=40, spread=2.0)
    D, apix, sigma = 40, 1.25, 2.5
    folder = _simulate(tmp_path / "sim", coords, 12, D, apix, math.inf, sigma, shift=4.0, projection="exact")
    data = load_particles(folder / "particles.star")
    grid = ImagingGrid(D, apix)
    source = ParticleSource(data, grid, in_memory=True)
    b = source.batch(np.arange(len(data)))
    y = torch.view_as_complex(b.y) * source.norm[0]
    poses = Poses(data.poses.R, torch.zeros(len(data), 2, dtype=torch.float64))
    truth = forward_points(GaussianAtoms(torch.from_numpy(coords), sigma, method="exact"), poses,
                           ImagingGrid(D, apix, dtype=torch.float64), ctf=data.ctf.to(dtype=torch.float64))
    err = (y.to(truth.dtype) - truth).abs().norm() / truth.abs().norm()
    assert err < 1e-5, float(err)
    np.testing.assert_allclose(b.ctf.numpy(), grid.ctf_points(data.ctf).numpy(), rtol=0, atol=0)
    assert b.y.shape == (len(data), len(grid.points), 2)


def test_slices_follow_the_projection_convention():
    """The decoder's slice at pose R equals the Fourier-slice projection (VoxelMap, the same forward_points)
    of its own decoded map (a wrong transpose or axis order gives O(1) errors). Hartley output: an untrained
    "complex" decoder is discontinuous across q_z = 0 (training makes it continuous), which interpolation
    would not follow."""
    torch.manual_seed(3)
    D = 32
    model = build_model(D, VAEConfig(zdim=0, dec_dim=32, dec_layers=2, pe_dim=4, pe_type="gaussian",
                                     pe_sigma=0.5, output="hartley"))
    vol = torch.from_numpy(decode_volumes(model, np.zeros((1, 0)))[0]).to(torch.float64)
    R = random_rotations(4, generator=torch.Generator().manual_seed(0)).to(torch.float64)
    grid = ImagingGrid(D, 1.0, dtype=torch.float64)
    expected = forward_points(VoxelMap(vol, 1.0, pad=2), Poses(R, torch.zeros(4, 2, dtype=torch.float64)), grid)
    inner = grid.plane[:, :2].norm(dim=-1) < D / 4  # away from the band edge
    with torch.no_grad():
        got = model.slices(R.float(), torch.zeros(4, 0), grid.to(dtype=torch.float32))
    err = (got[:, inner].to(expected.dtype) - expected[:, inner]).abs().norm() / expected[:, inner].abs().norm()
    assert err < 0.1, float(err)  # measured 0.04 (ReLU kinks); the transposed pose gives 0.91


def test_decoder_outputs_are_hermitian():
    """V̂(−q) = conj V̂(q) for both output kinds (a real map)."""
    torch.manual_seed(0)
    q = torch.randn(1, 50, 3) * 8
    z = torch.randn(1, 2)
    for output in ("complex", "hartley"):
        dec = FourierDecoder(32, zdim=2, hidden=16, layers=2, output=output)
        with torch.no_grad():
            a, b = dec(q, z), dec(-q, z)
        assert torch.allclose(a[..., 0], b[..., 0], atol=1e-6)
        assert torch.allclose(a[..., 1], -b[..., 1], atol=1e-6)


@pytest.fixture(scope="module")
def two_states(tmp_path_factory, adk):
    """1,000 images at SNR 0.1 of AdK closed (frame 0) and open (frame 101), balanced, 32 px at 4 Å.

    (A rigid shift of a group of atoms is a poor test: seen along the shift, both states project alike.)"""
    folder = tmp_path_factory.mktemp("vae") / "two"
    cfg = SimulationConfig(n_images=1000, box=32, apix=4.0, snr=0.1, sigma=3.0, shift_max_A=3.0, seed=2,
                           sampling="balanced")
    coords = np.stack([adk.coords[0], adk.coords[-1]])
    simulate_to_folder(folder, AtomSource(coords, 3.0), cfg, show_progress=False, previews=False)
    return folder


def test_latent_separates_two_states(two_states):
    """Measured with cosine steps: 0.978, 0.950, 0.963 for seeds 0–2 (the VAE before the one forward model:
    0.978, 0.946, 0.964)."""
    data = load_particles(two_states / "particles.star")
    state = np.load(two_states / "truth" / "conformation.npy")
    cfg = VAEConfig(zdim=2, enc_dim=64, dec_dim=64, epochs=8, batch_size=16, lr=1e-3)
    z = train_vae(data, cfg).z_mu
    labels, _ = kmeans(z, 2, seed=0)
    accuracy = max((labels == state).mean(), (labels != state).mean())
    assert accuracy >= 0.95, accuracy


def _small_cfg(**kw):
    return VAEConfig(**{"zdim": 2, "enc_dim": 16, "enc_layers": 2, "dec_dim": 16, "dec_layers": 2, "epochs": 3,
                        "batch_size": 32, "lr": 1e-3, **kw})


class _StopAfter:
    """A progress object that interrupts training after ``n`` images (like Ctrl-C)."""

    def __init__(self, n):
        self.left = n

    def advance(self, k=1):
        self.left -= k
        if self.left <= 0:
            raise KeyboardInterrupt


def test_resume_after_interruption_is_identical(homogeneous, tmp_path):
    data = load_particles(homogeneous[0] / "particles.star").subset(np.arange(200))
    whole = train_vae(data, _small_cfg(), tmp_path / "whole.pt")
    with pytest.raises(KeyboardInterrupt):  # stopped in the middle of epoch 2: epoch 1 is checkpointed
        train_vae(data, _small_cfg(), tmp_path / "cut.pt", progress=_StopAfter(300))
    resumed = train_vae(data, _small_cfg(), tmp_path / "cut.pt")
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    np.testing.assert_array_equal(resumed.z_mu, whole.z_mu)
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_lazy_loading_gives_the_same_training(homogeneous):
    data = load_particles(homogeneous[0] / "particles.star").subset(np.arange(150))
    a = train_vae(data, _small_cfg(epochs=2, in_memory=True))
    b = train_vae(data, _small_cfg(epochs=2, in_memory=False, chunk=40))
    np.testing.assert_allclose(a.z_mu, b.z_mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([h["loss"] for h in a.history], [h["loss"] for h in b.history], rtol=1e-6)
    c = train_vae(data, _small_cfg(epochs=1, in_memory=False, chunk=40, buffer=80))  # chunked shuffle
    assert np.isfinite(c.z_mu).all() and c.history[0]["loss"] == pytest.approx(a.history[0]["loss"], rel=0.02)


def test_checkpoint_of_another_configuration_is_refused(homogeneous, tmp_path):
    data = load_particles(homogeneous[0] / "particles.star").subset(np.arange(64))
    train_vae(data, _small_cfg(epochs=1), tmp_path / "c.pt")
    with pytest.raises(InputError, match="another configuration.*dec_dim"):
        train_vae(data, _small_cfg(epochs=1, dec_dim=32), tmp_path / "c.pt")


def _ok(capsys, args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert e.value.code == 0, capsys.readouterr().err
    return capsys.readouterr()


def _fails(capsys, args, text):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and text in err and err.count("\n") == 1, err
    return err


OPTS = ["--zdim", "2", "--enc-dim", "16", "--dec-dim", "16", "-n", "2", "-b", "32", "--no-progress"]


def test_cli_train_eval_analyze_and_bad_input(homogeneous, tmp_path, capsys):
    folder = homogeneous[0]
    star = folder / "particles.star"
    run = tmp_path / "run"
    _ok(capsys, ["train-vae", star, "-o", run, *OPTS])
    z = np.load(run / "z.npy")
    assert z.shape == (600, 2) and np.isfinite(z).all()
    for name in ("checkpoint.pt", "z.pkl", "z_logvar.npy", "history.json", "loss.png", "config.yaml", "run.log",
                 "versions.txt"):
        assert (run / name).exists(), name
    m = read_metrics(run)
    history = json.loads((run / "history.json").read_text())
    assert m["command"] == "train-vae" and m["metrics"]["n_images"] == 600 and m["metrics"]["epochs"] == 2
    assert m["metrics"]["final_loss"] == history[-1]["loss"] and "checkpoint.pt" in m["files"]
    assert not (tmp_path / ".run.part").exists()
    with open(run / "z.pkl", "rb") as f:
        np.testing.assert_array_equal(pickle.load(f), z)

    _ok(capsys, ["eval-vol", run, "-o", tmp_path / "maps", "--z", "0.5,-0.5"])
    vol, apix = read_map(tmp_path / "maps" / "vol_000.mrc")
    assert vol.shape == (24, 24, 24) and apix == pytest.approx(3.0)
    assert read_metrics(tmp_path / "maps")["metrics"] == {"n_maps": 1, "apix_A": 3.0}
    _ok(capsys, ["eval-vol", run, "-o", tmp_path / "pc", "--pc", "1", "--n-points", "3"])
    assert len(list((tmp_path / "pc").glob("vol_*.mrc"))) == 3
    _ok(capsys, ["analyze", run, "--k", "3", "--pcs", "1", "--n-points", "3", "--no-umap"])
    assert len(list((run / "analyze" / "kmeans").glob("vol_*.mrc"))) == 3
    idx = np.loadtxt(run / "analyze" / "kmeans_centres_ind.txt").astype(int)
    assert len(idx) == 3
    np.testing.assert_allclose(np.loadtxt(run / "analyze" / "kmeans_centres_z.txt"), z[idx], rtol=1e-5)
    ma = read_metrics(run / "analyze")
    assert ma["command"] == "analyze" and ma["metrics"]["n_maps"] == 6 and ma["metrics"]["n_clusters"] == 3

    before = (run / "checkpoint.pt").read_bytes()
    _fails(capsys, ["eval-vol", run, "-o", tmp_path / "m2", "--z", "1,2,3"], "zdim is 2")
    assert not (tmp_path / "m2").exists()
    _fails(capsys, ["train-vae", star, "-o", run, *OPTS], "holds 2 epochs")
    _fails(capsys, ["train-vae", star, "-o", run, *[o if o != "16" else "32" for o in OPTS]], "other options")
    assert (run / "checkpoint.pt").read_bytes() == before  # nothing overwritten
    bad_poses = tmp_path / "poses.pkl"
    with open(bad_poses, "wb") as f:
        pickle.dump((np.tile(np.eye(3), (5, 1, 1)), np.zeros((5, 2))), f)
    _fails(capsys, ["train-vae", star, "--poses", bad_poses, "-o", tmp_path / "r2", *OPTS], "5 poses")
    assert not (tmp_path / "r2").exists() and not (tmp_path / ".r2.part").exists()
    if not torch.cuda.is_available():
        _fails(capsys, ["train-vae", star, "--device", "cuda", "-o", tmp_path / "r3", *OPTS], "--device")
        assert not (tmp_path / "r3").exists() and not (tmp_path / ".r3.part").exists()


def test_cli_resumes_an_interrupted_run_and_refuses_another_configuration(homogeneous, tmp_path, capsys):
    """A run killed after epoch 1 leaves .NAME.part with its checkpoint; the same command finishes it with
    the uninterrupted run's history; another configuration is refused while that .part exists."""
    import cryoscape.methods.training as training
    star = homogeneous[0] / "particles.star"
    _ok(capsys, ["train-vae", star, "-o", tmp_path / "whole", *OPTS])
    real_fit = training.Trainer.fit

    def killed_after_one(self, step, batches, extra=None, progress=None, on_epoch=None):
        def stop(epoch, model):
            if epoch == 1:
                raise KeyboardInterrupt
        return real_fit(self, step, batches, extra, progress, stop)
    training.Trainer.fit = killed_after_one
    try:
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in ["train-vae", star, "-o", tmp_path / "cut", *OPTS]])
        assert e.value.code == 130
    finally:
        training.Trainer.fit = real_fit
    capsys.readouterr()
    part = tmp_path / ".cut.part"
    assert (part / "checkpoint.pt").exists() and not (tmp_path / "cut").exists()
    other = [o if o != "16" else "32" for o in OPTS]  # other widths
    _fails(capsys, ["train-vae", star, "-o", tmp_path / "cut", *other], "another configuration")
    _ok(capsys, ["train-vae", star, "-o", tmp_path / "cut", *OPTS])
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    cut = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [h["loss"] for h in cut] == [h["loss"] for h in whole]
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / "z.npy"), np.load(tmp_path / "whole" / "z.npy"))
    assert "resuming" in (tmp_path / "cut" / "run.log").read_text() and not part.exists()

    # a finished run given more epochs continues from its checkpoint (the cosine schedule stretched to 3)
    more = list(OPTS)
    more[more.index("-n") + 1] = "3"
    _ok(capsys, ["train-vae", star, "-o", tmp_path / "whole", *more])
    longer = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert [h["loss"] for h in longer[:2]] == [h["loss"] for h in whole] and len(longer) == 3
    assert longer[2]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(2 * math.pi / 3)))
    assert read_metrics(tmp_path / "whole")["metrics"]["epochs"] == 3
    assert not (tmp_path / ".whole.part").exists()


def test_cli_inputs_cs_and_stack_with_pickles_and_ctf_free_star(homogeneous, tmp_path, capsys):
    """The same particles as a cryoSPARC .cs with --poses, and as a stack with --poses/--ctf pickles, train
    as the STAR does (1 epoch: same loss to float32 rounding of the CTF fields); a STAR without CTF columns
    runs CTF-free and says so in one line."""
    folder = homogeneous[0]
    opts = [*OPTS[:6], "-n", "1", *OPTS[8:]]
    _ok(capsys, ["train-vae", folder / "particles.star", "-o", tmp_path / "star", *opts])
    ref = json.loads((tmp_path / "star" / "history.json").read_text())[0]["loss"]

    _ok(capsys, ["train-vae", folder / "particles.mrcs", "--poses", folder / "truth" / "poses.pkl", "--ctf",
                 folder / "truth" / "ctf.pkl", "-o", tmp_path / "pkl", *opts])
    assert json.loads((tmp_path / "pkl" / "history.json").read_text())[0]["loss"] == pytest.approx(ref, rel=1e-4)

    with open(folder / "truth" / "ctf.pkl", "rb") as f:
        tab = np.asarray(pickle.load(f), dtype=np.float64)
    n, D = len(tab), int(tab[0, 0])
    a = np.zeros(n, dtype=[("uid", "<u8"), ("blob/path", "S200"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
                           ("blob/psize_A", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
                           ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"),
                           ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4")])
    a["uid"], a["blob/path"], a["blob/idx"], a["blob/shape"] = np.arange(n), b"particles.mrcs", np.arange(n), D
    a["blob/psize_A"] = tab[:, 1]
    a["ctf/df1_A"], a["ctf/df2_A"], a["ctf/df_angle_rad"] = tab[:, 2], tab[:, 3], np.deg2rad(tab[:, 4])
    a["ctf/accel_kv"], a["ctf/cs_mm"], a["ctf/amp_contrast"] = tab[:, 5], tab[:, 6], tab[:, 7]
    a["ctf/phase_shift_rad"] = np.deg2rad(tab[:, 8])
    shutil.copy(folder / "particles.mrcs", tmp_path / "particles.mrcs")
    with open(tmp_path / "particles.cs", "wb") as f:
        np.save(f, a)
    _ok(capsys, ["train-vae", tmp_path / "particles.cs", "--poses", folder / "truth" / "poses.pkl", "-o",
                 tmp_path / "cs", *opts])
    assert json.loads((tmp_path / "cs" / "history.json").read_text())[0]["loss"] == pytest.approx(ref, rel=1e-4)

    import starfile
    tables = starfile.read(folder / "particles.star", always_dict=True)
    parts = tables["particles"].drop(columns=[c for c in tables["particles"].columns
                                              if c.startswith(("rlnDefocus", "rlnPhaseShift", "rlnCtf"))])
    starfile.write({"optics": tables["optics"], "particles": parts}, tmp_path / "noctf.star")
    res = _ok(capsys, ["train-vae", tmp_path / "noctf.star", "-o", tmp_path / "noctf", *opts])
    notes = [line for line in res.err.splitlines() if "CTF-free" in line]
    assert len(notes) == 1 and "noctf.star" in notes[0], res.err
    assert read_metrics(tmp_path / "noctf")["inputs"]["ctf_free"] is True


def test_nan_image_is_refused_before_anything_is_written(homogeneous, tmp_path, capsys):
    from cryoscape.io.mrc import read_stack, write_stack
    src = homogeneous[0]
    folder = tmp_path / "nan"
    shutil.copytree(src, folder)
    stack, apix = read_stack(folder / "particles.mrcs", mmap=False)
    stack = np.array(stack)
    stack[500, 3, 3] = np.nan  # late in the stack: the up-front scan finds it, not the first batch
    (folder / "particles.mrcs").unlink()
    write_stack(folder / "particles.mrcs", stack, apix)
    run = tmp_path / "run"
    err = _fails(capsys, ["train-vae", folder / "particles.star", "-o", run, "--zdim", "1", "--enc-dim", "8",
                          "--dec-dim", "8", "-n", "1", "--no-progress"], "particles.mrcs")
    assert "NaN" in err and "501" in err, err
    assert not run.exists() and not (tmp_path / ".run.part").exists()


def test_cosine_steps_and_cnn_encoder(homogeneous):
    """Epoch e of E steps with lr · ½(1 + cos(π(e−1)/E)); the CNN encoder trains and gives finite latents."""
    data = load_particles(homogeneous[0] / "particles.star").subset(np.arange(96))
    result = train_vae(data, _small_cfg(epochs=4, encoder="cnn"))
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    np.testing.assert_allclose([h["lr"] for h in result.history], expected, rtol=1e-12)
    assert result.z_mu.shape == (96, 2) and np.isfinite(result.z_mu).all()
    constant = train_vae(data, _small_cfg(epochs=2, schedule="constant"))
    assert [h["lr"] for h in constant.history] == [1e-3, 1e-3]


def test_config_checks_name_the_option():
    for kw, option in (({"zdim": -1}, "--zdim"), ({"encoder": "rnn"}, "--encoder"), ({"lr": 0.0}, "--lr"),
                       ({"schedule": "step"}, "--schedule"), ({"buffer": 0}, "--buffer")):
        with pytest.raises(InputError, match=option):
            VAEConfig(**kw).check()
