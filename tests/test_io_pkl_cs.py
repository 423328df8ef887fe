"""cryoDRGN pose/CTF pickles and cryoSPARC .cs tables.

Independent truths: the pickles opened with ``pickle`` directly; the pose convention checked by
projecting cryoDRGN's toy volume and comparing with cryoDRGN's own toy projections; the .cs file opened
with ``np.load`` and compared with the STAR file of the same particles.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cryoscape.data.particles import table_ctf
from cryoscape.io.cryodrgn_pkl import (poses_from_cryodrgn, poses_to_cryodrgn, read_ctf_pkl, read_poses_pkl,
                                       write_ctf_pkl, write_poses_pkl)
from cryoscape.io.cryosparc import read_cs
from cryoscape.io.errors import InputError
from cryoscape.io.mrc import read_map, read_stack
from cryoscape.io.star import read_star, write_star


def _raw_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _assert_rotations(rot):
    eye = np.broadcast_to(np.eye(3), rot.shape)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), eye, atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- cryoDRGN pickles


@pytest.mark.parametrize("name, n, has_trans", [("hand_rot_trans.pkl", 100, True), ("hand_rot.pkl", 100, False),
                                                ("toy_rot_trans.pkl", 1000, True),
                                                ("toy_angles.pkl", 1000, False)])
def test_shared_pose_pickles(cryodrgn_data, name, n, has_trans):
    path = cryodrgn_data / name
    rot, trans = read_poses_pkl(path)
    assert rot.shape == (n, 3, 3) and rot.dtype == np.float64
    _assert_rotations(rot)
    raw = _raw_pickle(path)
    if has_trans:
        assert trans.shape == (n, 2)
        np.testing.assert_array_equal(rot, np.asarray(raw[0], np.float64))
        np.testing.assert_array_equal(trans, np.asarray(raw[1], np.float64))
    else:
        assert trans is None
        np.testing.assert_array_equal(rot, np.asarray(raw, np.float64))


def test_shared_ctf_pickle_matches_star(cryodrgn_data):
    ctf = read_ctf_pkl(cryodrgn_data / "test_ctf.pkl")
    assert ctf.shape == (1000, 9)
    np.testing.assert_array_equal(ctf, np.asarray(_raw_pickle(cryodrgn_data / "test_ctf.pkl"), np.float64))
    # [D, apix, dfU, dfV, angle, kV, Cs, w, phase]: the toy projections' STAR says the same.
    t = read_star(cryodrgn_data / "toy_projections.star")
    p = t.particles
    assert (ctf[:, 0] == 30).all()  # the toy images are 30 px
    for col, name in ((2, "rlnDefocusU"), (3, "rlnDefocusV"), (4, "rlnDefocusAngle"), (5, "rlnVoltage"),
                      (6, "rlnSphericalAberration"), (7, "rlnAmplitudeContrast"), (8, "rlnPhaseShift")):
        np.testing.assert_allclose(ctf[:, col], p[name].to_numpy(dtype=float), rtol=1e-6, err_msg=name)


def test_pickle_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(20, 4))
    rot = torch.linalg.qr(torch.as_tensor(rng.normal(size=(20, 3, 3))))[0].numpy()
    rot *= np.sign(np.linalg.det(rot))[:, None, None]  # proper rotations
    trans = rng.uniform(-0.1, 0.1, size=(20, 2))
    write_poses_pkl(tmp_path / "poses.pkl", rot, trans)
    r2, t2 = read_poses_pkl(tmp_path / "poses.pkl")
    np.testing.assert_allclose(r2, rot, atol=1e-6)
    np.testing.assert_allclose(t2, trans, atol=1e-7)
    raw = _raw_pickle(tmp_path / "poses.pkl")  # cryoDRGN's layout: a tuple of two float32 arrays
    assert isinstance(raw, tuple) and raw[0].dtype == np.float32 and raw[1].shape == (20, 2)
    ctf = np.column_stack([np.full(20, 64), np.full(20, 1.5), 1e4 + q[:, :2] * 100, q[:, 2],
                           np.full(20, 300), np.full(20, 2.7), np.full(20, 0.1), np.zeros(20)])
    write_ctf_pkl(tmp_path / "ctf.pkl", ctf)
    np.testing.assert_allclose(read_ctf_pkl(tmp_path / "ctf.pkl"), ctf, rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctf.pkl", "poses.pkl"]


def test_pose_conversion_inverse():
    rng = np.random.default_rng(3)
    rot = np.tile(np.eye(3), (5, 1, 1))
    trans = rng.uniform(-0.2, 0.2, size=(5, 2))
    R, shifts = poses_from_cryodrgn(rot, trans, D=64, apix=1.5)
    np.testing.assert_allclose(np.abs(shifts), np.abs(trans) * 64 * 1.5)  # box fraction → Å
    r2, t2 = poses_to_cryodrgn(R, shifts, D=64, apix=1.5)
    np.testing.assert_allclose(r2, rot)
    np.testing.assert_allclose(t2, trans)
    _, zero = poses_from_cryodrgn(rot, None, D=64, apix=1.5)
    assert zero.shape == (5, 2) and not zero.any()


def test_pkl_translation_sign_matches_cryodrgn_star_parser():
    """cryoDRGN's ``parse_pose_star`` (ml-struct-bio/cryodrgn, cryodrgn/commands/parse_pose_star.py) turns
    a STAR origin into ``trans = (rlnOriginX/YAngst / apix) / D`` with no change of sign, so the pickle we
    write next to a STAR file must hold exactly that."""
    origin = np.array([[3.0, -1.5], [0.0, 4.5]])  # rlnOriginX/YAngst
    D, apix = 64, 1.5
    _, trans = poses_to_cryodrgn(np.tile(np.eye(3), (2, 1, 1)), origin, D, apix)
    np.testing.assert_allclose(trans, origin / apix / D)


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def test_bad_pickles(tmp_path):
    cases = {
        "rot_shape.pkl": np.zeros((4, 3, 2)),
        "trans_shape.pkl": (np.tile(np.eye(3), (4, 1, 1)), np.zeros((4, 3))),
        "trans_count.pkl": (np.tile(np.eye(3), (4, 1, 1)), np.zeros((5, 2))),
        "three.pkl": (np.tile(np.eye(3), (4, 1, 1)), np.zeros((4, 2)), np.zeros(4)),
        "nan.pkl": np.full((2, 3, 3), np.nan),
    }
    for name, obj in cases.items():
        path = _dump(tmp_path / name, obj)
        with pytest.raises(InputError) as ei:
            read_poses_pkl(path)
        assert str(path) in str(ei.value), name
    for obj in (np.zeros((4, 8)), np.zeros(9), np.full((2, 9), np.inf)):
        path = _dump(tmp_path / "ctf.pkl", obj)
        with pytest.raises(InputError, match="ctf.pkl"):
            read_ctf_pkl(path)
    text = tmp_path / "text.pkl"
    text.write_text("not a pickle\n")
    for reader in (read_poses_pkl, read_ctf_pkl):
        with pytest.raises(InputError, match="text.pkl"):
            reader(text)
        with pytest.raises(InputError, match="not found"):
            reader(tmp_path / "missing.pkl")


# --------------------------------------------------------------------------- the pose convention


def _pearson(a, b):
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def test_cryodrgn_rotation_is_our_pose_matrix(cryodrgn_data):
    """Project cryoDRGN's toy volume at its poses: our projector with R = rot reproduces its images."""
    from cryoscape.physics import FourierSliceProjector
    vol, apix = read_map(cryodrgn_data / "toymodel_small_nocenter.mrc")
    imgs, _ = read_stack(cryodrgn_data / "toy_projections.mrcs")
    rot, trans = read_poses_pkl(cryodrgn_data / "toy_rot_trans.pkl")
    D = vol.shape[0]
    assert imgs.shape == (1000, D, D)
    R, _ = poses_from_cryodrgn(rot, trans, D, apix or 1.0)  # the toy projections carry no shifts
    proj = FourierSliceProjector(torch.tensor(vol, dtype=torch.float64), apix=1.0)
    target = np.asarray(imgs, dtype=np.float64)
    good = _pearson(proj.project(torch.as_tensor(R)).numpy(), target)
    wrong = _pearson(proj.project(torch.as_tensor(R.transpose(0, 2, 1))).numpy(), target)
    assert good.mean() > 0.98, good.mean()
    assert good.min() > 0.9, good.min()
    assert wrong.mean() < 0.6, wrong.mean()  # the transposed convention would be far off


# --------------------------------------------------------------------------- cryoSPARC .cs


def test_read_cs_counts(cryodrgn_data):
    t = read_cs(cryodrgn_data / "cryosparc_P12_J24_001_particles.cs")
    raw = np.load(cryodrgn_data / "cryosparc_P12_J24_001_particles.cs")
    assert len(t) == 2019 and len(raw) == 2019
    p = t.particles
    assert len(t.optics) == 1
    assert t.optics["rlnVoltage"].iloc[0] == pytest.approx(200.0)
    assert t.optics["rlnImageSize"].iloc[0] == 180
    np.testing.assert_allclose(p["rlnDefocusU"], raw["ctf/df1_A"])
    np.testing.assert_allclose(p["rlnDefocusAngle"], np.degrees(raw["ctf/df_angle_rad"].astype(float)))
    names = [f"{int(i) + 1}@{s.decode()}" for i, s in zip(raw["blob/idx"], raw["blob/path"])]
    assert p["rlnImageName"].tolist() == names
    assert all(type(v) is str for v in p["rlnImageName"])
    # Poses kept raw, not turned into RELION angles (convention unverified).
    assert not t.has_poses()
    np.testing.assert_allclose(p[["csPoseRotvec0", "csPoseRotvec1", "csPoseRotvec2"]], raw["alignments3D/pose"])
    np.testing.assert_allclose(p[["csShiftX", "csShiftY"]], raw["alignments3D/shift"])
    table_ctf(t)  # every CTF column is there


def test_read_cs_agrees_with_star(cryodrgn_data):
    cs = read_cs(cryodrgn_data / "empiar_10076_7.cs")
    st = read_star(cryodrgn_data / "empiar_10076_7.star")
    assert len(cs) == 7 and len(st) == 7
    ci, cp = cs.image_locations()
    si, sp = st.image_locations()
    order = np.argsort(ci)
    np.testing.assert_array_equal(ci[order], si)  # the same particles (by image index) ...
    assert list(cp[order]) == list(sp)            # ... in the same stack
    c, s = cs.particles.iloc[order].reset_index(drop=True), st.particles
    for col in ("rlnDefocusU", "rlnDefocusV"):  # float32 in the .cs, 1 decimal in the STAR
        np.testing.assert_allclose(c[col], s[col], atol=0.01, err_msg=col)
    np.testing.assert_allclose(c["rlnDefocusAngle"], s["rlnDefocusAngle"], atol=1e-4)
    for col in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
        np.testing.assert_allclose(c[col], s[col], rtol=1e-6, err_msg=col)
    np.testing.assert_allclose(cs.apix[order], st.apix, rtol=1e-5)
    assert cs.apix == pytest.approx(np.full(7, 1.31), abs=1e-3)
    assert (cs.box == 320).all()
    stack, _ = read_stack(cp[0])
    assert stack.shape[1] == cs.box[0]  # the header agrees with blob/shape


def _cs_array(n=3, path_prefix=">J7/imported/", extra=()):
    fields = [("uid", "<u8"), ("blob/path", "S40"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
              ("blob/psize_A", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
              ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"),
              ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4"), *extra]
    a = np.zeros(n, dtype=fields)
    a["uid"] = np.arange(n) + 10
    a["blob/path"] = [f"{path_prefix}stack{i % 2}.mrcs".encode() for i in range(n)]
    a["blob/idx"] = np.arange(n)
    a["blob/shape"] = 64
    a["blob/psize_A"] = 1.5
    a["ctf/accel_kv"], a["ctf/cs_mm"], a["ctf/amp_contrast"] = 300, 2.7, 0.1
    a["ctf/df1_A"], a["ctf/df2_A"] = 12000, 11000
    a["ctf/df_angle_rad"] = np.pi / 4
    a["ctf/phase_shift_rad"] = np.pi / 2
    return a


def _save_cs(path, arr):
    with open(path, "wb") as f:  # np.save(name) would append ".npy"
        np.save(f, arr)
    return path


def test_read_cs_synthetic(tmp_path):
    path = _save_cs(tmp_path / "p.cs", _cs_array())
    t = read_cs(path)
    p = t.particles
    assert p["rlnImageName"].tolist() == ["1@J7/imported/stack0.mrcs", "2@J7/imported/stack1.mrcs",
                                          "3@J7/imported/stack0.mrcs"]
    np.testing.assert_allclose(p["rlnDefocusAngle"], 45.0, rtol=1e-6)
    np.testing.assert_allclose(p["rlnPhaseShift"], 90.0, rtol=1e-6)
    assert "rlnCtfBfactor" not in p  # absent field, absent column
    assert (p["rlnOpticsGroup"] == 1).all() and len(t.optics) == 1
    with pytest.raises(InputError, match="--datadir"):
        t.image_locations()
    t2 = read_cs(path, datadir=tmp_path / "")
    assert t2.particles["rlnImageName"].iloc[1] == f"2@{tmp_path / 'J7/imported/stack1.mrcs'}"
    with pytest.raises(InputError, match="datadir"):
        read_cs(path, datadir=tmp_path / "no_such_dir")
    # Written to STAR and read back: the same numbers.
    write_star(tmp_path / "p.star", t.particles, t.optics)
    back = read_star(tmp_path / "p.star")
    for col in ("rlnDefocusU", "rlnDefocusAngle", "rlnPhaseShift", "rlnImagePixelSize", "rlnVoltage"):
        np.testing.assert_allclose(back.particles[col], p[col], atol=1e-5, err_msg=col)
    assert back.particles["rlnImageName"].tolist() == p["rlnImageName"].tolist()


def test_read_cs_optics_groups_split_on_different_optics(tmp_path):
    a = _cs_array(4, extra=[("ctf/bfactor", "<f4")])
    a["blob/psize_A"][2:] = 2.0
    a["ctf/bfactor"] = 50
    t = read_cs(_save_cs(tmp_path / "two.cs", a))
    assert t.particles["rlnOpticsGroup"].tolist() == [1, 1, 2, 2]
    np.testing.assert_allclose(t.optics["rlnImagePixelSize"], [1.5, 2.0])
    np.testing.assert_allclose(t.particles["rlnCtfBfactor"], 50)


def test_read_cs_bad_input(tmp_path):
    def check(path, *words):
        with pytest.raises(InputError) as ei:
            read_cs(path)
        msg = str(ei.value)
        assert str(path) in msg and "\n" not in msg, msg
        for w in words:
            assert w in msg, msg

    check(tmp_path / "missing.cs", "not found")
    check(tmp_path, "folder")
    text = tmp_path / "text.cs"
    text.write_text("uid,blob/path\n1,a.mrcs\n")
    check(text)
    check(_save_cs(tmp_path / "plain.cs", np.zeros((3, 4))), "structured")
    no_blob = _cs_array()[["uid", "ctf/df1_A"]]
    check(_save_cs(tmp_path / "noblob.cs", np.asarray(no_blob)), "blob/path")
    pickled = tmp_path / "pickled.cs"
    with open(pickled, "wb") as f:
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    check(pickled)
    empty = _cs_array(0)
    check(_save_cs(tmp_path / "empty.cs", empty), "no particles")
    nan = _cs_array()
    nan["ctf/df1_A"][1] = np.nan
    check(_save_cs(tmp_path / "nan.cs", nan), "rlnDefocusU")
