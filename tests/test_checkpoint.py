import shutil

import pytest
import torch
import yaml
from transformers import BertConfig, BertModel

from gpvcli.data.vocab import SPECIALS, START, Vocab
from gpvcli.errors import GPVError
from gpvcli.model.checkpoint import load_model, save_model
from gpvcli.model.config import load_model_config
from gpvcli.model.gpv import build_model
from gpvcli.model.text import build_tokenizer

VOCAB = Vocab([*SPECIALS, "dog", "cat", "red", "a", "on", "the", "bench"])
QUERY_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "this", "locate", "dog", "##s", "?", "."]
OVERRIDES = ["model.visual.num_queries=5", "model.text.vocab_size=40", "model.decoder_layers=1"]


@pytest.fixture
def tokenizer_and_cfg(tmp_path):
    (tmp_path / "query_vocab.txt").write_text("\n".join(QUERY_WORDS) + "\n")
    cfg = load_model_config("tiny", OVERRIDES)
    return build_tokenizer(cfg.text, tmp_path / "query_vocab.txt"), cfg


def batch(tokenizer, cfg):
    enc = tokenizer(["What is this?", "Locate dogs."], padding=True, return_tensors="pt")
    H, W = cfg.visual.image_size
    torch.manual_seed(3)
    return {"query_ids": enc["input_ids"], "query_mask": enc["attention_mask"], "task": ["cls", "loc"],
            "images": torch.randn(2, 3, H, W)}


def test_round_trip_gives_identical_outputs(tmp_path, tokenizer_and_cfg):
    tokenizer, cfg = tokenizer_and_cfg
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB).eval()
    folder = save_model(tmp_path / "ckpt", model, cfg, VOCAB, tokenizer)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "model_config.yaml", "tokenizer",
                                                        "vocab.json"]
    loaded, cfg2, vocab2, tokenizer2 = load_model(folder)
    assert cfg2 == cfg and vocab2.words == VOCAB.words and not loaded.training
    x = batch(tokenizer, cfg)
    assert torch.equal(batch(tokenizer2, cfg)["query_ids"], x["query_ids"])
    answers = torch.tensor([[START, 5, 6], [START, 7, 4]])
    with torch.no_grad():
        a, b = model(**x, answer_inputs=answers), loaded(**x, answer_inputs=answers)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ga, gb = model.generate(**x, beam_size=2), loaded.generate(**x, beam_size=2)
    assert torch.equal(ga["tokens"], gb["tokens"]) and torch.equal(ga["scores"], gb["scores"])


def test_pretrained_text_encoder_is_not_needed_to_load(tmp_path, tokenizer_and_cfg):
    tokenizer, _ = tokenizer_and_cfg
    bert_dir = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=40, max_position_embeddings=64)).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    cfg = load_model_config("tiny", [*OVERRIDES, f"model.text.pretrained={bert_dir}", "model.text.hidden=32",
                                     "model.text.layers=1", "model.text.intermediate=64",
                                     "model.answer_vectors=frozen_text", "model.text.frozen=true"])
    model = build_model(cfg, VOCAB).eval()
    folder = save_model(tmp_path / "ckpt", model, cfg, VOCAB, tokenizer)
    shutil.rmtree(bert_dir)
    loaded, cfg2, _, _ = load_model(folder)
    assert cfg2.text.pretrained == str(bert_dir)
    assert torch.equal(loaded.text_heads["text"].output_words, model.text_heads["text"].output_words)
    assert torch.equal(loaded.text.bert.embeddings.word_embeddings.weight,
                       model.text.bert.embeddings.word_embeddings.weight)
    assert not any(p.requires_grad for p in loaded.text.bert.parameters())


def test_edited_config_is_refused(tmp_path, tokenizer_and_cfg):
    tokenizer, cfg = tokenizer_and_cfg
    folder = save_model(tmp_path / "ckpt", build_model(cfg, VOCAB), cfg, VOCAB, tokenizer)
    data = yaml.safe_load((folder / "model_config.yaml").read_text())
    data["hidden"] = 64
    (folder / "model_config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(GPVError, match="do not fit model_config.yaml") as e:
        load_model(folder)
    assert "\n" not in str(e.value)
    data["hidden"] = "wide"
    (folder / "model_config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(GPVError, match="model.hidden"):
        load_model(folder)


def test_truncated_or_missing_files_are_refused(tmp_path, tokenizer_and_cfg):
    tokenizer, cfg = tokenizer_and_cfg
    folder = save_model(tmp_path / "ckpt", build_model(cfg, VOCAB), cfg, VOCAB, tokenizer)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(GPVError, match="corrupt"):
        load_model(folder)
    weights.unlink()
    with pytest.raises(GPVError, match="model.safetensors is missing"):
        load_model(folder)
    with pytest.raises(GPVError, match="not a model checkpoint"):
        load_model(tmp_path / "nowhere")


def test_saving_replaces_an_existing_checkpoint(tmp_path, tokenizer_and_cfg):
    tokenizer, cfg = tokenizer_and_cfg
    torch.manual_seed(0)
    first = build_model(cfg, VOCAB)
    save_model(tmp_path / "ckpt", first, cfg, VOCAB, tokenizer)
    torch.manual_seed(1)
    second = build_model(cfg, VOCAB)
    save_model(tmp_path / "ckpt", second, cfg, VOCAB, tokenizer)
    loaded, _, _, _ = load_model(tmp_path / "ckpt")
    assert torch.equal(loaded.relevance.linear.weight, second.relevance.linear.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "query_vocab.txt"]  # no temporary left
