"""``cryoscape spectral`` under ``torchrun`` on the CPU (gloo): two processes follow one process with the same
global batch, and a run killed after an epoch resumes under torchrun to the uninterrupted run's result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cryoscape.cli.main import main as cli
from ddp_cli_script import launch
from cryoscape.io.models import read_model
from cryoscape.runs import read_metrics



def _launch(cwd, args, ranks=1, threads=None):
    """``cryoscape spectral ARGS`` in one process, or under ``torchrun`` with ``ranks`` (args may start with
    ``--stop-after K``)."""
    stop = None
    if args[:1] == ["--stop-after"]:
        stop, args = int(args[1]), args[2:]
    return launch(cwd, "spectral", args, ranks, threads, stop)


def _losses(run):
    return [h["loss"] for h in json.loads((run / "training.json").read_text())]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_torchrun_fits_like_one_process_and_resumes(tmp_path):
    """96 AdK images of 32 px, the default cartesian model with its refit (3 + 3 epochs), global batch 16 (86
    training images: the last batch of 6 is cut 3 + 3): the loss history of 2 ranks matches one process within
    1 % (only the order of floating-point sums differs); killed after epoch 1 and relaunched, the torchrun run
    resumes from its checkpoint to the uninterrupted torchrun's history and models."""
    with pytest.raises(SystemExit):
        cli(["simulate", "--frames", "0:102:6", "-n", "96", "--box", "32", "--apix", "4", "--snr", "1", "--seed", "2",
             "--no-progress", "-o", str(tmp_path / "sim")])
    sim = tmp_path / "sim"
    args = [sim / "particles.star", "--reference", sim / "truth" / "models.pdb", "--truth-models",
            sim / "truth" / "models.pdb", "--epochs", "3", "--batch-size", "16", "--device", "cpu", "--no-progress"]

    r = _launch(tmp_path, [*args, "-o", tmp_path / "one"], threads=1)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _launch(tmp_path, [*args, "-o", tmp_path / "two"], ranks=2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert read_metrics(tmp_path / "two")["metrics"]["world_size"] == 2
    assert read_metrics(tmp_path / "one")["metrics"]["world_size"] == 1
    assert len(one) == len(two) == 6
    assert two == pytest.approx(one, rel=0.01)
    rel = max(abs(b - a) / a for a, b in zip(one, two))
    print(f"torchrun vs one process: loss {one} vs {two}, max relative difference {rel:.2e}")
    m1, m2 = read_model(tmp_path / "one" / "models.pdb").coords, read_model(tmp_path / "two" / "models.pdb").coords
    assert np.abs(m1 - m2).max() < 0.01
    assert one[-1] < one[0]

    r = _launch(tmp_path, ["--stop-after", "1", *args, "-o", tmp_path / "cut"], ranks=2)
    assert r.returncode != 0  # interrupted
    part = tmp_path / ".cut.part"
    assert (part / "fit.pt").exists() and not (part / "refine.pt").exists() and not (tmp_path / "cut").exists()
    assert torch.load(part / "fit.pt", weights_only=False)["epoch"] == 1
    r = _launch(tmp_path, [*args, "-o", tmp_path / "cut"], ranks=2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _losses(tmp_path / "cut") == two
    np.testing.assert_array_equal(read_model(tmp_path / "cut" / "models.pdb").coords, m2)
    log = (tmp_path / "cut" / "run.log").read_text()
    assert "resuming" in log and "after epoch 1" in log
