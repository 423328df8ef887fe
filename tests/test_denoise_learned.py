"""The learned (U-Net) denoiser: exact resume, tiled = whole-image inference, Neighbor2Neighbor's sub-sampler,
noise2noise and Neighbor2Neighbor against the clean truth of simulated micrographs, bad input."""

import numpy as np
import pytest
import torch

from cryoscape.data.simulate import AtomSource, SimulationConfig, plan_simulation, render_images
from cryoscape.io.errors import InputError
from cryoscape.methods.denoise.learned import (UNetConfig, apply_unet, build_model, denoise_unet, fit_unet,
                                               load_unet, neighbor_indices, save_unet, subsample, tile_starts)


@pytest.fixture(scope="module")
def micrographs(adk):
    """3 synthetic 192² micrographs: 90 CTF-affected AdK particle images (48 px, 2 Å/px) pasted at random
    positions, Gaussian noise at SNR 0.1 (σ² = var(clean) / 0.1), and two independent halves at twice that
    variance whose mean is the noisy micrograph → (clean, noisy, a, b)."""
    coords = adk.coords[::10]
    src = AtomSource(coords - coords.mean(axis=1, keepdims=True), 3.0)
    plan = plan_simulation(SimulationConfig(n_images=90, box=48, apix=2.0, seed=3), src)
    parts = render_images(plan, src, slice(0, 90), ctf_pad=2)
    g = torch.Generator().manual_seed(5)
    clean = torch.zeros(3, 192, 192)
    for k in range(90):
        y, x = torch.randint(0, 192 - 48, (2,), generator=g).tolist()
        clean[k // 30, y:y + 48, x:x + 48] += parts[k]
    sigma = float(clean.std()) / 0.1 ** 0.5
    a = clean + sigma * 2 ** 0.5 * torch.randn(clean.shape, generator=g)
    b = clean + sigma * 2 ** 0.5 * torch.randn(clean.shape, generator=g)
    return clean, (a + b) / 2, a, b


def _mse(x, y):
    return float(((x - y) ** 2).mean())


SMALL = dict(channels=8, depth=2, crop=64, batch_size=4, steps_per_epoch=6, epochs=2, seed=1, device="cpu")


def test_training_resumes_exactly(tmp_path, micrographs):
    """2 epochs straight = 1 epoch, a fresh process state (new model from the checkpoint), 1 more epoch:
    the same parameters bit for bit (n2s, whose step also draws the sub-sampling from the generator)."""
    _, noisy, _, _ = micrographs
    cfg = UNetConfig(**SMALL)
    straight, hist = fit_unet(noisy, cfg, checkpoint=tmp_path / "a.pt")
    assert [h["epoch"] for h in hist] == [1, 2]
    fit_unet(noisy, UNetConfig(**{**SMALL, "epochs": 1}), checkpoint=tmp_path / "b.pt")
    torch.randn(7)  # the global generator moves on (it is restored from the checkpoint)
    resumed, hist_b = fit_unet(noisy, cfg, checkpoint=tmp_path / "b.pt")
    assert [h["epoch"] for h in hist_b] == [1, 2]
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the run did train: parameters moved from their initial values
    init = build_model(cfg).state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)
    # a checkpoint of another configuration is refused, naming what differs
    with pytest.raises(InputError, match="channels"):
        fit_unet(noisy, UNetConfig(**{**SMALL, "channels": 4}), checkpoint=tmp_path / "b.pt")


def test_neighbor_subsampler_takes_disjoint_adjacent_pixels_of_each_cell():
    """On an arange image each pixel's value is its index: g₁ and g₂ take, from every 2×2 cell, two
    different pixels of that cell that share a row or a column."""
    B, H, W = 3, 8, 10
    x = torch.arange(B * H * W, dtype=torch.float64).reshape(B, 1, H, W)
    i1, i2 = neighbor_indices((B, H // 2, W // 2), torch.Generator().manual_seed(0))
    g1, g2 = subsample(x, i1).long(), subsample(x, i2).long()
    assert g1.shape == g2.shape == (B, 1, H // 2, W // 2)
    for v1, v2, (b, r, c) in zip(g1.flatten().tolist(), g2.flatten().tolist(),
                                 np.ndindex(B, H // 2, W // 2)):
        cell = {b * H * W + (2 * r + dy) * W + 2 * c + dx for dy in (0, 1) for dx in (0, 1)}
        assert v1 in cell and v2 in cell and v1 != v2
        (y1, x1), (y2, x2) = divmod(v1 % (H * W), W), divmod(v2 % (H * W), W)
        assert abs(y1 - y2) + abs(x1 - x2) == 1  # neighbours, never diagonal
    # every position of the cell is drawn for g₁, and both directions for g₂
    i1, i2 = neighbor_indices((64, 16, 16), torch.Generator().manual_seed(1))
    assert set(i1.unique().tolist()) == {0, 1, 2, 3}
    assert set((i1 ^ i2).unique().tolist()) == {1, 2}


def test_tiled_inference_matches_whole_image(micrographs):
    """A tile covering the image gives the whole-image result exactly; smaller overlapping tiles blend to
    within a small fraction of the denoised image's spread; the blending weights sum to 1."""
    _, noisy, _, _ = micrographs
    torch.manual_seed(0)
    model = build_model(UNetConfig(channels=8, depth=2, residual=True)).eval()
    with torch.no_grad():  # a non-trivial network: perturb the (near-identity) residual branch
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = noisy[:2]
    whole = apply_unet(model, x, tile=192, overlap=0, precision="fp32")
    # the whole image through the network directly, normalised and scaled back by hand
    mean, std = x.double().mean(dim=(1, 2), keepdim=True), x.double().std(dim=(1, 2), keepdim=True)
    with torch.no_grad():
        direct = model(((x - mean) / std).float().unsqueeze(1))[:, 0] * std.float() + mean.float()
    assert torch.allclose(whole, direct, atol=1e-5 * float(x.std()))
    assert torch.equal(apply_unet(model, x, tile=512, overlap=32, precision="fp32"), whole)
    tiled = apply_unet(model, x, tile=80, overlap=24, precision="fp32")
    err = float((tiled - whole).abs().max() / (whole - whole.mean()).std())
    assert 0 < err < 0.05, err  # measured 0.004
    assert float((tiled - whole).std() / (whole - whole.mean()).std()) < 0.005  # measured 0.0003
    # a Neighbor2Neighbor network (applied to the 4 polyphase components): tiles blend the same way
    model.sampling.fill_(2)
    whole = apply_unet(model, x, tile=96, overlap=0, precision="fp32")
    tiled = apply_unet(model, x, tile=40, overlap=16, precision="fp32")
    assert float((tiled - whole).std() / (whole - whole.mean()).std()) < 0.01  # measured 0.0015
    starts, size = tile_starts(192, 80, 24, 4)
    assert starts[0] == 0 and starts[-1] + size == 192 and size <= 80 and size % 4 == 0
    assert min(s0 + size - s1 for s0, s1 in zip(starts, starts[1:])) >= 24
    # the input is not modified and the output is a new float32 CPU tensor
    assert whole.dtype == torch.float32 and whole.data_ptr() != x.data_ptr()


def test_n2s_reduces_mse(micrographs):
    """Neighbor2Neighbor on the noisy micrographs alone: MSE to the clean micrographs falls well below the
    noisy input's, and the correlation with the clean rises."""
    clean, noisy, _, _ = micrographs
    cfg = UNetConfig(**{**SMALL, "epochs": 3, "steps_per_epoch": 15, "batch_size": 8, "lr": 3e-3}, tile=128,
                     overlap=16)
    out = denoise_unet(noisy, cfg=cfg)
    assert out.shape == noisy.shape and out.dtype == torch.float32
    ratio = _mse(out, clean) / _mse(noisy, clean)
    assert ratio < 0.3, ratio  # measured 0.086


def test_n2n_reduces_mse(micrographs, tmp_path):
    """noise2noise on the two halves: the denoised mean beats the noisy mean; a saved model reloads and
    gives the same images."""
    clean, noisy, a, b = micrographs
    cfg = UNetConfig(**{**SMALL, "epochs": 3, "steps_per_epoch": 15, "batch_size": 8, "lr": 3e-3})
    model, _ = fit_unet(noisy, cfg, pairs=(a, b))
    out = apply_unet(model, noisy, tile=128, overlap=16)
    ratio = _mse(out, clean) / _mse(noisy, clean)
    assert ratio < 0.2, ratio  # measured 0.024
    path = save_unet(model, cfg, tmp_path / "unet.pt")
    again, cfg2 = load_unet(path)
    assert cfg2 == cfg
    assert torch.equal(apply_unet(again, noisy[:1], tile=128, overlap=16), out[:1])


def test_bad_input(micrographs):
    _, noisy, a, _ = micrographs
    model = build_model(UNetConfig(depth=3))
    with pytest.raises(InputError, match="smaller than the U-Net's minimum"):
        apply_unet(model, torch.zeros(1, 6, 40))
    with pytest.raises(InputError, match="too small to train"):
        fit_unet(torch.randn(2, 12, 12), UNetConfig(depth=3))
    with pytest.raises(InputError, match="n2n needs frame pairs"):
        fit_unet(noisy, UNetConfig(mode="n2n"))
    with pytest.raises(InputError, match="NaN"):
        fit_unet(torch.full((1, 64, 64), float("nan")), UNetConfig())
    with pytest.raises(InputError, match="empty"):
        denoise_unet(torch.zeros(0, 64, 64))
    with pytest.raises(InputError, match="--overlap"):
        UNetConfig(tile=64, overlap=64).check()
    with pytest.raises(InputError, match="--mode"):
        UNetConfig(mode="n2v").check()
    # a micrograph smaller than the tile shrinks the tile: one tile, the image's own size
    out = apply_unet(model, a[:1, :40, :56], tile=512)
    assert out.shape == (1, 40, 56) and torch.isfinite(out).all()


def test_unet_reduces_mse_at_every_snr_of_the_grid(noisy_particles):
    """Neighbor2Neighbor trained briefly on 32 AdK particle images (32 px, CTF) lowers the MSE against the
    noiseless CTF-affected images at every SNR of seed 004's grid, trained on the noisy images alone."""
    from conftest import SNR_GRID, mse

    clean, noisy, _ = noisy_particles
    cfg = UNetConfig(epochs=3, steps_per_epoch=15, batch_size=8, crop=32, channels=8, depth=2, device="cpu")
    for snr in SNR_GRID:
        out = denoise_unet(noisy[snr], cfg=cfg)
        ratio = mse(out, clean) / mse(noisy[snr], clean)
        assert ratio < 0.8, (snr, ratio)  # measured 0.62, 0.35, 0.10, 0.05, 0.014
