"""`gpv evaluate`: score a run or checkpoint on test (seen / unseen) or val."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gpvcli.cli.common import beam_option, console, json_option, run_argument, run_data_option


def evaluate_command(
    run: Path = run_argument(),
    split: str = typer.Option("test", "--split", help="test or val."),
    data: Path | None = run_data_option(),
    out: Path | None = typer.Option(None, "--out", help="Output folder; default RUN/eval/SPLIT."),
    batch_size: int = typer.Option(64, "--batch-size"),
    beam: int = beam_option(),
    cls_mask: bool = typer.Option(False, "--cls-mask", help="Classification answers use category words only."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N samples (a quick look)."),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated tasks to score (default: all)."),
    checks: bool = typer.Option(True, "--checks/--no-checks",
                                help="Also score each task with its image or query swapped (grounding checks)."),
    as_json: bool = json_option("metrics.json instead of a table"),
) -> None:
    """Decode a split, print a Table 1 row (test / seen / unseen per task) and save metrics and predictions.

    Example: gpv evaluate runs/tiny --split test
    """
    from gpvcli.cli.common import print_grounding, print_results, print_table
    from gpvcli.eval.evaluate import evaluate

    result = evaluate(run, split=split, data_dir=data, out_dir=out, batch_size=batch_size, beam_size=beam,
                      cls_mask=cls_mask, limit=limit, tasks=tasks.split(",") if tasks else None,
                      checks=checks, show_progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    print_results(f"{split} split ({result['protocol']['dataset']})", run.name, result["tasks"])
    groups = [[task, *("-" if v is None else f"{v:.3f}" for v in row["groups"].values())]
              for task, row in result["tasks"].items()]
    print_table("Per category group (mean over categories; seed Fig. 1)", list(next(iter(
        result["tasks"].values()))["groups"]), groups, first_column="Task")
    print_grounding(result["tasks"])
    console.print(f"saved to {result['out_dir']}")
