"""`gpv ablate`: variant naming and dedup, resolved configs, the shared pretraining, resume, plan/collect,
tables, findings and their noise rules, Fig. 1."""

import inspect
import json
import os
import shlex
import subprocess

import numpy as np
import pytest
import scipy.stats
import typer
import yaml
from conftest import FAST_TRAIN, hold_lock
from typer.testing import CliRunner

from gpvcli import quickstart
from gpvcli.ablate import findings, pretrain, study, tables
from gpvcli.ablate.variants import (
    ALL,
    RECIPES,
    STUDIES,
    STUDY_CHANGES,
    Variant,
    common_overrides,
    config_diff,
    default_steps,
    parse_tasks,
    resolve,
    steps_for,
    study_variants,
    train_samples,
    variant_steps,
)
from gpvcli.cli.ablate import ablate_command
from gpvcli.config import load_yaml, to_dict
from gpvcli.data import categories as cats
from gpvcli.errors import GPVError
from gpvcli.train.config import load_run_config

MULTI = "vqa-cap-loc-cls_rel_modality_s0"


def metrics_row(value: float, unseen: float | None = None) -> dict:
    unseen = value if unseen is None else unseen
    return {"metric": "m", "n": 10, "all": value, "seen": value, "unseen": unseen, "n_unseen": 2,
            "groups": {cats.SEEN: value, cats.HELD_VQA_CAP: unseen, cats.HELD_CLS_LOC: unseen}}


def fake_result(variant: Variant, values: dict[str, tuple[float, float]]) -> dict:
    """A result.json of `variant` with (seen/all, unseen) values per task."""
    return {"variant": variant.name, "tasks": list(variant.tasks), "seed": variant.seed,
            "relevance_conditioning": variant.relevance_conditioning, "heads": variant.heads, "steps": 1,
            "parameters": 1_000_000, "metrics": {t: metrics_row(*values[t]) for t in variant.tasks},
            "eval": {"split": "test", "samples_per_task": 4, "subset": {t: {"n": 10, "n_unseen": 2}
                                                                       for t in variant.tasks}}}


class FakeRuns:
    """Stands in for the pretraining, train and evaluate: counts calls, writes what the ablation reads
    (config.yaml, last/, the shared feature cache)."""

    def __init__(self):
        self.trained, self.resumed, self.pretrained, self.caches = [], [], [], []

    def pretrain_encoders(self, runs, data, *, budget, sets, show_progress, rerun):
        self.pretrained.append(runs)
        (runs / "align" / "last").mkdir(parents=True)
        return (runs / "align" / "last").resolve()

    def build_caches(self, folder, cfg, data, *, show_progress):
        for path in (folder / pretrain.CACHE, folder / pretrain.TEST_CACHE):
            self.caches.append(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"features")

    def train(self, run_dir, *, config, data_dir, overrides, resume, show_progress):
        (self.resumed if resume else self.trained).append(run_dir.name)
        if not resume:
            cfg = load_run_config(config, overrides)
            (run_dir / "last").mkdir(parents=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
        return {"steps": 2}

    def evaluate(self, run, *, split, data_dir, out_dir, tasks, limit, features, show_progress):
        assert features == run.parent / "pretrained" / "features" / "test.h5"     # the shared test features
        seed = Variant.from_name(run.name).seed
        return {"tasks": {tasks[0]: metrics_row(0.2 + 0.1 * seed, 0.1 * seed)}}


@pytest.fixture
def fake(monkeypatch):
    runs = FakeRuns()
    monkeypatch.setattr(study, "train", runs.train)
    monkeypatch.setattr(study, "evaluate", runs.evaluate)
    monkeypatch.setattr(quickstart, "pretrain_encoders", runs.pretrain_encoders)
    monkeypatch.setattr(pretrain, "build_caches", runs.build_caches)
    return runs


def test_variant_names_round_trip_and_shared_variants_are_one():
    v = Variant(("vqa", "cls"), relevance_conditioning=False, heads="task", seed=3)
    assert v.name == "vqa-cls_norel_task_s3" and Variant.from_name(v.name) == v
    assert parse_tasks("cls, vqa") == ("vqa", "cls")
    with pytest.raises(GPVError, match="not a variant name"):
        Variant.from_name("vqa_rel")
    with pytest.raises(GPVError, match="unknown task"):
        parse_tasks("vqa,dance")
    every = study_variants(("tasks", "relevance", "heads"))
    names = [v.name for v in every]
    assert len(names) == len(set(names)) == 10 and names.count(MULTI) == 1
    # The multitask model is Table 1 [h], Table 2 [a] and Table 3 [b].
    assert {STUDIES["tasks"][1][7].variant, STUDIES["relevance"][1][0].variant, STUDIES["heads"][1][1].variant} \
        == {ALL}
    seeded = study_variants(("relevance",), seeds=2)
    assert [v.name for v in seeded] == [MULTI, "vqa-cap-loc-cls_norel_modality_s0", MULTI[:-1] + "1",
                                        "vqa-cap-loc-cls_norel_modality_s1"]          # seed by seed
    assert study_variants(("tasks",), tasks=("vqa", "loc")) == [Variant(("vqa", "loc"))]


def settings_of(schedule: str = "steps", steps: int = 7, sets: tuple[str, ...] = ("model.dropout=0.2",)) -> dict:
    """An ablation's settings (the fields `resolve` reads) on stand-in train sample counts."""
    return {"config": "tiny", "steps": steps, "schedule": schedule, "overrides": common_overrides("tiny", sets=list(sets)),
            "train_samples": {"vqa": 100, "cap": 200, "loc": 300, "cls": 400}}


def test_variants_differ_only_in_what_their_study_changes():
    settings = settings_of("steps")
    for name, (_, rows) in STUDIES.items():
        configs = [resolve(row.variant, settings) for row in rows]
        assert all(c.train.max_steps == 7 and c.model.dropout == 0.2 for c in configs)
        for a in configs:
            for b in configs:
                assert set(config_diff(a, b)) <= set(STUDY_CHANGES[name])
        assert config_diff(configs[0], configs[1]) == list(STUDY_CHANGES[name])
    seeded = [resolve(ALL.with_seed(s), settings) for s in (0, 1)]
    assert config_diff(*seeded) == ["train.seed"]
    for field in ("train.tasks=[vqa]", "train.max_steps=3", "train.epochs=2"):
        with pytest.raises(GPVError, match="what the ablation varies"):
            common_overrides("tiny", sets=[field])


def test_epochs_schedule_gives_every_variant_the_same_passes_over_its_own_samples():
    # 1,000 samples of the four tasks in 50 steps: each variant its share of them (100 vqa, 200 cap, ...)
    settings = settings_of("epochs", steps=50)
    expected = {("vqa",): 5, ("cap",): 10, ("loc",): 15, ("cls",): 20, ("vqa", "cap"): 15, ("loc", "cls"): 35,
                ("vqa", "cap", "loc"): 30, ALL.tasks: 50}
    for tasks, steps in expected.items():
        cfg = resolve(Variant(tasks), settings)
        assert cfg.train.max_steps == cfg.train.epochs == steps, tasks
    assert variant_steps(Variant(("vqa",)), steps=3, schedule="epochs", samples=settings["train_samples"]) == 1
    # Tables 2 and 3 compare four-task models: the same steps either way
    for _, rows in (STUDIES["relevance"], STUDIES["heads"]):
        assert {resolve(row.variant, settings).train.max_steps for row in rows} == {50}
    with pytest.raises(GPVError, match="--schedule 'days' is unknown"):
        variant_steps(ALL, steps=1, schedule="days", samples={})


def test_default_step_budget(tiny_world, tmp_path):
    samples = train_samples(tiny_world["data"])
    assert samples == {t: tiny_world["stats"]["rows"][t]["Train"] for t in ALL.tasks}
    assert default_steps("tiny", samples, []) == RECIPES["tiny"]["steps"] == 1500
    preset = tmp_path / "small.yaml"       # a preset without a recipe: its full four-task schedule
    preset.write_text(yaml.safe_dump({"model": load_yaml("tiny")["model"], "train": {"epochs": 2, "batch_size": 50}}))
    n = sum(samples.values())
    assert default_steps(str(preset), samples, []) == 2 * (n // 50)
    assert default_steps(str(preset), samples, ["train.batch_size=10"]) == 2 * (n // 10)
    assert steps_for(0.5, 300) == 150 and steps_for(1e-6, 300) == 1
    with pytest.raises(GPVError, match="positive"):
        steps_for(0, 300)


def test_finished_variants_are_never_redone_and_unfinished_ones_resume(tiny_world, tmp_path, fake):
    out, data = tmp_path / "ablate", tiny_world["data"]
    unfinished = out / "vqa_rel_modality_s0"
    first = study.run_ablation(tasks="vqa", data_dir=data, out=out, budget=0.01, show_progress=False)
    assert fake.trained == ["vqa_rel_modality_s0"] and (unfinished / "result.json").is_file()
    report = study.run_ablation(study="tasks", data_dir=data, out=out, budget=0.01, show_progress=False)
    assert "vqa_rel_modality_s0" not in fake.trained[1:] and len(fake.trained) == 8
    assert report["results"]["vqa_rel_modality_s0"] == first["results"]["vqa_rel_modality_s0"]
    assert report["pending"] == [] and all(r["status"] == "done" for r in report["tables"]["tasks"]["rows"])
    # Interrupted after a checkpoint, before evaluation: continues with resume=True, trains nothing anew.
    (unfinished / "result.json").unlink()
    study.run_ablation(study="tasks", data_dir=data, out=out, budget=0.01, show_progress=False)
    assert fake.resumed == ["vqa_rel_modality_s0"] and len(fake.trained) == 8
    # One shared pretraining and feature cache for all 8 variants, over three runs of the ablation.
    assert fake.pretrained == [out / "pretrained"]
    assert fake.caches == [out / "pretrained" / "features" / "train.h5", out / "pretrained" / "features" / "test.h5"]
    with pytest.raises(GPVError, match="pretrained with other settings \\(budget differ"):
        study.run_ablation(tasks="vqa", data_dir=data, out=out, budget=0.02, show_progress=False)


def test_variants_start_from_the_shared_pretraining(tiny_world, tmp_path, fake):
    out, data = tmp_path / "ablate", tiny_world["data"]
    report = study.run_ablation(study="heads", data_dir=data, out=out, budget=0.01, show_progress=False)
    start = out / "pretrained" / "align" / "last"
    assert report["pretrained"]["start"] == str(start.resolve()) == report["settings"]["start"]
    for name in ("vqa-cap-loc-cls_rel_task_s0", MULTI):
        cfg = load_run_config(out / name / "config.yaml")
        # the quickstart's GPV stage: its recipe, the visual encoder frozen, from the align run
        assert cfg.train.init_from == str(start.resolve()) and cfg.model.phrase_grounding
        assert cfg.train.frozen_visual_epochs >= cfg.train.max_steps
        assert os.path.samefile(out / name / "features" / "train.h5", out / "pretrained" / "features" / "train.h5")
    assert "Every variant starts from" in (out / "ablation.md").read_text()
    # --from: an align run's encoders, no pretraining; a gpv run or a missing one is refused in one line.
    align = tmp_path / "quick" / "align"
    (align / "last").mkdir(parents=True)
    (align / "last" / "model.safetensors").write_bytes(b"")
    (align / "run.json").write_text(json.dumps({"stage": "align", "data_dir": str(data)}))
    other = study.run_ablation(tasks="vqa", data_dir=data, out=tmp_path / "b", budget=0.01, source=align,
                               show_progress=False)
    assert other["pretrained"]["start"] == str((align / "last").resolve()) and len(fake.pretrained) == 1
    assert f"init_from: {(align / 'last').resolve()}" in (tmp_path / "b" / "vqa_rel_modality_s0" / "config.yaml"
                                                          ).read_text()
    (align / "run.json").write_text(json.dumps({"stage": "gpv", "data_dir": str(data)}))
    result = _cli("ablate", "--tasks", "vqa", "--data", str(data), "--out", str(tmp_path / "c"), "--from", str(align))
    assert result.exit_code != 0 and "is a gpv run" in result.output
    result = _cli("ablate", "--tasks", "vqa", "--data", str(data), "--out", str(tmp_path / "c"), "--from",
                  str(tmp_path / "nowhere"))
    assert result.exit_code != 0 and "no run or checkpoint" in result.output and "Traceback" not in result.output


def _cli(*args):
    from gpvcli.cli.app import one_line_errors

    app = typer.Typer()
    app.command("ablate")(one_line_errors(ablate_command, "--out"))
    app.callback()(lambda: None)
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_plan_lists_one_command_per_variant_and_collect_merges_finished(tiny_world, tmp_path, fake):
    out = tmp_path / "ablate"
    result = _cli("ablate", "--study", "all", "--plan", "--data", str(tiny_world["data"]), "--out", str(out),
                  "--budget", "0.01", "--set", "model.dropout=0.2", "--launcher", "torchrun --nproc_per_node=8")
    assert result.exit_code == 0, result.output
    commands = (out / "plan.txt").read_text().splitlines()
    assert len(commands) == 11 and all(c in result.output for c in commands)
    # the pretraining first (a job array depends on it), then the 10 variants
    assert commands[0].startswith("torchrun --nproc_per_node=8 -m gpvcli ablate --pretrain ")
    assert all(c.startswith("torchrun --nproc_per_node=8 -m gpvcli ablate --variant ") for c in commands[1:])
    assert subprocess.run(["bash", "-n", str(out / "plan.sh")], check=False).returncode == 0
    first = shlex.split(commands[0])
    result = _cli(*first[first.index("ablate"):])
    assert result.exit_code == 0, result.output
    assert len(fake.pretrained) == 1 and fake.trained == [] and "variants start from" in result.output
    args = shlex.split(next(c for c in commands if f"--variant {MULTI} " in c))
    assert args[args.index("--set") + 1] == "model.dropout=0.2"
    holder = hold_lock(out / "pretrained")     # another job of the array, checking the pretraining just now
    try:
        result = _cli(*args[args.index("ablate"):])          # one job of the plan: reads a finished pretraining
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 0, result.output
    assert fake.trained == [MULTI] and not (out / "ablation.md").exists() and len(fake.pretrained) == 1

    result = _cli("ablate", "--collect", "--study", "all", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = study.collect(out)
    assert len(report["pending"]) == 9 and MULTI not in report["pending"]
    status = {r["variant"]: r["status"] for t in report["tables"].values() for r in t["rows"]}
    assert status[MULTI] == "done" and status["vqa_rel_modality_s0"] == "pending"
    assert "pending" in (out / "ablation.md").read_text()
    assert (out / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_and_second_best_marks():
    assert tables.mark([1.0, 3.0, None, 2.0, 3.0]) == [None, "best", None, "second", "best"]
    assert tables.mark([None, 5.0]) == [None, None]
    results = {}
    for v, vqa in ((Variant(("vqa",)), 0.3), (Variant(("vqa", "cap")), 0.5), (ALL, 0.4)):
        results[v.name] = fake_result(v, {t: (vqa, 0.1) for t in v.tasks})
    table = tables.build_table("tasks", results)
    header, rows = tables.cell_texts(table, "markdown")
    vqa_test = header.index("VQA Test") + 1
    by_label = {r[0]: r for r in rows}
    assert by_label["[e] GPV-I-VQA+Cap"][vqa_test] == "**50.0**"
    assert by_label["[h] GPV-I-Multitask"][vqa_test] == "<u>40.0</u>"
    assert by_label["[a] GPV-I-VQA"][vqa_test] == "30.0" and by_label["[b] GPV-I-Cap"][vqa_test] == "-"
    assert by_label["[b] GPV-I-Cap"][-1] == "pending"
    assert by_label["[a] GPV-I-VQA"][1:4] == ["✓", "", "✓"]       # concepts seen: S, H_cls,loc via vqa
    _, rich_rows = tables.cell_texts(table, "rich")
    assert "[bold green]50.0[/]" in rich_rows[4] and rich_rows[0][0] == "\\[a] GPV-I-VQA"


def test_findings_agree_disagree_pending_without_sample_scores():
    results = {}
    for v, values in ((Variant(("vqa",)), {"vqa": (0.5, 0.2)}), (ALL, {t: (0.5, 0.3) for t in ALL.tasks}),
                      (Variant(("loc", "cls")), {"loc": (0.5, 0.1), "cls": (0.5, 0.1)}),
                      (Variant(("cls",)), {"cls": (0.5, 0.0)})):
        results[v.name] = fake_result(v, values)
    checked = {f["claim"]: f for f in findings.check_claims(results, ("tasks",))}
    vqa = checked["multitask improves VQA unseen over VQA alone"]
    assert vqa["verdict"] == "agrees" and vqa["paper"] == "41.9 vs 47.7 (<)" and vqa["ours"] == "20.0 vs 30.0 (<)"
    assert vqa["rule"] == "none" and vqa["difference"] == "+10.0"        # one seed, no per-sample scores
    assert checked["Cls+Loc gets zero unseen classification"]["verdict"] == "disagrees"
    assert checked["Cls alone gets zero unseen classification"]["verdict"] == "agrees"
    assert checked["multitask gets non-zero unseen classification"]["verdict"] == "agrees"
    assert checked["VQA+Cap+Loc improves VQA unseen over VQA+Cap"]["verdict"] == "pending"
    assert all(f["study"] == "tasks" for f in checked.values())
    # Table 2: without relevance conditioning worse than with -> disagrees with the paper.
    no_rel = Variant(ALL.tasks, relevance_conditioning=False)
    results[no_rel.name] = fake_result(no_rel, {t: (0.4, 0.2) for t in ALL.tasks})
    relevance = findings.check_claims(results, ("relevance",))
    assert len(relevance) == 4 and {f["verdict"] for f in relevance} == {"disagrees"}


def test_findings_with_seeds_count_beyond_two_standard_errors():
    alone, claim = Variant(("vqa",)), "multitask improves VQA unseen over VQA alone"

    def verdict(alone_unseen, multi_unseen):
        results = {}
        for v, values in ((alone, alone_unseen), (ALL, multi_unseen)):
            for seed, u in enumerate(values):
                r = fake_result(v.with_seed(seed), {t: (0.5, u) for t in v.tasks})
                results[r["variant"]] = r
        return {f["claim"]: f for f in findings.check_claims(results, ("tasks",))}[claim]

    # VQA alone 20, 20; multitask 30, 5 (mean 17.5, std 25/sqrt(2)): s.e. of the difference
    # sqrt(0/2 + 312.5/2) = 12.5, so -2.5 is within 2 s.e. = 25.
    f = verdict([0.2, 0.2], [0.3, 0.05])
    assert f["verdict"] == "within noise" and f["rule"] == "seeds" and f["difference"] == "-2.5 ± 25.0"
    # multitask 30, 32 (std sqrt(2)): s.e. 1, so +11 counts (2 s.e. = 2).
    f = verdict([0.2, 0.2], [0.3, 0.32])
    assert f["verdict"] == "agrees" and f["difference"] == "+11.0 ± 2.0"
    f = verdict([0.2, 0.2], [0.1, 0.12])
    assert f["verdict"] == "disagrees" and f["difference"] == "-9.0 ± 2.0"
    assert findings.rules_used([f]) == [findings.RULES["seeds"]]


def test_findings_with_one_seed_use_a_paired_bootstrap_over_test_samples():
    rng = np.random.default_rng(7)
    n = 400
    base = rng.uniform(0, 1, n)

    def check(shift, claim="multitask improves VQA unseen over VQA alone", cls=None):
        """VQA alone scores `base` on n unseen samples, multitask base + shift; the seen samples (whose
        difference is large and opposite) and a sample only one variant scored must not count."""
        alone_scores = {f"u{k}": (float(b), True) for k, b in enumerate(base)} | {f"s{k}": (1.0, False) for k in range(50)}
        multi = {f"u{k}": (float(b + d), True) for k, (b, d) in enumerate(zip(base, shift))}
        multi |= {f"s{k}": (0.0, False) for k in range(50)} | {"extra": (100.0, True)}
        scores = {"vqa_rel_modality_s0": alone_scores, MULTI: multi,
                  "cls_rel_modality_s0": {f"u{k}": (float(c), True) for k, c in enumerate(cls or [0] * n)}}
        results = {}
        for v, sample in ((Variant(("vqa",)), alone_scores), (ALL, multi), (Variant(("cls",)), None)):
            unseen = float(np.mean([x for x, u in scores[v.name].values() if u and x < 100])) if sample else None
            results[v.name] = fake_result(v, {t: (0.5, unseen if unseen is not None else 0.0) for t in v.tasks})
            if v.tasks == ("cls",):
                results[v.name]["metrics"]["cls"]["unseen"] = float(np.mean(cls or [0]))
        checked = findings.check_claims(results, ("tasks",), lambda name, task: scores.get(name))
        return {f["claim"]: f for f in checked}[claim]

    for mean, expected in ((0.005, "within noise"), (0.08, "agrees"), (-0.08, "disagrees")):
        shift = rng.normal(mean, 0.3, n)
        f = check(shift)
        low, high = scipy.stats.bootstrap((shift,), np.mean, n_resamples=2000, method="percentile",
                                          random_state=1).confidence_interval
        assert (low > 0 or high < 0) == (expected != "within noise")        # the oracle agrees on the case
        assert f["verdict"] == expected and f["rule"] == "bootstrap"
        numbers = [float(x) for x in f["difference"].replace("[", " ").replace("]", " ").replace(",", " ").split()[:3]]
        assert numbers[0] == pytest.approx(100 * shift.mean(), abs=0.05)
        assert numbers[1] == pytest.approx(100 * low, abs=0.4) and numbers[2] == pytest.approx(100 * high, abs=0.4)
        assert f["difference"].endswith(f"(n={n})")
    # A claim of zero: all zeros agree, 1 correct in 400 is within noise, 40 in 400 disagrees.
    zero = "Cls alone gets zero unseen classification"
    assert check(np.zeros(n), zero)["verdict"] == "agrees"
    assert check(np.zeros(n), zero, cls=[1] + [0] * (n - 1))["verdict"] == "within noise"
    assert check(np.zeros(n), zero, cls=[1] * 40 + [0] * (n - 40))["verdict"] == "disagrees"
    assert findings.bootstrap_interval(np.full(10, 0.25)) == (0.25, 0.25)


def test_figure1_gains_and_heatmap(tmp_path):
    results = {}
    for task in ALL.tasks:
        v = Variant((task,))
        results[v.name] = fake_result(v, {task: (0.4, 0.0 if task == "cls" else 0.2)})
    results[MULTI] = fake_result(ALL, {t: (0.5, 0.1) for t in ALL.tasks})
    gains = findings.figure1_gains(results)
    assert gains["vqa"][cats.SEEN] == pytest.approx(25.0) and gains["vqa"][cats.HELD_VQA_CAP] == pytest.approx(-50)
    assert gains["cls"][cats.HELD_CLS_LOC] is None          # single task scored 0: no relative gain
    path = findings.save_heatmap(gains, tmp_path / "figure1.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert findings.figure1_gains({})["loc"] == {g: None for g in cats.GROUPS}


def test_seeds_give_mean_and_std(tiny_world, tmp_path, fake):
    report = study.run_ablation(study="relevance", seeds=2, data_dir=tiny_world["data"], out=tmp_path / "a",
                                budget=0.01, show_progress=False)
    assert len(fake.trained) == 4
    row = report["tables"]["relevance"]["rows"][0]
    assert row["status"] == "done" and row["cells"][0]["n"] == 2
    assert row["cells"][0]["mean"] == pytest.approx(25.0) and row["cells"][0]["std"] == pytest.approx(7.0711, 1e-4)
    assert "25.0 ± 7.1" in (tmp_path / "a" / "ablation.md").read_text()
    assert inspect.signature(ablate_command).parameters["eval_samples"].default.default == study.EVAL_SAMPLES


def test_real_variant_trains_evaluates_and_is_reused(tiny_world, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    out = tmp_path / "ablate"
    # the visual encoder frozen, features cached; the steps are the ablation's
    sets = [s for s in FAST_TRAIN if not s.startswith(("train.frozen_visual_epochs", "train.epochs"))]
    kwargs = {"tasks": "vqa,loc", "data_dir": tiny_world["data"], "out": out, "budget": 0.004, "eval_samples": 6,
              "sets": sets, "show_progress": False}
    report = study.run_ablation(**kwargs)
    folder = out / "vqa-loc_rel_modality_s0"
    result = report["results"][folder.name]
    n = {t: tiny_world["stats"]["rows"][t]["Train"] for t in ALL.tasks}      # the same epochs as the four tasks'
    steps = round(0.004 * RECIPES["tiny"]["steps"] * (n["vqa"] + n["loc"]) / sum(n.values()))
    assert result["steps"] == steps > 0 and set(result["metrics"]) == {"vqa", "loc"}
    assert result["eval"]["subset"]["vqa"]["n"] == 6 and (folder / "eval" / "loc" / "metrics.json").is_file()
    assert result["parameters"] > 0 and "grounding" in result["metrics"]["loc"]
    # started from the shared align run, whose visual encoder it kept frozen, reading the shared cache
    align = out / "pretrained" / "align" / "last"
    assert load_run_config(folder / "config.yaml").train.init_from == str(align.resolve())
    assert (out / "pretrained" / "classifier" / "last").is_dir()
    start, trained = load_file(align / "model.safetensors"), load_file(folder / "last" / "model.safetensors")
    visual = [k for k in start if k.startswith("visual.")]
    assert visual and all(start[k].equal(trained[k]) for k in visual)
    assert not all(start[k].equal(trained[k]) for k in start if k.startswith("coattention."))
    assert os.path.samefile(folder / "features" / "train.h5", out / "pretrained" / "features" / "train.h5")
    protocol = json.loads((folder / "eval" / "vqa" / "metrics.json").read_text())["protocol"]
    assert protocol["visual_features"].endswith(str(out / "pretrained" / "features" / "test.h5"))
    row = next(r for r in report["tables"]["tasks"]["rows"] if r["variant"] == folder.name)
    assert row["label"] == "[i] GPV-I-VQA+Loc" and row["status"] == "done"
    assert {"ablation.json", "ablation.md", "figure1.png"} <= {p.name for p in out.iterdir()}
    monkeypatch.setattr(study, "train", lambda *a, **k: pytest.fail("a finished variant was trained again"))
    monkeypatch.setattr(quickstart, "pretrain_encoders", lambda *a, **k: pytest.fail("pretrained again"))
    assert study.run_ablation(**kwargs)["results"][folder.name] == result
