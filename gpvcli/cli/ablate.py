"""`gpv ablate`: the paper's Tables 1-3 and Fig. 1 (task combinations, relevance conditioning, heads)."""

from __future__ import annotations

from pathlib import Path

import typer

from gpvcli.cli.common import config_option, console, data_option, print_table, set_option


def ablate_command(
    study: str = typer.Option("tasks", "--study", help="tasks (Table 1, Fig. 1), relevance (Table 2), "
                              "heads (Table 3) or all."),
    tasks: str | None = typer.Option(None, "--tasks", help="Run only this Table 1 row, e.g. vqa,cap,loc."),
    variant: str | None = typer.Option(None, "--variant", help="Run one variant by name (a line of --plan)."),
    config: str = config_option(),
    data: Path | None = data_option(),
    out: Path = typer.Option(Path("runs/ablate"), "--out", help="Ablation folder (one folder per variant)."),
    budget: float = typer.Option(1.0, "--budget", help="Multiplies the four-task model's default step budget "
                                 "(tiny: 1500 steps of 32 samples; other presets: their full schedule)."),
    schedule: str = typer.Option("epochs", "--schedule", help="epochs: every variant trains the four-task model's "
                                 "epochs over its own samples (the paper's unit); steps: every variant the "
                                 "four-task model's steps."),
    seeds: int = typer.Option(1, "--seeds", help="Repeat each variant with seeds 0..N-1 (mean ± std; findings "
                              "judged against 2 standard errors, or a paired bootstrap with one seed)."),
    set_: list[str] = set_option(),
    eval_samples: int = typer.Option(0, "--eval-samples", help="Test samples scored per task, the same first "
                                     "ones for every variant (0 = the whole test split)."),
    source: Path | None = typer.Option(None, "--from", help="Start every variant from this align run's encoders "
                                       "(e.g. runs/quickstart/align) instead of the shared pretraining."),
    pretrain: bool = typer.Option(False, "--pretrain", help="Only run the shared pretraining (a plan's first job)."),
    plan: bool = typer.Option(False, "--plan", help="Print and save the pretraining command, then one command per "
                              "variant; run nothing."),
    launcher: str | None = typer.Option(None, "--launcher", help="With --plan: prefix of each command, e.g. "
                                        "\"torchrun --nproc_per_node=8\" (runs `-m gpvcli ablate ...`)."),
    collect: bool = typer.Option(False, "--collect", help="Only build the tables from finished variants."),
) -> None:
    """Pretrain the encoders once (the quickstart's stages, into OUT/pretrained; reused), train and evaluate
    each variant from them (resuming unfinished ones), then print and save the tables.
    --config, --data and --set apply to every variant (the model's --set to the pretraining too).

    Examples: gpv ablate | gpv ablate --tasks vqa,cap,loc | gpv ablate --study all --seeds 3 |
    gpv ablate --study all --from runs/quickstart/align |
    gpv ablate --study all --plan --launcher "torchrun --nproc_per_node=8" | gpv ablate --collect --study all
    """
    from gpvcli import ablate
    from gpvcli.ablate.variants import select_studies
    from gpvcli.errors import GPVError

    if plan + collect + pretrain + (variant is not None) > 1:
        raise GPVError("--plan, --collect, --pretrain and --variant exclude each other")
    if plan:
        result = ablate.plan(study=study, tasks=tasks, config=config, data_dir=data, out=out, budget=budget,
                             schedule=schedule, seeds=seeds, sets=set_, eval_samples=eval_samples, source=source,
                             launcher=launcher)
        for command in result["commands"]:
            typer.echo(command)
        console.print(f"{len(result['commands'])} commands saved to {result['script']} and {result['text']}; "
                      f"afterwards: {result['collect']}", highlight=False)
        return
    if collect:
        report = ablate.collect(out, studies=select_studies(study), seeds=seeds)
    else:
        report = ablate.run_ablation(study=study, tasks=tasks, variant=variant, config=config, data_dir=data,
                                     out=out, budget=budget, schedule=schedule, seeds=seeds, sets=set_,
                                     eval_samples=eval_samples,
                                     source=source, pretrain_only=pretrain,
                                     log=lambda message: console.print(f"[bold]{message}[/]", highlight=False))
        if pretrain:
            done = report["pretrained"]
            if done is not None:
                console.print(f"pretrained: variants start from {done['start']}", highlight=False)
            return
        if variant is not None:
            result = report["results"][variant]
            if result is not None:
                console.print(f"{variant}: finished ({result['steps']} steps); "
                              f"`gpv ablate --collect --out {out}` builds the tables", highlight=False)
            return
    show(report)


def show(report: dict) -> None:
    """Print a collected report: tables, Fig. 1 gains, findings, pending variants, files."""
    from gpvcli.ablate import findings, tables

    for table in report["tables"].values():
        header, rows = tables.cell_texts(table, "rich")
        print_table(table["title"], header, rows, first_column="Model")
    if report["figure1"] is not None:
        print_table("Fig. 1. Relative gain (%) of multitask over single task",
                    [name for _, name in findings.FIG1_COLUMNS],
                    [[name, *("n/a" if report["figure1"][t][g] is None else f"{report['figure1'][t][g]:.2f}"
                              for g, _ in findings.FIG1_COLUMNS)] for t, name in findings.FIG1_ROWS],
                    first_column="Task")
    if report["findings"]:
        colour = {"agrees": "green", "disagrees": "red", "within noise": "yellow", "pending": "dim"}
        print_table("The paper's findings on this run", ["Paper", "This run", "Difference (noise)", "Verdict"],
                    [[f["claim"], f["paper"], f["ours"], f["difference"],
                      f"[{colour[f['verdict']]}]{f['verdict']}[/]"] for f in report["findings"]],
                    first_column="Claim")
        console.print("a difference counts only beyond its noise; rule used: " + "; ".join(report["noise_rules"]),
                      highlight=False)
    if report["pending"]:
        console.print(f"pending: {', '.join(report['pending'])}", highlight=False)
    console.print(f"saved: {', '.join(report['files'])}", highlight=False)
