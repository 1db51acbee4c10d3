"""The alignment stage's pieces: the region-phrase score, the focal loss and its targets, the GPV
relevance term, and the align -> gpv hand-over through train.init_from."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST_TRAIN
from safetensors.torch import load_file

from gpvcli.errors import GPVError
from gpvcli.model.heads import RegionPhraseScore, RelevanceHead, mean_tokens
from gpvcli.train.losses import phrase_targets, sigmoid_focal_loss
from gpvcli.train.trainer import train


def test_focal_loss_by_hand_and_against_binary_cross_entropy():
    # logit 0 -> p = 0.5: a positive costs alpha * 0.5^2 * ln 2, a negative (1 - alpha) * 0.5^2 * ln 2
    zero = torch.zeros(2)
    assert sigmoid_focal_loss(zero, torch.tensor([1.0, 0.0])).item() == pytest.approx(
        (0.25 + 0.75) * 0.25 * math.log(2))
    logits, targets = torch.randn(3, 5), (torch.rand(3, 5) > 0.5).float()
    plain = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    assert sigmoid_focal_loss(logits, targets, alpha=0.5, gamma=0.0).item() == pytest.approx(0.5 * plain.item())


def test_phrase_targets_mark_matched_queries_of_named_categories():
    phrase_of = torch.tensor([1, -1, 0])                 # label 0 -> phrase 1; label 1 unnamed; label 2 -> phrase 0
    labels = [torch.tensor([2, 0, 1]), torch.tensor([0])]
    indices = [(torch.tensor([4, 0, 3]), torch.tensor([0, 1, 2])), (torch.tensor([2]), torch.tensor([0]))]
    hits = phrase_targets(indices, labels, phrase_of, (2, 5, 2))
    expected = torch.zeros(2, 5, 2)
    expected[0, 4, 0] = 1      # query 4 <- box 0, label 2, phrase 0
    expected[0, 0, 1] = 1      # query 0 <- box 1, label 0, phrase 1 (query 3 <- label 1: unnamed)
    expected[1, 2, 1] = 1
    assert torch.equal(hits, expected)


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


def test_align_stage_hands_its_weights_to_gpv(tiny_world, tmp_path):
    sets = [*FAST_TRAIN, "model.phrase_grounding=true"]
    align = tmp_path / "align"
    result = train(align, data_dir=tiny_world["data"], overrides=[*sets, "train.stage=align", "train.max_steps=2"],
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
    with pytest.raises(GPVError, match="does not hold this model's weights"):
        train(tmp_path / "bad", data_dir=tiny_world["data"],
              overrides=[*FAST_TRAIN, f"train.init_from={align / 'last'}", "train.max_steps=1"], show_progress=False)
    with pytest.raises(GPVError, match="phrase_grounding"):
        train(tmp_path / "bad2", data_dir=tiny_world["data"], overrides=[*FAST_TRAIN, "train.stage=align"],
              show_progress=False)
