"""MRC maps and stacks: round trips, chunked atomic writing, bad input, and the shared third-party files.

The independent truth is the raw file: the 1024-byte header decoded with numpy (sizes, mode, cell,
statistics) and the data block read with ``np.fromfile`` at its offset.
"""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from cryoscape.io.errors import InputError
from cryoscape.io.mrc import StackWriter, read_header_apix, read_map, read_stack, write_map, write_stack


def _raw(path):
    """Decode an MRC file by hand: header words, data array (nz, ny, nx), voxel size, map id."""
    head = np.fromfile(path, dtype="<i4", count=256)
    fhead = np.fromfile(path, dtype="<f4", count=256)
    assert 0 < head[0] < 100_000, "test helper assumes little-endian files"
    nx, ny, nz, mode = (int(v) for v in head[:4])
    mx = int(head[7])
    cella_x = float(fhead[10])
    nsymbt = int(head[23])
    dtype = {0: np.int8, 1: "<i2", 2: "<f4", 6: "<u2", 12: "<f2"}[mode]
    data = np.fromfile(path, dtype=dtype, offset=1024 + nsymbt, count=nx * ny * nz).reshape(nz, ny, nx)
    with open(path, "rb") as f:
        f.seek(208)
        map_id = f.read(4)
    stats = dict(dmin=float(fhead[19]), dmax=float(fhead[20]), dmean=float(fhead[21]), rms=float(fhead[54]))
    return dict(data=data, apix=cella_x / mx if mx > 0 else 0.0, map_id=map_id, stats=stats,
                origin=tuple(float(v) for v in fhead[49:52]), ispg=int(head[22]))


def _no_leftovers(folder, keep=()):
    left = sorted(p.name for p in folder.iterdir() if p.name not in keep)
    assert left == [], f"unexpected files left in {folder}: {left}"


# --------------------------------------------------------------------------- round trips


def test_map_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(12, 12, 12)).astype(np.float32)
    path = tmp_path / "vol.mrc"
    write_map(path, vol, apix=1.7)
    back, apix = read_map(path)
    assert back.shape == (12, 12, 12) and back.dtype == np.float32
    np.testing.assert_array_equal(back, vol)
    assert apix == pytest.approx(1.7, rel=1e-6)
    assert read_header_apix(path) == pytest.approx(1.7, rel=1e-6)
    raw = _raw(path)  # the bytes on disk say the same
    np.testing.assert_array_equal(raw["data"], vol)
    assert raw["apix"] == pytest.approx(1.7, rel=1e-6)
    assert raw["origin"] == (0.0, 0.0, 0.0)
    assert raw["map_id"] == b"MAP "
    _no_leftovers(tmp_path, keep={"vol.mrc"})


def test_stack_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.normal(size=(7, 10, 10)).astype(np.float32)
    path = tmp_path / "imgs.mrcs"
    write_stack(path, imgs, apix=2.25)
    for mmap in (True, False):
        back, apix = read_stack(path, mmap=mmap)
        assert back.shape == (7, 10, 10)
        np.testing.assert_array_equal(np.asarray(back), imgs)
        assert apix == pytest.approx(2.25, rel=1e-6)
    raw = _raw(path)
    np.testing.assert_array_equal(raw["data"], imgs)
    assert raw["ispg"] == 0  # marked as an image stack
    with mrcfile.open(path) as m:  # a third reader agrees
        assert m.is_image_stack()
        np.testing.assert_array_equal(m.data, imgs)


def test_read_map_returns_writable_array(tmp_path):
    path = tmp_path / "w.mrc"
    write_map(path, np.zeros((4, 4, 4), np.float32), 1.0)
    vol, _ = read_map(path)
    vol += 1.0  # e.g. normalising a map in place
    assert (vol == 1.0).all()


def test_single_image_reads_as_stack_of_one(tmp_path):
    img = np.arange(64, dtype=np.float32).reshape(8, 8)
    path = tmp_path / "one.mrc"
    with mrcfile.new(path) as m:
        m.set_data(img)
    back, _ = read_stack(path)
    assert back.shape == (1, 8, 8)
    np.testing.assert_array_equal(back[0], img)


# --------------------------------------------------------------------------- StackWriter


def test_stack_writer_chunks_and_header_stats(tmp_path):
    rng = np.random.default_rng(2)
    n, D = 11, 9
    data = (3.0 + 2.0 * rng.normal(size=(n, D, D))).astype(np.float32)
    path = tmp_path / "chunked.mrcs"
    with StackWriter(path, n=n, D=D, apix=1.25) as w:
        for lo, hi in ((0, 4), (4, 5), (5, 11)):
            w.write(data[lo:hi])
        assert not path.exists()  # appears only on clean exit
    back, apix = read_stack(path)
    np.testing.assert_array_equal(np.asarray(back), data)
    assert apix == pytest.approx(1.25, rel=1e-6)
    raw = _raw(path)
    np.testing.assert_array_equal(raw["data"], data)
    d64 = data.astype(np.float64)
    st = raw["stats"]
    assert st["dmin"] == pytest.approx(d64.min(), rel=1e-6)
    assert st["dmax"] == pytest.approx(d64.max(), rel=1e-6)
    assert st["dmean"] == pytest.approx(d64.mean(), rel=1e-5)
    assert st["rms"] == pytest.approx(d64.std(), rel=1e-5)  # MRC rms = standard deviation from the mean
    assert raw["ispg"] == 0
    _no_leftovers(tmp_path, keep={"chunked.mrcs"})


def test_stack_writer_exception_leaves_nothing(tmp_path):
    path = tmp_path / "broken.mrcs"
    with pytest.raises(RuntimeError, match="boom"):
        with StackWriter(path, n=4, D=8, apix=1.0) as w:
            w.write(np.ones((2, 8, 8), np.float32))
            raise RuntimeError("boom")
    assert not path.exists()
    _no_leftovers(tmp_path)


def test_stack_writer_incomplete_leaves_nothing(tmp_path):
    path = tmp_path / "short.mrcs"
    with pytest.raises(ValueError, match="wrote 3 of 5"):
        with StackWriter(path, n=5, D=6, apix=1.0) as w:
            w.write(np.zeros((3, 6, 6), np.float32))
    assert not path.exists()
    _no_leftovers(tmp_path)


def test_stack_writer_rejects_overflow_and_bad_shape(tmp_path):
    path = tmp_path / "x.mrcs"
    with pytest.raises(ValueError):
        with StackWriter(path, n=2, D=6, apix=1.0) as w:
            w.write(np.zeros((3, 6, 6), np.float32))
    with pytest.raises(ValueError):
        with StackWriter(path, n=2, D=6, apix=1.0) as w:
            w.write(np.zeros((2, 5, 5), np.float32))
    _no_leftovers(tmp_path)


# --------------------------------------------------------------------------- bad input


def _assert_input_error(fn, path):
    with pytest.raises(InputError) as ei:
        fn(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("reader", [read_map, read_stack, read_header_apix])
def test_missing_file_and_folder(tmp_path, reader):
    _assert_input_error(reader, tmp_path / "nope.mrc")
    _assert_input_error(reader, tmp_path)


def test_truncated_file(tmp_path):
    path = tmp_path / "trunc.mrcs"
    write_stack(path, np.ones((4, 16, 16), np.float32), apix=1.0)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) - 16 * 16 * 4])  # one image short
    for reader in (read_stack, read_map):
        msg = _assert_input_error(reader, path)
        assert "truncated" in msg
    path.write_bytes(full[:600])  # not even a header
    _assert_input_error(read_stack, path)


def test_text_file_is_not_mrc(tmp_path):
    path = tmp_path / "notes.mrc"
    path.write_text("this is not an MRC file\n" * 200)  # > 1024 bytes of text
    for reader in (read_map, read_stack):
        _assert_input_error(reader, path)
    short = tmp_path / "short.mrcs"
    short.write_text("hello")
    _assert_input_error(read_stack, short)


def test_unrelated_warnings_during_the_open_do_not_reject_a_valid_file(tmp_path, monkeypatch):
    """A warning from elsewhere that fires while mrcfile opens the file (a lazy import, a finaliser run by
    the garbage collector, even an earlier mrcfile object flushing its statistics) says nothing about this
    file: the file still reads, and the warning is not raised. mrcfile's own complaints still count."""
    import warnings

    import cryoscape.io.mrc as mrc_io
    path = tmp_path / "ok.mrcs"
    write_stack(path, np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8), apix=1.5)
    real_mmap = mrcfile.mmap

    def noisy_mmap(*args, **kwargs):
        warnings.warn("something else", RuntimeWarning)       # from this test module, not mrcfile
        warnings.warn("an old API", DeprecationWarning)
        warnings.warn("Data array contains NaN values", RuntimeWarning)  # as if flushed by another object
        return real_mmap(*args, **kwargs)

    monkeypatch.setattr(mrc_io.mrcfile, "mmap", noisy_mmap)
    data, apix = read_stack(path)
    assert apix == pytest.approx(1.5) and float(np.asarray(data)[1, 7, 7]) == 127.0
    # a real problem reported by mrcfile itself is still an error
    raw = bytearray(path.read_bytes())
    raw[-8 * 8 * 4:] = b""  # one image short: truncated
    bad = tmp_path / "bad.mrcs"
    bad.write_bytes(bytes(raw))
    _assert_input_error(read_stack, bad)


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_nonfinite_map_rejected(tmp_path):
    vol = np.zeros((4, 4, 4), np.float32)
    vol[1, 2, 3] = np.nan
    path = tmp_path / "nan.mrc"
    write_map(path, vol, 1.0)
    _assert_input_error(read_map, path)


# --------------------------------------------------------------------------- shared third-party files

SHARED_MRC = {  # name: (shape, map id present)
    "empiar_10076_7.mrc": ((7, 320, 320), True),
    "hand-vol.mrc": ((64, 64, 64), True),
    "hand.mrcs": ((100, 64, 64), True),
    "relion31.mrcs": ((5, 256, 256), False),
    "spike-vol.mrc": ((128, 16, 16), True),
    "toy_images_a.mrcs": ((100, 30, 30), True),
    "toy_images_b.mrcs": ((900, 30, 30), True),
    "toy_projections.mrcs": ((1000, 30, 30), False),
    "toymodel_small_nocenter.mrc": ((30, 30, 30), True),
}


def test_every_shared_mrc_loads(cryodrgn_data):
    files = sorted(p.name for p in cryodrgn_data.iterdir() if p.suffix in (".mrc", ".mrcs"))
    assert files == sorted(SHARED_MRC), "the shared folder changed: update SHARED_MRC"
    for name in files:
        path = cryodrgn_data / name
        raw = _raw(path)
        shape, has_id = SHARED_MRC[name]
        assert raw["data"].shape == shape, name
        assert (raw["map_id"] == b"MAP ") == has_id, name
        stack, apix = read_stack(path)
        assert stack.shape == shape, name
        np.testing.assert_array_equal(np.asarray(stack), raw["data"], err_msg=name)
        assert apix == pytest.approx(raw["apix"], rel=1e-6), name
        if name.endswith(".mrc"):
            vol, apix = read_map(path)
            assert vol.dtype == np.float32
            np.testing.assert_array_equal(vol, raw["data"], err_msg=name)


@pytest.mark.parametrize("name", ["toy_projections.mrcs", "relion31.mrcs"])
def test_files_without_map_id_still_load(cryodrgn_data, name):
    path = cryodrgn_data / name
    assert _raw(path)["map_id"] != b"MAP "  # the case under test really is in the file
    with pytest.raises(ValueError):  # strict mrcfile refuses it ...
        mrcfile.open(path, permissive=False).close()
    stack, apix = read_stack(path)  # ... we accept it
    assert stack.shape == SHARED_MRC[name][0]
    assert np.isfinite(np.asarray(stack[:10])).all()


def test_micrograph_round_trip_and_refusals(tmp_path):
    from cryoscape.io.mrc import read_micrograph, write_micrograph

    img = np.random.default_rng(0).normal(size=(30, 52)).astype(np.float32)  # not square
    write_micrograph(tmp_path / "m.mrc", img, 1.25)
    back, apix = read_micrograph(tmp_path / "m.mrc")
    assert np.array_equal(back, img) and apix == pytest.approx(1.25)
    write_stack(tmp_path / "s.mrcs", np.zeros((3, 8, 8), np.float32), 1.0)
    with pytest.raises(InputError, match="one micrograph"):
        read_micrograph(tmp_path / "s.mrcs")
    img[3, 4] = np.nan
    write_micrograph(tmp_path / "nan.mrc", img, 1.0)
    with pytest.raises(InputError, match="NaN"):
        read_micrograph(tmp_path / "nan.mrc")
