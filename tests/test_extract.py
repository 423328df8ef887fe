"""Particle extraction (methods/pick/extract.py) against independent truths: the forward model's own images of
the simulated particles (same pose, sub-pixel offset and CTF), the particles' mass centroids, a hand-built
background for the normalisation and |CTF|-filtered projections for phase flipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoscape.data.micrographs import MicrographConfig, simulate_micrographs
from cryoscape.data.simulate import AtomSource
from cryoscape.geometry.poses import Poses
from cryoscape.geometry.rotations import random_rotations
from cryoscape.io.errors import InputError
from cryoscape.methods.pick.extract import (background_mask, box_inside, extract_particles, normalize_background,
                                            subpixel_residual)
from cryoscape.physics.ctf import CTFParams
from cryoscape.physics.imaging import ImagingGrid, apply_ctf, forward_images
from cryoscape.physics.transform2d import phase_flip

APIX = 2.0
BOX = 64


@pytest.fixture(scope="module")
def source(adk):
    """Three AdK frames (Cα, σ = 3 Å = 1.5 px, radius ≈ 41 Å ≈ 20 px)."""
    return AtomSource(adk.coords[::40], 3.0)


@pytest.fixture(scope="module")
def mset(source):
    """One 192 × 256 micrograph (non-square) with 4 particles ≥ 4 radii (≥ 81 px) apart, whole 64-px boxes
    inside the field, defocus 0.8–1.2 µm (``clean``, ``clean_noctf`` noiseless; ``noisy`` at SNR 1)."""
    cfg = MicrographConfig(size=(192, 256), apix=APIX, n_particles=4, min_distance_A=4 * source.radius(),
                           edge_margin_A=BOX / 2 * APIX, snr=1.0, defocus_min_um=0.8, defocus_max_um=1.2, seed=1)
    return simulate_micrographs(source, cfg, 1)


def _truth(source, mset, shift_px, ctf: bool, box=BOX, apix=APIX):
    """The forward model's images of the micrograph's particles (truth pose and conformation), moved by
    ``shift_px`` from the box centre, with the micrograph's CTF on a canvas twice the box (so the CTF's
    spread is cut at the box as in a crop of the field, not wrapped around)."""
    n = len(mset.coords)
    grid = ImagingGrid(box, apix, pad=2)
    poses = Poses(torch.as_tensor(mset.rotations, dtype=torch.float32),
                  torch.as_tensor(shift_px * APIX, dtype=torch.float32))
    c = mset.ctf.subset(np.zeros(n, dtype=np.int64)) if ctf else None
    return forward_images(source.projector(), poses, grid, c, torch.as_tensor(mset.conformation)).double()


def _rel(a, b):
    return ((a.double() - b.double()).norm(dim=(1, 2)) / b.double().norm(dim=(1, 2))).numpy()


def test_extraction_equals_the_forward_models_images(source, mset):
    """The noiseless micrograph's boxes are the particle simulator's images of the same poses and CTF.

    Why the tolerances are what they are: the CTF moves signal of frequency k by λ Δf k, at most
    0.0197 Å · 1.2e4 Å · 0.25 Å⁻¹ ≈ 59 Å ≈ 30 px at Nyquist, so a particle's CTF-filtered image reaches
    up to ≈ 20 + 30 = 50 px from its centre; the neighbours are ≥ 81 px away and the box's corners 45 px,
    so only a neighbour's frequencies above ~half Nyquist (moved ≥ 16 px) could reach the box (the
    neighbours' overlap); the atoms' Gaussian (σ = 1.5 px) damps them and the CTF spreads them thin. The
    truth is rendered on a 128-px canvas (64 px each way), so the particle's own spread is not wrapped
    there, and beyond the box it is cut in both. Without sub-pixel centring the extracted box is then the
    truth with the residual offset δ to float precision (measured 1e-6). Sub-pixel centring moves the box
    by −δ periodically: up to half a pixel column of CTF fringes at the box's edges wraps around (measured
    0.10–0.15 % of the image's norm), so 0.5 % is allowed; centring by the wrong sign or not at all is off
    by > 5 % (checked)."""
    delta = subpixel_residual(mset.coords)
    assert (np.abs(delta).max(1) > 0.15).all()  # every particle needs the sub-pixel shift
    field = mset.clean[0]
    raw = extract_particles(field, mset.coords, BOX, APIX, subpixel=False, normalize=False)
    assert raw.shape == (4, BOX, BOX) and raw.dtype == torch.float32
    assert _rel(raw, _truth(source, mset, delta, True)).max() < 1e-4
    centred = extract_particles(field, mset.coords, BOX, APIX, subpixel=True, normalize=False)
    truth0 = _truth(source, mset, np.zeros_like(delta), True)
    assert _rel(centred, truth0).max() < 5e-3
    assert _rel(raw, truth0).min() > 5e-2  # the offset matters at this tolerance
    assert _rel(centred, _truth(source, mset, 2 * delta, True)).min() > 5e-2  # and so does its sign
    # CTF-free: only the particle's Gaussian tails (≤ 3e-4) reach the box edge, and the splatted projection is
    # shift-invariant to ~5e-4 (measured 4–6e-4 here)
    assert _rel(extract_particles(mset.clean_noctf[0], mset.coords, BOX, APIX, normalize=False),
                _truth(source, mset, np.zeros_like(delta), False)).max() < 2e-3


def test_subpixel_centring_puts_the_centroid_on_the_box_centre(mset):
    """The listed centre is the CTF-free particle's mass centroid (simulator's truth): after centring the
    intensity centroid is at pixel BOX//2 (measured 1e-6 px); without it, at the residual δ."""
    r = torch.arange(BOX, dtype=torch.float64) - BOX // 2
    for sub, expect in ((True, np.zeros((4, 2))), (False, subpixel_residual(mset.coords))):
        e = extract_particles(mset.clean_noctf[0], mset.coords, BOX, APIX, subpixel=sub, normalize=False).double()
        m = e.sum((1, 2))
        cx, cy = (e * r).sum((1, 2)) / m, (e * r[:, None]).sum((1, 2)) / m
        np.testing.assert_allclose(np.stack([cx, cy], 1), expect, atol=0.05 if sub else 1e-3)
    assert (np.abs(subpixel_residual(mset.coords)) > 0.1).any()


def test_binning_gives_the_coarser_forward_image(source, mset):
    """``bin=2``: the 32-px box of 4 Å pixels is the forward model's image at 4 Å/px (Fourier cropping keeps
    values as densities). The coarse rendering aliases the atoms' Gaussian (amplitude 6 % at the coarse
    Nyquist), the cropped one does not: measured 0.4–0.7 %, so 2 % is allowed."""
    ex = extract_particles(mset.clean_noctf[0], mset.coords, BOX, APIX, bin=2, normalize=False)
    assert ex.shape == (4, BOX // 2, BOX // 2)
    poses = Poses(torch.as_tensor(mset.rotations, dtype=torch.float32), torch.zeros(4, 2))
    ref = forward_images(source.projector(), poses, ImagingGrid(BOX // 2, 2 * APIX), None,
                         torch.as_tensor(mset.conformation))
    assert _rel(ex, ref).max() < 2e-2


def test_normalisation_background_mean_zero_std_one(mset):
    """A noisy micrograph's boxes: outside the background radius mean 0 and standard deviation 1 (ramp or not);
    inside, the same affine map of the raw box."""
    field = mset.noisy[0]
    raw = extract_particles(field, mset.coords, BOX, APIX, normalize=False).double()
    bg = background_mask(BOX, 0.375 * BOX)
    for ramp in (True, False):
        out = extract_particles(field, mset.coords, BOX, APIX, ramp=ramp).double()
        vals = out[:, bg]
        np.testing.assert_allclose(vals.mean(1).numpy(), 0, atol=1e-5)
        np.testing.assert_allclose(vals.std(1, unbiased=False).numpy(), 1, atol=1e-5)
        # an affine map per box: out = (raw − plane) / s with a plane (or a constant)
        scale = raw[:, bg].std(1, unbiased=False) / vals.std(1, unbiased=False)
        assert (scale > 0).all()
        if not ramp:
            expect = (raw - raw[:, bg].mean(1)[:, None, None]) / raw[:, bg].std(1, unbiased=False)[:, None, None]
            np.testing.assert_allclose(out.numpy(), expect.numpy(), atol=1e-4)


def test_normalisation_removes_a_hand_built_ramp():
    """A box = 5 + 0.3 x − 0.2 y + noise (σ = 2) + a bright disc inside the radius: the plane fitted by numpy's
    least squares through the background is removed, and the result is divided by the residual's std."""
    rng = np.random.default_rng(0)
    D, radius = 40, 15.0
    yy, xx = np.mgrid[:D, :D] - D // 2
    noise = rng.normal(0, 2, (D, D))
    img = 5 + 0.3 * xx - 0.2 * yy + noise + 50.0 * (xx ** 2 + yy ** 2 < 8 ** 2)
    bg = xx ** 2 + yy ** 2 > radius ** 2
    A = np.stack([np.ones(bg.sum()), xx[bg], yy[bg]], 1)
    coef = np.linalg.lstsq(A, img[bg], rcond=None)[0]
    resid = img - (coef[0] + coef[1] * xx + coef[2] * yy)
    expect = resid / resid[bg].std()
    out = normalize_background(torch.as_tensor(img)[None], radius, ramp=True)[0].numpy()
    np.testing.assert_allclose(out, expect, atol=1e-9)
    np.testing.assert_allclose(coef, [5, 0.3, -0.2], atol=0.1)  # the hand-built plane is found
    assert abs(out[bg].mean()) < 1e-9 and out[bg].std() == pytest.approx(1, abs=1e-9)


def test_phase_flip_equals_abs_ctf_filtered_projection(adk):
    """A particle at a sub-pixel offset in a 64² field with an astigmatic CTF applied to the whole field
    (periodic, ``pad=1``: the field's CTF equals the 64-px grid's). Extracted with centring and phase flipping
    it is ``F⁻¹[|CTF| · F[P₀]]`` (P₀ the centred projection), and also ``phase_flip`` of the centred
    CTF-multiplied image (flip and shift are both diagonal in Fourier space). The atoms are projected exactly:
    splatting is shift-invariant only to ~5e-4, which |CTF|'s weight on high frequencies doubles."""
    source = AtomSource(adk.coords[::40], 3.0, projection="exact")
    gen = torch.Generator().manual_seed(5)
    R = random_rotations(1, gen, dtype=torch.float32)
    delta = np.array([[0.37, -0.21]])
    grid = ImagingGrid(BOX, APIX)
    proj = source.projector()
    p_off = forward_images(proj, Poses(R, torch.as_tensor(delta * APIX, dtype=torch.float32)), grid, None,
                           torch.zeros(1, dtype=torch.int64))
    p0 = forward_images(proj, Poses(R, torch.zeros(1, 2)), grid, None, torch.zeros(1, dtype=torch.int64))
    ctf = CTFParams([1.3e4], [1.0e4], [0.6], 300.0, 2.7, 0.1)
    field = apply_ctf(p_off, ctf, APIX, pad=1)[0]
    xy = np.array([[BOX // 2, BOX // 2]]) + delta
    flipped = extract_particles(field, xy, BOX, APIX, phase_flip_ctf=ctf, normalize=False)
    expect = grid.to_images(grid.transform(p0) * grid.ctf(ctf).abs())
    assert _rel(flipped, expect).max() < 1e-4
    assert _rel(flipped, phase_flip(forward_images(proj, Poses(R, torch.zeros(1, 2)), grid, ctf,
                                                   torch.zeros(1, dtype=torch.int64)), ctf, grid)).max() < 1e-4
    # not flipping, or flipping with the astigmatism turned by 90°, is visibly different
    assert _rel(extract_particles(field, xy, BOX, APIX, normalize=False), expect).min() > 0.1
    turned = CTFParams([1.3e4], [1.0e4], [0.6 + math.pi / 2], 300.0, 2.7, 0.1)
    assert _rel(extract_particles(field, xy, BOX, APIX, phase_flip_ctf=turned, normalize=False), expect).min() > 0.05


def test_invert_and_edges():
    """``invert`` negates; a box leaving the field is refused, or filled with the field's mean with ``pad``."""
    rng = np.random.default_rng(1)
    field = torch.as_tensor(rng.normal(3.0, 1.0, (50, 70)), dtype=torch.float32)
    xy = np.array([[10.2, 12.7], [35.0, 25.0]])
    assert box_inside(xy, 24, (50, 70)).tolist() == [False, True]
    a = extract_particles(field, xy[1:], 24, 1.0, subpixel=False, normalize=False)
    b = extract_particles(field, xy[1:], 24, 1.0, subpixel=False, normalize=False, invert=True)
    torch.testing.assert_close(b, -a)
    torch.testing.assert_close(a[0], field[13:37, 23:47])  # pixel (35, 25) on the centre 12
    with pytest.raises(InputError, match="leave the micrograph"):
        extract_particles(field, xy, 24, 1.0)
    p = extract_particles(field, xy, 24, 1.0, subpixel=False, normalize=False, edge="pad")
    # centre (10, 13): window columns −2..21, rows 1..24; columns −2, −1 are outside
    torch.testing.assert_close(p[0, :, 2:], field[1:25, 0:22])
    assert torch.allclose(p[0, :, :2], torch.full((24, 2), float(field.double().mean())))
    for bad, match in ((np.array([[-0.6, 10.0]]), "outside"), (np.array([[10.0, 49.6]]), "outside"),
                       (np.array([[np.nan, 10.0]]), "non-finite")):
        with pytest.raises(InputError, match=match):
            extract_particles(field, bad, 24, 1.0, edge="pad")
    with pytest.raises(InputError, match="does not fit"):
        extract_particles(field, xy[1:], 52, 1.0)
    with pytest.raises(InputError, match="--bin"):
        extract_particles(field, xy[1:], 24, 1.0, bin=5)
    nan = field.clone()
    nan[3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        extract_particles(nan, xy[1:], 24, 1.0)


def test_batches_and_progress_do_not_change_the_result(mset):
    from conftest import ProgressCount
    bar = ProgressCount()
    one = extract_particles(mset.noisy[0], mset.coords, BOX, APIX, batch=1, progress=bar)
    all_ = extract_particles(mset.noisy[0], mset.coords, BOX, APIX, batch=100)
    torch.testing.assert_close(one, all_, atol=1e-5, rtol=0)
    assert bar.n == 4


# -- the command ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_mics(source):
    """Two 160 × 192 micrographs at SNR 1 (seeds differ: other positions, poses, defoci), 4 particles each."""
    cfg = MicrographConfig(size=(160, 192), apix=APIX, n_particles=4, min_distance_A=2.5 * source.radius(),
                           edge_margin_A=BOX / 2 * APIX, snr=1.0, defocus_min_um=0.8, defocus_max_um=2.0,
                           astigmatism_um=0.1, seed=4)
    return simulate_micrographs(source, cfg, 2)


def _write_inputs(folder, ms, extra=None, apix=APIX, ctf_apix=APIX):
    """``mic_0.mrc``, ``mic_1.mrc``, ``picks.star`` (RELION many-micrograph coordinates, sub-pixel values) and
    ``micrographs_ctf.star``; ``extra``: more (name, x, y) picks."""
    from cryoscape.io.coords import Coordinates, write_coordinates
    from cryoscape.io.mrc import write_micrograph
    from cryoscape.io.star import write_micrographs_star

    names = [f"mic_{m}.mrc" for m in range(len(ms))]
    for m, name in enumerate(names):
        write_micrograph(folder / name, ms.noisy[m].numpy(), apix)
    mic = np.array([f"Movies/{names[m]}" for m in ms.micrograph])
    xy = ms.coords
    if extra:
        mic = np.concatenate([mic, [e[0] for e in extra]])
        xy = np.concatenate([xy, [[e[1], e[2]] for e in extra]])
    write_coordinates(folder / "picks.star", Coordinates(mic, xy), "relion-multi")
    write_micrographs_star(folder / "micrographs_ctf.star", [f"MotionCorr/{n}" for n in names], ms.ctf, ctf_apix)
    return [folder / n for n in names]


def test_cli_writes_particles_with_their_micrographs_ctf(tmp_path, two_mics, capsys):
    """Eight particles + one whose box leaves its micrograph (skipped, counted): the stack holds the method's boxes
    of the right micrograph in order, the STAR each particle's micrograph, coordinates and that micrograph's CTF
    (read back by read_star), and backproject takes it with the truth poses."""
    from conftest import cli_ok

    from cryoscape.data.particles import table_ctf
    from cryoscape.io.cryodrgn_pkl import write_poses_pkl
    from cryoscape.io.mrc import read_stack
    from cryoscape.io.star import read_star
    from cryoscape.runs.folder import read_metrics

    ms = two_mics
    mics = _write_inputs(tmp_path, ms, extra=[("mic_1", 10.3, 80.0)])
    out = tmp_path / "ex"
    cli_ok(capsys, ["extract", *mics, "--coords", tmp_path / "picks.star", "--ctf", tmp_path / "micrographs_ctf.star",
                    "--box", BOX, "-o", out, "--no-progress"])
    summary = read_metrics(out)
    assert summary["metrics"]["n_particles"] == 8 and summary["metrics"]["n_skipped_edge"] == 1
    assert summary["metrics"]["n_coordinates"] == 9
    assert {"particles.mrcs", "particles.star", "config.yaml", "run.log"} <= set(summary["files"])
    stack, apix = read_stack(out / "particles.mrcs")
    assert stack.shape == (8, BOX, BOX) and apix == pytest.approx(APIX)
    table = read_star(out / "particles.star")
    p = table.particles
    assert p["rlnImageName"].tolist() == [f"{i:06d}@particles.mrcs" for i in range(1, 9)]
    assert p["rlnMicrographName"].tolist() == ["MotionCorr/mic_0.mrc"] * 4 + ["MotionCorr/mic_1.mrc"] * 4
    np.testing.assert_allclose(p[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), ms.coords, atol=1e-5)
    ctf = table_ctf(table)
    for f in ("defocus_u", "defocus_v", "angle_ast", "voltage_kv", "cs_mm", "amp_contrast"):
        np.testing.assert_allclose(getattr(ctf, f).numpy(), getattr(ms.ctf, f).numpy()[ms.micrograph],
                                   rtol=1e-6, atol=1e-6)
    assert (p["rlnDefocusU"].iloc[:4] != p["rlnDefocusU"].iloc[4]).all()
    np.testing.assert_allclose(table.apix, APIX)
    assert (table.box == BOX).all() and (table.shifts_angst() == 0).all()
    for m in range(2):  # the stack is the method's boxes, micrograph by micrograph
        sel = ms.micrograph == m
        expect = extract_particles(ms.noisy[m], ms.coords[sel], BOX, APIX)
        np.testing.assert_allclose(stack[4 * m:4 * m + 4], expect.numpy(), atol=1e-5)
    write_poses_pkl(tmp_path / "poses.pkl", ms.rotations, np.zeros((8, 2)))
    cli_ok(capsys, ["backproject", out / "particles.star", "--poses", tmp_path / "poses.pkl", "-o", tmp_path / "bp",
                    "--no-half-maps", "--no-progress", "--device", "cpu"])
    assert read_metrics(tmp_path / "bp")["metrics"]["n_images"] == 8


def test_cli_phase_flip_bin_and_uncentred_origins(tmp_path, two_mics, capsys):
    """``--phase-flip`` uses each micrograph's own CTF (the boxes equal the method's with that CTF) and marks the
    optics; ``--bin 2`` halves the box and doubles the pixel size; ``--no-subpixel`` writes RELION origins
    ``−δ · apix`` (Å, micrograph pixels' δ) that backproject-style readers apply."""
    from conftest import cli_ok

    from cryoscape.io.mrc import read_stack
    from cryoscape.io.star import read_star

    ms = two_mics
    mics = _write_inputs(tmp_path, ms)
    out = tmp_path / "ex"
    cli_ok(capsys, ["extract", *mics, "-c", tmp_path / "picks.star", "--ctf", tmp_path / "micrographs_ctf.star",
                    "--box", BOX, "--bin", 2, "--phase-flip", "--no-subpixel", "-o", out, "--no-progress"])
    stack, apix = read_stack(out / "particles.mrcs")
    assert stack.shape == (8, BOX // 2, BOX // 2) and apix == pytest.approx(2 * APIX)
    for m in range(2):
        sel = ms.micrograph == m
        expect = extract_particles(ms.noisy[m], ms.coords[sel], BOX, APIX, bin=2, subpixel=False,
                                   phase_flip_ctf=ms.ctf.subset([m]))
        np.testing.assert_allclose(stack[4 * m:4 * m + 4], expect.numpy(), atol=1e-4)
        wrong = extract_particles(ms.noisy[m], ms.coords[sel], BOX, APIX, bin=2, subpixel=False,
                                  phase_flip_ctf=ms.ctf.subset([1 - m]))
        assert np.abs(stack[4 * m:4 * m + 4] - wrong.numpy()).max() > 0.1
    table = read_star(out / "particles.star")
    assert (table.particles["rlnCtfDataArePhaseFlipped"] == 1).all()
    np.testing.assert_allclose(table.shifts_angst(), -subpixel_residual(ms.coords) * APIX, atol=1e-5)
    from conftest import cli_fails  # our methods model the full CTF: a phase-flipped set is refused, not misread
    cli_fails(capsys, ["backproject", out / "particles.star", "-o", tmp_path / "map"], "phase-flipped")
    assert not (tmp_path / "map").exists()


def test_cli_per_micrograph_coordinate_files_and_pad(tmp_path, two_mics, capsys):
    """RELION per-micrograph coordinate STARs (one named ``<micrograph>_autopick.star``, as RELION's picker does)
    find their micrographs; no CTF file: no CTF columns; ``--pad`` keeps the box cut by the edge, filled with
    the micrograph's mean (before normalisation: ``--no-norm``)."""
    from conftest import cli_ok

    from cryoscape.io.coords import Coordinates, write_coordinates
    from cryoscape.io.mrc import read_stack
    from cryoscape.io.star import read_star
    from cryoscape.runs.folder import read_metrics

    ms = two_mics
    mics = _write_inputs(tmp_path, ms)
    xy1 = np.concatenate([ms.coords[ms.micrograph == 1], [[10.0, 80.0]]])
    write_coordinates(tmp_path / "mic_0.star", Coordinates.for_micrograph("mic_0", ms.coords[ms.micrograph == 0]),
                      "relion")
    write_coordinates(tmp_path / "mic_1_autopick.star", Coordinates.for_micrograph("x", xy1), "relion")
    out = tmp_path / "ex"
    cli_ok(capsys, ["extract", *mics, "-c", tmp_path / "mic_1_autopick.star", "-c", tmp_path / "mic_0.star",
                    "--box", BOX, "--pad", "--no-norm", "-o", out, "--no-progress"])
    metrics = read_metrics(out)["metrics"]
    assert metrics["n_particles"] == 9 and metrics["n_padded"] == 1 and metrics["n_skipped_edge"] == 0
    table = read_star(out / "particles.star")
    assert table.particles["rlnMicrographName"].tolist() == [str(mics[0])] * 4 + [str(mics[1])] * 5
    assert "rlnDefocusU" not in table.particles
    stack, _ = read_stack(out / "particles.mrcs")
    cut = stack[8]  # centre (10, 80): columns −22 .. −1 of the window lie outside
    np.testing.assert_allclose(cut[:, :BOX // 2 - 10], float(ms.noisy[1].double().mean()), rtol=1e-5)
    np.testing.assert_allclose(cut[:, BOX // 2 - 10:], ms.noisy[1][48:112, :BOX // 2 + 10].numpy(), atol=1e-5)
    # one micrograph and a file that does not name it (EMAN .box, named after something else): its picks
    write_coordinates(tmp_path / "picked.box", Coordinates.for_micrograph("y", ms.coords[ms.micrograph == 0]),
                      "eman", box=BOX)
    cli_ok(capsys, ["extract", mics[0], "-c", tmp_path / "picked.box", "--box", BOX, "-o", tmp_path / "one",
                    "--no-progress"])
    assert read_metrics(tmp_path / "one")["metrics"]["n_particles"] == 4


def test_match_micrograph_names():
    """Coordinate names → micrographs: folders and extensions dropped, RELION's ``_autopick`` suffix allowed."""
    from cryoscape.runs.extract import match_micrograph
    stems = ["mic_1", "mic_12", "a.b"]
    assert match_micrograph("Movies/mic_1.mrc", stems) == 0
    assert match_micrograph("mic_12_autopick", stems) == 1  # the longest name it starts with
    assert match_micrograph("mic_1_autopick.star", stems) == 0
    assert match_micrograph("a.b.mrc", stems) == 2
    assert match_micrograph("mic_2", stems) is None and match_micrograph("mic_123", stems) is None


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_cli_bad_input_one_line_nothing_written(tmp_path, two_mics, capsys):
    """Each bad input: exit 2, one line naming the problem, no run folder (nor its hidden working folder)."""
    from conftest import cli_fails

    from cryoscape.io.mrc import write_micrograph

    ms = two_mics
    mics = _write_inputs(tmp_path, ms)
    coords = tmp_path / "picks.star"
    out = tmp_path / "ex"
    base = ["extract", *mics, "--coords", coords, "-o", out, "--no-progress"]
    cli_fails(capsys, base + ["--box", 200], "smaller than the 200-px box")
    cli_fails(capsys, base + ["--box", BOX, "--phase-flip"], "--phase-flip")
    cli_fails(capsys, base + ["--box", BOX, "--bin", 3], "--bin")
    # one micrograph only: the picks of the other name an unknown micrograph
    cli_fails(capsys, ["extract", mics[0], "--coords", coords, "-o", out, "--box", BOX], "not among the 1 given")
    # a coordinate outside its micrograph
    (tmp_path / "far").mkdir()
    far = _write_inputs(tmp_path / "far", ms, extra=[("mic_0.mrc", 191.6, 20.0)])
    cli_fails(capsys, ["extract", *far, "--coords", tmp_path / "far" / "picks.star", "-o", out, "--box", BOX],
              "outside the 192 × 160")
    # NaN pixels
    img = ms.noisy[1].numpy().copy()
    img[5, 7] = np.nan
    write_micrograph(tmp_path / "nan" / "mic_1.mrc", img, APIX)
    cli_fails(capsys, ["extract", mics[0], tmp_path / "nan" / "mic_1.mrc", "--coords", coords, "-o", out,
                       "--box", BOX], "NaN")
    # mismatched pixel sizes: between micrographs, and between the micrographs and the CTF file
    write_micrograph(tmp_path / "other" / "mic_1.mrc", ms.noisy[1].numpy(), 2.5)
    cli_fails(capsys, ["extract", mics[0], tmp_path / "other" / "mic_1.mrc", "--coords", coords, "-o", out,
                       "--box", BOX], "pixel size 2.5 Å differs")
    (tmp_path / "ctf").mkdir()
    mics3 = _write_inputs(tmp_path / "ctf", ms, ctf_apix=1.5)
    cli_fails(capsys, ["extract", *mics3, "--coords", coords, "--ctf", tmp_path / "ctf" / "micrographs_ctf.star",
                       "-o", out, "--box", BOX], "differs from the micrographs' 2 Å")
    cli_fails(capsys, base + ["--box", BOX, "--apix", 3.0], "--apix")
    assert not out.exists() and not any(p.name.startswith(".ex") for p in tmp_path.iterdir())
