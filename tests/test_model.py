import dataclasses
import math

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from gpvcli.data.vocab import SPECIALS, START, STOP, Vocab
from gpvcli.errors import GPVError
from gpvcli.model.config import ModelConfig, TextConfig, load_model_config
from gpvcli.model.gpv import DEFAULT_TEXT_HEAD, build_model
from gpvcli.model.heads import RelevanceConditioning, RelevanceHead
from gpvcli.model.text import build_tokenizer, word_vectors

VOCAB = Vocab([*SPECIALS, "dog", "cat", "red", "a", "on", "the", "bench", "hot"])
TASKS = ["vqa", "cap", "loc", "cls"]
B, T, S = 4, 7, 5


def tiny_cfg(*overrides: str) -> ModelConfig:
    return load_model_config("tiny", ["model.visual.num_queries=6", "model.text.vocab_size=120", *overrides])


def inputs(cfg: ModelConfig, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.visual.image_size
    query_ids = torch.randint(5, 120, (B, T), generator=g)
    query_mask = torch.ones(B, T, dtype=torch.long)
    query_mask[1, 4:] = 0
    query_mask[3, 2:] = 0
    query_ids[query_mask == 0] = 0
    return {"query_ids": query_ids, "query_mask": query_mask, "task": TASKS,
            "images": torch.randn(B, 3, H, W, generator=g)}


def answers(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(4, len(VOCAB), (B, S), generator=g)
    a[:, 0] = START
    return a


def model_of(cfg: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg, VOCAB).eval()


def test_forward_shapes_and_dtypes():
    cfg = tiny_cfg()
    model = model_of(cfg)
    out = model(**inputs(cfg), answer_inputs=answers())
    Q = cfg.visual.num_queries
    assert out["boxes"].shape == (B, Q, 4) and out["boxes"].dtype == torch.float32
    assert ((out["boxes"] >= 0) & (out["boxes"] <= 1)).all()
    assert out["relevance_logits"].shape == (B, Q, 2)
    assert out["relevance"].shape == (B, Q)
    assert out["text_logits"].shape == (B, S, len(VOCAB))
    assert "text_logits" not in model(**inputs(cfg))


def test_relevance_is_softmax_of_summed_logits():
    cfg = tiny_cfg()
    model = model_of(cfg)
    x = inputs(cfg)
    visual = model.visual(x.pop("images"))
    seen = {}
    model.coattention.register_forward_hook(lambda m, i, o: seen.update(regions=o[1]))
    out = model(**x, visual=visual)
    expected = model.relevance.linear(seen["regions"]) + visual["objectness"]
    assert torch.allclose(out["relevance_logits"], expected, atol=1e-6)
    assert torch.allclose(out["relevance"], expected.softmax(-1)[..., 0], atol=1e-6)


def test_relevance_head_and_conditioning_modules():
    """Hand-set weights, hand-derived outputs: relevance = softmax(Linear(region) + objectness)[0], and a
    region gains p_rel * t_rel + p_irr * t_irr, with gradients through p."""
    head = RelevanceHead(dim=3)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.weight[0, 0] = 1.0                   # relevant logit reads the region's first feature
        head.linear.bias.copy_(torch.tensor([math.log(3), 0.0]))
    regions = torch.tensor([[[0.0, 5.0, 5.0], [0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0]]])
    objectness = torch.tensor([[[0.0, 0.0], [0.0, math.log(3)], [0.0, 0.0]]])
    p = head(regions, objectness).softmax(-1)[..., 0]
    # odds 3:1 -> 3/4; 3:3 -> 1/2; 3*2:1 -> 6/7
    torch.testing.assert_close(p, torch.tensor([[0.75, 0.5, 6 / 7]]))

    cond = RelevanceConditioning(dim=3)
    with torch.no_grad():
        cond.tokens.copy_(torch.tensor([[4.0, 0.0, 0.0], [0.0, 8.0, 0.0]]))     # t_rel, t_irr
    logits = torch.tensor([[[math.log(3), 0.0], [0.0, 0.0]]], requires_grad=True)  # p_rel 3/4 and 1/2
    out = cond(torch.ones(1, 2, 3), logits)
    torch.testing.assert_close(out, torch.tensor([[[4.0, 3.0, 1.0], [3.0, 5.0, 1.0]]]))
    out[0, 0, 0].backward()                               # d(1 + 4 p)/d logit_rel = 4 p (1 - p) = 3/4
    torch.testing.assert_close(logits.grad[0, 0], torch.tensor([0.75, -0.75]))


@pytest.mark.parametrize("on", [True, False])
def test_relevance_conditioning_switch(on):
    """On: a region the model rates relevant with p (its own `relevance` output) gains p * t_rel +
    (1 - p) * t_irr; with t_rel = t_irr = v every region gains v. Off: regions pass unchanged."""
    cfg = tiny_cfg(f"model.relevance_conditioning={str(on).lower()}")
    model = model_of(cfg)
    seen = {}
    model.coattention.register_forward_hook(lambda m, i, o: seen.update(regions=o[1]))
    x = {k: v for k, v in inputs(cfg).items() if k != "task"}
    Q = cfg.visual.num_queries
    if not on:
        assert model.conditioning is None
        assert torch.equal(model.encode(**x)["memory"][:, :Q], seen["regions"])
        return
    v = torch.randn(cfg.hidden)
    with torch.no_grad():
        model.conditioning.tokens.copy_(torch.stack([v, v]))
    enc = model.encode(**x)
    torch.testing.assert_close(enc["memory"][:, :Q] - seen["regions"], v.expand(B, Q, -1), atol=1e-5, rtol=0)
    with torch.no_grad():
        model.conditioning.tokens.copy_(torch.stack([v, torch.zeros_like(v)]))
    enc = model.encode(**x)
    p = enc["relevance"]                                                        # (B, Q)
    assert p.min() < 0.9 * p.max()                                             # regions rated differently
    torch.testing.assert_close(enc["memory"][:, :Q] - seen["regions"], p[..., None] * v, atol=1e-5, rtol=0)


@pytest.mark.parametrize("on", [True, False])
def test_text_loss_reaches_relevance_only_through_conditioning(on):
    cfg = tiny_cfg(f"model.relevance_conditioning={str(on).lower()}", "model.dropout=0.0")
    model = model_of(cfg)
    model(**inputs(cfg), answer_inputs=answers())["text_logits"].logsumexp(-1).sum().backward()
    grad = model.relevance.linear.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == on


def test_cached_visual_features_give_the_same_outputs():
    cfg = tiny_cfg()
    model = model_of(cfg)
    x = inputs(cfg)
    with torch.no_grad():
        from_images = model(**x, answer_inputs=answers())
        visual = model.visual(x.pop("images"))
        from_cache = model(**x, visual=visual, answer_inputs=answers())
    for key in from_images:
        assert torch.equal(from_images[key], from_cache[key]), key
    with pytest.raises(ValueError):
        model(**inputs(cfg), visual=visual)


@pytest.mark.parametrize("masked", [True, False])
def test_query_padding_mask(masked):
    cfg = tiny_cfg(f"model.mask_query_padding={str(masked).lower()}")
    model = model_of(cfg)
    x = inputs(cfg)
    other = dict(x, query_ids=torch.where(x["query_mask"].bool(), x["query_ids"], 7))
    with torch.no_grad():
        a = model(**x, answer_inputs=answers())
        b = model(**other, answer_inputs=answers())
    # rows 1 and 3 have padding: their outputs ignore what the padding tokens are only when masked
    same = torch.allclose(a["relevance_logits"], b["relevance_logits"], atol=1e-5) and torch.allclose(
        a["text_logits"], b["text_logits"], atol=1e-4)
    assert same == masked


def test_head_per_task_routes_samples_and_shares_the_box_head():
    cfg = tiny_cfg("model.heads=task")
    model = model_of(cfg)
    assert set(model.text_heads) == {"vqa", "cap", "cls"}
    assert isinstance(model.relevance, RelevanceHead)  # one box / relevance head for all tasks
    x = inputs(cfg)
    a = answers()
    with torch.no_grad():
        out = model(**x, answer_inputs=a)
        enc = model.encode(**{k: v for k, v in x.items() if k != "task"})
        for i, task in enumerate(TASKS):
            head = model.text_heads[task if task != "loc" else DEFAULT_TEXT_HEAD]
            mask = enc["memory_mask"][i:i + 1]
            expected = head(a[i:i + 1], enc["memory"][i:i + 1], mask)
            assert torch.allclose(out["text_logits"][i:i + 1], expected, atol=1e-5), task
            wrong = model.text_heads["cap" if task != "cap" else "vqa"](a[i:i + 1], enc["memory"][i:i + 1], mask)
            assert not torch.allclose(out["text_logits"][i:i + 1], wrong, atol=1e-3)


def _names(cfg: ModelConfig) -> set[str]:
    return {n for n, _ in model_of(cfg).named_parameters()}


def test_each_switch_changes_only_what_it_must():
    base = _names(tiny_cfg())
    per_task = _names(tiny_cfg("model.heads=task"))
    assert {n for n in base ^ per_task if not n.startswith("text_heads.")} == set()
    head = {n.split(".", 2)[2] for n in base if n.startswith("text_heads.text.")}
    for task in ("vqa", "cap", "cls"):  # the same head, once per text task
        assert {n.split(".", 2)[2] for n in per_task if n.startswith(f"text_heads.{task}.")} == head
    frozen = _names(tiny_cfg("model.answer_vectors=frozen_text"))
    assert base ^ frozen == {f"text_heads.text.{side}_transform.{p}" for side in ("input", "output")
                             for p in ("weight", "bias")}
    no_cond = _names(tiny_cfg("model.relevance_conditioning=false"))
    assert base - no_cond == {"conditioning.tokens"} and no_cond <= base


def test_frozen_text_encoder_gets_no_gradients_and_stays_in_eval_mode():
    cfg = tiny_cfg("model.text.frozen=true", "model.answer_vectors=frozen_text")
    model = model_of(cfg).train()
    assert not model.text.bert.training and model.visual.training
    out = model(**inputs(cfg), answer_inputs=answers())
    out["text_logits"].sum().backward()
    assert all(p.grad is None for p in model.text.bert.parameters())
    assert model.text.proj.weight.grad is not None
    assert not model.text_heads["text"].input_words.requires_grad
    trainable = {id(p) for g in model.param_groups().values() for p in g}
    assert not trainable & {id(p) for p in model.text.bert.parameters()}


def test_param_groups_partition_the_trainable_parameters():
    model = model_of(tiny_cfg())
    groups = model.param_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.visual.backbone_parameters()}
    visual = {id(p) for p in model.visual.parameters()}
    assert {id(p) for p in groups["detr"]} <= visual and not {id(p) for p in groups["rest"]} & visual
    assert groups["detr"] and groups["rest"]


def test_generate_respects_per_task_lengths():
    cfg = tiny_cfg("model.heads=task")
    model = model_of(cfg)
    x = inputs(cfg)
    out = model.generate(**x)
    assert out["tokens"].shape[0] == B and out["scores"].shape == (B,)
    assert out["boxes"].shape == (B, cfg.visual.num_queries, 4)
    for row, task in zip(out["tokens"].tolist(), TASKS):
        assert row.index(STOP) <= model.answer_len(task)
    beams = model.generate(**x, beam_size=3, max_len=2)
    assert all(row.index(STOP) <= 2 for row in beams["tokens"].tolist())
    allowed = torch.zeros(len(VOCAB), dtype=torch.bool)
    allowed[VOCAB.index["dog"]] = True
    only_dog = model.generate(**x, allowed_words=allowed)["tokens"]
    assert set(only_dog.unique().tolist()) <= {VOCAB.index["dog"], STOP, 0}


def test_unknown_task_is_refused():
    cfg = tiny_cfg()
    model = model_of(cfg)
    with pytest.raises(GPVError, match="unknown task"):
        model(**dict(inputs(cfg), task=["vqa", "dance", "cap", "cls"]), answer_inputs=answers())


def test_config_loading_is_strict():
    cfg = load_model_config("tiny", ["model.hidden=64", "train.lr=0.1"])
    assert cfg.hidden == 64 and cfg.visual.d_model == 128
    with pytest.raises(GPVError, match="unknown config key"):
        load_model_config("tiny", ["model.hiden=64"])
    with pytest.raises(GPVError, match="expected an integer"):
        load_model_config("tiny", ["model.decoder_layers=two"])
    with pytest.raises(GPVError, match="names no section"):
        load_model_config("tiny", ["hidden=64"])
    with pytest.raises(GPVError, match="divisible"):
        load_model_config("tiny", ["model.hidden=130"])
    with pytest.raises(GPVError, match="max_answer_len"):
        load_model_config("tiny", ["model.max_answer_len={vqa: 5}"])
    gpv1 = load_model_config("gpv1")
    assert (gpv1.hidden, gpv1.coattention_heads, gpv1.answer_vectors, gpv1.text.frozen) == (
        768, 16, "frozen_text", True)


def _save_tiny_bert(folder, hidden=32):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "dog", "cat", "red", "hot", "##s", "a", "on",
             "the", "bench", "<", ">", "/", "s", "pad", "un", "##k"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = build_tokenizer(TextConfig(vocab_size=len(words)), folder / "vocab.txt")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, vocab_size=len(words), max_position_embeddings=40))
    bert.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return len(words)


def test_pretrained_text_encoder_gives_frozen_word_vectors(tmp_path):
    n = _save_tiny_bert(tmp_path)
    sizes = [f"model.text.pretrained={tmp_path}", "model.text.hidden=32", "model.text.layers=1",
             "model.text.heads=2", "model.text.intermediate=64", f"model.text.vocab_size={n}",
             "model.text.max_position=40", "model.answer_vectors=frozen_text", "model.text.frozen=true"]
    cfg = load_model_config("tiny", sizes)
    model = build_model(cfg, VOCAB)
    bert = BertModel.from_pretrained(tmp_path).eval()
    assert torch.equal(model.text.bert.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    table = model.text_heads["text"].input_words
    assert table.shape == (len(VOCAB), 32) and not table.requires_grad
    ids = torch.tensor([[2, 5, 3]])  # [CLS] dog [SEP] in the BERT vocabulary
    with torch.no_grad():
        dog = bert(input_ids=ids).last_hidden_state[0, 1]
    assert torch.allclose(table[VOCAB.index["dog"]], dog, atol=1e-5)
    tok = BertTokenizerFast.from_pretrained(tmp_path)
    assert tok.tokenize("Dogs on the bench") == ["dog", "##s", "on", "the", "bench"]
    assert torch.allclose(word_vectors(bert, tok, ["dogs"])[0], bert(
        input_ids=torch.tensor([[2, 5, 9, 3]])).last_hidden_state[0, 1:3].mean(0), atol=1e-5)
    with pytest.raises(GPVError, match="model.text.hidden"):
        build_model(dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, hidden=48)), VOCAB)
