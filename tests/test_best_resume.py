"""`gpv train` over several epochs: best/ follows the validation metric, a run resumed across epoch
boundaries and across the frozen-to-trainable switch of the visual encoder ends bit for bit where an
uninterrupted one does, gradient accumulation equals the larger batch, bf16 autocast is really used.

Training is driven through the CLI; the validation metric is scripted by replacing
`gpvcli.eval.runner.selection_metric`, so which checkpoint must become best/ is known in advance.
"""

import json

import pytest
import torch
from conftest import FAST_TRAIN
from safetensors.torch import load_file
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.eval import runner

cli = CliRunner()

# vqa alone: 123 training samples, 3 steps of 32 per epoch; epoch 0 with the visual encoder frozen (cached
# features), epochs 1 and 2 trainable; dropout on, so the random state must be restored exactly.
EPOCHS = FAST_TRAIN + ["train.tasks=[vqa]", "train.batch_size=32", "train.epochs=3", "train.frozen_visual_epochs=1",
                       "train.cache_features=true", "train.save_every=2", "model.dropout=0.2"]
STEPS_PER_EPOCH = 3
SCRIPT = [0.2, 0.5, 0.3]            # the validation metric at the end of epochs 0, 1, 2: best/ is epoch 1's


class Interrupted(Exception):
    pass


def train_cli(monkeypatch, run, data, script, *, resume=False):
    """`gpv train` in-process, the selection metric of each validation taken from `script`
    ("stop" = the process dies at that validation, before it saves anything)."""
    values = iter(script)

    def selection_metric(table):
        value = next(values)
        if value == "stop":
            raise Interrupted("killed at a validation")
        return value

    with monkeypatch.context() as m:
        m.setattr(runner, "selection_metric", selection_metric)
        args = ["train", "--run", str(run), "--data", str(data)]
        args += ["--resume"] if resume else [a for o in EPOCHS for a in ("--set", o)]
        result = cli.invoke(app, args)
    assert next(values, None) is None, "the script was not used up"
    return result


def state(run, name):
    return json.loads((run / name / "state.json").read_text())


def weights(run, name):
    return load_file(run / name / "model.safetensors")


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def logged(run):
    return [(r.get("step"), r.get("loss"), r.get("validation", {}).get("selection"))
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def reference(tiny_world, tmp_path_factory):
    run = tmp_path_factory.mktemp("best") / "reference"
    with pytest.MonkeyPatch.context() as mp:
        result = train_cli(mp, run, tiny_world["data"], SCRIPT)
    assert result.exit_code == 0, result.output
    return run


def test_best_is_the_checkpoint_of_the_best_validation(reference):
    validations = [(step, sel) for step, _, sel in logged(reference) if sel is not None]
    assert validations == [(STEPS_PER_EPOCH * (k + 1), v) for k, v in enumerate(SCRIPT)]
    best_step = validations[SCRIPT.index(max(SCRIPT))][0]
    assert state(reference, "best") == {"epoch": 2, "step_in_epoch": 0, "step": best_step, "best": max(SCRIPT)}
    assert state(reference, "last") == {"epoch": 3, "step_in_epoch": 0, "step": 3 * STEPS_PER_EPOCH,
                                        "best": max(SCRIPT)}
    assert not same(weights(reference, "best"), weights(reference, "last"))     # the later, worse epoch trained on


def test_resume_across_epochs_and_the_visual_switch_is_bit_identical(reference, tiny_world, tmp_path, monkeypatch):
    """Killed at the first validation (last/ = step 2, mid epoch 0, visual frozen), resumed through the
    switch to a trainable visual encoder and the boundary into epoch 2, killed again at the last validation
    (last/ = step 8), resumed to the end: the saved best score keeps best/ at epoch 1."""
    run, data = tmp_path / "resumed", tiny_world["data"]
    first = train_cli(monkeypatch, run, data, ["stop"])
    assert first.exit_code == 1 and "killed at a validation" in first.output
    assert state(run, "last")["step"] == 2 and not (run / "best").exists()
    frozen = weights(run, "last")

    second = train_cli(monkeypatch, run, data, SCRIPT[:2] + ["stop"], resume=True)
    assert second.exit_code == 1, second.output
    assert state(run, "last") == {"epoch": 2, "step_in_epoch": 2, "step": 8, "best": max(SCRIPT)}
    assert state(run, "best")["step"] == 6

    third = train_cli(monkeypatch, run, data, SCRIPT[2:], resume=True)
    assert third.exit_code == 0, third.output
    for name in ("last", "best"):
        assert state(run, name) == state(reference, name)
        assert same(weights(run, name), weights(reference, name)), name
    assert logged(run) == logged(reference)                # each step and validation logged once, same values
    final = weights(run, "last")
    visual = [k for k in final if k.startswith("visual.") and final[k].is_floating_point()]
    assert visual and any(not torch.equal(frozen[k], final[k]) for k in visual)   # trained after the switch


def test_classifier_stage_resumes_bit_identical(tiny_world, tmp_path, monkeypatch):
    """The backbone warm-up (stage classifier), killed in its third optimizer step after saving at steps 1
    and 2, resumes to the same final weights as an uninterrupted run."""
    sets = FAST_TRAIN + ["train.stage=classifier", "train.max_steps=3", "train.save_every=1"]
    args = [a for o in sets for a in ("--set", o)]
    reference, run = tmp_path / "reference", tmp_path / "resumed"
    result = cli.invoke(app, ["train", "--run", str(reference), "--data", str(tiny_world["data"]), *args])
    assert result.exit_code == 0, result.output

    real_step, steps = torch.optim.AdamW.step, []

    def dies_at_step_3(self, *a, **k):
        steps.append(1)
        if len(steps) == 3:
            raise Interrupted("killed in step 3")
        return real_step(self, *a, **k)
    with monkeypatch.context() as m:
        m.setattr(torch.optim.AdamW, "step", dies_at_step_3)
        killed = cli.invoke(app, ["train", "--run", str(run), "--data", str(tiny_world["data"]), *args])
    assert killed.exit_code == 1 and "killed in step 3" in killed.output
    assert state(run, "last")["step"] == 2
    resumed = cli.invoke(app, ["train", "--run", str(run), "--data", str(tiny_world["data"]), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    files = sorted(p.name for p in (reference / "last").glob("*.safetensors"))
    assert files and files == sorted(p.name for p in (run / "last").glob("*.safetensors"))
    for name in files:
        assert same(load_file(reference / "last" / name), load_file(run / "last" / name)), name
    assert state(run, "last") == state(reference, "last")
