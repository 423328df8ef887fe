"""The learned picker (methods/pick/learned.py) and ``cryoscape pick``: checked against the micrograph
simulator's ground truth (true centres), and the network's window/map identity exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import cli_fails, cli_ok
from cryoscape.analysis.picking import picking_scores
from cryoscape.io.coords import Coordinates, read_coordinates, write_coordinates
from cryoscape.methods.pick.learned import (PickerConfig, PickerNet, _windows, fit_picker, pick_learned, prepare,
                                            score_map)

APIX = 3.0


@pytest.fixture(scope="module")
def field(adk):
    """Four 384² micrographs of AdK at 3 Å/px (radius ≈ 13.6 px), 40 particles each, SNR 0.1 over the field."""
    from cryoscape.data.micrographs import MicrographConfig, simulate_micrographs
    from cryoscape.data.simulate import AtomSource

    source = AtomSource(adk.coords, 3.0)
    ms = simulate_micrographs(source, MicrographConfig(size=384, apix=APIX, n_particles=40, snr=0.1, seed=5), 4)
    truth = [ms.coords[ms.micrograph == m] for m in range(4)]
    return ms.noisy.numpy(), truth, float(ms.radius_A)


def _scores(picks, truth, radius_px):
    names = lambda parts: np.concatenate([np.full(len(p), f"m{i}") for i, p in enumerate(parts)])  # noqa: E731
    p = Coordinates(names([a for a, _ in picks]), np.concatenate([a for a, _ in picks]),
                    np.concatenate([s for _, s in picks]))
    t = Coordinates(names(truth), np.concatenate(truth), None)
    return picking_scores(p, t, radius_px / 2)


def test_windows_give_exactly_the_map_logits():
    """A training window is the network's receptive field: its logit equals the whole-map logit at its centre,
    under every one of the 8 symmetries for a symmetric input, and strips equal one pass."""
    torch.manual_seed(0)
    net = PickerNet(8).eval()
    img = torch.randn(70, 90)
    full = score_map(net, img, strip_rows=512)
    assert torch.allclose(score_map(net, img, strip_rows=32), full, atol=1e-5)
    m = PickerNet.margin
    padded = torch.nn.functional.pad(img[None, None], (m, m, m, m), mode="reflect")[0, 0][None]
    cy, cx = torch.tensor([0, 13, 69, 40]), torch.tensor([0, 50, 89, 7])
    with torch.no_grad():
        z = net(_windows(padded, torch.zeros(4, dtype=torch.long), cy, cx, torch.zeros(4, dtype=torch.long)))
    assert torch.allclose(z.reshape(-1), full[cy, cx], atol=1e-5)
    sym = torch.tensor([1, 4, 6, 7])  # a rotated/transposed window of a symmetric image gives its own logit
    iso = torch.exp(-((torch.arange(60.0) - 30) ** 2)[:, None] / 50 - ((torch.arange(60.0) - 30) ** 2)[None] / 50)
    pad_iso = torch.nn.functional.pad(iso[None, None], (m, m, m, m), mode="reflect")[0, 0][None]
    c = torch.full((4,), 30)
    with torch.no_grad():
        zs = net(_windows(pad_iso, torch.zeros(4, dtype=torch.long), c, c, sym)).reshape(-1)
    assert torch.allclose(zs, score_map(net, iso)[30, 30].expand(4), atol=1e-5)


def test_prepare_flattens_the_background_and_scales_to_unit_noise():
    """Binning by k averages k² pixels; a linear ice gradient is removed and white noise comes out with a robust
    standard deviation of 1."""
    rng = np.random.default_rng(0)
    H, W = 600, 480
    yy, xx = np.mgrid[:H, :W]
    mic = rng.standard_normal((H, W)) + 0.01 * xx + 0.02 * yy
    cfg = PickerConfig(radius_A=36.0, radius_bin=6.0)
    img, k = prepare(mic, 2.0, cfg)
    assert k == 3 and img.shape == (200, 160)
    inner = img[30:-30, 30:-30].numpy()
    assert abs(np.median(inner)) < 0.05
    assert abs(1.4826 * np.median(np.abs(inner - np.median(inner))) - 1.0) < 0.05


def test_learned_picker_from_ten_labels_finds_the_particles(field):
    """Trained positive-unlabelled from 10 labelled particles on one micrograph (a short training), the picker
    ranks the particles of two other micrographs above everything else: AUPRC ≥ 0.9, precision ≥ 0.9 at 90 %
    recall, no duplicates; picks come best first and a threshold cuts that list."""
    noisy, truth, radius_A = field
    labels = [truth[0][:10], None, None, None]
    cfg = PickerConfig(radius_A=radius_A, epochs=4, steps_per_epoch=25, iterations=0, particles_per_micrograph=40,
                       threshold=-1e9)
    model, info = fit_picker(list(noisy), APIX, labels, cfg)
    assert info["n_labels"] == 10 and info["k"] == 2
    picks = [pick_learned(noisy[m], APIX, cfg, model=model) for m in (2, 3)]
    s = _scores(picks, [truth[2], truth[3]], radius_A / APIX)
    assert s["auprc"] >= 0.9 and s["precision_at_recall_90"] >= 0.9, s
    assert s["duplicate_share"] == 0.0
    xy, score = picks[0]
    assert np.all(np.diff(score) <= 0)  # sorted, best first
    cut = float(np.median(score))
    xy_cut, score_cut = pick_learned(noisy[2], APIX, PickerConfig(**{**cfg.__dict__, "threshold": cut}), model=model)
    assert np.all(score_cut > cut) and len(score_cut) == int((score > cut).sum())


def test_pick_cli_learned_then_reused_model_and_blob(field, tmp_path, capsys):
    """``cryoscape pick`` trains from a label file, scores itself against a truth file, and its model.pt picks the
    same particles when applied again; the blob picker runs on the same files."""
    from cryoscape.io.mrc import write_micrograph

    noisy, truth, radius_A = field
    files = []
    for m in range(3):
        files.append(tmp_path / f"mic_{m}.mrc")
        write_micrograph(files[-1], noisy[m], APIX)
    names = np.array([str(f) for f in files])
    write_coordinates(tmp_path / "truth.star", Coordinates(np.repeat(names, 40), np.concatenate(truth[:3]), None),
                      "relion-multi")
    write_coordinates(tmp_path / "labels.star", Coordinates(np.repeat(names[:1], 10), truth[0][:10], None),
                      "relion-multi")
    short = ["-p", "epochs=4", "-p", "steps_per_epoch=25", "-p", "iterations=0", "-p", "threshold=-1e9",
             "--no-progress"]
    cli_ok(capsys, ["pick", *files, "-o", tmp_path / "run", "--radius", radius_A, "--labels",
                    tmp_path / "labels.star", "--truth", tmp_path / "truth.star", "--format", "topaz", *short])
    run = tmp_path / "run"
    import json
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["n_labels"] == 10 and metrics["auprc"] > 0.85 and metrics["recall"] > 0.95, metrics
    picks = read_coordinates(run / "picks.star")
    assert sorted(set(picks.micrograph)) == sorted(names)
    assert (run / "model.pt").exists() and (run / "overlay" / "mic_0.png").exists()
    assert len(read_coordinates(run / "picks_topaz.txt")) == len(picks)
    cli_ok(capsys, ["pick", *files, "-o", tmp_path / "again", "--model", run / "model.pt", "--no-progress"])
    again = read_coordinates(tmp_path / "again" / "picks.star")
    np.testing.assert_allclose(again.xy, picks.xy, atol=1e-6)
    cli_ok(capsys, ["pick", *files, "-o", tmp_path / "blob", "-m", "blob", "--radius", radius_A,
                    "--truth", tmp_path / "truth.star", "--no-progress"])
    assert json.loads((tmp_path / "blob" / "metrics.json").read_text())["metrics"]["n_picks"] > 0


def test_pick_cli_bad_input(field, tmp_path, capsys):
    """One line, exit 2, nothing written: unknown picker, labels with blob, no labels or model, NaN pixels, a
    micrograph smaller than the window, a label outside the micrograph, a label file naming an unknown
    micrograph, a picker option that does not exist."""
    from cryoscape.io.mrc import write_micrograph

    noisy, truth, radius_A = field
    good = tmp_path / "good.mrc"
    write_micrograph(good, noisy[0], APIX)
    nan = noisy[1].copy()
    nan[5, 5] = np.nan
    write_micrograph(tmp_path / "nan.mrc", nan, APIX)
    write_micrograph(tmp_path / "small.mrc", noisy[0][:20, :20], APIX)
    write_coordinates(tmp_path / "outside.star", Coordinates(np.array([str(good)]), np.array([[500.0, 10.0]]), None),
                      "relion-multi")
    write_coordinates(tmp_path / "other.star", Coordinates(np.array(["elsewhere.mrc"]), np.array([[5.0, 10.0]]),
                                                           None), "relion-multi")
    write_coordinates(tmp_path / "labels.star", Coordinates(np.repeat(str(good), 5), truth[0][:5], None),
                      "relion-multi")
    out = tmp_path / "out"
    r = ["--radius", radius_A]
    cli_fails(capsys, ["pick", good, "-o", out, "-m", "magic", *r], "unknown picker")
    cli_fails(capsys, ["pick", good, "-o", out, "-m", "blob", *r, "--labels", tmp_path / "labels.star"], "only the")
    cli_fails(capsys, ["pick", good, "-o", out, *r], "needs either --labels")
    cli_fails(capsys, ["pick", tmp_path / "nan.mrc", "-o", out, "-m", "blob", *r], "NaN")
    cli_fails(capsys, ["pick", tmp_path / "small.mrc", "-o", out, *r, "-m", "blob"], "smaller")
    cli_fails(capsys, ["pick", good, "-o", out, *r, "--labels", tmp_path / "outside.star"], "outside")
    cli_fails(capsys, ["pick", good, "-o", out, *r, "--labels", tmp_path / "other.star"], "not among the inputs")
    cli_fails(capsys, ["pick", good, "-o", out, *r, "--labels", tmp_path / "labels.star", "-p", "wings=2"],
              "has no option")
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
