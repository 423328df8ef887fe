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
