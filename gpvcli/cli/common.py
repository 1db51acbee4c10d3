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
