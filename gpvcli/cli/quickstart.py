"""`gpv quickstart`: synth, prepare, train (backbone warm-up, alignment, then GPV), evaluate and predict in one go."""

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
    from gpvcli.api import Prediction
    from gpvcli.cli.common import print_grounding, print_prediction, print_results
    from gpvcli.quickstart import quickstart

    result = quickstart(runs=runs, budget=budget)
    print_results("COCO-SCE test split of the synthetic world", "tiny GPV", result["metrics"]["tasks"])
    print_grounding(result["metrics"]["tasks"])
    for ex in result["examples"]:
        print_prediction(ex["query"], Prediction(**{k: ex[k] for k in ("text", "task", "boxes", "scores")}))
    console.print(f"picture: {result['picture']}\nnext: gpv predict IMAGE \"Locate dog.\" --run {result['gpv']}")
