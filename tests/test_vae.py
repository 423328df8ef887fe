"""The VAE against independent truths: a known map from its exact projections, the slice convention
against the Fourier-slice projector, two states separated in the latent, exact resume, and bad input."""

import math

import numpy as np
import pytest
import torch

from cryoscape.analysis.fsc import fsc
from cryoscape.analysis.latent import kmeans
from cryoscape.cli.main import main
from cryoscape.data.particles import load_particles
from cryoscape.data.simulate import AtomSource, SimulationConfig, simulate_to_folder
from cryoscape.io.errors import InputError
from cryoscape.io.mrc import read_map
from cryoscape.methods.vae import FourierPoints, VAEConfig, decode_volumes, train_vae
from cryoscape.methods.vae.networks import FourierDecoder
from cryoscape.methods.vae.train import build_model
from cryoscape.physics import atoms_to_volume
from cryoscape.physics.slice import FourierSliceProjector
from cryoscape.geometry.rotations import random_rotations


def _blob(seed: int, n: int = 80, spread: float = 7.0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, 3, generator=g, dtype=torch.float64) * spread
    return (c - c.mean(0)).numpy()


def _simulate(folder, coords, n, D, apix, snr, sigma=3.0, shift=3.0, seed=1, ctf=True):
    cfg = SimulationConfig(n_images=n, box=D, apix=apix, snr=snr, sigma=sigma, shift_max_A=shift, seed=seed,
                           sampling="balanced", ctf=ctf)
    simulate_to_folder(folder, AtomSource(coords, sigma), cfg, show_progress=False, previews=False)
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


def test_slices_follow_the_projection_convention():
    """The decoder's slice at pose R equals the Fourier-slice projection of its own decoded map (a wrong
    transpose or axis order gives O(1) errors). Hartley output: an untrained "complex" decoder is
    discontinuous across q_z = 0 (training makes it continuous), which interpolation would not follow."""
    torch.manual_seed(3)
    D = 32
    model = build_model(D, VAEConfig(zdim=0, dec_dim=32, dec_layers=2, pe_dim=4, pe_type="gaussian",
                                     pe_sigma=0.5, output="hartley"))
    vol = torch.from_numpy(decode_volumes(model, np.zeros((1, 0)))[0]).to(torch.float64)
    R = random_rotations(4, generator=torch.Generator().manual_seed(0)).to(torch.float64)
    proj = FourierSliceProjector(vol, apix=1.0, pad=2).project_fourier(R)  # (4, D, D//2+1)
    pts = FourierPoints.for_box(D)
    inner = pts.plane[:, :2].norm(dim=-1) < D / 4  # away from the band edge
    expected = proj.reshape(4, -1)[:, pts.flat][:, inner]
    with torch.no_grad():
        got = model.slices(R.float(), torch.zeros(4, 0), pts.plane[inner])
    got = torch.complex(got[..., 0], got[..., 1]).to(expected.dtype)
    err = (got - expected).abs().norm() / expected.abs().norm()
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
    """Measured: 0.974 (seed 0, cosine steps; with constant steps 0.976, 0.984 and 0.977 for seeds 0–2)."""
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
    whole = train_vae(data, _small_cfg(), tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):  # stopped in the middle of epoch 2: epoch 1 is checkpointed
        train_vae(data, _small_cfg(), tmp_path / "cut", progress=_StopAfter(300))
    resumed = train_vae(data, _small_cfg(), tmp_path / "cut")
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    np.testing.assert_array_equal(resumed.z_mu, whole.z_mu)
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_lazy_loading_gives_the_same_training(homogeneous):
    data = load_particles(homogeneous[0] / "particles.star").subset(np.arange(150))
    a = train_vae(data, _small_cfg(epochs=2, in_memory=True))
    b = train_vae(data, _small_cfg(epochs=2, in_memory=False, chunk=40))
    np.testing.assert_allclose(a.z_mu, b.z_mu, rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_configuration_is_refused(homogeneous, tmp_path):
    data = load_particles(homogeneous[0] / "particles.star").subset(np.arange(64))
    train_vae(data, _small_cfg(epochs=1), tmp_path)
    with pytest.raises(InputError, match="another configuration.*dec_dim|dec_dim"):
        train_vae(data, _small_cfg(epochs=1, dec_dim=32), tmp_path)


def test_cli_train_eval_analyze_and_bad_input(homogeneous, tmp_path, capsys):
    folder = homogeneous[0]
    star = str(folder / "particles.star")
    run = tmp_path / "run"

    def ok(args):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 0, capsys.readouterr().err

    opts = ["--zdim", "2", "--enc-dim", "16", "--dec-dim", "16", "-n", "2", "-b", "32", "--no-progress"]
    ok(["train-vae", star, "-o", str(run), *opts])
    z = np.load(run / "z.npy")
    assert z.shape == (600, 2) and np.isfinite(z).all()
    for name in ("checkpoint.pt", "z.pkl", "history.json", "loss.png", "config.yaml", "run.log"):
        assert (run / name).exists(), name
    ok(["eval-vol", str(run), "-o", str(tmp_path / "maps"), "--z", "0.5,-0.5"])
    vol, apix = read_map(tmp_path / "maps" / "vol_000.mrc")
    assert vol.shape == (24, 24, 24) and apix == pytest.approx(3.0)
    ok(["analyze", str(run), "--k", "3", "--pcs", "1", "--n-points", "3", "--no-umap"])
    assert len(list((run / "analyze" / "kmeans").glob("vol_*.mrc"))) == 3
    assert len(np.loadtxt(run / "analyze" / "kmeans_centres_ind.txt")) == 3
    capsys.readouterr()

    def fails(args, text):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err

    before = (run / "checkpoint.pt").read_bytes()
    fails(["eval-vol", str(run), "-o", str(tmp_path / "m2"), "--z", "1,2,3"], "zdim is 2")
    assert not (tmp_path / "m2").exists()
    fails(["train-vae", star, "-o", str(run), *opts[:-3], "--dec-dim", "32", "-n", "2", "--no-progress"],
          "another configuration")
    assert (run / "checkpoint.pt").read_bytes() == before  # nothing overwritten
    import pickle
    bad_poses = tmp_path / "poses.pkl"
    with open(bad_poses, "wb") as f:
        pickle.dump((np.tile(np.eye(3), (5, 1, 1)), np.zeros((5, 2))), f)
    fails(["train-vae", star, "--poses", str(bad_poses), "-o", str(tmp_path / "r2"), *opts], "5 poses")
    assert not (tmp_path / "r2").exists()


def test_nan_image_is_refused_before_anything_is_written(homogeneous, tmp_path, capsys):
    import shutil

    from cryoscape.io.mrc import read_stack, write_stack
    src = homogeneous[0]
    folder = tmp_path / "nan"
    shutil.copytree(src, folder)
    stack, apix = read_stack(folder / "particles.mrcs", mmap=False)
    stack = np.array(stack)
    stack[5, 3, 3] = np.nan
    (folder / "particles.mrcs").unlink()
    write_stack(folder / "particles.mrcs", stack, apix)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train-vae", str(folder / "particles.star"), "-o", str(run), "--zdim", "1", "--enc-dim", "8",
              "--dec-dim", "8", "-n", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "particles.mrcs" in err and "NaN" in err and err.count("\n") == 1, err
    assert not run.exists()


def test_cosine_steps_and_cnn_encoder(homogeneous):
    """Epoch e of E steps with lr · ½(1 + cos(π(e−1)/E)); the CNN encoder trains and gives finite latents."""
    data = load_particles(homogeneous[0] / "particles.star").subset(np.arange(96))
    result = train_vae(data, _small_cfg(epochs=4, encoder="cnn"))
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    np.testing.assert_allclose([h["lr"] for h in result.history], expected, rtol=1e-12)
    assert result.z_mu.shape == (96, 2) and np.isfinite(result.z_mu).all()
    constant = train_vae(data, _small_cfg(epochs=2, schedule="constant"))
    assert [h["lr"] for h in constant.history] == [1e-3, 1e-3]
