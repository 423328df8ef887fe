"""FSC against analytic expectations: identity, independent noise, and a known low-pass cut-off."""

import numpy as np

from cryoscape.analysis.fsc import fsc, resolution_at, shell_frequencies


def _blob_map(D=48, seed=0):
    rng = np.random.default_rng(seed)
    vol = rng.standard_normal((D, D, D))
    return vol


def test_fsc_of_a_map_with_itself_and_a_scaled_copy_is_one():
    v = _blob_map()
    assert np.allclose(fsc(v, v), 1.0)
    assert np.allclose(fsc(v, 3.5 * v + 0.0), 1.0)


def test_fsc_of_independent_noise_is_near_zero():
    a, b = _blob_map(seed=1), _blob_map(seed=2)
    curve = fsc(a, b)
    # each shell r holds ~4πr² voxels: |FSC| ~ 1/sqrt(n) (skip the smallest shells)
    assert np.abs(curve[4:]).max() < 0.15
    # signal + equal-power independent noise in each map: FSC = S/(S+N) = 0.5
    s = _blob_map(seed=3)
    c = fsc(s + a, s + b)
    assert abs(c[5:].mean() - 0.5) < 0.03


def test_resolution_recovers_a_hard_low_pass_cutoff():
    D, apix, cut = 64, 1.5, 12  # keep shells < 12 in one map only
    v = _blob_map(D, seed=4)
    F = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(v)))
    f = np.fft.fftshift(np.fft.fftfreq(D)) * D
    r = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    low = np.real(np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(F * (np.rint(r) < cut)))))
    curve = fsc(v, low)
    res = resolution_at(curve, D, apix, 0.5)
    expected = 1 / shell_frequencies(D, apix)[cut]
    # within one shell of the cut-off
    assert 1 / shell_frequencies(D, apix)[cut + 1] <= res <= 1 / shell_frequencies(D, apix)[cut - 1]
    assert abs(res - expected) / expected < 0.1
