"""Progress display for corpus builds (lib/progress.py: a bar on a terminal, lines in a log file);
silent when disabled (tests, library callers)."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

from lib.progress import progress


class BuildProgress:
    def __init__(self, enabled: bool = True, title: str = "building corpus"):
        self.enabled, self.title = enabled, title
        self._progress = None
        if enabled:
            self._progress = progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> BuildProgress:
        if self._progress is not None:
            self._progress.console.print(self.title)  # .log would add a time and this file's name
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int):
        return self._progress.add_task(description, total=total) if self._progress is not None else None

    def advance(self, task, step: int = 1) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, step)

    @contextlib.contextmanager
    def status(self, description: str):
        """An indeterminate step (reading sources, writing files): a spinner row, then done."""
        task = self.task(description, total=None)
        try:
            yield
        finally:
            if task is not None:
                self._progress.update(task, total=1, completed=1)
