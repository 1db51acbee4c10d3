"""Every script in examples/ runs, in the order of examples/README.md, on the smallest sizes (SMALL=1:
a 40 + 4 image world, 2-3 training steps of 8 samples, quickstart at --budget 0.002, i.e. 1 warm-up,
1 alignment and 5 GPV steps), sharing one temporary GPV_HOME and runs folder, and writes what it says."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ORDER = re.findall(r"^\| \d+ \| `(?:bash|python) examples/(\S+)`", (EXAMPLES / "README.md").read_text(),
                   re.MULTILINE)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _synth(home, runs, out):
    assert (home / "synth" / "baselines.json").is_file()
    assert len(list((home / "synth" / "images" / "val2014").glob("*.jpg"))) == 4


def _prepare(home, runs, out):
    for name in ("train.h5", "val.h5", "test.h5", "vocab.json", "stats.json"):
        assert (home / "prepared" / "sce" / name).is_file(), name


def _train(home, runs, out):
    assert "stage: classifier" in (runs / "classifier" / "config.yaml").read_text()
    assert f"pretrained: {runs / 'classifier' / 'last'}" in (runs / "detector" / "config.yaml").read_text()
    assert (runs / "detector" / "last").is_dir()
    assert "stage: detector" in (runs / "detector" / "config.yaml").read_text()
    assert (runs / "gpv" / "best" / "model.safetensors").is_file()
    assert f"pretrained: {runs / 'detector' / 'last'}" in (runs / "gpv" / "config.yaml").read_text()


def _evaluate(home, runs, out):
    tasks = json.loads((runs / "gpv" / "eval" / "test" / "metrics.json").read_text())["tasks"]
    assert tasks and sum(row["n"] for row in tasks.values()) == 24      # SMALL=1 scores the first 24 samples
    assert "Per category group" in out


def _predict(home, runs, out):
    folder = runs / "predict"
    assert (folder / "dog.jpg").is_file()
    one = _lines(folder / "one.json")
    assert len(one) == 1 and one[0]["task"] == "loc" and len(one[0]["boxes"]) == 3
    assert len(list((folder / "drawn").glob("*.annotated.jpg"))) == 4
    assert [p["task"] for p in _lines(folder / "folder.jsonl")] == ["cls"] * 4
    assert [p["task"] for p in _lines(folder / "pairs_out.jsonl")] == ["cap", "vqa", "loc", "cls"]


def _api(home, runs, out):
    assert out.startswith("loc: ") and "\ncls: " in out and "'task': 'cap'" in out


def _report(home, runs, out):
    assert (runs / "report.html").read_text().lstrip().lower().startswith("<!doctype html")


def _ablate(home, runs, out):
    folder = runs / "ablate"
    assert len((folder / "plan.txt").read_text().splitlines()) == 11   # the pretraining, the 10 variants of all
    assert (folder / "pretrained" / "done.json").is_file()                    # `bash plan.sh 0`
    assert "finished (3 steps)" in out                                        # `bash plan.sh 8`: the four tasks
    result = json.loads((folder / "vqa-cap-loc-cls_rel_modality_s0" / "result.json").read_text())
    assert result["steps"] == 3 and set(result["metrics"]) == {"vqa", "cap", "loc", "cls"}
    for name in ("ablation.json", "ablation.md", "figure1.png"):
        assert (folder / name).is_file(), name


def _info(home, runs, out):
    info = json.loads((runs / "info" / "gpv1_task_heads.json").read_text())
    assert sum(info["parameters"]["total"].values()) > 300e6        # the paper's 311M with a head per task


def _quickstart(home, runs, out):
    folder = runs / "quickstart"
    assert (folder / "example.jpg").is_file() and (folder / "align" / "last").is_dir()
    assert "stage: align" in (folder / "align" / "config.yaml").read_text()
    assert f"init_from: {(folder / 'align' / 'last').resolve()}" in (folder / "gpv" / "config.yaml").read_text()
    assert (folder / "classifier" / "last" / "visual.safetensors").is_file()
    assert json.loads((folder / "gpv" / "eval" / "test" / "metrics.json").read_text())["tasks"]


CHECKS = {"01_synth.sh": _synth, "02_prepare.sh": _prepare, "03_train.sh": _train, "04_evaluate.sh": _evaluate,
          "05_predict.sh": _predict, "06_api.py": _api, "07_report.sh": _report, "08_ablate.sh": _ablate,
          "09_info.sh": _info, "10_quickstart.sh": _quickstart}


def test_readme_lists_every_example_in_order():
    scripts = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".sh", ".py") and p.name != "settings.sh")
    assert ORDER == scripts == list(CHECKS)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """The GPV_HOME and runs folder the examples share, and which of them have run."""
    root = tmp_path_factory.mktemp("examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPV_EXAMPLE_")}
    # One thread a process: with torch's default (all cores) on 2 cores shared with other work, threads
    # wait on each other and a small quickstart takes 80 s instead of 30.
    env.update(GPV_HOME=str(root / "home"), GPV_EXAMPLE_RUNS=str(root / "runs"), SMALL="1", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return {"home": root / "home", "runs": root / "runs", "env": env, "failed": []}


@pytest.mark.slow
@pytest.mark.xdist_group("examples")   # each script reads what the ones before it wrote: one worker runs them all
@pytest.mark.parametrize("script", list(CHECKS))
def test_example(script, workspace):
    if workspace["failed"]:
        pytest.skip(f"needs the outputs of {workspace['failed'][0]}, which failed")
    command = [sys.executable if script.endswith(".py") else "bash", str(EXAMPLES / script)]
    workspace["failed"].append(script)
    result = subprocess.run(command, cwd=ROOT, env=workspace["env"], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    CHECKS[script](workspace["home"], workspace["runs"], result.stdout)
    workspace["failed"].remove(script)
