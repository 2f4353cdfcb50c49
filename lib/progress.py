"""One progress display for long work (training, corpus builds, prediction): a rich bar on a
terminal; plain periodic lines where output goes to a file or a pipe (CI, nohup, SLURM .out files),
because a rich bar there is drawn only once, at the end."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import Progress

LINE_EVERY_FRACTION = 0.10  # a plain line each time another 10% is done ...
LINE_EVERY_SECONDS = 30.0  # ... or 30 s have passed, whichever comes first,
MIN_SECONDS_BETWEEN = 2.0  # but work that takes seconds in all gets its last line only


def quiet_library_bars(stream=None) -> None:
    """Where output is not a terminal, switch off the tqdm bars transformers (loading and writing
    weights) and MLflow (artifact transfers) draw: in a log file they are rows of carriage returns."""
    stream = stream or sys.stderr
    if stream.isatty():
        return
    import transformers  # here, not at the top: the corpus builder imports this module too

    transformers.utils.logging.disable_progress_bar()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # read at each transfer


def progress(*columns, console: Console | None = None, disable: bool = False, **kwargs):
    """A rich ``Progress`` with ``columns`` on a terminal, else a ``LineProgress`` with the same calls."""
    console = console or Console()
    if console.is_terminal or disable:
        return Progress(*columns, console=console, disable=disable, **kwargs)
    return LineProgress(console.file)


class LineProgress:
    """The part of rich's Progress API the project uses, written as one line per 10% or 30 s:
    ``train 120/600 (20%) epoch 1 loss 0.5132 ... elapsed 0:00:41 eta 0:02:44``."""

    def __init__(self, stream=None, clock: Callable[[], float] = time.monotonic):
        self.stream, self.clock = stream or sys.stderr, clock
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for task_id, task in self.tasks.items():
            if task["completed"] != task["printed_at"]:
                self._line(task_id)

    @property
    def console(self) -> Console:
        return Console(file=self.stream)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        task_id = len(self.tasks)
        now = self.clock()
        self.tasks[task_id] = {
            "description": description,
            "total": total,
            "completed": completed,
            "fields": fields,
            "started": now,
            "start_done": completed,
            "printed_at": completed,
            "printed_time": now,
        }
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: int,
        completed: float | None = None,
        advance: float | None = None,
        total: float | None = None,
        **fields,
    ) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        if advance:
            task["completed"] += advance
        task["fields"].update({k: v for k, v in fields.items() if k != "description"})
        if self._due(task):
            self._line(task_id)

    def _due(self, task: dict) -> bool:
        if task["completed"] == task["printed_at"]:
            return False
        total = task["total"]
        if total and task["completed"] >= total:
            return True
        since = self.clock() - task["printed_time"]
        step = total * LINE_EVERY_FRACTION if total else None
        return (
            bool(step and task["completed"] - task["printed_at"] >= step) and since >= MIN_SECONDS_BETWEEN
        ) or since >= LINE_EVERY_SECONDS

    def _line(self, task_id: int) -> None:
        task = self.tasks[task_id]
        now, done, total = self.clock(), task["completed"], task["total"]
        elapsed = now - task["started"]
        parts = [task["description"], f"{done:g}/{total:g} ({100 * done / total:.0f}%)" if total else f"{done:g}"]
        parts += [str(v) for v in task["fields"].values() if str(v)]
        parts.append(f"elapsed {_clock(elapsed)}")
        rate = (done - task["start_done"]) / elapsed if elapsed > 0 else 0.0
        if total and rate > 0 and done < total:
            parts.append(f"eta {_clock((total - done) / rate)}")
        print(" ".join(parts), file=self.stream, flush=True)
        task["printed_at"], task["printed_time"] = done, now


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
