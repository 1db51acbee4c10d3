"""Pieces shared by the CLI commands: the console and rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def print_table(title: str, columns: list[str], rows: list[list], first_column: str = "") -> None:
    table = Table(title=title, title_justify="left")
    table.add_column(first_column, style="bold")
    for c in columns:
        table.add_column(c, justify="right")
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(table)


def print_results(title: str, model: str, tasks: dict) -> None:
    """Test / seen / unseen per task: one row shaped like the seed's Table 1 on a wide terminal,
    a row per task otherwise."""
    from gpvcli.eval.evaluate import TABLE_COLUMNS, format_metric, table1_row

    if console.width >= 140:
        header, cells = table1_row(tasks)
        print_table(title, header, [[model, *cells]], first_column="Model")
        return
    rows = [[name, tasks[task]["metric"], *(format_metric(task, tasks[task][col]) for col in ("all", "seen", "unseen"))]
            for task, name in TABLE_COLUMNS if task in tasks]
    print_table(f"{title}: {model}", ["Metric", "Test", "Seen", "Unseen"], rows, first_column="Task")
