"""FSC against analytic expectations: identity, independent noise, and a known low-pass cut-off."""

import numpy as np
import pytest

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


def _fsc_full_space(a, b):
    """The FSC summed over the whole centred transform (numpy), the definition before the half-space sums."""
    D = a.shape[0]
    F1 = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(a)))
    F2 = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(b)))
    f = np.fft.fftshift(np.fft.fftfreq(D)) * D
    shell = np.rint(np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)).astype(int)
    keep = shell < D // 2
    s = shell[keep]
    num = np.bincount(s, (F1 * np.conj(F2)).real[keep], minlength=D // 2)
    p1 = np.bincount(s, (np.abs(F1) ** 2)[keep], minlength=D // 2)
    p2 = np.bincount(s, (np.abs(F2) ** 2)[keep], minlength=D // 2)
    return num / np.sqrt(p1 * p2)


@pytest.mark.parametrize("D", [15, 16, 33])
def test_fsc_half_space_sums_equal_the_whole_transform(D):
    rng = np.random.default_rng(D)
    a, b, m = rng.standard_normal((D, D, D)), rng.standard_normal((D, D, D)), rng.random((D, D, D))
    b = a + b
    np.testing.assert_allclose(fsc(a, b), _fsc_full_space(a, b), atol=1e-12)
    np.testing.assert_allclose(fsc(a, b, m), _fsc_full_space(a * m, b * m), atol=1e-12)


def test_shell_index_3d_layouts():
    """Centred and rfftn layouts give round(|q|) of the voxel's frequency; a padded grid keeps the shells."""
    import torch
    from cryoscape.physics.imaging import shell_index_3d
    for n in (8, 9):
        f = np.fft.fftshift(np.fft.fftfreq(n)) * n
        ref = np.rint(np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2))
        assert np.array_equal(shell_index_3d(n).numpy(), ref)
        g = np.fft.fftfreq(n) * n
        gx = np.arange(n // 2 + 1)
        ref = np.rint(np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + gx[None, None, :] ** 2))
        assert np.array_equal(shell_index_3d(n, rfft=True).numpy(), ref)
    padded = shell_index_3d(8, 17)  # 17 voxels, spacing 8/17 of the map's: the centre column
    assert torch.equal(padded[8, 8, 8:], torch.round(torch.arange(9, dtype=torch.float64) * 8 / 17).long())


def test_nice_ticks():
    from cryoscape.report.lineplot import nice_ticks
    assert nice_ticks(0, 0.33) == [0, 0.1, 0.2, 0.3]
    assert nice_ticks(0, 1.0, 5) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(-3, 7, 5) == [-2, 0, 2, 4, 6]


def test_line_plot_draws_curves_at_their_values(tmp_path):
    """Constant curves at y = 0.2, 0.5, 0.8 land on pixel rows spaced in proportion to their values."""
    from PIL import Image

    from cryoscape.report.lineplot import Axis, Curve, line_plot_png
    x = np.linspace(0, 1, 50)
    colors = {0.2: (255, 0, 0), 0.5: (0, 170, 0), 0.8: (0, 0, 255)}
    curves = [Curve(x, np.full(50, v), f"y = {v}", "#%02x%02x%02x" % c) for v, c in colors.items()]
    path = line_plot_png(tmp_path / "p.png", curves, Axis("x", 0, 1, [0, 0.5, 1], ["0", "0.5", "1"]),
                         Axis("y", 0, 1, [0, 1], ["0", "1"]))
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.shape == (400, 600, 3)
    rows = {}
    for v, c in colors.items():
        near = (np.abs(img - np.array(c)).sum(-1) < 60)[:, 100:300]  # left of the legend
        assert near.any(), v
        rows[v] = np.nonzero(near)[0].mean()
    assert rows[0.8] < rows[0.5] < rows[0.2]  # higher values higher up
    assert (rows[0.2] - rows[0.8]) / (rows[0.2] - rows[0.5]) == pytest.approx(2.0, abs=0.05)
