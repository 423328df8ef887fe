"""Entry point of the ``cryoscape`` command. Heavy modules are imported inside commands, so ``--help``
answers fast. Bad input (:class:`cryoscape.io.errors.InputError`) prints one line and exits with 2."""

from __future__ import annotations

import sys

import typer

from . import reconstruct as _reconstruct
from . import simulate as _simulate
from . import spectral as _spectral

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="cryoscape: heterogeneous single-particle cryo-EM, from atoms to images and back.")
app.command("simulate")(_simulate.simulate)
app.command("demo")(_simulate.demo)
app.command("backproject")(_reconstruct.backproject)
app.command("fsc")(_reconstruct.fsc_cmd)
app.command("downsample")(_reconstruct.downsample)
app.command("spectral")(_spectral.spectral)


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
    from ..io.errors import InputError
    try:
        app(args=argv)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # unwritable output, full disk, too many open files: one line, not a traceback
        where = exc.filename if exc.filename else "system"
        typer.echo(f"error: {where}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
