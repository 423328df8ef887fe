"""CTF against analytic results: wavelength, CTF(0) = +w, zeros, astigmatism direction, envelope."""

import math

import numpy as np
import torch

from cryoscape.physics import CTFParams, ctf_2d, ctf_from_params, electron_wavelength


def test_wavelength_known_values():
    # λ(300 kV) = 0.019687 Å, λ(200 kV) = 0.025079 Å, λ(100 kV) = 0.037014 Å (standard tables)
    assert math.isclose(electron_wavelength(300), 0.019687, abs_tol=2e-6)
    assert math.isclose(electron_wavelength(200), 0.025079, abs_tol=2e-6)
    assert math.isclose(electron_wavelength(100), 0.037014, abs_tol=2e-6)


def radial(s, df, cs=0.0, w=0.0, phase=0.0, b=0.0, kv=300.0):
    s = torch.as_tensor(s, dtype=torch.float64)[None]
    return ctf_2d(s, torch.zeros_like(s), [df], [df], [0.0], kv, cs, w, phase, b)[0, 0]


def test_ctf_at_zero_frequency_is_plus_w():
    for w in (0.0, 0.07, 0.1):
        assert math.isclose(float(radial([0.0], 15000, 2.7, w)[0]), w, abs_tol=1e-12)
    # first lobe positive (particles white after the CTF)
    assert float(radial([0.01], 15000, 2.7, 0.1)[0]) > 0


def test_zeros_at_predicted_frequencies():
    lam = electron_wavelength(300)
    df = 20000.0
    # Cs = 0, w = 0: sin(π λ Δf s²) = 0 at s_n = sqrt(n / (λ Δf))
    s_n = np.sqrt(np.arange(1, 6) / (lam * df))
    assert np.abs(radial(s_n, df).numpy()).max() < 1e-9
    # with amplitude contrast: zeros where χ = nπ − atan(w / sqrt(1 − w²))
    w = 0.1
    chi_n = np.arange(1, 6) * math.pi - math.atan(w / math.sqrt(1 - w * w))
    s_w = np.sqrt(chi_n / (math.pi * lam * df))
    assert np.abs(radial(s_w, df, w=w).numpy()).max() < 1e-9
    # with Cs: solve π λ Δf s² − π/2 Cs λ³ s⁴ = π for the first zero (quadratic in s²)
    cs_mm = 2.7
    a, b, c = 0.5 * math.pi * cs_mm * 1e7 * lam ** 3, -math.pi * lam * df, math.pi
    s2 = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
    assert abs(float(radial([math.sqrt(s2)], df, cs=cs_mm)[0])) < 1e-9


def test_phase_shift_of_pi_over_2_makes_ctf_zero_phase_contrast_maximum():
    # φ = π/2, w = 0: CTF = sin(χ0 + π/2) = cos χ0 → 1 at s = 0
    assert math.isclose(float(radial([0.0], 10000, phase=math.pi / 2)[0]), 1.0, abs_tol=1e-12)


def test_bfactor_envelope():
    s = torch.tensor([0.1], dtype=torch.float64)
    ratio = radial(s, 15000, 2.7, 0.1, b=100.0) / radial(s, 15000, 2.7, 0.1)
    assert math.isclose(float(ratio[0]), math.exp(-100 * 0.01 / 4), rel_tol=1e-12)


def test_astigmatism_direction():
    """Along the azimuth α_ast the defocus is ΔfU; perpendicular to it, ΔfV (angles counter-clockwise from +x)."""
    lam = electron_wavelength(300)
    dfu, dfv, ang = 25000.0, 15000.0, math.radians(30)
    s_u, s_v = math.sqrt(1 / (lam * dfu)), math.sqrt(1 / (lam * dfv))  # first zeros (Cs = w = 0)
    def at(s, alpha):
        kx = torch.tensor([[s * math.cos(alpha)]], dtype=torch.float64)
        ky = torch.tensor([[s * math.sin(alpha)]], dtype=torch.float64)
        return float(ctf_2d(kx, ky, [dfu], [dfv], [ang], 300, 0.0, 0.0)[0, 0, 0])
    assert abs(at(s_u, ang)) < 1e-9 and abs(at(s_v, ang + math.pi / 2)) < 1e-9
    assert abs(at(s_u, ang + math.pi / 2)) > 0.1  # not a zero the other way round


def test_ctf_params_batch_matches_scalar_calls():
    ky, kx = torch.meshgrid(torch.linspace(-0.2, 0.2, 9, dtype=torch.float64),
                            torch.linspace(-0.2, 0.2, 9, dtype=torch.float64), indexing="ij")
    p = CTFParams([10000, 20000], [9000, 21000], [0.1, 1.0], 300, 2.7, 0.07, [0.0, 0.3], [0, 50])
    batch = ctf_from_params(p, kx, ky)
    for i in range(2):
        one = ctf_2d(kx, ky, p.defocus_u[i:i + 1], p.defocus_v[i:i + 1], p.angle_ast[i:i + 1], 300, 2.7, 0.07,
                     p.phase_shift[i:i + 1], p.bfactor[i:i + 1])
        assert torch.allclose(batch[i], one[0])
    assert len(p.subset(slice(1, 2))) == 1


def test_any_argument_may_be_per_image():
    """One defocus with two voltages gives two images, each equal to its scalar call."""
    ky, kx = torch.meshgrid(torch.linspace(-0.2, 0.2, 9, dtype=torch.float64),
                            torch.linspace(-0.2, 0.2, 9, dtype=torch.float64), indexing="ij")
    both = ctf_2d(kx, ky, [15000.0], [14000.0], [0.2], torch.tensor([200.0, 300.0]), 2.7, 0.1)
    assert both.shape == (2, 9, 9)
    for i, kv in enumerate((200.0, 300.0)):
        assert torch.allclose(both[i], ctf_2d(kx, ky, [15000.0], [14000.0], [0.2], kv, 2.7, 0.1)[0])
    assert not torch.allclose(both[0], both[1])
