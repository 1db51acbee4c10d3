"""`--cls-mask` and `--beam` through `gpv evaluate` and `gpv predict`, on the briefly trained tiny run.

--cls-mask: classification answers use only the words of category names and synonyms (the set is derived
here from the category table); other tasks decode as without it. --beam K: the answers printed are the
ones beam search with K beams produced (read where the model calls it)."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.data import categories as cats
from gpvcli.data.text import normalize
from gpvcli.model import decoding

cli = CliRunner()


def predictions(run, out, *args):
    result = cli.invoke(app, ["evaluate", str(run), "--split", "test", "--out", str(out), "--json", *args])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return json.loads((out / "metrics.json").read_text()), {x["sample_id"]: x for x in lines}


def category_words() -> set[str]:
    return {w for c in cats.categories() for phrase in cats.phrases(c.name) for w in normalize(phrase)}


def talkative_checkpoint(run, folder):
    """The tiny run's best/ with its output word vectors changed so that it answers with words rather
    than stopping at once (as 2 training steps leave it): STOP's vector is zero (logit 0), category words
    keep 1/1000 of theirs (small logits), every other word keeps its own (large logits)."""
    from gpvcli.data.vocab import STOP, Vocab

    shutil.copytree(run / "best", folder)
    vocab = Vocab.load(folder / "vocab.json")
    weights = load_file(folder / "model.safetensors")
    table = weights["text_heads.text.output_words"]
    table[STOP] = 0
    for w in category_words() & set(vocab.index):
        table[vocab.index[w]] *= 1e-3
    save_file(weights, folder / "model.safetensors")
    return folder


def test_cls_mask_limits_classification_answers_to_category_words(tiny_run, tiny_world, tmp_path):
    ckpt = talkative_checkpoint(tiny_run, tmp_path / "ckpt")
    data = ["--data", str(tiny_world["data"]), "--tasks", "cls,vqa"]
    plain_metrics, plain = predictions(ckpt, tmp_path / "plain", *data)
    masked_metrics, masked = predictions(ckpt, tmp_path / "masked", *data, "--cls-mask")
    assert masked_metrics["protocol"]["cls_mask"] is True and plain_metrics["protocol"]["cls_mask"] is False
    allowed = category_words()
    cls = [k for k, x in masked.items() if x["task"] == "cls"]
    assert cls and all(masked[k]["prediction"] and set(masked[k]["prediction"].split()) <= allowed for k in cls)
    assert all(not set(plain[k]["prediction"].split()) <= allowed for k in cls)    # unmasked: other words
    vqa = [k for k, x in plain.items() if x["task"] == "vqa"]
    assert vqa and all(masked[k]["prediction"] == plain[k]["prediction"] for k in vqa)   # other tasks as before


@pytest.fixture
def beam_spy(monkeypatch):
    """The beam sizes the model asked for and the answers beam search returned (token rows), in order."""
    calls = []
    real = decoding.beam_search

    def beam_search(*args, beam_size, **kwargs):
        tokens, scores = real(*args, beam_size=beam_size, **kwargs)
        calls.append((beam_size, tokens.tolist()))
        return tokens, scores
    monkeypatch.setattr(decoding, "beam_search", beam_search)
    return calls


def decoded(calls, vocab_path):
    from gpvcli.data.vocab import Vocab

    vocab = Vocab.load(vocab_path)
    return [vocab.decode(row) for _, rows in calls for row in rows]


def test_beam_through_evaluate(tiny_run, tiny_world, tmp_path, beam_spy):
    ckpt = talkative_checkpoint(tiny_run, tmp_path / "ckpt")
    data = ["--data", str(tiny_world["data"]), "--tasks", "vqa", "--no-checks"]   # one decoding of each sample
    metrics, preds = predictions(ckpt, tmp_path / "beam", *data, "--beam", "3", "--batch-size", "16")
    assert metrics["protocol"]["decoding"] == "beam 3"
    assert beam_spy and {k for k, _ in beam_spy} == {3}
    texts = decoded(beam_spy, ckpt / "vocab.json")
    assert texts == [x["prediction"] for x in preds.values()] and all(texts)   # one beam answer per sample
    beam_spy.clear()
    greedy, _ = predictions(ckpt, tmp_path / "greedy", *data)
    assert greedy["protocol"]["decoding"] == "greedy" and not beam_spy


def test_beam_through_predict(tiny_run, tiny_world, tmp_path, beam_spy):
    ckpt = talkative_checkpoint(tiny_run, tmp_path / "ckpt")
    image = min((tiny_world["coco"] / "images" / "val2014").glob("*.jpg"))
    result = cli.invoke(app, ["predict", str(image), "What color is the dog?", "--checkpoint", str(ckpt), "--json",
                              "--beam", "4"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert [k for k, _ in beam_spy] == [4]
    assert decoded(beam_spy, ckpt / "vocab.json") == [record["text"]] and record["text"]
