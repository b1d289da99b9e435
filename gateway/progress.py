"""A progress bar for long CLI jobs on a terminal; silent in pipes, logs and with ``--quiet``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as Bar

from core.progress import Progress


def _silent(done: int, total: int) -> None:
    return None


@contextmanager
def progress_bar(description: str, *, quiet: bool = False) -> Iterator[Progress]:
    """Yield ``progress(done, total)`` drawing a bar on stderr while the job runs, when stderr is a terminal.

    The bar goes away when the job ends, so what stays on screen is the job's own summary (on stdout).
    """
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield _silent
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Bar(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        step, shown = 1, -1

        def update(done: int, total: int) -> None:
            nonlocal step, shown
            step = max(1, total // 500)  # a 100,000-row import redraws 500 times, not 100,000
            if done == total or done - shown >= step:
                shown = done
                bar.update(task, completed=done, total=total)

        yield update
