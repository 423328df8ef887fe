"""Run folders (cryoscape.runs): atomic creation, overwrite refusal, resume, and the metrics.json schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import cryoscape
from cryoscape.io.errors import InputError
from cryoscape.runs import RunFolder, read_metrics, validate_metrics, write_metrics


def _good_payload():
    return {"command": "reconstruct", "cryoscape_version": cryoscape.__version__, "wall_s": 1.5,
            "inputs": {"particles": "p.star", "n_images": 10},
            "metrics": {"resolution_fsc0.143_A": 7.5, "fsc_auc": 0.41, "n_images": 10, "images_per_s": 300.0},
            "files": ["config.yaml", "map.mrc"]}


def test_a_complete_run_folder(tmp_path):
    out = tmp_path / "run1"
    with RunFolder(out, "reconstruct", {"particles": tmp_path / "p.star", "apix": np.float32(1.5)},
                   inputs={"particles": "p.star"}) as run:
        assert run.dir.name == ".run1.part" and run.dir.parent == tmp_path
        assert not out.exists()
        np.save(run.file("sub/x.npy"), np.arange(3))
        run.file("map.mrc").write_bytes(b"x" * 10)
        run.log.info("hello")
        run.metrics["resolution_fsc0.143_A"] = np.float64(7.25)
        run.metrics["n_images"] = np.int64(12)
        run.inputs["n_images"] = 12
    assert out.is_dir() and not run.dir.exists()
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["config.yaml", "map.mrc", "metrics.json", "run.log", "sub/x.npy", "versions.txt"]
    m = json.loads((out / "metrics.json").read_text())
    assert list(m) == ["command", "cryoscape_version", "wall_s", "inputs", "metrics", "files"]
    assert m["command"] == "reconstruct" and m["cryoscape_version"] == cryoscape.__version__
    assert m["metrics"] == {"resolution_fsc0.143_A": 7.25, "n_images": 12}
    assert isinstance(m["metrics"]["n_images"], int)
    assert m["inputs"] == {"particles": "p.star", "n_images": 12}
    assert m["files"] == [n for n in names if n != "metrics.json"]
    assert all((out / f).is_file() for f in m["files"])  # every listed file exists
    assert 0 <= m["wall_s"] < 60
    assert read_metrics(out) == m == run.summary
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg == {"particles": str(tmp_path / "p.star"), "apix": 1.5}
    log = (out / "run.log").read_text()
    assert "starting reconstruct" in log and "hello" in log and "done in" in log
    assert (out / "versions.txt").read_text().startswith("python ")


def test_a_failure_leaves_no_output(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        with RunFolder(out, "vae", {}) as run:
            run.file("half.mrc").write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the .part


def test_an_interrupt_keeps_the_part_for_resume(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunFolder(out, "vae", {"epochs": 2}, resume=True) as run:
            run.file("checkpoint.pt").write_bytes(b"epoch 1")
            raise KeyboardInterrupt
    assert not out.exists() and (tmp_path / ".run.part" / "checkpoint.pt").read_bytes() == b"epoch 1"
    with RunFolder(out, "vae", {"epochs": 2}, resume=True) as run:
        assert run.resumed
        assert run.file("checkpoint.pt").read_bytes() == b"epoch 1"
        run.file("checkpoint.pt").write_bytes(b"epoch 2")
    assert (out / "checkpoint.pt").read_bytes() == b"epoch 2" and not (tmp_path / ".run.part").exists()
    assert "resuming vae" in (out / "run.log").read_text()
    # without resume a stale .part is discarded, never reused
    (tmp_path / ".run2.part").mkdir()
    (tmp_path / ".run2.part" / "stale.bin").write_bytes(b"old")
    with RunFolder(tmp_path / "run2", "vae", {}) as run:
        assert not run.resumed
    assert not (tmp_path / "run2" / "stale.bin").exists()


def test_overwrite_refusal_and_replacement(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(InputError, match="already exists"):
        with RunFolder(out, "reconstruct", {}) as run:
            run.file("new.txt").write_text("new")  # never reached
    assert (out / "old.txt").read_text() == "old" and not (tmp_path / ".run.part").exists()
    # a failing run with overwrite leaves the old folder as it was
    with pytest.raises(ValueError):
        with RunFolder(out, "reconstruct", {}, overwrite=True) as run:
            raise ValueError("bad")
    assert (out / "old.txt").read_text() == "old"
    with RunFolder(out, "reconstruct", {}, overwrite=True) as run:
        run.file("new.txt").write_text("new")
    assert not (out / "old.txt").exists() and (out / "new.txt").read_text() == "new"
    # a file in the way is refused too
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="already exists"):
        RunFolder(f, "x", {}).__enter__()


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("files"), "missing"),
    (lambda p: p.update(extra=1), "unexpected"),
    (lambda p: p.update(command=""), "command"),
    (lambda p: p.update(wall_s=-1.0), "wall_s"),
    (lambda p: p.update(wall_s=float("nan")), "wall_s"),
    (lambda p: p["metrics"].update(fsc_auc=float("nan")), "finite number"),
    (lambda p: p["metrics"].update(fsc_auc=float("inf")), "finite number"),
    (lambda p: p["metrics"].update(fsc_auc=None), "finite number"),
    (lambda p: p["metrics"].update(fsc_auc=True), "finite number"),
    (lambda p: p["metrics"].update(fsc_auc="0.4"), "finite number"),
    (lambda p: p["metrics"].update({"Resolution A": 3.0}), "metric name"),
    (lambda p: p["metrics"].update({"res_Angstrom": 3.0}), "metric name"),
    (lambda p: p.update(inputs={"x": object()}), "plain JSON"),
    (lambda p: p.update(inputs=[1]), "inputs"),
    (lambda p: p.update(files=["/abs/map.mrc"]), "relative"),
    (lambda p: p.update(files=["../map.mrc"]), "relative"),
    (lambda p: p.update(files=["map.mrc", "config.yaml"]), "sorted"),
    (lambda p: p.update(files=["config.yaml", "metrics.json"]), "itself"),
])
def test_schema_validation_refuses_a_bad_payload(change, message):
    p = _good_payload()
    validate_metrics(p)
    change(p)
    with pytest.raises(ValueError, match=message):
        validate_metrics(p)


def test_write_metrics_checks_the_files_exist(tmp_path):
    p = _good_payload()
    (tmp_path / "config.yaml").write_text("a: 1\n")
    with pytest.raises(ValueError, match="do not exist"):
        write_metrics(tmp_path, p)
    assert not (tmp_path / "metrics.json").exists()
    (tmp_path / "map.mrc").write_bytes(b"")
    write_metrics(tmp_path, p)
    assert read_metrics(tmp_path / "metrics.json") == p


def test_a_bad_metric_inside_a_run_leaves_no_output(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="finite number"):
        with RunFolder(out, "reconstruct", {}) as run:
            run.metrics["resolution_fsc0.143_A"] = float("nan")
    assert list(tmp_path.iterdir()) == []


def test_read_metrics_refuses_a_foreign_file(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"loss": 1.0}))
    with pytest.raises(InputError, match="not a cryoscape metrics.json"):
        read_metrics(tmp_path)
