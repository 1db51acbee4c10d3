"""`gpv quickstart` resumes: rerun after an interruption, it continues with the stage that was cut short and
never trains a finished stage again (the README's promise "Every step resumes")."""

import json

import pytest
import torch
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.quickstart import GPV_STEPS

cli = CliRunner()
BUDGET = "0.002"         # 1 classifier, 1 alignment and a few GPV steps


class Interrupted(Exception):
    pass


def files(folder):
    """Every file under `folder` with its size and modification time (unchanged = not rewritten)."""
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_quickstart_continues_where_it_stopped(tmp_path, monkeypatch):
    from gpvcli.data.prepare import prepare
    from gpvcli.eval import evaluate
    from gpvcli.synth.world import generate

    generate(tmp_path / "coco", train_images=40, val_images=4, seed=0)
    prepare("sce", coco_dir=tmp_path / "coco", out_dir=tmp_path / "home" / "prepared" / "sce", seed=0)
    monkeypatch.setenv("GPV_HOME", str(tmp_path / "home"))
    runs = tmp_path / "runs"
    steps = []
    real_step = torch.optim.AdamW.step

    def quickstart(die_at_step=None, die_in_evaluation=False):
        steps.clear()

        def step(self, *a, **k):
            steps.append(1)
            if len(steps) == die_at_step:
                raise Interrupted("killed in training")
            return real_step(self, *a, **k)

        def no_evaluation(*a, **k):
            raise Interrupted("killed in evaluation")
        with monkeypatch.context() as m:
            m.setattr(torch.optim.AdamW, "step", step)
            if die_in_evaluation:
                m.setattr(evaluate, "evaluate", no_evaluation)
            return cli.invoke(app, ["quickstart", "--runs", str(runs), "--budget", BUDGET])

    first = quickstart(die_at_step=3)                # the classifier's step, the alignment's, then GPV's first
    assert first.exit_code == 1 and "killed in training" in first.output
    assert not (runs / "gpv" / "last").exists()
    pretrained = {name: files(runs / name) for name in ("classifier", "align")}

    second = quickstart(die_in_evaluation=True)
    assert second.exit_code == 1 and "killed in evaluation" in second.output
    assert len(steps) == max(1, round(GPV_STEPS * float(BUDGET)))   # GPV's only: finished stages not rerun
    assert {name: files(runs / name) for name in pretrained} == pretrained
    gpv = files(runs / "gpv" / "last")

    third = quickstart()
    assert third.exit_code == 0, third.output
    assert steps == []                               # nothing trained again
    assert files(runs / "gpv" / "last") == gpv
    assert {name: files(runs / name) for name in pretrained} == pretrained
    assert json.loads((runs / "gpv" / "eval" / "test" / "metrics.json").read_text())["tasks"]
    assert (runs / "example.jpg").is_file()
    logged = [json.loads(x).get("step") for x in (runs / "gpv" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in x]
    assert logged == [max(1, round(GPV_STEPS * float(BUDGET)))]   # tiny logs every 10 steps and at the last
