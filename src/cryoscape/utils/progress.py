"""Progress bars with ETA (rich), usable from library code and silent when asked."""

from __future__ import annotations

import contextlib
import sys

__all__ = ["progress_bar"]


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


class _Bar:
    def __init__(self, progress, task):
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._t, n)


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool = True):
    """Context manager yielding an object with ``advance(n)``; a rich bar with rate and ETA on stderr.

    Disabled (a no-op) when ``enabled`` is False.
    """
    if not enabled:
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as p:
        yield _Bar(p, p.add_task(description, total=total))
