"""Strict configs: presets, overrides, unknown keys and wrong types."""

import pytest

from gpvcli.config import merge_overrides, parse_override, preset_names, to_dict
from gpvcli.errors import GPVError
from gpvcli.train.config import load_run_config


def test_every_preset_loads_with_both_sections():
    assert {"tiny", "small", "gpv1"} <= set(preset_names())
    for name in preset_names():
        cfg = load_run_config(name)
        assert cfg.model.visual.num_classes == 2 and cfg.train.tasks == ["vqa", "cap", "loc", "cls"]
    gpv1 = load_run_config("gpv1")
    assert (gpv1.train.lr, gpv1.train.backbone_lr, gpv1.train.batch_size, gpv1.train.epochs) == (1e-4, 1e-5, 120, 40)
    assert gpv1.train.frozen_visual_epochs == 10 and gpv1.train.precision == "bf16"
    assert gpv1.train.task_weights == {"vqa": 1.0, "cap": 0.05, "cls": 1.0}


def test_overrides_are_parsed_as_yaml():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], "3e-4")        # YAML 1.1 keeps it a string...
    cfg = load_run_config("tiny", ["train.lr=3e-4", "train.tasks=[vqa,loc]", "model.heads=task",
                                   "model.visual.num_queries=7"])
    assert cfg.train.lr == 3e-4                                                 # ...the float field takes it
    assert cfg.train.tasks == ["vqa", "loc"] and cfg.model.heads == "task" and cfg.model.visual.num_queries == 7
    assert merge_overrides({"a": {"b": 1}}, ["a.c=x"]) == {"a": {"b": 1, "c": "x"}}


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown config key train.lrr"),
    ("model.visual.nope=1", "unknown config key model.visual.nope"),
    ("train.lr=fast", "train.lr: expected a number"),
    ("train.epochs=2.5", "train.epochs: expected an integer"),
    ("train.cache_features=maybe", "expected true or false"),
    ("model.heads=both", "not one of"),
    ("train.tasks=[vqa,foo]", "unknown task foo"),
    ("lr=1", "names no section"),
    ("train.batch_size=10", None),
])
def test_bad_overrides_are_refused(override, message):
    if message is None:
        assert load_run_config("tiny", [override]).train.batch_size == 10
        return
    with pytest.raises(GPVError, match=message):
        load_run_config("tiny", [override])


def test_round_trip_through_plain_data(tmp_path):
    import yaml

    cfg = load_run_config("tiny", ["train.seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_run_config(path) == cfg
    with pytest.raises(GPVError, match="unknown config"):
        load_run_config("no-such-preset")
    path.write_text("model: [1, 2")
    with pytest.raises(GPVError, match="not valid YAML"):
        load_run_config(path)
