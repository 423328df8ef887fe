"""``cryoscape spectral`` for tests/test_spectral_ddp.py, launched as one process or by ``torchrun``.

``python spectral_ddp_script.py [--stop-after K] SPECTRAL-ARGS...`` runs the command with these arguments; with
``--stop-after K`` every rank raises ``KeyboardInterrupt`` right after epoch ``K``'s checkpoint of the first
training stage (as a run killed there), so the run folder's ``.NAME.part`` with ``fit.pt`` is left for the
next launch to resume. The exit status is the command's.
"""

from __future__ import annotations

import sys


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
        cli(["spectral", *argv])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
