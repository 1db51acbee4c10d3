import json
import re

import pytest
from typer.testing import CliRunner

from gpvcli.model.config import load_model_config
from gpvcli.model.info import COMPONENTS, count_parameters, model_info


def _total(counts: dict) -> int:
    return counts["total"]["trainable"] + counts["total"]["frozen"]


def test_gpv1_has_the_papers_parameter_count():
    counts = count_parameters(load_model_config("gpv1"), vocab_size=7600)
    assert _total(counts) == pytest.approx(236e6, rel=0.02)
    millions = {c: (counts[c]["trainable"] + counts[c]["frozen"]) / 1e6 for c in COMPONENTS}
    assert millions["visual backbone"] + millions["rest of DETR"] == pytest.approx(41.5, rel=0.02)
    assert millions["text encoder"] == pytest.approx(109.5, rel=0.01)
    assert millions["joiners"] == pytest.approx(2.4, rel=0.03)
    assert millions["text decoder"] == pytest.approx(23.6, rel=0.01)
    assert millions["word-vector transforms"] == pytest.approx(1.2, rel=0.03)
    assert millions["word tables"] == pytest.approx(2 * 7600 * 768 / 1e6)
    # BERT and the word tables are frozen; the stem and first ResNet stage too
    assert counts["text encoder"]["trainable"] == counts["word tables"]["trainable"] == 0
    assert counts["visual backbone"]["frozen"] > 0
    per_task = count_parameters(load_model_config("gpv1", ["model.heads=task"]), vocab_size=7600)
    assert _total(per_task) == pytest.approx(311e6, rel=0.02)


def test_phrase_grounding_score_counts_as_relevance():
    """The quickstart recipe's region-phrase score (model.phrase_grounding) is part of the relevance
    component: everything it adds lands there, and every parameter lands in one component."""
    plain = count_parameters(load_model_config("tiny"), vocab_size=50)
    grounded = count_parameters(load_model_config("tiny", ["model.phrase_grounding=true"]), vocab_size=50)
    added = _total(grounded) - _total(plain)
    assert added > 0 and sum(grounded["relevance"].values()) - sum(plain["relevance"].values()) == added
    assert all(grounded[c] == plain[c] for c in COMPONENTS if c != "relevance")
    assert sum(sum(grounded[c].values()) for c in COMPONENTS) == _total(grounded)


def test_model_info_counts_flops_and_activations():
    info = model_info(load_model_config("tiny"), vocab_size=50, query_len=8, answer_len=3)
    assert info["image_size"] == [96, 128]
    assert info["flops"] > 0 and info["activations"] > 0
    assert info["flops"] == sum(info["flops_by_module"][k] for k in info["flops_by_module"])
    assert info["flops_by_module"]["visual"] > info["flops_by_module"]["text_heads.text"] > 0
    longer = model_info(load_model_config("tiny"), vocab_size=50, query_len=8, answer_len=6)
    assert longer["flops_by_module"]["text_heads.text"] > info["flops_by_module"]["text_heads.text"]
    assert longer["activations"] > info["activations"]
    assert longer["flops_by_module"]["visual"] == info["flops_by_module"]["visual"]


def test_info_command_on_tiny():
    from gpvcli.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["info", "--config", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info["parameters"]) == {*COMPONENTS, "total"}
    assert info["vocab_size"] == 7600
    # the feature cache, by hand: Q (4 + K) float32 + Q (D + C) values (float16: 2 bytes; int8: 1 byte and
    # 2Q float32 scales), for COCO-SCE train's 66,226 images + 174,538 crops; tiny: Q 20, K 2, D 128, C 256
    cache = info["feature_cache"]
    assert cache["form"] == "float16" and cache["max_gb"] == 0
    small = 20 * 6 * 4
    sizes = {"float16": small + 20 * 384 * 2, "int8": small + 20 * 384 + 2 * 20 * 4}
    for form, per in sizes.items():
        c = cache["coco_sce_train"][form]
        assert (c["bytes_per_sample"], c["bytes"], c["live"]) == (per, 240_764 * per, 0)
    bounded = json.loads(runner.invoke(app, ["info", "--config", "tiny", "--json", "--set", "train.cache_form=int8",
                                             "--set", "train.cache_max_gb=0.1"]).output)["feature_cache"]
    c = bounded["coco_sce_train"]["int8"]
    assert (c["cached"], c["live"]) == (int(0.1e9 // sizes["int8"]), 240_764 - int(0.1e9 // sizes["int8"]))
    per_task = json.loads(runner.invoke(app, ["info", "--json", "--set", "model.heads=task"]).output)
    assert _total(per_task["parameters"]) > _total(info["parameters"])
    # 100 more answer words add a learned input and output vector each (hidden 128 in tiny)
    bigger = json.loads(runner.invoke(app, ["info", "--config", "tiny", "--json", "--vocab-size", "7700"]).output)
    assert _total(bigger["parameters"]) - _total(info["parameters"]) == 2 * 100 * 128
    table = runner.invoke(app, ["info", "--vocab-size", "100"])
    assert table.exit_code == 0 and "co-attention" in table.output
    measured = count_parameters(load_model_config("tiny"), vocab_size=100)
    row = next(line for line in table.output.splitlines() if "parameters" in line and "M" in line)
    cells = [c.strip() for c in re.split(r"[│|]", row) if c.strip()]
    assert cells == ["parameters", f"{_total(measured) / 1e6:,.1f}M", "236.0M"]   # measured, then the paper's
    assert "Example: gpv info" in runner.invoke(app, ["info", "--help"]).output
    bad = runner.invoke(app, ["info", "--set", "model.hiden=3"])
    assert bad.exit_code != 0
