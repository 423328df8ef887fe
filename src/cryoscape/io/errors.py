"""The one exception type for bad user input.

Every reader raises :class:`InputError` with a one-line message that names the file (or option) and the
problem; the command line prints it and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from the user: a file that is missing, unreadable, inconsistent, or an invalid option."""

    def __init__(self, where: str | Path | None, problem: str):
        self.where = str(where) if where is not None else None
        self.problem = problem
        super().__init__(f"{self.where}: {problem}" if where is not None else problem)
