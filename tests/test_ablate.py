"""`gpv ablate`: variant naming and dedup, resolved configs, resume, plan/collect, tables, findings, Fig. 1."""

import inspect
import shlex
import subprocess

import pytest
import typer
import yaml
from conftest import FAST_TRAIN
from typer.testing import CliRunner

from gpvcli.ablate import findings, study, tables
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
    """Stands in for train and evaluate: counts calls, writes what the ablation reads (config.yaml, last/)."""

    def __init__(self):
        self.trained, self.resumed = [], []

    def train(self, run_dir, *, config, data_dir, overrides, resume, show_progress):
        (self.resumed if resume else self.trained).append(run_dir.name)
        if not resume:
            cfg = load_run_config(config, overrides)
            (run_dir / "last").mkdir(parents=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
        return {"steps": 2}

    def evaluate(self, run, *, split, data_dir, out_dir, tasks, limit, show_progress):
        seed = Variant.from_name(run.name).seed
        return {"tasks": {tasks[0]: metrics_row(0.2 + 0.1 * seed, 0.1 * seed)}}


@pytest.fixture
def fake(monkeypatch):
    runs = FakeRuns()
    monkeypatch.setattr(study, "train", runs.train)
    monkeypatch.setattr(study, "evaluate", runs.evaluate)
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
    assert [v.name for v in seeded] == [MULTI, MULTI[:-1] + "1", "vqa-cap-loc-cls_norel_modality_s0",
                                        "vqa-cap-loc-cls_norel_modality_s1"]
    assert study_variants(("tasks",), tasks=("vqa", "loc")) == [Variant(("vqa", "loc"))]


def test_variants_differ_only_in_what_their_study_changes():
    common = common_overrides("tiny", steps=7, sets=["model.dropout=0.2"])
    for name, (_, rows) in STUDIES.items():
        configs = [resolve(row.variant, config="tiny", common=common) for row in rows]
        assert all(c.train.max_steps == 7 and c.model.dropout == 0.2 for c in configs)
        for a in configs:
            for b in configs:
                assert set(config_diff(a, b)) <= set(STUDY_CHANGES[name])
        assert config_diff(configs[0], configs[1]) == list(STUDY_CHANGES[name])
    seeded = [resolve(ALL.with_seed(s), config="tiny", common=common) for s in (0, 1)]
    assert config_diff(*seeded) == ["train.seed"]
    with pytest.raises(GPVError, match="what the ablation varies"):
        common_overrides("tiny", steps=7, sets=["train.tasks=[vqa]"])


def test_default_step_budget(tiny_world, tmp_path):
    assert default_steps("tiny", tiny_world["data"], []) == RECIPES["tiny"]["steps"] == 600
    preset = tmp_path / "small.yaml"       # a preset without a recipe: its full four-task schedule
    preset.write_text(yaml.safe_dump({"model": load_yaml("tiny")["model"], "train": {"epochs": 2, "batch_size": 50}}))
    n = sum(tiny_world["stats"]["rows"][t]["Train"] for t in ALL.tasks)
    assert default_steps(str(preset), tiny_world["data"], []) == 2 * (n // 50)
    assert default_steps(str(preset), tiny_world["data"], ["train.batch_size=10"]) == 2 * (n // 10)
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
    with pytest.raises(GPVError, match="trained with other settings"):
        study.run_ablation(tasks="vqa", data_dir=data, out=out, budget=0.02, show_progress=False)


def _cli(*args):
    app = typer.Typer()
    app.command("ablate")(ablate_command)
    app.callback()(lambda: None)
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_plan_lists_one_command_per_variant_and_collect_merges_finished(tiny_world, tmp_path, fake):
    out = tmp_path / "ablate"
    result = _cli("ablate", "--study", "all", "--plan", "--data", str(tiny_world["data"]), "--out", str(out),
                  "--budget", "0.01", "--set", "model.dropout=0.2", "--launcher", "torchrun --nproc_per_node=8")
    assert result.exit_code == 0, result.output
    commands = (out / "plan.txt").read_text().splitlines()
    assert len(commands) == 10 and all(c in result.output for c in commands)
    assert all(c.startswith("torchrun --nproc_per_node=8 -m gpvcli ablate --variant ") for c in commands)
    assert subprocess.run(["bash", "-n", str(out / "plan.sh")], check=False).returncode == 0
    args = shlex.split(next(c for c in commands if f"--variant {MULTI} " in c))
    assert args[args.index("--set") + 1] == "model.dropout=0.2"
    result = _cli(*args[args.index("ablate"):])          # one job of the plan
    assert result.exit_code == 0, result.output
    assert fake.trained == [MULTI] and not (out / "ablation.md").exists()

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


def test_findings_agree_disagree_pending_and_noise():
    results = {}
    for v, values in ((Variant(("vqa",)), {"vqa": (0.5, 0.2)}), (ALL, {t: (0.5, 0.3) for t in ALL.tasks}),
                      (Variant(("loc", "cls")), {"loc": (0.5, 0.1), "cls": (0.5, 0.1)}),
                      (Variant(("cls",)), {"cls": (0.5, 0.0)})):
        results[v.name] = fake_result(v, values)
    checked = {f["claim"]: f for f in findings.check_claims(results, ("tasks",))}
    vqa = checked["multitask improves VQA unseen over VQA alone"]
    assert vqa["verdict"] == "agrees" and vqa["paper"] == "41.9 vs 47.7 (<)" and vqa["ours"] == "20.0 vs 30.0 (<)"
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
    # Two seeds whose spread exceeds the difference: the sign is not trusted.
    multi_1 = ALL.with_seed(1)
    results[multi_1.name] = fake_result(multi_1, {t: (0.5, 0.05) for t in ALL.tasks})
    vqa = {f["claim"]: f for f in findings.check_claims(results, ("tasks",))}[
        "multitask improves VQA unseen over VQA alone"]
    assert vqa["verdict"] == "disagrees (within noise)" and vqa["ours"] == "20.0 vs 17.5 (>)"


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
    out = tmp_path / "ablate"
    kwargs = {"tasks": "vqa,loc", "data_dir": tiny_world["data"], "out": out, "budget": 0.01, "eval_samples": 6,
              "sets": FAST_TRAIN, "show_progress": False}
    report = study.run_ablation(**kwargs)
    folder = out / "vqa-loc_rel_modality_s0"
    result = report["results"][folder.name]
    assert result["steps"] == round(0.01 * RECIPES["tiny"]["steps"]) and set(result["metrics"]) == {"vqa", "loc"}
    assert result["eval"]["subset"]["vqa"]["n"] == 6 and (folder / "eval" / "loc" / "metrics.json").is_file()
    assert result["parameters"] > 0
    row = next(r for r in report["tables"]["tasks"]["rows"] if r["variant"] == folder.name)
    assert row["label"] == "[i] GPV-I-VQA+Loc" and row["status"] == "done"
    assert {"ablation.json", "ablation.md", "figure1.png"} <= {p.name for p in out.iterdir()}
    monkeypatch.setattr(study, "train", lambda *a, **k: pytest.fail("a finished variant was trained again"))
    assert study.run_ablation(**kwargs)["results"][folder.name] == result
