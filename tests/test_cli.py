"""The `gpv` command as a user meets it: help, one-line errors, and the whole pipeline end to end."""

import json
import os
import subprocess
import sys

import pytest
from conftest import FAST_TRAIN
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.data.store import SplitStore

runner = CliRunner()
COMMANDS = ("synth", "prepare", "train", "evaluate", "predict", "ablate", "report", "info", "quickstart")


def gpv(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "gpvcli", *map(str, args)], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=900)


def test_help_lists_every_command_with_an_example():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
    for name in COMMANDS:
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0, name
        assert "Example" in sub.output, name


@pytest.mark.parametrize("args, message", [
    (["prepare", "--coco-dir", "/nonexistent/coco"], "COCO folder not found"),
    (["prepare", "--split", "lvis"], "unknown split"),
    (["train", "--config", "nope", "--run", "RUN"], "unknown config 'nope'"),
    (["train", "--set", "train.lrr=1", "--run", "RUN"], "unknown config key train.lrr"),
    (["evaluate", "/nonexistent/run"], "no run or checkpoint"),
    (["predict", "missing.jpg", "Locate dog.", "--checkpoint", "/nonexistent/ckpt"], "image not found"),
    (["train", "--cnfig", "tiny"], "No such option: --cnfig"),              # the command line's own errors
    (["predcit"], "No such command 'predcit'"),
    (["report"], "Missing argument"),
])
def test_bad_input_is_one_line(args, message, tmp_path):
    args = [str(tmp_path / "run") if a == "RUN" else a for a in args]
    result = gpv(*args, env={"GPV_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    assert result.returncode == 2                # bad usage or input (1: a run that fails on good input)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = gpv("evaluate", "/nonexistent/run", env={"GPV_DEBUG": "1"}, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_synth_prepare_round_trip(tmp_path):
    """synth (tiny) -> prepare --split sce -> read back: counts equal stats.json."""
    home = tmp_path / "home"
    assert gpv("synth", tmp_path / "coco", "--train-images", "20", "--val-images", "10").returncode == 0
    result = gpv("prepare", "--split", "sce", "--coco-dir", tmp_path / "coco", "--out", tmp_path / "sce",
                 env={"GPV_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "Test Unseen" in result.stdout
    stats = json.loads((tmp_path / "sce" / "stats.json").read_text())
    for column, split in (("Train", "train"), ("Val", "val"), ("Test", "test")):
        tasks = SplitStore(tmp_path / "sce" / f"{split}.h5").tasks
        for task, row in stats["rows"].items():
            assert tasks.count(task) == row[column], (task, column)
    test = SplitStore(tmp_path / "sce" / "test.h5")
    assert int(test.unseen.sum()) == sum(row["Test Unseen"] for row in stats["rows"].values())
    assert not home.exists()                     # nothing written outside the named folders


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    """prepare (generating the default world) -> train -> evaluate -> predict, all through the CLI."""
    env = {"GPV_HOME": str(tmp_path / "home")}
    result = gpv("synth", tmp_path / "home" / "synth", "--train-images", "30", "--val-images", "12", env=env)
    assert result.returncode == 0, result.stderr
    result = gpv("prepare", "--split", "sce", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "home" / "prepared" / "sce" / "train.h5").is_file()
    sets = [a for o in FAST_TRAIN + ["train.max_steps=3"] for a in ("--set", o)]
    result = gpv("train", "--run", "runs/tiny", "--tasks", "vqa,cap,loc,cls", *sets, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "tiny" / "best" / "model.safetensors").is_file()
    result = gpv("evaluate", "runs/tiny", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics["tasks"]) == {"vqa", "cap", "loc", "cls", "refexp"}
    image = next((tmp_path / "home" / "synth" / "images" / "val2014").glob("*.jpg"))
    result = gpv("predict", image, "Locate dog.", "--json", "--out", "dog.jpg", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["task"] == "loc" and len(answer["boxes"]) == 5
    assert (tmp_path / "dog.jpg").is_file()
