"""Shared by the ASPIRE peer scripts (run with the ASPIRE venv's python; never imports cryoscape)."""

import os


def configure_aspire(tmpdir):
    """Point ASPIRE's confuse config at a temp dir: logs there (not ./logs), quiet console, no progress bars."""
    cfg = os.path.join(tmpdir, "config.yaml")
    with open(cfg, "w") as f:
        f.write(
            "logging:\n"
            f"    log_dir: {os.path.join(tmpdir, 'logs')}\n"
            "    tqdm_disable: True\n"
            "    console_level: WARNING\n"
            "    log_file_level: WARNING\n"
        )
    os.environ["ASPIREDIR"] = tmpdir
