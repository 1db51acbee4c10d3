"""Run, plan and collect an ablation: pretrain once, train each variant from there, evaluate it, build the tables.

The ablation folder (OUT, default runs/ablate/):
    settings.json           the settings of the latest `gpv ablate` (config, data, start, budget, steps, overrides)
    pretrained/             the variants' shared starting point (`gpvcli.ablate.pretrain`): the tiny recipe's
                            pre-GPV stages and the shared visual feature caches of the train and test splits
    NAME/                   one variant (name: gpvcli.ablate.variants.Variant.name), a `gpv train` run folder
                            (config.yaml, metrics.jsonl, last/, best/) started from pretrained/ (or --from), plus
      eval/TASK/            `gpv evaluate` outputs on the test split (by default all of it) of each trained task,
                            with the grounding checks; predictions.jsonl holds the per-sample scores that the
                            findings' bootstrap resamples
      result.json           written last, so it marks a finished variant: metrics per task, steps, seconds,
                            parameter count, the test subset
    ablation.json, ablation.md, figure1.png   tables, Fig. 1 and the paper's findings checked on this run
    plan.sh, plan.txt       `--plan`: the pretraining command, then one self-contained command per variant

A finished variant (result.json) is never redone; an unfinished one continues from its last/ checkpoint;
the pretraining likewise (done.json).
A variant whose folder was trained with another config (other --budget, --schedule, --set or --from) is refused.
One process writes OUT at a time (`gpvcli.locks`; a plan's jobs lock only their own folder, pretrained/ or
the variant's, as `gpv train` does, and a finished pretraining is read without its lock, so that the
variants can run side by side).
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from gpvcli import io, locks, runs
from gpvcli.ablate import findings, pretrain, tables
from gpvcli.ablate.variants import (
    ALL,
    STUDY_NAMES,
    Variant,
    check_schedule,
    common_overrides,
    config_diff,
    default_steps,
    resolve,
    select_studies,
    steps_for,
    study_variants,
    train_samples,
    variant_overrides,
)
from gpvcli.config import DEFAULT_PRESET
from gpvcli.default_data import prepared_data
from gpvcli.errors import GPVError, Interrupted
from gpvcli.eval.evaluate import evaluate
from gpvcli.train.config import load_run_config
from gpvcli.train.distributed import launched_rank
from gpvcli.train.trainer import train

RESULT_FILE = "result.json"
DEFAULT_OUT = Path("runs/ablate")
# Test samples scored per task (the first ones of each task in the prepared test split: the same fixed
# subset for every variant); 0, the default, scores the whole split.
EVAL_SAMPLES = 0
DEFAULT_SCHEDULE = "epochs"       # see gpvcli.ablate.variants.SCHEDULES


def study_settings(*, config: str, data_dir: Path, out: Path, budget: float, sets: list[str], eval_samples: int,
                   source: str | Path | None = None, schedule: str = DEFAULT_SCHEDULE) -> dict:
    """What every variant shares: the config, data, start (`gpvcli.ablate.pretrain`), step budget (the
    four-task model's steps, and the schedule that gives the others theirs), overrides and test subset."""
    if eval_samples < 0:
        raise GPVError(f"--eval-samples {eval_samples}: need 0 (all) or more")
    check_schedule(schedule)
    samples = train_samples(data_dir)
    steps = steps_for(budget, default_steps(config, samples, sets))
    start = pretrain.start_of(out, config=config, source=source)
    return {"config": config, "data_dir": str(data_dir), "budget": budget, "steps": steps, "schedule": schedule,
            "train_samples": samples, "sets": list(sets),
            "from": None if source is None else str(Path(source).resolve()),
            "start": None if start is None else str(start),
            "overrides": common_overrides(config, sets=list(sets), start=start),
            "eval_samples": eval_samples}


def ensure_start(out: Path, settings: dict, *, show_progress: bool = True,
                 log: Callable[[str], None] = lambda message: None) -> dict | None:
    """The shared pretraining and feature cache of OUT (run, resumed or reused; see `pretrain.ensure`)."""
    return pretrain.ensure(out, settings, variant_config=resolve(ALL, settings), show_progress=show_progress,
                           log=log)


def _check_config(folder: Path, variant: Variant, settings: dict) -> None:
    """Refuse to reuse a variant folder trained on other data or with another resolved config."""
    recorded = runs.recorded_data_dir(folder)
    if recorded is not None and str(recorded) != settings["data_dir"]:
        raise GPVError(f"variant {variant.name} in {folder.parent} was trained on other data",
                       hint="pass the same --data as before, or another --out")
    saved = folder / runs.CONFIG
    if not saved.is_file():
        return
    diff = config_diff(load_run_config(saved), resolve(variant, settings))
    if diff:
        raise GPVError(f"variant {variant.name} in {folder.parent} was trained with other settings "
                       f"({', '.join(diff[:3])} differ)",
                       hint="use the same --config/--budget/--schedule/--set as before, or another --out")


def run_variant(variant: Variant, *, out: Path, settings: dict, show_progress: bool = True) -> dict | None:
    """Train (or resume) and evaluate one variant in OUT/NAME; returns its result.json (None on the
    non-zero ranks of a torchrun launch, which only train)."""
    folder = out / variant.name
    with locks.writing(folder, option="--out") if launched_rank() == 0 else nullcontext():
        return _run_variant(variant, folder, settings=settings, show_progress=show_progress)


def _run_variant(variant: Variant, folder: Path, *, settings: dict, show_progress: bool) -> dict | None:
    result_file = folder / RESULT_FILE
    if result_file.is_file():
        result = io.read_json(result_file, "variant result")
        _check_config(folder, variant, settings)
        if result["eval"]["samples_per_task"] != settings["eval_samples"]:
            raise GPVError(f"variant {variant.name} was evaluated on {result['eval']['samples_per_task']} "
                           "test samples per task", hint="pass the same --eval-samples, or another --out")
        return result
    resume = runs.restore_checkpoints(folder).is_dir()
    if resume:
        _check_config(folder, variant, settings)
    elif launched_rank() == 0:
        if folder.exists():
            shutil.rmtree(folder)        # started, but killed before its first checkpoint
        pretrain.link_cache(folder.parent, folder)
    data_dir = Path(settings["data_dir"])
    start = time.perf_counter()
    try:
        outcome = train(folder, config=settings["config"], data_dir=data_dir,
                        overrides=() if resume else variant_overrides(variant, settings),
                        resume=resume, show_progress=show_progress)
    except Interrupted as e:
        e.hint = "rerun the same `gpv ablate` to continue"
        raise
    if launched_rank() != 0:
        return None
    train_seconds = time.perf_counter() - start
    metrics, subset = {}, {}
    for task in variant.tasks:
        scored = evaluate(folder, split="test", data_dir=data_dir, out_dir=folder / "eval" / task, tasks=[task],
                          limit=settings["eval_samples"] or None, features=pretrain.test_features(folder.parent),
                          show_progress=show_progress)["tasks"]
        if task in scored:
            metrics[task] = scored[task]
            subset[task] = {"n": scored[task]["n"], "n_unseen": scored[task]["n_unseen"]}
    result = {"variant": variant.name, "tasks": list(variant.tasks),
              "relevance_conditioning": variant.relevance_conditioning, "heads": variant.heads,
              "seed": variant.seed, "steps": outcome["steps"], "metrics": metrics,
              "parameters": parameter_count(folder, data_dir),
              "train_seconds": round(train_seconds, 1),
              "eval_seconds": round(time.perf_counter() - start - train_seconds, 1),
              "eval": {"split": "test", "samples_per_task": settings["eval_samples"], "subset": subset}}
    io.write_json(result_file, result)
    return result


def parameter_count(folder: Path, data_dir: Path) -> int:
    """All parameters (trainable and frozen) of the variant's model (Table 3's "Params")."""
    from gpvcli.data.vocab import Vocab
    from gpvcli.model.info import count_parameters

    total = count_parameters(load_run_config(folder / runs.CONFIG).model,
                             len(Vocab.load(data_dir / "vocab.json")))["total"]
    return total["trainable"] + total["frozen"]


def select_variants(*, study: str, tasks: str | None, variant: str | None, seeds: int) -> tuple[tuple, list]:
    """(studies whose tables to show, variants to run) for the CLI's --study / --tasks / --variant."""
    from gpvcli.ablate.variants import parse_tasks

    if variant is not None:
        if tasks is not None:
            raise GPVError("--variant names one variant; it takes no --tasks")
        return (), [Variant.from_name(variant)]
    studies = select_studies(study)
    if tasks is not None:
        if studies != ("tasks",):
            raise GPVError("--tasks picks a row of Table 1; it goes with --study tasks")
        return studies, study_variants(studies, tasks=parse_tasks(tasks), seeds=seeds)
    return studies, study_variants(studies, seeds=seeds)


def run_ablation(*, study: str = "tasks", tasks: str | None = None, variant: str | None = None,
                 config: str = DEFAULT_PRESET, data_dir: str | Path | None = None, out: str | Path = DEFAULT_OUT,
                 budget: float = 1.0, schedule: str = DEFAULT_SCHEDULE, seeds: int = 1,
                 sets: list[str] | tuple[str, ...] = (),
                 eval_samples: int = EVAL_SAMPLES, source: str | Path | None = None, pretrain_only: bool = False,
                 show_progress: bool = True, log: Callable[[str], None] = lambda message: None) -> dict:
    """Run the shared pretraining (once; reused while its settings match) or take `source`'s encoders, then
    the variants of `study` (or the Table 1 row `tasks`, or the one `variant`) that are not finished, then
    collect the tables. With `pretrain_only` (a plan's first job) only the pretraining runs: returns
    {"pretrained": done.json}; with `variant` (a later job) nothing is collected: returns
    {"pretrained", "results": {name: result}}; else `collect`'s report plus those two."""
    from gpvcli.model.config import load_model_config
    from gpvcli.model.pretrained import check_named

    out = Path(out)
    studies, variants = select_variants(study=study, tasks=tasks, variant=variant, seeds=seeds)
    check_named(load_model_config(config, list(sets)))  # named checkpoints before data is prepared
    whole = variant is None and not pretrain_only and launched_rank() == 0     # this process writes OUT itself
    with locks.writing(out, option="--out") if whole else nullcontext():
        settings = study_settings(config=config, data_dir=prepared_data(data_dir, show_progress=show_progress),
                                  out=out, budget=budget, sets=list(sets), eval_samples=eval_samples, source=source,
                                  schedule=schedule)
        if whole:
            io.write_json(out / "settings.json", settings)
        pretrained = ensure_start(out, settings, show_progress=show_progress, log=log)
        if pretrain_only:
            return {"pretrained": pretrained}
        results = {}
        for k, v in enumerate(variants, 1):
            done = (out / v.name / RESULT_FILE).is_file()
            log(f"variant {k}/{len(variants)}: {v.name}" + (" (finished before)" if done else ""))
            results[v.name] = run_variant(v, out=out, settings=settings, show_progress=show_progress)
        if not whole:
            return {"pretrained": pretrained, "results": results}
        return {**write_report(out, studies=studies, seeds=seeds), "pretrained": pretrained, "results": results}


def job_command(job: list[str], settings: dict, *, out: Path, launcher: str | None = None) -> str:
    """The shell command of one job of a plan: `job` is ["--pretrain"] (writes only OUT/pretrained) or
    ["--variant", NAME] (writes only OUT/NAME, after the pretraining)."""
    config = settings["config"]
    if Path(config).suffix in (".yaml", ".yml"):
        config = str(Path(config).resolve())
    prefix = [*shlex.split(launcher), "-m", "gpvcli"] if launcher else ["gpv"]
    args = ["ablate", *job, "--config", config, "--data", settings["data_dir"],
            "--out", str(out.resolve()), "--budget", f"{settings['budget']:g}", "--schedule", settings["schedule"],
            "--eval-samples", str(settings["eval_samples"]),
            *(["--from", settings["from"]] if settings["from"] else []),
            *(a for s in settings["sets"] for a in ("--set", s))]
    return shlex.join([*prefix, *args])


def plan(*, study: str = "tasks", tasks: str | None = None, config: str = DEFAULT_PRESET,
         data_dir: str | Path | None = None, out: str | Path = DEFAULT_OUT, budget: float = 1.0,
         schedule: str = DEFAULT_SCHEDULE, seeds: int = 1,
         sets: list[str] | tuple[str, ...] = (), eval_samples: int = EVAL_SAMPLES, source: str | Path | None = None,
         launcher: str | None = None) -> dict:
    """The pretraining command, then one command per variant, saved as OUT/plan.txt (one per line) and
    OUT/plan.sh (`bash plan.sh` runs them in turn; `bash plan.sh 0` the pretraining, `bash plan.sh I` the
    I-th variant, e.g. I=$SLURM_ARRAY_TASK_ID in an array that depends on the pretraining job).
    Returns {"commands", "pretrain", "variants", "collect", "script", "text"}."""
    out = Path(out)
    studies, variants = select_variants(study=study, tasks=tasks, variant=None, seeds=seeds)
    settings = study_settings(config=config, data_dir=prepared_data(data_dir), out=out, budget=budget,
                              sets=list(sets), eval_samples=eval_samples, source=source, schedule=schedule)
    with locks.writing(out, option="--out"):
        first = job_command(["--pretrain"], settings, out=out, launcher=launcher)
        commands = [first, *(job_command(["--variant", v.name], settings, out=out, launcher=launcher)
                             for v in variants)]
        collect_cmd = shlex.join(["gpv", "ablate", "--collect", "--out", str(out.resolve()), "--study",
                                  "all" if studies == STUDY_NAMES else studies[0], "--seeds", str(seeds)])
        io.write_json(out / "settings.json", settings)
        text = io.write_text(out / "plan.txt", "\n".join(commands) + "\n")
        n = len(variants)
        script = io.write_text(out / "plan.sh", "\n".join([
            "#!/usr/bin/env bash",
            (f"# gpv ablate plan: the shared pretraining (0), then {n} variants (1-{n}), each writing only its own "
            f"folder under {out.resolve()}."),
            "# All in turn: bash plan.sh    One job: bash plan.sh I (0 first: every variant starts from it)",
            (f"# e.g. jid=$(sbatch --parsable --wrap 'bash plan.sh 0'); sbatch --dependency=afterok:$jid "
            f"--array=1-{n} --wrap 'bash plan.sh $SLURM_ARRAY_TASK_ID'"),
            f"# Then: {collect_cmd}",
            "set -euo pipefail",
            "commands=(",
            *(f"  {shlex.quote(c)}" for c in commands),
            ")",
            'if [ $# -ge 1 ]; then eval "${commands[$1]}"; else for c in "${commands[@]}"; do eval "$c"; done; fi',
            ""]))
        return {"commands": commands, "pretrain": first, "variants": [v.name for v in variants],
                "collect": collect_cmd, "script": str(script), "text": str(text)}


def load_results(out: Path) -> dict[str, dict]:
    """result.json of every finished variant in OUT, by name."""
    return {p.parent.name: io.read_json(p, "variant result") for p in sorted(Path(out).glob(f"*/{RESULT_FILE}"))}


def sample_scores(out: Path) -> findings.SampleScores:
    """Per-sample scores of OUT's finished variants, read from their eval/TASK/predictions.jsonl."""
    import json

    from gpvcli.eval.evaluate import PREDICTIONS

    cache: dict[tuple[str, str], dict | None] = {}

    def read(name: str, task: str) -> dict[str, tuple[float, bool]] | None:
        if (name, task) not in cache:
            path = Path(out) / name / "eval" / task / PREDICTIONS
            rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
            cache[name, task] = {r["sample_id"]: (r["score"], r["unseen"]) for r in rows
                                 if r["task"] == task and r["score"] is not None} or None
        return cache[name, task]
    return read


def collect(out: str | Path = DEFAULT_OUT, *, studies: tuple[str, ...] = STUDY_NAMES, seeds: int = 1) -> dict:
    """Tables, Fig. 1 and findings from the finished variants in OUT (others shown as pending); writes
    OUT/ablation.json, OUT/ablation.md and (with the tasks study) OUT/figure1.png; returns the report:
    {"out", "settings", "test_subset", "tables": {study: table}, "figure1": gains | None,
     "findings": [...], "pending": [names], "files": [paths]}."""
    out = Path(out)
    with locks.writing(out, option="--out"):
        return write_report(out, studies=studies, seeds=seeds)


def write_report(out: Path, *, studies: tuple[str, ...], seeds: int) -> dict:
    """`collect` by the process that holds OUT's lock."""
    results = load_results(out)
    expected = study_variants(studies, seeds=seeds)
    subset = {}
    for r in results.values():
        subset.update(r["eval"]["subset"])
    report = {"out": str(out),
              "settings": io.read_json(out / "settings.json", "ablation settings")
              if (out / "settings.json").is_file() else None,
              "test_subset": subset,
              "tables": {s: tables.build_table(s, results, seeds) for s in studies},
              "figure1": findings.figure1_gains(results) if "tasks" in studies else None,
              "pretrained": io.read_json(out / pretrain.FOLDER / pretrain.DONE, "pretraining record")
              if (out / pretrain.FOLDER / pretrain.DONE).is_file() else None,
              "findings": findings.check_claims(results, studies, sample_scores(out)),
              "pending": [v.name for v in expected if v.name not in results]}
    report["noise_rules"] = findings.rules_used(report["findings"])
    files = [io.write_json(out / "ablation.json", report), io.write_text(out / "ablation.md", markdown(report))]
    if report["figure1"] is not None:
        files.append(findings.save_heatmap(report["figure1"], out / "figure1.png"))
    report["files"] = [str(f) for f in files]
    return report


def markdown(report: dict) -> str:
    """ablation.md: the tables (best in bold, second best underlined), Fig. 1 and the findings."""
    lines = ["# GPV-1 ablations", ""]
    s = report["settings"]
    if s:
        schedule = s.get("schedule", "steps")       # settings saved before --schedule had the steps schedule
        per = ("per variant" if schedule == "steps" else
               "for the four-task model, the others in proportion to their training samples (the same epochs)")
        lines += [(f"Config `{s['config']}`, {s['steps']} optimizer steps {per} (budget {s['budget']:g}, "
                   f"schedule {schedule}), data `{s['data_dir']}`; overrides: "
                   f"`{' '.join(s['overrides'])}`."), ""]
        start = s.get("start")
        lines += [f"Every variant starts from `{start}`"
                  + (" (`--from`)." if s.get("from") else " (the shared pretraining).") if start else
                  "Every variant starts from the preset's own pretrained weights.", ""]
    if report.get("pretrained") and report["pretrained"]["seconds"]:
        lines += ["Shared pretraining: " + ", ".join(f"{k.replace('_', ' ')} {v / 60:.1f} min"
                                                     for k, v in report["pretrained"]["seconds"].items()) + ".", ""]
    if report["test_subset"]:
        lines += ["Test subset per task: " + ", ".join(f"{t} {v['n']} ({v['n_unseen']} unseen)"
                                                       for t, v in report["test_subset"].items()) + ".", ""]
    for table in report["tables"].values():
        header, rows = tables.cell_texts(table, "markdown")
        lines += [f"## {table['title']}", "", tables.markdown_table(header, rows), ""]
    if report["figure1"] is not None:
        header = [name for _, name in findings.FIG1_COLUMNS]
        rows = [[name, *("n/a" if report["figure1"][t][g] is None else f"{report['figure1'][t][g]:.2f}"
                         for g, _ in findings.FIG1_COLUMNS)] for t, name in findings.FIG1_ROWS]
        lines += ["## Fig. 1. Relative gain (%) of multitask over single-task training", "",
                  "![Fig. 1](figure1.png)", "", tables.markdown_table(header, rows, first="Task"), ""]
    if report["findings"]:
        rows = [[f["claim"], f["paper"], f["ours"], f["difference"], f["verdict"]] for f in report["findings"]]
        lines += ["## The paper's findings on this run", "",
                  "A difference counts only beyond its noise; rule used: " + "; ".join(report["noise_rules"]) + ".",
                  "", tables.markdown_table(["Paper", "This run", "Difference (noise)", "Verdict"], rows,
                                            first="Claim"), ""]
    if report["pending"]:
        lines += ["Pending variants: " + ", ".join(report["pending"]), ""]
    return "\n".join(lines)
