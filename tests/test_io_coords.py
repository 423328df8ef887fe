"""Coordinate files: each format's convention pinned on hand-written files, round trips through every format,
atomic and non-overwriting writes, bad input.

Independent truths: files written here by hand in each program's layout, RELION's extraction rule (box pixel
``D // 2`` is micrograph pixel ``(long) rlnCoordinate``, ``src/preprocessing.cpp``) applied to a micrograph with
one bright pixel and to text read back by a small parser written here, EMAN2's ``.box`` writer rule
(``int(centre - box / 2)``) and crYOLO's centre rule (``corner + width / 2``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoscape.io.coords import (FORMATS, INDEX_NAME, Coordinates, micrograph_key, read_coordinates,
                                 write_coordinates)
from cryoscape.io.errors import InputError


def _star_loop(path) -> dict[str, list[str]]:
    """The first loop of a STAR file as columns of strings (a minimal parser, independent of starfile)."""
    cols, rows, in_loop = [], [], False
    for line in Path(path).read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            if rows:
                break
            continue
        if s == "loop_":
            in_loop = True
        elif in_loop and s.startswith("_"):
            cols.append(s.split()[0][1:])
        elif in_loop and cols:
            rows.append(s.split())
    return {c: [r[i] for r in rows] for i, c in enumerate(cols)}


def _relion_extract(mic: np.ndarray, x: float, y: float, d: int) -> np.ndarray:
    """RELION's window: xpos = (long) x, pixels xpos - d//2 .. xpos - d//2 + d - 1 (FIRST_XMIPP_INDEX(d) = -d//2)."""
    xpos, ypos = int(x), int(y)
    return mic[ypos - d // 2: ypos - d // 2 + d, xpos - d // 2: xpos - d // 2 + d]


# -- conventions -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [8, 9])
def test_relion_coordinate_is_the_extracted_box_centre(tmp_path, d):
    mic = np.zeros((40, 50))
    mic[17, 23] = 1.0  # row 17, column 23 → our (x, y) = (23, 17)
    write_coordinates(tmp_path / "mic.star", Coordinates.for_micrograph("mic.mrc", [[23.0, 17.0]]), "relion")
    loop = _star_loop(tmp_path / "mic.star")
    x, y = float(loop["rlnCoordinateX"][0]), float(loop["rlnCoordinateY"][0])
    box = _relion_extract(mic, x, y, d)
    assert box.shape == (d, d) and box[d // 2, d // 2] == 1.0


def test_relion_file_as_autopick_writes_it(tmp_path):
    p = tmp_path / "mic007_autopick.star"
    p.write_text("\n# version 30001\n\ndata_\n\nloop_ \n_rlnCoordinateX #1 \n_rlnCoordinateY #2 \n"
                 "_rlnClassNumber #3 \n_rlnAutopickFigureOfMerit #4 \n_rlnAnglePsi #5 \n"
                 "  1021.000000   334.000000            1     2.519072     0.000000 \n"
                 "   412.500000  1500.250000            1     1.250000     0.000000 \n")
    c = read_coordinates(p)
    np.testing.assert_array_equal(c.xy, [[1021.0, 334.0], [412.5, 1500.25]])
    np.testing.assert_array_equal(c.score, [2.519072, 1.25])
    assert list(c.micrograph) == ["mic007_autopick"] * 2
    c = read_coordinates(p, micrograph="Movies/mic007.mrc")
    assert list(c.micrograph) == ["Movies/mic007.mrc"] * 2


@pytest.mark.parametrize("w", [8, 9])
def test_eman_box_corner_convention(tmp_path, w):
    # a .box line holds the lower-left corner; RELION and Topaz put the centre at corner + w // 2
    p = tmp_path / "mic.box"
    p.write_text(f"20\t14\t{w}\t{w}\n")
    c = read_coordinates(p)
    np.testing.assert_array_equal(c.xy, [[20 + w // 2, 14 + w // 2]])
    assert c.score is None and list(c.micrograph) == ["mic"]
    # RELION extracts a box whose centre pixel is that centre: its first pixel is the file's corner
    mic = np.arange(40 * 50, dtype=float).reshape(40, 50)
    assert _relion_extract(mic, *c.xy[0], w)[0, 0] == mic[14, 20]


def test_eman_box_written_as_eman2_writes_it(tmp_path):
    # EMAN2 e2boxer: int(centre - box/2) for whole-pixel centres; sub-pixel centres are rounded first (half up)
    c = Coordinates.for_micrograph("m", [[24.0, 18.0], [23.6, 17.5], [100.49, 7.5]])
    write_coordinates(tmp_path / "m.box", c, "eman", box=8)
    lines = [ln.split("\t") for ln in (tmp_path / "m.box").read_text().splitlines()]
    assert lines == [["20", "14", "8", "8"], ["20", "14", "8", "8"], ["96", "4", "8", "8"]]
    assert [int(24 - 8 / 2), int(18 - 8 / 2)] == [20, 14]


def test_topaz_text_convention(tmp_path):
    p = tmp_path / "picks.txt"
    p.write_text("image_name\tx_coord\ty_coord\tscore\n14sep05c_00024sq_00003hl\t3136\t1006\t7.016\n"
                 "14sep05c_00024sq_00003hl\t12\t7\t-0.5\n001\t5\t6\t1e-3\n")
    c = read_coordinates(p)
    np.testing.assert_array_equal(c.xy, [[3136, 1006], [12, 7], [5, 6]])
    np.testing.assert_array_equal(c.score, [7.016, -0.5, 1e-3])
    assert list(c.micrograph) == ["14sep05c_00024sq_00003hl"] * 2 + ["001"]
    # written: names without folder/extension, integer coordinates (half up), scores exactly
    out = tmp_path / "out.txt"
    write_coordinates(out, Coordinates(["Movies/a.mrc", "b"], [[12.5, 7.49], [3.0, 4.0]], [1 / 3, 2.0]), "topaz")
    rows = [ln.split("\t") for ln in out.read_text().splitlines()]
    assert rows[0] == ["image_name", "x_coord", "y_coord", "score"]
    assert rows[1][:3] == ["a", "13", "7"] and float(rows[1][3]) == 1 / 3
    assert rows[2] == ["b", "3", "4", "2.0"]
    # training targets have no score column
    (tmp_path / "t.txt").write_text("image_name\tx_coord\ty_coord\nm\t1\t2\n")
    assert read_coordinates(tmp_path / "t.txt").score is None


def test_cbox_as_cryolo_writes_it(tmp_path):
    p = tmp_path / "mic.cbox"
    p.write_text("\ndata_global\n\n_cbox_format_version 1.0\n\ndata_cryolo\n\nloop_\n_CoordinateX #1\n"
                 "_CoordinateY #2\n_CoordinateZ #3\n_Width #4\n_Height #5\n_Depth #6\n_EstWidth #7\n_EstHeight #8\n"
                 "_Confidence #9\n_NumBoxes #10\n_Angle #11\n"
                 "90.5\t40.25\t<NA>\t64\t64\t<NA>\t58\t60\t0.93\t<NA>\t<NA>\n"
                 "300\t10\t<NA>\t64\t64\t<NA>\t58\t60\t0.41\t<NA>\t<NA>\n"
                 "\ndata_cryolo_include\n\nloop_\n_slice_index #1\n")
    c = read_coordinates(p)
    np.testing.assert_array_equal(c.xy, [[122.5, 72.25], [332.0, 42.0]])  # corner + width / 2
    np.testing.assert_array_equal(c.score, [0.93, 0.41])
    assert list(c.micrograph) == ["mic", "mic"]
    # written: the same blocks and columns, corner = centre - box / 2 (sub-pixel kept)
    write_coordinates(tmp_path / "out.cbox", c, "cryolo", box=64)
    loop = _star_loop(tmp_path / "out.cbox")
    assert list(loop) == ["CoordinateX", "CoordinateY", "CoordinateZ", "Width", "Height", "Depth", "EstWidth",
                          "EstHeight", "Confidence", "NumBoxes", "Angle"]
    assert [float(v) for v in loop["CoordinateX"]] == [90.5, 300.0]
    assert loop["Width"] == ["64", "64"] and loop["CoordinateZ"] == ["<NA>", "<NA>"]
    text = (tmp_path / "out.cbox").read_text()
    assert "data_global" in text and "_cbox_format_version" in text and "data_cryolo_include" in text


def test_cbox_old_format_and_3d(tmp_path):
    p = tmp_path / "old.cbox"
    p.write_text("90\t40\t64\t64\t0.8\t60\t60\n10.5\t20\t32\t32\t0.2\t30\t30\n")
    c = read_coordinates(p)
    np.testing.assert_array_equal(c.xy, [[122, 72], [26.5, 36]])
    np.testing.assert_array_equal(c.score, [0.8, 0.2])
    p3 = tmp_path / "tomo.cbox"
    p3.write_text("data_cryolo\n\nloop_\n_CoordinateX\n_CoordinateY\n_CoordinateZ\n_Width\n_Height\n"
                  "1 2 3 64 64\n")
    with pytest.raises(InputError, match="tomo.cbox.*3-D"):
        read_coordinates(p3)


def test_relion_index_of_coordinate_files(tmp_path, monkeypatch):
    # a RELION 4/5 project: AutoPick/job004/autopick.star lists per-micrograph files by project-relative paths
    job = tmp_path / "project" / "AutoPick" / "job004"
    (job / "Movies").mkdir(parents=True)
    (job / "Movies" / "m1_autopick.star").write_text(
        "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnAutopickFigureOfMerit #3\n"
        "10.5 20 0.7\n30 40 0.2\n")
    (job / "Movies" / "m2_autopick.star").write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"
                                                     "_rlnAutopickFigureOfMerit #3\n5 6 0.9\n")
    (job / "autopick.star").write_text(
        "# version 30001\n\ndata_coordinate_files\n\nloop_\n_rlnMicrographName #1\n_rlnMicrographCoordinates #2\n"
        "MotionCorr/job002/Movies/m1.mrc AutoPick/job004/Movies/m1_autopick.star\n"
        "MotionCorr/job002/Movies/m2.mrc AutoPick/job004/Movies/m2_autopick.star\n")
    monkeypatch.chdir(tmp_path)  # not the project folder: paths resolve against the folders above the index
    c = read_coordinates(job / "autopick.star")
    assert list(c.micrograph) == ["MotionCorr/job002/Movies/m1.mrc"] * 2 + ["MotionCorr/job002/Movies/m2.mrc"]
    np.testing.assert_array_equal(c.xy, [[10.5, 20], [30, 40], [5, 6]])
    np.testing.assert_array_equal(c.score, [0.7, 0.2, 0.9])
    (job / "Movies" / "m2_autopick.star").unlink()
    with pytest.raises(InputError, match="m2_autopick.star.*not found"):
        read_coordinates(job / "autopick.star")


def test_relion_particle_star_many_micrographs(tmp_path):
    p = tmp_path / "particles.star"
    p.write_text("# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 1.2\n\n"
                 "# version 30001\n\ndata_particles\n\nloop_\n_rlnImageName #1\n_rlnMicrographName #2\n"
                 "_rlnCoordinateX #3\n_rlnCoordinateY #4\n_rlnOpticsGroup #5\n"
                 "1@Extract/a.mrcs 001.mrc 100.25 200 1\n2@Extract/a.mrcs 001.mrc 300 400.5 1\n"
                 "1@Extract/b.mrcs 002.mrc 50 60 1\n")
    for fmt in (None, "relion-multi"):
        c = read_coordinates(p, fmt)
        assert list(c.micrograph) == ["001.mrc", "001.mrc", "002.mrc"]
        np.testing.assert_array_equal(c.xy, [[100.25, 200], [300, 400.5], [50, 60]])
        assert c.score is None


# -- round trips -------------------------------------------------------------------------------------------------
def _sample() -> Coordinates:
    rng = np.random.default_rng(3)
    names = np.array(["Movies/mic_001.mrc"] * 4 + ["Movies/mic_002.mrc"] * 3 + ["mic_003.mrc"] * 1)
    xy = rng.uniform(40, 4000, (8, 2))
    xy[0] = [100.5, 200.5]  # halves: rounded up where the format holds whole pixels
    return Coordinates(names, xy, rng.normal(size=8))


_TARGET = {"relion": "coords", "relion-multi": "all.star", "eman": "boxes", "topaz": "picks.txt",
           "cryolo": "cbox"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(tmp_path, fmt):
    c = _sample()
    target = tmp_path / _TARGET[fmt]
    files = write_coordinates(target, c, fmt, box=64)
    per_mic = fmt in ("relion", "eman", "cryolo")
    if per_mic:
        names = sorted(p.name for p in files)
        suffix = {"relion": ".star", "eman": ".box", "cryolo": ".cbox"}[fmt]
        expected = sorted(f"mic_00{i}{suffix}" for i in (1, 2, 3)) + ([INDEX_NAME] if fmt == "relion" else [])
        assert names == sorted(expected)
    back = read_coordinates(target, fmt)
    # per-micrograph files are named by the key; the RELION index and the STAR keep the full names
    full_names = fmt in ("relion", "relion-multi")
    got = {micrograph_key(n) if not full_names else n for n in back.micrograph}
    want = {micrograph_key(n) if not full_names else n for n in c.micrograph}
    assert got == want
    order = np.lexsort((c.xy[:, 0], [micrograph_key(n) for n in c.micrograph]))
    border = np.lexsort((back.xy[:, 0], [micrograph_key(n) for n in back.micrograph]))
    if fmt in ("eman", "topaz"):  # whole pixels, half up
        np.testing.assert_array_equal(back.xy[border], np.floor(c.xy[order] + 0.5))
        assert [101.0, 201.0] in back.xy.tolist()  # 100.5, 200.5 rounded half up (not to even)
    else:
        np.testing.assert_allclose(back.xy[border], c.xy[order], rtol=0, atol=1e-8)
    if fmt == "eman":
        assert back.score is None
    else:
        np.testing.assert_allclose(back.score[border], c.score[order], rtol=1e-11, atol=0)


def test_folder_read_and_single_file_write(tmp_path):
    c = _sample()
    write_coordinates(tmp_path / "b", c, "eman", box=32)
    back = read_coordinates(tmp_path / "b")  # format from the folder's files
    assert len(back) == len(c)
    one = c.of("mic_003.mrc")
    assert write_coordinates(tmp_path / "one.cbox", one, "cryolo", box=32) == [tmp_path / "one.cbox"]
    np.testing.assert_allclose(read_coordinates(tmp_path / "one.cbox").xy, one.xy, atol=1e-8)
    with pytest.raises(InputError, match="two.box.*3 micrographs"):
        write_coordinates(tmp_path / "two.box", c, "eman", box=32)
    assert not (tmp_path / "two.box").exists()
    # an empty set writes a valid empty file
    empty = Coordinates.for_micrograph("m", np.zeros((0, 2)))
    write_coordinates(tmp_path / "e.star", empty, "relion")
    assert len(read_coordinates(tmp_path / "e.star")) == 0


def test_writes_refuse_to_overwrite_and_are_all_or_nothing(tmp_path):
    c = _sample()
    folder = tmp_path / "coords"
    folder.mkdir()
    (folder / "mic_002.star").write_text("keep")
    with pytest.raises(InputError, match="mic_002.star.*already exists"):
        write_coordinates(folder, c, "relion")
    assert sorted(p.name for p in folder.iterdir()) == ["mic_002.star"]  # nothing else written, no temp files
    assert (folder / "mic_002.star").read_text() == "keep"
    files = write_coordinates(folder, c, "relion", overwrite=True)
    assert len(files) == 4 and sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in files)
    write_coordinates(tmp_path / "p.txt", c, "topaz")
    with pytest.raises(InputError, match="p.txt"):
        write_coordinates(tmp_path / "p.txt", c, "topaz")
    # two micrographs with one file name
    clash = Coordinates(["a/m.mrc", "b/m.mrc"], [[1, 2], [3, 4]])
    with pytest.raises(InputError, match="m.box"):
        write_coordinates(tmp_path / "clash", clash, "eman", box=16)
    assert not (tmp_path / "clash").exists() or not any((tmp_path / "clash").iterdir())


# -- bad input ---------------------------------------------------------------------------------------------------
def _bad(tmp_path, name: str, text: str, fmt=None, match="") -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=match) as e:
        read_coordinates(p, fmt)
    assert str(p) in str(e.value)


def test_bad_files_raise_input_error_naming_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.star.*not found"):
        read_coordinates(tmp_path / "nope.star")
    _bad(tmp_path, "c.xyz", "1 2\n", match="extension")
    _bad(tmp_path, "noy.star", "data_\n\nloop_\n_rlnCoordinateX #1\n1\n", match="rlnCoordinateY")
    _bad(tmp_path, "nan.star", "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\nnan 3\n",
         match="rlnCoordinateX.*row 2")
    _bad(tmp_path, "inf.star", "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 inf\n", match="finite")
    _bad(tmp_path, "text.star", "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 abc\n",
         match="rlnCoordinateY")
    _bad(tmp_path, "score.star", "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"
                                 "_rlnAutopickFigureOfMerit #3\n1 2 0.5\n3 4 nan\n", match="FigureOfMerit")
    _bad(tmp_path, "multi.star", "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\n", "relion-multi",
         match="rlnMicrographName")
    _bad(tmp_path, "noname.star", 'data_particles\n\nloop_\n_rlnMicrographName #1\n_rlnCoordinateX #2\n'
                                  '_rlnCoordinateY #3\n"" 1 2\n', match="empty rlnMicrographName")
    _bad(tmp_path, "short.box", "1 2 64 64\n3 4\n", match="line 2")
    _bad(tmp_path, "inf.box", "1 inf 64 64\n", match="finite")
    _bad(tmp_path, "zero.box", "1 2 0 0\n", match="positive")
    _bad(tmp_path, "t.txt", "image_name\tx_coord\tscore\nm\t1\t0.5\n", match="y_coord")
    _bad(tmp_path, "t2.txt", "image_name\tx_coord\ty_coord\nm\t1\tabc\n", match="y_coord")
    _bad(tmp_path, "t3.txt", "image_name\tx_coord\ty_coord\n\t1\t2\n", match="empty image_name")
    _bad(tmp_path, "t4.txt", "", match="empty")
    _bad(tmp_path, "nocryolo.cbox", "data_other\n\nloop_\n_a #1\n1\n", match="data_cryolo")
    _bad(tmp_path, "garbage.star", "this is not a star file\n", match="no data block")
    with pytest.raises(InputError, match="unknown coordinate format"):
        read_coordinates(tmp_path / "t.txt", "xmipp")


def test_bad_writes(tmp_path):
    c = _sample()
    with pytest.raises(InputError, match="box"):
        write_coordinates(tmp_path / "b", c, "eman")
    with pytest.raises(InputError, match="box"):
        write_coordinates(tmp_path / "b", c, "cryolo", box=0)
    with pytest.raises(InputError, match="unknown coordinate format"):
        write_coordinates(tmp_path / "x.star", c, "xmipp")
    with pytest.raises(InputError, match="x.pos"):
        write_coordinates(tmp_path / "x.pos", c)
    bad = Coordinates(["m"], [[np.nan, 1.0]])
    with pytest.raises(InputError, match="finite"):
        write_coordinates(tmp_path / "n.star", bad, "relion-multi")
    with pytest.raises(InputError, match="empty micrograph"):
        write_coordinates(tmp_path / "n.txt", Coordinates([" "], [[1.0, 1.0]]), "topaz")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_micrograph_key_and_coordinates_helpers():
    assert micrograph_key("MotionCorr/job002/Movies/mic_001.mrc") == "mic_001"
    assert micrograph_key("mic_001") == "mic_001"
    assert micrograph_key("sample.3") == "sample.3"  # not an image extension: kept
    c = _sample()
    assert c.names() == ["Movies/mic_001.mrc", "Movies/mic_002.mrc", "mic_003.mrc"]
    assert [len(g) for _, g in c.groups()] == [4, 3, 1]
    joined = Coordinates.concat([g for _, g in c.groups()])
    np.testing.assert_array_equal(joined.xy, c.xy)
    with pytest.raises(ValueError):
        Coordinates.concat([c, Coordinates(["m"], [[1, 2]])])
