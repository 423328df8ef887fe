"""Entry point of the ``cryoscape`` command. Heavy modules are imported inside commands, so ``--help``
answers fast. Bad input (:class:`cryoscape.io.errors.InputError`) prints one line and exits with 2."""

from __future__ import annotations

import sys

import typer

from . import filter as _filter
from . import class2d as _class2d
from . import cluster2d as _cluster2d
from . import denoise as _denoise
from . import backproject as _backproject
from . import demo as _demo
from . import downsample as _downsample
from . import fsc as _fsc
from . import pick as _pick
from . import simulate as _simulate
from . import simulate_micrographs as _simulate_micrographs
from . import spectral as _spectral
from . import analyze as _analyze
from . import eval_vol as _eval_vol
from . import extract as _extract
from . import train_vae as _train_vae

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="cryoscape: heterogeneous single-particle cryo-EM, from atoms to images and back.")
app.command("simulate")(_simulate.simulate)
app.command("simulate-micrographs")(_simulate_micrographs.simulate_micrographs_cmd)
app.command("demo")(_demo.demo)
app.command("backproject")(_backproject.backproject)
app.command("fsc")(_fsc.fsc_cmd)
app.command("downsample")(_downsample.downsample)
app.command("spectral")(_spectral.spectral)
app.command("train-vae")(_train_vae.train_vae_cmd)
app.command("eval-vol")(_eval_vol.eval_vol)
app.command("analyze")(_analyze.analyze)
app.command("filter")(_filter.filter_cmd)
app.command("class2d")(_class2d.class2d_cmd)
app.command("cluster2d")(_cluster2d.cluster2d_cmd)
app.command("denoise")(_denoise.denoise_cmd)
app.command("pick")(_pick.pick_cmd)
app.command("extract")(_extract.extract_cmd)


def _print_version(value: bool):
    if value:
        from .. import __version__
        typer.echo(f"cryoscape {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")):
    """cryoscape: heterogeneous single-particle cryo-EM, from atoms to images and back."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Usage errors exit with 2 (click), bad input files/options with 2 and one line."""
    import gc

    from ..io.errors import InputError
    # Importing torch makes about a million Python objects; at the default thresholds (700, 10, 10) the
    # cyclic collector walks them ~500 times in one short command (measured: 0.4 s of a 4 s
    # backprojection). 100× rarer collections cost 0.14 s there; cycles are still collected.
    gc.set_threshold(100_000, 50, 100)
    try:
        app(args=argv)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # unwritable output, full disk, too many open files: one line, not a traceback
        where = exc.filename if exc.filename else "system"
        typer.echo(f"error: {where}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    except FloatingPointError as exc:  # a diverging optimisation: say so in one line, not a traceback
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)


def entry() -> None:
    """Console entry point (``cryoscape``, ``python -m cryoscape.cli.main``): :func:`main`, then end the
    process without Python's interpreter teardown.

    Tearing the interpreter down after torch was imported takes about a second (measured: a 10,000-image
    backprojection from 3.9 s to 2.7 s of wall time without it). By then every output has been written,
    closed and renamed into place, so once the logs and standard streams are flushed the process leaves
    with ``os._exit`` and the command's exit status.
    """
    import logging
    import os
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):  # sys.exit("message"): print it and fail, as Python does
            print(code, file=sys.stderr)
            code = 1
        code = 0 if code is None else int(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing left to deliver
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
