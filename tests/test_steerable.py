"""Fourier–Bessel basis and steerable PCA (physics/steerable.py), against analytic truths.

- expansion → evaluation reproduces an analytic band-limited image on the disc;
- the coefficients of a basis function (built here from scipy's Bessel functions) are a unit vector;
- coefficient rotation ``a · e^{imψ}`` equals exact pixel rotation by 90° multiples (index formula of
  ``out(p) = img(Q(ψ) p)``) and the expansion of the analytically rotated image at any angle;
- steerable PCA recovers the eigenvalues of a known low-rank steerable model under white noise.
"""

from __future__ import annotations

import math

import pytest
import scipy.special
import torch

from cryoscape.io.errors import InputError
from cryoscape.physics.steerable import FourierBessel, noise_variance_outside_disc, steerable_pca

D = 32
C = D // 2


@pytest.fixture(scope="module")
def fb():
    return FourierBessel(D)


def gaussians(centres, sigma=2.0, D=D, weights=None):
    """Sum of isotropic Gaussians at pixel positions (x, y) about the centre pixel → (D, D) float64."""
    y, x = torch.meshgrid(torch.arange(D, dtype=torch.float64) - D // 2,
                          torch.arange(D, dtype=torch.float64) - D // 2, indexing="ij")
    out = torch.zeros(D, D, dtype=torch.float64)
    for k, (cx, cy) in enumerate(centres):
        w = 1.0 if weights is None else weights[k]
        out += w * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))
    return out


def rot90_exact(img: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``out(x, y) = img(Q(k·90°)(x, y))`` on the pixel grid: out[c+y, c+x] = img[c+x, c−y] per quarter turn."""
    for _ in range(k % 4):
        out = torch.zeros_like(img)
        for i in range(D):
            for j in range(D):
                ii, jj = C + (j - C), C - (i - C)
                if 0 <= ii < D and 0 <= jj < D:
                    out[..., i, j] = img[..., ii, jj]
        img = out
    return img


def test_basis_size_and_band_limit(fb):
    # every kept zero is below π R c, and the next zero of each m is above it
    lam_max = math.pi * fb.R
    assert float(fb.zeros.max()) <= lam_max
    for m in range(int(fb.m.max()) + 2):
        nq = int((fb.m == m).sum())
        assert scipy.special.jn_zeros(m, nq + 1)[nq] > lam_max
    assert fb.n_coeffs == 312 and int(fb.mask.sum()) == 793 and fb.condition_number < 3
    # the disc r < D/2 maps onto itself under a 90° rotation
    assert torch.equal(rot90_exact(fb.mask.double()), fb.mask.double())


def test_basis_function_is_a_unit_vector(fb):
    y, x = torch.meshgrid(torch.arange(D, dtype=torch.float64) - C, torch.arange(D, dtype=torch.float64) - C,
                          indexing="ij")
    r, th = torch.hypot(x, y), torch.atan2(y, x)
    for k in [0, 3, 40, 150, 300]:
        m, lam = int(fb.m[k]), float(fb.zeros[k])
        assert abs(scipy.special.jv(m, lam)) < 1e-10  # λ is a zero of J_m
        norm = 1 / (math.sqrt(math.pi) * fb.R * abs(scipy.special.jv(m + 1, lam)))
        radial = torch.as_tensor(scipy.special.jv(m, lam * r.numpy() / fb.R)) * norm
        # the real image of coefficient e_k: ψ for m = 0, 2 Re ψ for m > 0 (conjugate pair)
        img = radial * (torch.cos(m * th) * (2 if m > 0 else 1)) * fb.mask
        a = fb.expand(img[None])[0]
        e = torch.zeros(fb.n_coeffs, dtype=a.dtype)
        e[k] = 1
        assert (a - e).abs().max() < 1e-10
        assert (fb.evaluate(e[None])[0] - img).abs().max() < 1e-12
        # and −2 Im ψ is the image of i·e_k
        if m > 0:
            a = fb.expand((-2 * radial * torch.sin(m * th) * fb.mask)[None])[0]
            assert (a - 1j * e).abs().max() < 1e-10
    # continuous normalisation: the pixel sum of |ψ|² is close to 1
    pix_norm = (fb.psi.abs() ** 2).sum(0)
    assert float((pix_norm - 1).abs().median()) < 0.02


def test_round_trip_band_limited_image(fb):
    img = gaussians([(3, -4), (-5, 2), (1, 7)], sigma=2.0, weights=[1.0, 0.7, -0.5])
    back = fb.evaluate(fb.expand(img[None]))[0]
    m = fb.mask
    err = float((back - img)[m].norm() / img[m].norm())
    assert err < 1e-3, err  # measured 1.8e-6 (sigma 2 px); outside the disc the evaluation is 0
    assert float(back[~m].abs().max()) == 0.0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_coefficient_rotation_is_pixel_rotation_by_90(fb, k):
    g = torch.Generator().manual_seed(k)
    img = torch.randn(4, D, D, generator=g, dtype=torch.float64) * fb.mask
    a = fb.expand(img)
    proj = fb.evaluate(a)  # the image's part in the span of the basis
    rotated = fb.evaluate(fb.rotate(a, k * math.pi / 2))
    assert float((rotated - rot90_exact(proj, k)).abs().max()) < 1e-12
    # torch.rot90 over (y, x), then one roll along y (even D: the array centre is D//2 − 1/2), is the same
    x = proj
    for _ in range(k):
        x = torch.roll(torch.rot90(x, 1, dims=(1, 2)), 1, dims=1)
    assert torch.equal(x, rot90_exact(proj, k))
    # the pixel rotation of the raw image expands to the rotated coefficients (the disc maps onto itself)
    assert float((fb.expand(rot90_exact(img, k)) - fb.rotate(a, k * math.pi / 2)).abs().max()) < 1e-12
    # the opposite sign would not match
    if k != 2:
        assert float((fb.evaluate(fb.rotate(a, -k * math.pi / 2)) - rot90_exact(proj, k)).abs().max()) > 1


def test_coefficient_rotation_matches_analytic_rotation(fb):
    centres = [(3.0, -4.0), (-5.0, 2.0), (1.0, 7.0)]
    weights = [1.0, 0.7, -0.5]
    img = gaussians(centres, weights=weights)
    psi = torch.tensor([0.3, 1.234, -2.5, 4.0], dtype=torch.float64)
    a = fb.expand(img[None]).expand(4, -1)
    for i, p in enumerate(psi.tolist()):
        # out(p) = img(Q p): a feature at c appears at Q⁻¹ c = Qᵀ c
        cs, sn = math.cos(p), math.sin(p)
        rc = [(cs * x + sn * y, -sn * x + cs * y) for x, y in centres]
        truth = gaussians(rc, weights=weights)  # the analytic rotated image, sampled
        got = fb.evaluate(fb.rotate(a[i:i + 1], p))[0]
        m = fb.mask
        assert float((got - truth)[m].norm() / truth[m].norm()) < 1e-4  # measured ≤ 4.1e-6
    batched = fb.rotate(a, psi)
    assert torch.allclose(batched[2], fb.rotate(a[2:3], -2.5)[0])


def test_coefficient_rotation_matches_rotate_images(fb):
    """Peer: physics.transform2d.rotate_images (Fourier shears) agrees with the phase e^{imψ} on the disc."""
    from cryoscape.physics.transform2d import rotate_images

    img = gaussians([(3.0, -4.0), (-5.0, 2.0), (1.0, 7.0)], sigma=2.0, weights=[1.0, 0.7, -0.5])[None]
    psi = torch.tensor([0.7], dtype=torch.float64)
    peer = rotate_images(img, psi)[0]
    ours = fb.evaluate(fb.rotate(fb.expand(img), psi))[0]
    m = fb.mask
    assert float((ours - peer)[m].norm() / peer[m].norm()) < 1e-4  # measured 2.9e-6


def test_dtype_and_bad_input():
    fb32 = FourierBessel(D, bandlimit=0.5, dtype=torch.float32)
    img = gaussians([(2, 3)], sigma=3.0).float()[None]
    a = fb32.expand(img)
    assert a.dtype == torch.complex64 and fb32.evaluate(a).dtype == torch.float32
    assert float((fb32.evaluate(a) - img)[0][fb32.mask].norm() / img[0][fb32.mask].norm()) < 1e-3
    with pytest.raises(InputError):
        fb32.expand(torch.zeros(2, D, D + 1))
    with pytest.raises(InputError):
        FourierBessel(D, bandlimit=1.5)
    with pytest.raises(InputError):
        steerable_pca(a[:1].to(torch.complex128), FourierBessel(D, bandlimit=0.5))


def test_noise_variance_outside_disc():
    g = torch.Generator().manual_seed(5)
    imgs = 0.7 * torch.randn(200, D, D, generator=g, dtype=torch.float64) + gaussians([(0, 0)], sigma=3)
    assert abs(noise_variance_outside_disc(imgs) - 0.49) < 0.49 * 0.03


def _low_rank_model(fb, N, spec, g):
    """FB coefficients of a steerable low-rank model with exact empirical second moments.

    ``spec``: [(m, λ)]; each component is a random unit vector over the first 6 radial functions of block
    m; latents are orthogonal over the N images (centred for m = 0) with Σ_i |z_ik|² = N λ_k exactly.
    """
    a = torch.zeros(N, fb.n_coeffs, dtype=torch.complex128)
    ones = torch.ones(N, 1, dtype=torch.float64) / math.sqrt(N)
    for m in sorted({s[0] for s in spec}):
        lams = torch.tensor([lam for mm, lam in spec if mm == m], dtype=torch.float64)
        idx = torch.nonzero(fb.m == m).squeeze(1)[:6]

        def draw(*shape):
            x = torch.randn(*shape, generator=g, dtype=torch.float64)
            return x if m == 0 else torch.complex(x, torch.randn(*shape, generator=g, dtype=torch.float64))

        U = torch.linalg.qr(draw(idx.numel(), lams.numel()))[0]
        Z = draw(N, lams.numel())
        if m == 0:
            Z = Z - ones @ (ones.T @ Z)
        Z = torch.linalg.qr(Z)[0] * math.sqrt(N) * lams.sqrt()
        a[:, idx] += Z.to(torch.complex128) @ U.to(torch.complex128).T
    return a


def test_steerable_pca_recovers_eigenvalues(fb):
    spec = [(0, 10.0), (0, 4.0), (1, 8.0), (2, 5.0), (3, 3.0)]
    N, sigma = 500, 0.5
    g = torch.Generator().manual_seed(0)
    clean = fb.evaluate(_low_rank_model(fb, N, spec, g))
    imgs = clean + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    coeffs = fb.expand(imgs)
    p = steerable_pca(coeffs, fb, noise_var=sigma ** 2)
    truth = sorted(spec, key=lambda s: -s[1])
    got = list(zip(p.m.tolist(), p.eigenvalues.tolist()))
    for (m_t, l_t), (m_g, l_g) in zip(truth, got[:5]):
        assert m_g == m_t
        assert abs(l_g - l_t) < 0.05 * l_t, (got, truth)  # measured ≤ 4.2 % over 4 seeds
    # anything kept beyond the model is tiny (noise at the Marchenko–Pastur edge)
    assert all(lam < 0.05 for _, lam in got[5:])
    # without the noise model the eigenvalues carry the noise (biased up); the shrinkage removes it
    raw = steerable_pca(coeffs, fb, n_components=5)
    assert float((raw.eigenvalues - torch.tensor([s[1] for s in truth])).min()) > 0.15
    # the pixel-space covariance of the clean images (rank 8: ±m pairs count twice) has the model's trace
    X = clean.reshape(N, -1)
    assert float(((X - X.mean(0)) ** 2).sum() / N) == pytest.approx(10 + 4 + 2 * (8 + 5 + 3), rel=0.05)
    # steerable: rotating the images is a phase e^{i m_k ψ} on each sPCA coefficient
    psi = torch.rand(N, generator=g, dtype=torch.float64) * 2 * math.pi
    b_rot = p.transform(fb.rotate(coeffs, psi))
    assert float((b_rot - p.rotate(p.coefficients, psi)).abs().max()) < 1e-10
    # components are unit vectors supported on their own frequency block
    assert torch.allclose(p.components.abs().pow(2).sum(1), torch.ones(len(got), dtype=torch.float64))
    for k in range(len(got)):
        assert float(p.components[k, fb.m != p.m[k]].abs().max()) == 0.0
