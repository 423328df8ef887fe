"""The spectral fit renders through the one forward model (physics.imaging) and scores with physics.likelihood:
its images and loss equal the composition it replaced (exact Gaussian projection, then the CTF by ctf_from_params
on the centred FFT; the loss as the mean squared pixel error over the images' mean square), and gradients reach
the atom coordinates."""

import pytest
import torch

from cryoscape.geometry import random_rotations
from cryoscape.methods.spectral.model import image_error, mean_power, render_fourier, render_particles
from cryoscape.physics import CTFParams
from cryoscape.physics.ctf import ctf_from_params
from cryoscape.physics.fourier import irfft2_centered, rfft2_centered, rfreq_grid_2d
from cryoscape.physics.gaussian import project_atoms_real
from cryoscape.physics.imaging import ImagingGrid


def _old_render(coords, R, offsets, ctf, sigma, D, apix):
    """The composition of methods/spectral/model.py before issue 11 (commit 87f9613)."""
    img = project_atoms_real(coords, R.to(coords.dtype), sigma, D, apix, offsets.to(coords.dtype))
    if ctf is None:
        return img
    ky, kx = rfreq_grid_2d(D, apix, dtype=coords.dtype)
    return irfft2_centered(rfft2_centered(img) * ctf_from_params(ctf, kx, ky), D)


def _batch(D, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.randn(n, 30, 3, generator=g, dtype=torch.float64) * 8
    R = random_rotations(n, g, dtype=torch.float64)
    offsets = torch.randn(n, 2, generator=g, dtype=torch.float64) * 3
    df = torch.rand(n, generator=g, dtype=torch.float64) * 1e4 + 1e4
    ctf = CTFParams(df, df - 300, torch.rand(n, generator=g, dtype=torch.float64), 300, 2.7, 0.1)
    return coords, R, offsets, ctf


@pytest.mark.parametrize("D", [32, 33])
@pytest.mark.parametrize("with_ctf", [True, False])
def test_images_equal_the_replaced_composition(D, with_ctf):
    coords, R, offsets, ctf = _batch(D)
    ctf = ctf if with_ctf else None
    new = render_particles(coords, R, offsets, ctf, 3.0, D, 2.5)
    old = _old_render(coords, R, offsets, ctf, 3.0, D, 2.5)
    assert new.shape == (6, D, D) and new.dtype == torch.float64
    torch.testing.assert_close(new, old, rtol=0, atol=1e-12 * float(old.abs().max()))


@pytest.mark.parametrize("D", [32, 33])
def test_loss_equals_the_pixel_mean_squared_error_over_the_mean_square(D):
    coords, R, offsets, ctf = _batch(D, seed=1)
    g = torch.Generator().manual_seed(2)
    images = _old_render(coords + torch.randn(coords.shape, generator=g, dtype=torch.float64), R, offsets, ctf,
                         3.0, D, 2.5) + 0.01 * torch.randn(6, D, D, generator=g, dtype=torch.float64)
    grid = ImagingGrid(D, 2.5, dtype=torch.float64)
    pred = render_fourier(coords, R, offsets, ctf, 3.0, grid)
    new = float(image_error(pred, images, grid).mean() / mean_power(images, grid, chunk=4))
    old_pred = _old_render(coords, R, offsets, ctf, 3.0, D, 2.5)
    old = float(((old_pred - images) ** 2).mean() / (images ** 2).mean())
    # equal up to the Nyquist row of an even box, where an astigmatic CTF times a Hermitian transform is not
    # Hermitian (the old inverse FFT dropped that part; the Gaussian atoms leave ~1e-10 of the power there)
    assert new == pytest.approx(old, rel=1e-12 if D % 2 else 1e-8)
    # Parseval: the per-image error is D² times the pixel mean
    torch.testing.assert_close(image_error(None, images, grid), (images ** 2).sum((-1, -2)), rtol=1e-12, atol=0)


def test_gradients_reach_the_coordinates():
    """Gradient of the loss in the coordinates against central finite differences."""
    D = 24
    coords, R, offsets, ctf = _batch(D, n=2, seed=3)
    grid = ImagingGrid(D, 3.0, dtype=torch.float64)
    images = render_particles(coords + 0.5, R, offsets, ctf, 3.0, D, 3.0)

    def loss(c):
        return image_error(render_fourier(c, R, offsets, ctf, 3.0, grid), images, grid).mean()

    x = coords.clone().requires_grad_(True)
    loss(x).backward()
    assert x.grad is not None and float(x.grad.abs().max()) > 0
    g = torch.Generator().manual_seed(4)
    direction = torch.randn(coords.shape, generator=g, dtype=torch.float64)
    h = 1e-5
    fd = (loss(coords + h * direction) - loss(coords - h * direction)) / (2 * h)
    assert float((x.grad * direction).sum()) == pytest.approx(float(fd), rel=1e-6)
