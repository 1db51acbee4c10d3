"""The one rich progress bar of every long step (training, validation, evaluation, caching, generation)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(show: bool) -> Progress:
    """A bar showing description, count, the task's `info` field, elapsed and remaining time; silent when
    not `show`. Add tasks with `add_task(description, total=N, info="")`."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not show)
