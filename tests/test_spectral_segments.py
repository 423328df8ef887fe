"""The spectral models on segmented models (several chains, missing loops): exact round trips per segment,
no bond term across a gap, motions of one chain that leave the other alone, and fits from clean images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscape.analysis.pointcloud import segment_errors
from cryoscape.geometry import random_rotations
from cryoscape.methods.spectral import CartesianModel, FitConfig, fit_model, refine_cartesian, render_particles
from cryoscape.methods.spectral.model import SegmentedAngleModel, segment_dct_basis, segment_modes
from cryoscape.structure.segments import find_segments


def _gapped(adk, frames=(0,)):
    """AdK without residues 120–129: ``(coords (F, 204, 3) centred on frame 0, segments)``."""
    keep = ~((adk.resids >= 120) & (adk.resids <= 129))
    x = adk.coords[list(frames)][:, keep]
    x = x - x[0].mean(0)
    return x, find_segments(x, adk.chains[keep], adk.resids[keep])


def _dimer(adk, frames=(0,), gap_A=60.0):
    """Two AdK copies side by side (chain B shifted ``gap_A`` along x): ``(coords (F, 428, 3), segments)``."""
    x = adk.coords[list(frames)]
    x = np.concatenate([x, x + np.array([gap_A, 0.0, 0.0])], 1)
    x = x - x[0].mean(0)
    chains = np.array(["A"] * adk.n_atoms + ["B"] * adk.n_atoms)
    return x, find_segments(x, chains, np.concatenate([adk.resids, adk.resids]))


@pytest.mark.parametrize("build", [_gapped, _dimer])
def test_angle_model_rebuilds_every_segment_exactly(adk, build):
    """With zero coefficients the segmented angle model rebuilds the reference (< 1e-3 Å; here ~1e-13), and with
    the anchor of a rotated and moved copy it rebuilds that copy: the links are rigid, in the primary frame."""
    from cryoscape.geometry import random_rotations
    from cryoscape.structure import chain_to_internal
    x, segs = build(adk)
    assert len(segs) == 2
    ref = torch.as_tensor(x[0])
    model = SegmentedAngleModel(ref, segs, 3, 0.05)
    v = torch.randn(5, 3, dtype=torch.float64) * 0.05
    with torch.no_grad():
        assert float((model(v) - ref).norm(dim=-1).max()) < 1e-3
        Q = random_rotations(1, torch.Generator().manual_seed(1), dtype=torch.float64)[0]
        moved = ref @ Q.T + torch.tensor([3.0, -2.0, 5.0], dtype=torch.float64)
        p = segs[model.primary]
        anchor = chain_to_internal(moved[p.atoms][None], ref=model.ref_index[model.primary])
        rebuilt = model(v[:1], anchor.ref_pos, anchor.ref_frame)
    assert float((rebuilt[0] - moved).norm(dim=-1).max()) < 1e-3


def test_no_bond_term_across_a_gap_or_between_chains(adk):
    """Moving one chain of the dimer rigidly away changes no bond inside a segment: the bond penalty stays 0;
    stretching a bond inside a chain is penalised."""
    x, segs = _dimer(adk)
    ref = torch.as_tensor(x[0])
    model = CartesianModel(ref, 1, 1.0, 20, bond_weight=1.0, segments=segs)
    moved = ref.clone()
    moved[segs[1].atoms] += torch.tensor([25.0, 0.0, 0.0], dtype=torch.float64)
    assert float(model.regulariser(moved[None])) < 1e-20
    unsegmented = CartesianModel(ref, 1, 1.0, 20, bond_weight=1.0)
    assert float(unsegmented.regulariser(moved[None])) > 0  # the old model would have tied the chains
    stretched = ref.clone()
    stretched[10:] += torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    stretched[segs[1].atoms] = ref[segs[1].atoms]
    assert float(model.regulariser(stretched[None])) > 0


def test_segment_basis_keeps_segments_apart_and_nests(adk):
    """The per-segment cosine basis: orthonormal, zero outside its segment, a rigid shift of one chain is in
    its span exactly; per chain about m cosines shared by length; refining keeps the displacement."""
    x, segs = _gapped(adk)
    assert segment_modes(segs, 20) == [(20 * len(s)) // 204 for s in segs]
    xd, dsegs = _dimer(adk)
    assert segment_modes(dsegs, 20) == [20, 20]
    B = segment_dct_basis(dsegs, 20)
    torch.testing.assert_close(B.T @ B, torch.eye(B.shape[1], dtype=B.dtype), atol=1e-12, rtol=0)
    shift = torch.zeros(428, 3, dtype=torch.float64)
    shift[214:] = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    d = shift.reshape(-1)
    torch.testing.assert_close(B @ (B.T @ d), d, atol=1e-12, rtol=0)
    first = B[: 3 * 214, B[: 3 * 214].abs().sum(0) > 0]
    assert first.shape[1] == 60 and float(B[3 * 214:, : 60].abs().max()) == 0.0
    turned = CartesianModel(torch.as_tensor(xd[0]), 1, 1.0, 20, segments=dsegs).basis
    assert turned.shape[1] == 126  # with three rotations per chain
    rot = torch.zeros(428, 3, dtype=torch.float64)
    rot[214:] = torch.cross(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(214, 3),
                            torch.as_tensor(xd[0][214:] - xd[0][214:].mean(0)), dim=-1)
    r = rot.reshape(-1)
    torch.testing.assert_close(turned @ (turned.T @ r), r, atol=1e-10, rtol=0)
    coarse = CartesianModel(torch.as_tensor(xd[0]), 2, 0.1, 20, segments=dsegs)
    with torch.no_grad():
        coarse.gamma.normal_(generator=torch.Generator().manual_seed(0))
    fine = refine_cartesian(coarse, 60)
    v = torch.randn(4, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fine(v), coarse(v), atol=1e-12, rtol=0)


def _images(coords, D=40, apix=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    R = random_rotations(len(coords), g, dtype=torch.float64)
    offsets = torch.zeros(len(coords), 2, dtype=torch.float64)
    with torch.no_grad():
        images = render_particles(coords, R, offsets, None, 3.0, D, apix)
    return images, R, offsets


@pytest.mark.parametrize("kind", ["cartesian", "angles"])
def test_fit_moves_one_chain_and_leaves_the_other(adk, kind):
    """Clean images of the dimer with chain B rotated about its centre by s · 8° and shifted by s · 3 Å while
    chain A stays: from the reference (s = 0) the fit recovers chain B's motion (per-chain errors)."""
    x, segs = _dimer(adk)
    ref = torch.as_tensor(x[0])
    N = 120
    g = torch.Generator().manual_seed(2)
    s = torch.rand(N, 1, generator=g, dtype=torch.float64) * 2 - 1
    b = ref[segs[1].atoms]
    centre = b.mean(0)
    angle = s[:, 0] * np.deg2rad(8.0)
    c, sn = torch.cos(angle), torch.sin(angle)
    Rz = torch.zeros(N, 3, 3, dtype=torch.float64)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -sn, sn, c, 1.0
    coords = ref.expand(N, -1, -1).clone()
    coords[:, segs[1].atoms] = (b - centre) @ Rz.transpose(1, 2) + centre + s[:, :, None] * torch.tensor(
        [0.0, 3.0, 0.0], dtype=torch.float64)
    images, R, offsets = _images(coords)
    train, test = slice(0, 100), slice(100, N)
    rms = float(s.pow(2).mean().sqrt())
    if kind == "cartesian":
        model = CartesianModel(ref, 1, rms, 6, segments=segs)
        cfg = FitConfig(epochs=40, batch_size=25, lr=0.3, optimizer="adam")
    else:
        model = SegmentedAngleModel(ref, segs, 1, rms)
        cfg = FitConfig(epochs=40, batch_size=25, lr=0.01, optimizer="adam")
    with torch.no_grad():
        before = segment_errors(model(s[test]), coords[test], segs)["per_chain"]
    fit_model(model, s[train], images[train], R[train], offsets[train], None, 40, 4.0, cfg)
    with torch.no_grad():
        after = segment_errors(model(s[test]), coords[test], segs)["per_chain"]
    assert before["A"] < 1e-9 and before["B"] > 1.0
    assert after["B"] < 0.25 * before["B"], (before, after)
    assert after["A"] < 0.3, (before, after)


def test_segment_errors_on_known_displacements():
    """Chain A moved by 1 Å, the second segment of chain B by 3 Å, its first not at all."""
    from cryoscape.structure.segments import Segment
    segs = [Segment("A", 0, 4, 1, 4), Segment("B", 4, 7, 1, 3), Segment("B", 7, 10, 6, 8)]
    true = torch.zeros(2, 10, 3, dtype=torch.float64)
    pred = true.clone()
    pred[:, 0:4, 0] = 1.0
    pred[:, 7:10, 1] = 3.0
    out = segment_errors(pred, true, segs)
    assert out["per_chain"] == pytest.approx({"A": 1.0, "B": 1.5})
    assert [p["avg_error_A"] for p in out["per_segment"]] == pytest.approx([1.0, 0.0, 3.0])
    assert out["per_segment"][2]["first_resid"] == 6


def _cli(capsys, argv) -> None:
    """``cryoscape ARGV`` in this process; it must exit 0."""
    from cryoscape.cli.main import main
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code in (0, None), capsys.readouterr().err


def test_dimer_through_simulate_and_spectral_keeps_its_chains(adk, tmp_path, capsys):
    """Two AdK copies written as a PDB go through `cryoscape simulate` (truth/models.pdb keeps two chains, all
    atoms) and `cryoscape spectral` (two chains, two segments; per-chain errors that improve; models.pdb reads
    back with both chains)."""
    import json

    from cryoscape.io.models import Conformations, read_model, write_pdb
    x, segs = _dimer(adk, frames=range(0, 102, 6), gap_A=55.0)
    conf = Conformations(x, np.concatenate([adk.names] * 2), np.concatenate([adk.resnames] * 2),
                         np.concatenate([adk.resids] * 2), np.array(["A"] * 214 + ["B"] * 214),
                         np.concatenate([adk.elements] * 2), "dimer")
    write_pdb(tmp_path / "dimer.pdb", conf)

    _cli(capsys, ["simulate", tmp_path / "dimer.pdb", "-n", "150", "--box", "48", "--apix", "3.5", "--snr", "1",
         "--no-progress", "-o", tmp_path / "sim"])
    truth = read_model(tmp_path / "sim" / "truth" / "models.pdb")
    assert truth.n_atoms == 428 and len(set(truth.chains)) == 2
    _cli(capsys, ["spectral", tmp_path / "sim" / "particles.star", "--reference", tmp_path / "dimer.pdb",
                  "--truth-models",
         tmp_path / "sim" / "truth" / "models.pdb", "--features", "oracle", "--epochs", 20, "--refine-modes", 0,
         "--test-fraction", 0.2,
         "--no-progress", "-o", tmp_path / "sp"])
    m = json.loads((tmp_path / "sp" / "metrics.json").read_text())["metrics"]
    assert m["n_chains"] == 2 and m["n_segments"] == 2 and m["n_atoms"] == 428
    errors = json.loads((tmp_path / "sp" / "errors.json").read_text())
    before, after = errors["test_initial"]["per_chain"], errors["test_trained"]["per_chain"]
    assert set(after) == {"A", "B"} and len(errors["test_trained"]["per_segment"]) == 2
    assert all(after[c] < before[c] for c in "AB"), (before, after)
    models = read_model(tmp_path / "sp" / "models.pdb")
    assert models.n_atoms == 428 and list(dict.fromkeys(models.chains)) == ["A", "B"]


def test_more_chains_than_a_pdb_holds_go_through_mmcif(adk, tmp_path, capsys):
    """70 five-residue chains (cut from AdK, so bonds are real): `simulate` writes truth/models.cif, and
    `spectral` reads it, fits 70 segments and writes models.cif that reads back with 70 chains."""
    import json

    from cryoscape.io.models import Conformations, read_model, write_cif
    n_chains, per = 70, 3
    frames = np.arange(0, 102, 10)
    x = np.concatenate([adk.coords[frames][:, 2 * i:2 * i + per] + np.array([0.0, 0.0, 0.5 * i])
                        for i in range(n_chains)], 1)
    x = x - x[0].mean(0)
    idx = np.concatenate([np.arange(2 * i, 2 * i + per) for i in range(n_chains)])
    chains = np.array([f"C{i}" for i in range(n_chains) for _ in range(per)])
    conf = Conformations(x, adk.names[idx], adk.resnames[idx], adk.resids[idx], chains, adk.elements[idx], "chains")
    write_cif(tmp_path / "many.cif", conf)

    _cli(capsys, ["simulate", tmp_path / "many.cif", "-n", "60", "--box", "48", "--apix", "3.0", "--snr", "1",
         "--no-progress", "-o", tmp_path / "sim"])
    truth = tmp_path / "sim" / "truth" / "models.cif"
    assert truth.exists() and not (tmp_path / "sim" / "truth" / "models.pdb").exists()
    assert len(dict.fromkeys(read_model(truth).chains)) == n_chains
    _cli(capsys, ["spectral", tmp_path / "sim" / "particles.star", "--reference", tmp_path / "many.cif",
                  "--truth-models",
         truth, "--epochs", 1, "--refine-modes", 0, "--no-progress", "-o", tmp_path / "sp"])
    assert json.loads((tmp_path / "sp" / "metrics.json").read_text())["metrics"]["n_chains"] == n_chains
    models = read_model(tmp_path / "sp" / "models.cif")
    assert models.n_frames == 60 and len(dict.fromkeys(models.chains)) == n_chains


def test_variability_crop_keeps_the_pixel_for_any_box():
    """AdK's measured setting (64 px of 1.822 Å → 32 px for 10 Å features) is kept for larger boxes: the crop's
    pixel stays ≤ 0.365 × 10 Å, and never beyond the image's own box."""
    from cryoscape.methods.spectral.run import variability_box
    assert variability_box(64, 1.822, 10.0) == 32
    for D, apix in ((112, 1.822), (128, 1.822), (96, 2.6), (48, 2.5)):
        box = variability_box(D, apix, 10.0)
        assert box % 2 == 0 and D * apix / box <= 3.65 + 1e-9 and D * apix / (box - 2) > 3.65
    assert variability_box(20, 5.0, 10.0) == 20  # coarser than the features need: no crop
