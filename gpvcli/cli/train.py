"""`gpv train`: train GPV (or pretrain its detector) on prepared data."""

from __future__ import annotations

from pathlib import Path

import typer

from gpvcli.cli.common import config_option, console, data_option, set_option


def train_command(
    config: str = config_option(),
    data: Path | None = data_option(),
    run: Path = typer.Option(Path("runs/default"), "--run", "--run-dir",
                             help="Run folder (config, metrics, checkpoints); under torchrun write --run-dir "
                                  "(torchrun's own parser mistakes --run for its --run-path)."),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated tasks, e.g. vqa,cap,loc,cls."),
    stage: str | None = typer.Option(None, "--stage", help="gpv (default), align (regions and words, before "
                                                          "gpv), detector (stage-0 pretraining) or classifier "
                                                          "(backbone warm-up on crops)."),
    set_: list[str] = set_option(),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run from its last checkpoint, on "
                                "the data, config and stage it recorded."),
) -> None:
    """Train a model; an interrupted run continues with --resume. SIGTERM / SIGINT stop it after the current
    step with last/ saved (exit code 143 / 130).

    Example: gpv train --config tiny --run runs/tiny --tasks vqa,cap,loc,cls --set train.epochs=2

    Multi-GPU / multi-node: torchrun --nproc_per_node=8 -m gpvcli train --config gpv1 --run-dir runs/gpv1
    """
    from gpvcli.train.trainer import train

    overrides = list(set_)
    if tasks:
        overrides.append(f"train.tasks=[{tasks}]")
    if stage:
        overrides.append(f"train.stage={stage}")
    result = train(run, config=config, data_dir=data, overrides=overrides, resume=resume)
    best = result["best"]
    console.print(f"done: {result['steps']} steps; best selection metric "
                  f"{'n/a' if best is None else f'{best:.4f}'}; checkpoints in {run}/last and {run}/best")
