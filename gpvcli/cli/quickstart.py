"""`gpv quickstart`: synth, prepare, train (detector, then GPV), evaluate and predict in one go."""

from __future__ import annotations

from pathlib import Path

import typer

from gpvcli.cli.common import console


def quickstart_command(
    runs: Path = typer.Option(Path("runs/quickstart"), "--runs", help="Folder of the two runs and the picture."),
    budget: float = typer.Option(1.0, "--budget", help="Scales the training steps (0.2 for a quick look)."),
) -> None:
    """The whole pipeline on the embedded synthetic world, on CPU (resumes if interrupted).

    Example: gpv quickstart --budget 0.5
    """
    from gpvcli.cli.common import print_table
    from gpvcli.eval.evaluate import table1_row
    from gpvcli.quickstart import quickstart

    result = quickstart(runs=runs, budget=budget)
    header, cells = table1_row(result["metrics"]["tasks"])
    print_table("tiny GPV on the synthetic COCO-SCE test split", header, [["tiny", *cells]], first_column="Model")
    for ex in result["examples"]:
        console.print(f"{ex['query']!r} -> [green]{ex['text'] or '(empty)'}[/]")
    console.print(f"picture: {result['picture']}\nnext: gpv predict IMAGE \"Locate dog.\" --run {result['gpv']}")
