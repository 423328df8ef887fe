"""The microscope's options, shared by the simulators' commands (``simulate``, ``simulate-micrographs``): one
definition of each flag, its default and its help."""

from __future__ import annotations

import typer

DEFOCUS_MIN = typer.Option(1.0, "--defocus-min", help="Minimum defocus, µm.")
DEFOCUS_MAX = typer.Option(2.5, "--defocus-max", help="Maximum defocus, µm.")
ASTIGMATISM = typer.Option(0.0, "--astigmatism", help="ΔfU − ΔfV, µm (random azimuth).")
VOLTAGE = typer.Option(300.0, "--voltage", help="Acceleration voltage, kV.")
CS = typer.Option(2.7, "--cs", help="Spherical aberration, mm.")
AMP_CONTRAST = typer.Option(0.1, "--amp-contrast", help="Amplitude contrast fraction w.")
BFACTOR = typer.Option(0.0, "--bfactor", help="CTF envelope B-factor, Å².")
PHASE_SHIFT = typer.Option(0.0, "--phase-shift-deg", help="Phase-plate shift, degrees.")
