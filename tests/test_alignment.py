"""The alignment stage's pieces: the region-phrase score and its targets, the region crops, the GPV
relevance term, and the align -> gpv hand-over through train.init_from."""

import math

import pytest
import torch
from conftest import FAST_TRAIN
from safetensors.torch import load_file

from gpvcli.data.vocab import SPECIALS, Vocab
from gpvcli.errors import GPVError
from gpvcli.model.gpv import build_model
from gpvcli.model.heads import GroundedMemory, RegionPhraseScore, RelevanceHead, mean_tokens
from gpvcli.train.config import load_run_config
from gpvcli.train.losses import matched_phrases
from gpvcli.train.trainer import train


def test_matched_phrases_of_named_categories():
    phrase_of = torch.tensor([1, -1, 0])                 # label 0 -> phrase 1; label 1 unnamed; label 2 -> phrase 0
    labels = [torch.tensor([2, 0, 1]), torch.tensor([0])]
    indices = [(torch.tensor([4, 0, 3]), torch.tensor([0, 1, 2])), (torch.tensor([2]), torch.tensor([0]))]
    sample, query, phrase = matched_phrases(indices, labels, phrase_of)
    # query 4 <- box 0 (label 2, phrase 0); query 0 <- box 1 (label 0, phrase 1); query 3 <- label 1: unnamed
    assert sample.tolist() == [0, 0, 1] and query.tolist() == [4, 0, 2] and phrase.tolist() == [0, 1, 1]


def test_region_phrase_score_is_a_scaled_cosine():
    score = RegionPhraseScore(dim=4)
    with torch.no_grad():
        score.proj.weight.copy_(torch.eye(4))
        score.proj.bias.zero_()
    regions = torch.tensor([[[1.0, 0, 0, 0], [0, 2.0, 0, 0]]])                       # (1, 2, 4)
    phrases = torch.tensor([[3.0, 0, 0, 0], [1.0, 1.0, 0, 0]])                       # (2, 4)
    logits = score(regions, phrases)
    cos = torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])
    assert torch.allclose(logits[0], 10.0 * cos + math.log(0.01 / 0.99), atol=1e-5)
    assert torch.allclose(score(regions, 5 * phrases), logits)                   # phrase length does not count


def test_mean_tokens_ignores_padding():
    tokens = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert mean_tokens(tokens, mask).flatten().tolist() == [2.0, 4.0]


def test_grounding_adds_to_the_relevant_logit_only():
    head = RelevanceHead(dim=3)
    regions, objectness, grounding = torch.randn(2, 4, 3), torch.randn(2, 4, 2), torch.randn(2, 4)
    plain = head(regions, objectness)
    grounded = head(regions, objectness, grounding)
    assert torch.allclose(grounded[..., 0], plain[..., 0] + grounding) and torch.equal(grounded[..., 1], plain[..., 1])


def test_grounded_memory_marks_regions_and_pools_the_best_match():
    memory = GroundedMemory(dim=2)
    with torch.no_grad():
        memory.match.copy_(torch.tensor([0.0, 1.0]))
    regions = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [3.0, 0.0]]])                     # (1, 3, 2)
    grounding = torch.tensor([[0.0, -100.0, math.log(3.0)]])                            # sigmoids 1/2, 0, 3/4
    out = memory(regions, grounding)
    # weights softmax(0, -100, log 3) = (1/4, 0, 3/4): focus = 1/4 * 1 + 3/4 * 3 = 2.5, marked by sigmoid(log 3)
    expected = torch.tensor([[[1.0, 0.5], [0.0, 0.0], [3.0, 0.75], [2.5, 0.75]]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_grounded_memory_joins_the_decoders_memory(tiny_world):
    vocab = Vocab.load(tiny_world["data"] / "vocab.json")
    cfg = load_run_config("tiny", ["model.phrase_grounding=true", "model.grounded_memory=true"])
    model = build_model(cfg.model, vocab).eval()
    ids, mask = torch.tensor([[5, 6, 7], [5, 6, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    enc = model.encode(query_ids=ids, query_mask=mask, images=torch.randn(2, 3, 96, 128))
    Q = cfg.model.visual.num_queries
    assert enc["memory"].shape[1] == Q + 3 + Q + 1
    # the query's padding stays masked; the grounded regions and the focus are always attended
    assert enc["memory_mask"][1].tolist() == [True] * (Q + 2) + [False] + [True] * (Q + 1)
    with pytest.raises(GPVError, match="phrase_grounding"):
        build_model(load_run_config("tiny", ["model.grounded_memory=true"]).model, vocab)


def test_colour_histogram_counts_each_crops_pixels_by_rgb_quarter():
    from gpvcli.data.images import IMAGENET_MEAN, IMAGENET_STD
    from gpvcli.model.visual import colour_histogram

    pixels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.3, 0.6, 0.9], [0.0, 0.0, 0.0]])   # 4 RGB pixels
    crop = pixels.T.reshape(3, 2, 2)                                                              # (3, h, w)
    crop = (crop - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    hist = colour_histogram(crop[None, None])[0, 0]                                              # (64,)
    # quarters: red (3, 0, 0) -> bin 48; (0.3, 0.6, 0.9) -> (1, 2, 3) -> 16 + 8 + 3 = 27; black -> bin 0
    expected = torch.zeros(64)
    expected[48], expected[27], expected[0] = 0.5, 0.25, 0.25
    assert torch.allclose(hist, expected, atol=1e-6)


def test_grounded_memory_adds_each_regions_colour():
    memory = GroundedMemory(dim=2, colour_dim=3)
    with torch.no_grad():
        memory.match.zero_()
        memory.colour.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
        memory.colour.bias.zero_()
    regions, grounding = torch.zeros(1, 2, 2), torch.tensor([[0.0, 0.0]])                 # equal weights
    colour = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    out = memory(regions, grounding, colour)
    assert torch.allclose(out, torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.5, 1.0]]]))
    with pytest.raises(ValueError):
        memory(regions, grounding)


def test_question_forms_weigh_each_phrasing_and_name_only_asked_categories():
    from types import SimpleNamespace

    from gpvcli.data import categories as cats
    from gpvcli.train.stages import question_forms

    index = {c.name: k for k, c in enumerate(cats.categories())}
    store = SimpleNamespace(tasks=["vqa", "vqa", "vqa", "loc", "vqa", "vqa"],
                            query=["What color is the puppy?", "What color is the cat?", "How many cats are there?",
                                   "Locate bus.", "Is there a dog near a cat?", "What is red?"])
    forms = question_forms(store, [index["bus"], index["cat"], index["dog"]])
    # two phrasings, asked twice and once; the bus is named by no question (only by a loc prompt)
    assert forms.templates == ["What color is the [OBJECT]?", "How many [OBJECTS] are there?"]
    assert forms.weights.tolist() == [2.0, 1.0]
    assert forms.names == ["cat", "dog"]                      # COCO's order: cat (17) before dog (18)
    assert forms.phrase_of[index["cat"]] == 0 and forms.phrase_of[index["dog"]] == 1
    assert forms.phrase_of[index["bus"]] == -1
    assert forms.fill(1) == ["How many cats are there?", "How many dogs are there?"]
    assert question_forms(SimpleNamespace(tasks=["vqa"], query=["What is red?"]), [index["cat"]]) is None


def test_focus_input_adds_the_memorys_last_vector_to_every_input_word():
    from gpvcli.model.heads import TextHead

    torch.manual_seed(0)
    options = {"vocab_size": 7, "dim": 8, "layers": 2, "heads": 2, "ffn": 16, "dropout": 0.0,
               "answer_vectors": "learned", "positions": True}
    head, plain = TextHead(**options, focus_input=True), TextHead(**options)
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("focus.")})
    with torch.no_grad():
        head.focus.weight.copy_(torch.eye(8))
        head.focus.bias.zero_()
    memory, tokens = torch.randn(2, 5, 8), torch.tensor([[1, 4, 2], [3, 3, 0]])
    mask = torch.tensor([[True] * 4 + [False]] * 2)            # cross-attention cannot see the last vector
    x = plain.embed(tokens) + memory[:, -1:]                    # by hand: the focus joins each input word
    for layer, kv in zip(plain.layers, plain._memory_kv(memory)):
        x = layer(x, kv, mask)
    logits = head(tokens, memory, mask)
    torch.testing.assert_close(logits, x @ plain.output_vectors().T)
    assert not torch.allclose(logits, plain(tokens, memory, mask), atol=1e-3)
    state = head.start(memory, mask)                            # incremental decoding reads it too
    steps = torch.stack([head.step(tokens[:, i], state) for i in range(3)], 1)
    torch.testing.assert_close(steps, logits, rtol=1e-4, atol=1e-5)


def test_focus_input_needs_the_grounded_memory():
    cfg = load_run_config("tiny", ["model.focus_input=true"])
    with pytest.raises(GPVError, match="focus_input"):
        build_model(cfg.model, Vocab([*SPECIALS, "yes", "no"]))


def test_align_stage_hands_its_weights_to_gpv(tiny_world, tmp_path):
    sets = [*FAST_TRAIN, "model.phrase_grounding=true"]
    align = tmp_path / "align"
    # every step phrased as a training question (validation keeps the localization prompt)
    result = train(align, data_dir=tiny_world["data"], overrides=[*sets, "train.stage=align", "train.max_steps=2",
                                                                  "train.align_questions=1"],
                   show_progress=False)
    assert result["steps"] == 2 and "ap50_agnostic" in result["last_validation"]["tasks"]
    aligned = load_file(align / "last" / "model.safetensors")
    assert any(k.startswith("phrase_score.") for k in aligned)
    # a GPV run started from it with a zero learning rate keeps exactly its weights
    gpv = tmp_path / "gpv"
    train(gpv, data_dir=tiny_world["data"], overrides=[*sets, f"train.init_from={align / 'last'}", "train.lr=0",
                                                       "train.backbone_lr=0", "train.max_steps=1"],
          show_progress=False)
    started = load_file(gpv / "last" / "model.safetensors")
    assert started.keys() == aligned.keys()
    assert all(torch.equal(started[k], aligned[k]) for k in aligned)
    # a model with a head per task and no relevance conditioning (the ablation's variants), and with the
    # grounded memory, takes every other weight, and starts those modules as initialised
    varied = tmp_path / "varied"
    train(varied, data_dir=tiny_world["data"], overrides=[*sets, f"train.init_from={align / 'last'}", "train.lr=0",
                                                          "train.backbone_lr=0", "train.max_steps=1",
                                                          "model.heads=task", "model.relevance_conditioning=false",
                                                          "model.grounded_memory=true"],
          show_progress=False)
    started = load_file(varied / "last" / "model.safetensors")
    kept = [k for k in aligned if not k.startswith(("text_heads.", "conditioning."))]
    assert kept and all(torch.equal(started[k], aligned[k]) for k in kept)
    assert {k.split(".")[1] for k in started if k.startswith("text_heads.")} == {"vqa", "cap", "cls"}
    assert not any(k.startswith("conditioning.") for k in started)
    assert "grounded_memory.match" in started and not any(k.startswith("grounded_memory.") for k in aligned)
    # train.frozen_alignment: the text encoder, region descriptor and region-query score stay the align
    # stage's while the rest learns
    frozen = tmp_path / "frozen"
    train(frozen, data_dir=tiny_world["data"], overrides=[*sets, f"train.init_from={align / 'last'}",
                                                          "train.max_steps=2", "train.frozen_alignment=true"],
          show_progress=False)
    started = load_file(frozen / "last" / "model.safetensors")
    kept = [k for k in aligned if k.startswith(("text.", "regions.", "phrase_score."))]
    assert kept and all(torch.equal(started[k], aligned[k]) for k in kept)
    assert not all(torch.equal(started[k], aligned[k]) for k in aligned if k.startswith("coattention."))
    with pytest.raises(GPVError, match="frozen_alignment"):
        train(tmp_path / "bad3", data_dir=tiny_world["data"], overrides=[*sets, "train.frozen_alignment=true"],
              show_progress=False)
    with pytest.raises(GPVError, match="does not hold this model's weights"):
        train(tmp_path / "bad", data_dir=tiny_world["data"],
              overrides=[*FAST_TRAIN, f"train.init_from={align / 'last'}", "train.max_steps=1"], show_progress=False)
    with pytest.raises(GPVError, match="phrase_grounding"):
        train(tmp_path / "bad2", data_dir=tiny_world["data"], overrides=[*FAST_TRAIN, "train.stage=align"],
              show_progress=False)


def test_region_crops_cut_the_enlarged_box_out_of_the_image():
    from gpvcli.model.visual import region_crops

    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    # the top-left quarter at its own resolution: the crop is exactly those pixels
    quarter = torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]] * 2)
    crops = region_crops(images, quarter, (4, 4), margin=0.0)
    assert crops.shape == (2, 2, 3, 4, 4)
    assert torch.allclose(crops[:, 0], images[..., :4, :4]) and torch.allclose(crops[:, 1], images[..., 4:, 4:])
    # with a margin of 0.5 the crop spans twice the box: a centred box of half the image is the whole image
    whole = region_crops(images, torch.tensor([[[0.5, 0.5, 0.5, 0.5]]] * 2), (8, 8), margin=0.5)
    assert torch.allclose(whole[:, 0], images)
    # what falls outside the image is 0 (the normalized mean colour)
    corner = region_crops(images, torch.tensor([[[0.0, 0.0, 0.5, 0.5]]] * 2), (4, 4), margin=0.0)
    assert torch.equal(corner[:, 0, :, :2, :2], torch.zeros(2, 3, 2, 2))
    assert torch.allclose(corner[:, 0, :, 2:, 2:], images[..., :2, :2])


def test_region_descriptor_holds_the_crop_features():
    from gpvcli.data.prepare import CROP_MARGIN
    from gpvcli.model.visual import VisualConfig, build_visual, region_crops

    encoder = build_visual(VisualConfig(image_size=[64, 64], num_queries=3, region_crops=[32, 32], dropout=0.0))
    encoder.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = encoder(images)
        c = encoder.map_dim
        assert out["roi"].shape == (2, 3, 2 * c) and encoder.roi_dim == 2 * c
        crops = region_crops(images, out["boxes"], (32, 32), CROP_MARGIN)[1, 2]          # one region by hand
        fmap, _ = encoder.backbone_map(crops[None])
        assert torch.allclose(out["roi"][1, 2, c:], fmap.mean(dim=(2, 3))[0], atol=1e-5)
