"""A ``cryoscape`` command for the torchrun tests, launched as one process or by ``torchrun``.

``python ddp_cli_script.py [--stop-after K] COMMAND ARGS...`` runs ``cryoscape COMMAND ARGS``; with
``--stop-after K`` every rank raises ``KeyboardInterrupt`` right after epoch ``K``'s checkpoint (of the first
training stage), as a run killed there, so the run folder's ``.NAME.part`` with the checkpoint is left for
the next launch to resume. The exit status is the command's. :func:`launch` starts it from a test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def launch(cwd, command: str, args, ranks: int = 1, threads: int | None = None, stop_after: int | None = None):
    """Run ``cryoscape COMMAND ARGS`` through this script in one process, or under ``torchrun --standalone
    --nproc_per_node ranks``; returns the ``subprocess.CompletedProcess``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(ranks)]
    stop = [] if stop_after is None else ["--stop-after", str(stop_after)]
    extra = [] if threads is None else ["--threads", str(threads)]
    return subprocess.run([*launcher, str(Path(__file__)), *stop, command, *map(str, args), *extra], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


def main(argv: list[str]) -> int:
    stop_after = None
    if argv[:1] == ["--stop-after"]:
        stop_after, argv = int(argv[1]), argv[2:]
    import cryoscape.methods.training as training
    from cryoscape.cli.main import main as cli

    if stop_after is not None:
        fit = training.Trainer.fit

        def fit_then_stop(self, step, batches, extra=None, progress=None, on_epoch=None):
            def stop(epoch, model):
                if epoch == stop_after:
                    raise KeyboardInterrupt
            return fit(self, step, batches, extra, progress, stop)
        training.Trainer.fit = fit_then_stop
    try:
        cli(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
