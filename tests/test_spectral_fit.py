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
