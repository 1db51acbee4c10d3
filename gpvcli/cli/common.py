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


def print_grounding(tasks: dict) -> None:
    """The grounding checks (score with the true pairing, with one input swapped, their difference), and a
    warning line for every task whose dependence is within noise of zero."""
    from gpvcli.eval.evaluate import format_metric
    from gpvcli.eval.grounding import warnings

    checked = {task: row["grounding"] for task, row in tasks.items() if row.get("grounding")}
    if not checked:
        return
    rows = [[task, f"{g['swap']} swapped", g["n"], format_metric(task, g["true"]), format_metric(task, g["swapped"]),
             f"{format_metric(task, g['dependence'])} ± {format_metric(task, 2 * g['se'])}"]
            for task, g in checked.items()]
    print_table("Grounding checks (the same samples with one input swapped)",
                ["Check", "n", "True", "Swapped", "Dependence (± 2 s.e.)"], rows, first_column="Task")
    for line in warnings(checked):
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False)
