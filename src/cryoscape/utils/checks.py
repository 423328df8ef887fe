"""Checks of option values shared by configs and commands: a bad value is an
:class:`~cryoscape.io.errors.InputError` naming the option (e.g. ``--epochs``)."""

from __future__ import annotations

from ..io.errors import InputError

__all__ = ["at_least", "one_of"]


def at_least(option: str, value, low) -> None:
    """Refuse ``value < low`` (and NaN) for ``option``."""
    if not value >= low:
        raise InputError(option, f"must be ≥ {low}, got {value}")


def one_of(option: str, value, choices: tuple) -> None:
    """Refuse a ``value`` of ``option`` that is not one of ``choices``."""
    if value not in choices:
        names = ", ".join(map(str, choices[:-1])) + f" or {choices[-1]}" if len(choices) > 1 else str(choices[0])
        raise InputError(option, f"must be {names}, got {value!r}")
