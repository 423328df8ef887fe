"""Shared fixtures. Tests marked ``slow`` run only with RUN_SLOW=1 (``make test``) or ``-m slow``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cryodrgn-tests"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set RUN_SLOW=1 (make test) or use -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cryodrgn_data() -> Path:
    """The cryoDRGN test files in ../shared/data (skips when the folder is absent, e.g. a user's clone)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def adk():
    """The embedded AdK trajectory: Cα Conformations (102 frames, 214 atoms)."""
    from cryoscape.data.embedded import adk_files
    from cryoscape.io.models import read_trajectory
    psf, dcd = adk_files()
    return read_trajectory(psf, dcd, "ca")


SNR_GRID = (0.8, 0.4, 0.1, 0.05, 0.01)  # seed 004's grid of the denoising tests


@pytest.fixture(scope="session")
def noisy_particles(adk):
    """32 AdK particle images of 32 px with CTF (1–2.5 µm) at every SNR of :data:`SNR_GRID`:
    ``(clean with CTF, {snr: noisy}, {snr: σ})``."""
    import math

    from cryoscape.data.simulate import (AtomSource, SimulationConfig, add_dataset_noise, plan_simulation,
                                         render_images)
    cfg = SimulationConfig(n_images=32, box=32, seed=3, defocus_min_um=1.0, defocus_max_um=2.5)
    src = AtomSource(adk.coords[::5], cfg.sigma)
    plan = plan_simulation(cfg, src)
    clean = render_images(plan, src, slice(0, 32), apply_ctf=True)
    sigmas = {snr: float(clean.double().std()) / math.sqrt(snr) for snr in SNR_GRID}
    noisy = {snr: add_dataset_noise(clean, sigmas[snr], 11, 0) for snr in SNR_GRID}
    return clean, noisy, sigmas


def mse(a, b) -> float:
    """Mean squared difference of two tensors, in float64."""
    return float(((a.double() - b.double()) ** 2).mean())


class ProgressCount:
    """A progress object that counts what it is advanced by (``n``)."""

    def __init__(self):
        self.n = 0

    def advance(self, k: int = 1) -> None:
        self.n += k


def cli_ok(capsys, args):
    """Run ``cryoscape ARGS`` in-process; assert exit 0 and return the captured output."""
    from cryoscape.cli.main import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    return out


def cli_fails(capsys, args, text, code=2):
    """Run ``cryoscape ARGS`` in-process; assert exit ``code`` with one line on stderr containing ``text``."""
    from cryoscape.cli.main import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == code and text in err and err.count("\n") == 1, err
    return err
