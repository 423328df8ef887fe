"""End to end: the demo command as `make demo` runs it, checked against its own ground truth."""

import numpy as np
import pytest

from cryoscape.cli.main import main
from cryoscape.io.mrc import read_stack
from cryoscape.io.star import read_star


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "-o", str(tmp_path / "demo"), "--no-progress"])
    assert exc.value.code in (0, None)
    out = tmp_path / "demo" / "simulate"
    table = read_star(out / "particles.star")
    stack, apix = read_stack(out / "particles.mrcs")
    assert len(table) == stack.shape[0] == 1000 and stack.shape[1:] == (64, 64)
    counts = np.bincount(table.particles["cryoscapeConformation"].to_numpy(), minlength=102)
    assert counts.min() >= 9 and counts.max() <= 10  # balanced over the 102 frames
    assert np.abs(table.shifts_angst()).max() <= 5.0 + 1e-6
    df = table.particles["rlnDefocusU"].to_numpy()
    assert 14000 < df.min() and df.max() < 26000
    assert (out / "previews" / "stages.png").exists() and (out / "truth" / "models.pdb").exists()
    assert "snr_measured" in capsys.readouterr().out
    bp = tmp_path / "demo" / "backproject"
    for name in ("map.mrc", "half_map_A.mrc", "half_map_B.mrc", "fsc.json", "fsc.png"):
        assert (bp / name).exists()
    from cryoscape.runs import read_metrics
    for step in ("simulate", "backproject", "spectral"):  # one schema for every step's metrics.json
        read_metrics(tmp_path / "demo" / step / "metrics.json")
    sp = read_metrics(tmp_path / "demo" / "spectral" / "metrics.json")["metrics"]
    assert sp["test_trained_avg_error_A"] < sp["test_initial_avg_error_A"]
