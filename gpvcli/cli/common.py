"""Pieces shared by the CLI commands: the options several commands take, the console and rich tables."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpvcli.config import DEFAULT_PRESET
from gpvcli.data.prompts import BOX_TASKS

OFF_TERMINAL_WIDTH = 1000   # off a terminal (a log, a pipe) tables and texts keep the width they need

console = Console(width=None if sys.stdout.isatty() else OFF_TERMINAL_WIDTH)


# ---- options shared by several commands (each call makes the option for one command) ----------------

def config_option() -> str:
    return typer.Option(DEFAULT_PRESET, "--config", help="Preset name (tiny, gpv1, ...) or a YAML file.")


def set_option() -> list[str]:
    return typer.Option([], "--set", help="Config override section.key=value, e.g. model.heads=task (repeatable).")


def data_option() -> Path | None:
    """--data of the commands that train: the default data is made on first use."""
    return typer.Option(None, "--data", help="Prepared data folder; default $GPV_HOME/prepared/sce "
                        "(prepared on first use).")


def run_data_option() -> Path | None:
    """--data of the commands that read a run: the default is the data it was trained on."""
    return typer.Option(None, "--data", help="Prepared data folder; default: the run's.")


def run_argument() -> Path:
    return typer.Argument(..., help="A run folder (its best/ checkpoint is used) or a checkpoint folder.")


def beam_option() -> int:
    return typer.Option(1, "--beam", help="Beam size (1 = greedy).")


def json_option(what: str) -> bool:
    return typer.Option(False, "--json", help=f"Print {what}.")


def print_table(title: str, columns: list[str], rows: list[list], first_column: str = "") -> None:
    console.print(title, style="table.title", markup=False, highlight=False)   # whole, not wrapped to the table
    table = Table()
    table.add_column(first_column, style="bold")
    for c in columns:
        table.add_column(c, justify="right")
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(table)


def print_prediction(query: str, pred, label: str = "") -> None:
    """One `api.Prediction` as a user reads it: `label 'query' (task)`, then `-> text` for a text task,
    then one line per box (relevance, pixel xyxy); a box task shows its boxes only (`--json` keeps all)."""
    head = f"[bold]{escape(label)}[/] " if label else ""
    answer = "" if pred.task in BOX_TASKS else f" -> [green]{escape(pred.text or '(empty)')}[/]"
    console.print(f"{head}{escape(repr(query))} ({pred.task}){answer}", highlight=False)
    for box, score in zip(pred.boxes, pred.scores):
        console.print(f"  {score:.3f}  \\[{', '.join(f'{v:.1f}' for v in box)}]", highlight=False)


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
