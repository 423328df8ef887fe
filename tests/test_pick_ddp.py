"""``cryoscape pick`` under ``torchrun``: the micrographs are shared among the ranks and rank 0 writes one folder
whose picks equal a one-process run's (blob: no training, so exactly); the learned picker trains with DDP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddp_cli_script import launch

APIX = 3.0


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_torchrun_picks_equal_one_process_and_learned_trains(tmp_path, adk):
    from cryoscape.data.micrographs import MicrographConfig, simulate_micrographs
    from cryoscape.data.simulate import AtomSource
    from cryoscape.io.coords import Coordinates, read_coordinates, write_coordinates
    from cryoscape.io.mrc import write_micrograph

    ms = simulate_micrographs(AtomSource(adk.coords, 3.0), MicrographConfig(size=320, apix=APIX, n_particles=25,
                                                                            snr=0.1, seed=2), 3)
    files = []
    for m in range(3):
        files.append(tmp_path / f"mic_{m}.mrc")
        write_micrograph(files[-1], ms.noisy[m].numpy(), APIX)
    names = np.array([str(f) for f in files])[ms.micrograph]
    write_coordinates(tmp_path / "truth.star", Coordinates(names, ms.coords, None), "relion-multi")
    first = ms.micrograph == 0
    write_coordinates(tmp_path / "labels.star", Coordinates(names[first][:10], ms.coords[first][:10], None),
                      "relion-multi")
    radius = ["--radius", f"{ms.radius_A:.3f}", "--no-progress", "--overlays", "1"]
    for ranks in (1, 2):
        r = launch(tmp_path, "pick", [*files, "-o", tmp_path / f"blob{ranks}", "-m", "blob", *radius], ranks)
        assert r.returncode == 0, r.stderr[:3000]
    one, two = (read_coordinates(tmp_path / f"blob{k}" / "picks.star") for k in (1, 2))
    assert len(one) > 0 and list(one.micrograph) == list(two.micrograph)
    np.testing.assert_array_equal(one.xy, two.xy)
    np.testing.assert_array_equal(one.score, two.score)
    assert json.loads((tmp_path / "blob2" / "metrics.json").read_text())["metrics"]["ranks"] == 2

    short = ["-p", "epochs=3", "-p", "steps_per_epoch=20", "-p", "iterations=0", "-p", "threshold=-1e9"]
    r = launch(tmp_path, "pick", [*files, "-o", tmp_path / "learned2", "--labels", tmp_path / "labels.star",
                                  "--truth", tmp_path / "truth.star", *short, *radius], 2)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "learned2" / "metrics.json").read_text())["metrics"]
    assert metrics["ranks"] == 2 and metrics["auprc"] > 0.8, metrics
    assert (tmp_path / "learned2" / "model.pt").exists()
