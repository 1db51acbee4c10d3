"""The one progress display of every long step (training, validation, evaluation, caching, generation).

On a terminal it is a rich bar. Off a terminal (a log file, a pipe, a cluster job, CI) a bar would be drawn
once, at the end, cut to 80 columns; there the same calls print plain lines instead, one each time a
tenth of the work is done or `PLAIN_INTERVAL_S` seconds have passed, and one at the end:

    training detector (detector) 60/600 (10%) epoch 1 loss 5.085 111 samples/s, elapsed 0:00:09, eta 0:01:21
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import TYPE_CHECKING

import rich
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; only read by type checkers here

PLAIN_FRACTION = 0.1     # off a terminal, a line each time this share of the total is done ...
PLAIN_INTERVAL_S = 30.0  # ... or this many seconds have passed since the last line


def progress_bar(show: bool) -> Progress | PlainProgress:
    """A display of description, count, the task's `info` field, elapsed and remaining time; silent when
    not `show`, plain lines off a terminal. Add tasks with `add_task(description, total=N, info="")`, move
    them with `advance(task, n)` or `update(task, advance=n, info=...)`; use it as a context manager."""
    if show and not rich.get_console().is_terminal:
        return PlainProgress()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not show)


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class PlainProgress:
    """The calls of `rich.progress.Progress` that the toolkit makes, printed as plain lines on stdout."""

    def __init__(self, fraction: float = PLAIN_FRACTION, interval_s: float = PLAIN_INTERVAL_S):
        self.fraction, self.interval_s = fraction, interval_s
        self.tasks: list[dict] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        for task in self.tasks:          # where a task stopped short of a line (an error, a last partial step)
            if task["completed"] != task["printed"]:
                self._print(task)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        now = time.monotonic()
        self.tasks.append({"description": description, "total": total, "completed": completed, "start": now,
                           "start_completed": completed, "printed": completed, "printed_at": now,
                           "info": fields.get("info", "")})
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None,
               **fields) -> None:
        task = self.tasks[task_id]
        task["completed"] = completed if completed is not None else task["completed"] + (advance or 0)
        task["info"] = fields.get("info", task["info"])
        if self._due(task):
            self._print(task)

    def _due(self, task: dict) -> bool:
        total, done, parts = task["total"], task["completed"], round(1 / self.fraction)
        if total and (done >= total or done * parts // total > task["printed"] * parts // total):   # exact
            return done != task["printed"]
        return time.monotonic() - task["printed_at"] >= self.interval_s

    def _print(self, task: dict) -> None:
        now = time.monotonic()
        elapsed, total, done = now - task["start"], task["total"], task["completed"]
        count = f"{done:g}/{total:g} ({100 * done / total:.0f}%)" if total else f"{done:g}"
        rate = (done - task["start_completed"]) / elapsed if elapsed > 0 else 0.0
        eta = f", eta {_clock((total - done) / rate)}" if total and rate > 0 and done < total else ""
        info = f" {task['info']}" if task["info"] else ""
        sys.stdout.write(f"{task['description']} {count}{info}, elapsed {_clock(elapsed)}{eta}\n")
        sys.stdout.flush()
        task["printed"], task["printed_at"] = done, now
