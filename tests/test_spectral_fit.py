"""The spectral model fitted to clean images recovers the conformations behind them."""

import pytest
import torch

from cryoscape.analysis.pointcloud import pointcloud_errors
from cryoscape.geometry import random_rotations
from cryoscape.methods.spectral import FitConfig, LinearAngleModel, fit_model, render_particles
from cryoscape.physics import CTFParams
from cryoscape.structure import chain_to_internal


def _path_family(adk, fraction):
    """Frame 0 as the given model, and a 1-D family of AdK conformations linear in the angles along a path
    coordinate s ∈ [−1, 1] (``fraction`` of the way to the open frame at s = 1): ``(reference, truth model)``."""
    x = torch.as_tensor(adk.coords[[0, 101]])
    x = x - x[0].mean(0)
    ref = chain_to_internal(x[:1])
    end = chain_to_internal(x[1:], ref=ref.ref)
    truth = LinearAngleModel(ref, 1)
    truth.gamma_psi.data = (end.psi - ref.psi).T * fraction
    truth.gamma_theta.data = (end.theta - ref.theta).T * fraction
    return ref, truth


@pytest.mark.slow
def test_fit_recovers_conformations_on_clean_data(adk):
    """15 % of the closed→open path; the model starts from frame 0 and must find the conformations."""
    ref, truth = _path_family(adk, 0.15)
    g = torch.Generator().manual_seed(1)
    N, D, apix = 240, 40, 3.0
    s = torch.rand(N, 1, generator=g, dtype=torch.float64) * 2 - 1
    R = random_rotations(N, g, dtype=torch.float64)
    offsets = torch.randn(N, 2, generator=g, dtype=torch.float64) * 2
    df = torch.rand(N, generator=g, dtype=torch.float64) * 1e4 + 1e4
    ctf = CTFParams(df, df, torch.zeros(N), 300, 2.7, 0.1)
    with torch.no_grad():
        coords = truth(s)
        images = render_particles(coords, R, offsets, ctf, 3.0, D, apix)
    train, test = slice(0, 200), slice(200, N)
    model = LinearAngleModel(ref, 1)
    with torch.no_grad():
        start = pointcloud_errors(model(s[test]), coords[test])["avg_error_A"]
    hist = fit_model(model, s[train], images[train], R[train], offsets[train], ctf.subset(train), D, apix,
                     FitConfig(epochs=60, batch_size=50, lr=0.01, optimizer="adam"))
    with torch.no_grad():
        end_err = pointcloud_errors(model(s[test]), coords[test])["avg_error_A"]
    assert start > 5.0
    assert end_err < 0.5, (start, end_err)
    assert hist[-1]["loss"] < 0.01 * hist[0]["loss"]


def test_training_resumes_from_its_checkpoint(adk, tmp_path):
    ref, truth = _path_family(adk, 0.1)
    g = torch.Generator().manual_seed(2)
    N, D, apix = 40, 24, 4.0
    s = torch.rand(N, 1, generator=g, dtype=torch.float64) * 2 - 1
    R = random_rotations(N, g, dtype=torch.float64)
    offsets = torch.zeros(N, 2, dtype=torch.float64)
    with torch.no_grad():
        images = render_particles(truth(s), R, offsets, None, 3.0, D, apix)

    def train(checkpoint, stop_after=None):
        model = LinearAngleModel(ref, 1)

        def stop(epoch, _):
            if epoch == stop_after:
                raise KeyboardInterrupt
        cfg = FitConfig(epochs=4, batch_size=16, lr=0.01, optimizer="adam", checkpoint=checkpoint)
        hist = fit_model(model, s, images, R, offsets, None, D, apix, cfg, on_epoch=stop)
        return model, hist

    ref_model, ref_hist = train(None)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(str(ck), stop_after=2)
    assert ck.exists()
    model, hist = train(str(ck))
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert torch.equal(model.gamma_psi, ref_model.gamma_psi)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]


def test_chain_dct_basis_is_orthonormal_and_smooth():
    from cryoscape.methods.spectral.model import chain_dct_basis
    B = chain_dct_basis(50, 8)
    assert B.shape == (150, 24)
    torch.testing.assert_close(B.T @ B, torch.eye(24, dtype=B.dtype), atol=1e-12, rtol=0)
    # a displacement that is one of the cosines (x only) is reproduced exactly; a rough one mostly is not
    i = torch.arange(50, dtype=torch.float64)
    smooth = torch.zeros(50, 3, dtype=torch.float64)
    smooth[:, 0] = torch.cos(torch.pi * (i + 0.5) * 3 / 50)
    rough = torch.zeros(50, 3, dtype=torch.float64)
    rough[::2, 1] = 1.0
    for d, kept in ((smooth, 1.0), (rough, 0.5)):
        p = B @ (B.T @ d.reshape(-1))
        assert float(p.norm() ** 2 / d.reshape(-1).norm() ** 2) == pytest.approx(kept, abs=0.02)


def test_cartesian_model_fit_recovers_conformations_on_clean_data(adk):
    """Conformations x⁰ + s·Δ with Δ smooth along the chain (in the model's basis): from x⁰ the fit finds them."""
    from cryoscape.methods.spectral import CartesianModel
    from cryoscape.methods.spectral.model import chain_dct_basis
    x0 = torch.as_tensor(adk.coords[0] - adk.coords[0].mean(0))
    L = x0.shape[0]
    g = torch.Generator().manual_seed(3)
    B = chain_dct_basis(L, 6)
    delta = (B @ torch.randn(B.shape[1], generator=g, dtype=torch.float64)).reshape(L, 3)
    delta *= 4.0 / delta.norm(dim=-1).mean()  # a 4 Å mean displacement at s = ±1
    N, D, apix = 160, 40, 3.0
    s = torch.rand(N, 1, generator=g, dtype=torch.float64) * 2 - 1
    coords = x0 + s[:, :, None] * delta
    R = random_rotations(N, g, dtype=torch.float64)
    offsets = torch.zeros(N, 2, dtype=torch.float64)
    with torch.no_grad():
        images = render_particles(coords, R, offsets, None, 3.0, D, apix)
    train, test = slice(0, 130), slice(130, N)
    model = CartesianModel(x0, 1, float(s.pow(2).mean().sqrt()), smooth_modes=6)
    with torch.no_grad():
        start = pointcloud_errors(model(s[test]), coords[test])["avg_error_A"]
    fit_model(model, s[train], images[train], R[train], offsets[train], None, D, apix,
              FitConfig(epochs=60, batch_size=26, lr=0.3, optimizer="adam"))
    with torch.no_grad():
        end_err = pointcloud_errors(model(s[test]), coords[test])["avg_error_A"]
    assert start > 1.5
    assert end_err < 0.3, (start, end_err)


def test_refined_cartesian_model_starts_where_the_coarse_one_ends():
    from cryoscape.methods.spectral import CartesianModel, refine_cartesian
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(30, 3, generator=g, dtype=torch.float64) * 5
    coarse = CartesianModel(x0, 2, 0.1, smooth_modes=5)
    with torch.no_grad():
        coarse.gamma.copy_(torch.randn(coarse.gamma.shape, generator=g, dtype=torch.float64))
    fine = refine_cartesian(coarse, 12)
    assert fine.gamma.shape == (36, 2)
    v = torch.randn(7, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fine(v), coarse(v), atol=1e-12, rtol=0)
    with pytest.raises(ValueError):
        refine_cartesian(fine, 5)


def test_cartesian_model_mlp_term_starts_linear_and_fits_a_bend():
    """The MLP term starts at zero (the model is the linear one) and lets the fit follow a displacement
    that is not linear in the coordinate (``s²``), which the linear term alone cannot."""
    from cryoscape.methods.spectral import CartesianModel
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(20, 3, generator=g, dtype=torch.float64) * 5
    s = torch.linspace(-1, 1, 41, dtype=torch.float64)[:, None]
    delta = torch.randn(20, 3, generator=g, dtype=torch.float64)
    target = x0 + (s[:, :, None] ** 2) * delta  # quadratic in s
    errors = {}
    for hidden in (0, 16):
        m = CartesianModel(x0, 1, 1.0, smooth_modes=None, hidden=hidden, seed=0)
        with torch.no_grad():
            torch.testing.assert_close(m(s), x0.expand(41, -1, -1))
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            loss = ((m(s) - target) ** 2).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            errors[hidden] = float(((m(s) - target) ** 2).mean().sqrt())
    assert errors[16] < 0.05 < 0.2 < errors[0], errors


def test_cosine_schedule_steps(adk):
    """Cosine schedule: epoch e of E steps with lr·½(1 + cos(π (e−1)/E)); with one epoch it is the constant
    schedule, with more it takes smaller steps (so different parameters); unknown names are refused."""
    from cryoscape.methods.spectral import CartesianModel
    x0 = torch.as_tensor(adk.coords[0] - adk.coords[0].mean(0))
    g = torch.Generator().manual_seed(6)
    N, D, apix = 12, 24, 4.0
    s = torch.rand(N, 1, generator=g, dtype=torch.float64)
    R = random_rotations(N, g, dtype=torch.float64)
    offsets = torch.zeros(N, 2, dtype=torch.float64)
    with torch.no_grad():
        images = render_particles(x0 + s[:, :, None] * 2.0, R, offsets, None, 3.0, D, apix)

    def fit(schedule, epochs):
        m = CartesianModel(x0, 1, 1.0, smooth_modes=4)
        fit_model(m, s, images, R, offsets, None, D, apix,
                  FitConfig(epochs=epochs, batch_size=N, lr=0.1, optimizer="sgd", momentum=0.0, schedule=schedule))
        return m.gamma.detach().clone()

    torch.testing.assert_close(fit("cosine", 1), fit("constant", 1))
    assert not torch.allclose(fit("cosine", 3), fit("constant", 3))
    with pytest.raises(ValueError):
        fit("linear", 1)


def _loop_before_the_training_loop(model, v, images, R, offsets, ctf, D, apix, cfg, anchors=None):
    """fit_model's own loop as of commit 87629f0 (before it moved onto methods.training), transcribed."""
    import math

    from cryoscape.methods.spectral.model import image_error, mean_power, render_fourier
    from cryoscape.physics.imaging import ImagingGrid
    opt = (torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=cfg.lr))
    gen = torch.Generator().manual_seed(cfg.seed)
    N = v.shape[0]
    grid = ImagingGrid(D, apix, dtype=torch.float64)
    scale = 1.0 / mean_power(images, grid)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        if cfg.schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
        order = torch.randperm(N, generator=gen)
        total = 0.0
        for s in range(0, N, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            opt.zero_grad()
            coords = model(v[idx]) if anchors is None else model(v[idx], anchors[0][idx], anchors[1][idx])
            pred = render_fourier(coords, R[idx], offsets[idx], None if ctf is None else ctf.subset(idx),
                                  cfg.sigma, grid)
            loss = image_error(pred, images[idx], grid).mean() * scale
            if hasattr(model, "regulariser"):
                loss = loss + model.regulariser(coords)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / N)
    return history


def _particle_set(truth, N, D, apix, seed):
    """``N`` images of the path family ``truth`` at random spectral coordinates ``s (N, 1)``, poses, offsets
    (Å) and defoci: ``(s, R, offsets, ctf, images)``."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(N, 1, generator=g, dtype=torch.float64) * 2 - 1
    R = random_rotations(N, g, dtype=torch.float64)
    offsets = torch.randn(N, 2, generator=g, dtype=torch.float64)
    df = torch.rand(N, generator=g, dtype=torch.float64) * 1e4 + 1e4
    ctf = CTFParams(df, df, torch.zeros(N), 300, 2.7, 0.1)
    with torch.no_grad():
        images = render_particles(truth(s), R, offsets, ctf, 3.0, D, apix)
    return s, R, offsets, ctf, images


@pytest.mark.parametrize("kind, optimizer, schedule", [("angles", "sgd", "constant"), ("cartesian", "adam", "cosine")])
def test_the_training_loop_reproduces_the_methods_own_loop_bit_for_bit(adk, kind, optimizer, schedule):
    """fit_model on methods.training (one generator through the epochs, randperm order, same steps) gives the
    same losses and parameters, bit for bit, as the loop it replaced — with anchors, CTF, offsets, a last
    batch smaller than the others, and the bond regulariser."""
    from cryoscape.methods.spectral import CartesianModel
    ref, truth = _path_family(adk, 0.1)
    x0 = torch.as_tensor(adk.coords[0] - adk.coords[0].mean(0))
    N, D, apix = 30, 24, 4.0
    s, R, offsets, ctf, images = _particle_set(truth, N, D, apix, seed=8)
    anchors = (ref.ref_pos.expand(N, -1), ref.ref_frame.expand(N, -1, -1))

    def new_model():
        if kind == "angles":
            return LinearAngleModel(ref, 1)
        return CartesianModel(x0, 1, 0.5, smooth_modes=6, bond_weight=0.1)

    cfg = FitConfig(epochs=3, batch_size=8, lr=0.05 if optimizer == "adam" else 0.01, optimizer=optimizer,
                    schedule=schedule, seed=5, device="cpu")
    old, new = new_model(), new_model()
    old_hist = _loop_before_the_training_loop(old, s, images, R, offsets, ctf, D, apix, cfg, anchors)
    new_hist = fit_model(new, s, images, R, offsets, ctf, D, apix, cfg, anchors=anchors)
    assert [h["loss"] for h in new_hist] == old_hist
    assert [h["epoch"] for h in new_hist] == [1, 2, 3]
    for (name, a), (_, b) in zip(old.named_parameters(), new.named_parameters()):
        assert torch.equal(a, b), name
    assert old_hist[-1] < old_hist[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_fit_on_cuda_follows_the_cpu_fit(adk):
    """--device cuda: the model and data move to the GPU, and the losses follow the CPU's (float64)."""
    ref, truth = _path_family(adk, 0.1)
    N, D, apix = 40, 24, 4.0
    s, R, offsets, ctf, images = _particle_set(truth, N, D, apix, seed=9)
    hist = {}
    for device in ("cpu", "cuda"):
        model = LinearAngleModel(ref, 1)
        hist[device] = fit_model(model, s, images, R, offsets, ctf, D, apix,
                                 FitConfig(epochs=3, batch_size=16, lr=0.01, optimizer="adam", device=device))
        assert model.gamma_psi.device.type == device
    assert [h["loss"] for h in hist["cuda"]] == pytest.approx([h["loss"] for h in hist["cpu"]], rel=1e-9)
