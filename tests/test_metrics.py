import random

import numpy as np
import pytest
import torch

from gpvcli.errors import GPVError
from gpvcli.eval.metrics import cider_d, classification_correct, coco_map, localization_ap, vqa_accuracy
from gpvcli.eval.tokenize import tokenize_caption

# ---------------------------------------------------------------- VQA


@pytest.mark.parametrize("agree, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_leave_one_out_arithmetic(agree, expected):
    others = ["cat", "bird", "cow", "fox", "owl", "elk", "yak", "ant", "bee", "eel"]
    answers = ["dog"] * agree + others[agree:]
    assert len(answers) == 10
    assert vqa_accuracy("dog", answers) == pytest.approx(expected)


@pytest.mark.parametrize("prediction, answer", [
    ("two", "2"),  # number words
    ("none", "0"),
    ("a dog", "dog"),  # articles
    ("The Dog", "dog"),  # case
    ("dog.", "dog"),  # periods
    ("yes!", "yes"),
    ("dont", "don't"),  # contractions
    ("1,000", "1000"),  # digit-comma-digit: commas deleted
    ("  dog\n", "dog"),  # whitespace clean-up
])
def test_vqa_normalization_when_answers_differ(prediction, answer):
    answers = [answer] * 3 + ["other"] * 7
    assert vqa_accuracy(prediction, answers) == pytest.approx(0.9)
    assert vqa_accuracy(prediction, ["wrong"] * 10) == 0.0


def test_vqa_punctuation_rules():
    # A slash glued to words becomes a space; next to a space it is deleted.
    assert vqa_accuracy("black/white", ["black white"] * 3 + ["x"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("black / white", ["black white"] * 3 + ["x"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("blackwhite", ["black/white"] * 3 + ["x"] * 7) == 0.0
    # A period before a digit is kept.
    assert vqa_accuracy("3.5", ["3.5"] * 3 + ["35"] * 7) == pytest.approx(0.9)


def test_vqa_identical_answers_are_not_normalized():
    # The official script normalizes only when the answers are not all identical.
    assert vqa_accuracy("2", ["2"] * 10) == 1.0
    assert vqa_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_accuracy("Dog", ["dog"] * 10) == 0.0
    assert vqa_accuracy(" dog\t", ["dog"] * 10) == 1.0  # whitespace is always cleaned


def test_vqa_empty_prediction_and_errors():
    assert vqa_accuracy("", ["dog"] * 5 + ["cat"] * 5) == 0.0
    with pytest.raises(GPVError):
        vqa_accuracy("dog", [])
    with pytest.raises(GPVError):
        vqa_accuracy("dog", ["dog"], variant="vqa1")


def test_vqa_gpv1_variant():
    answers = ["Dog", "dog"] + ["cat"] * 8
    assert vqa_accuracy("dog", answers, variant="gpv1") == pytest.approx(2 / 3)
    assert vqa_accuracy("DOG", ["dog"] * 3 + ["cat"] * 7, variant="gpv1") == 1.0
    assert vqa_accuracy("two", ["2"] * 3 + ["x"] * 7, variant="gpv1") == 0.0
    assert vqa_accuracy("a dog", ["dog"] * 10, variant="gpv1") == 0.0


# ---------------------------------------------------------------- captioning


def test_cider_hand_computed():
    # Every n-gram occurs in one key's references: idf = log 2 for all; identical 1-word captions
    # match only on unigrams: 10 * (1 + 0 + 0 + 0) / 4.
    score, per_key = cider_d({"a": "dog", "b": "cat"}, {"a": ["dog"], "b": ["cat"]})
    assert per_key == {"a": pytest.approx(2.5), "b": pytest.approx(2.5)}
    assert score == pytest.approx(2.5)
    # Identical 4-word captions match on all four orders.
    score, _ = cider_d({"a": "a b c d", "b": "e f g h"}, {"a": ["a b c d"], "b": ["e f g h"]})
    assert score == pytest.approx(10.0)


def test_cider_properties():
    refs = {"a": ["a dog runs", "the dog runs"], "b": ["a cat sleeps", "one cat sleeps"]}
    # A single key has log(#keys) = 0, so every weight is 0.
    assert cider_d({"a": "a dog runs"}, {"a": refs["a"]}) == (0.0, {"a": 0.0})
    _, per_key = cider_d({"a": "", "b": "a cat sleeps"}, refs)
    assert per_key["a"] == 0.0 and per_key["b"] > 0
    # An n-gram in every key's references (df = #keys) has weight 0: "a" adds nothing.
    _, with_shared = cider_d({"a": "a", "b": "cat"}, refs)
    assert with_shared["a"] == 0.0 and with_shared["b"] > 0
    # The length penalty: a longer copy of the right words scores less than the exact one.
    _, exact = cider_d({"a": "dog runs", "b": "cat"}, {"a": ["dog runs"], "b": ["cat"]})
    _, longer = cider_d({"a": "dog runs dog runs dog runs", "b": "cat"}, {"a": ["dog runs"], "b": ["cat"]})
    assert longer["a"] < exact["a"]
    assert cider_d({}, {}) == (0.0, {})
    with pytest.raises(GPVError):
        cider_d({"a": "dog"}, {"b": ["dog"]})
    with pytest.raises(GPVError):
        cider_d({"a": "dog"}, {"a": []})


def test_cider_tokenize_option():
    refs = {"a": ["A dog's bone."], "b": ["Two cats, sleeping!"]}
    raw = cider_d({"a": "A DOG'S bone", "b": "two cats sleeping"}, refs, tokenize=True)
    tok = cider_d({"a": "a dog 's bone", "b": "two cats sleeping"},
                  {"a": ["a dog 's bone"], "b": ["two cats sleeping"]})
    assert raw[0] == pytest.approx(tok[0]) and raw[0] > 0


def _random_captions(rng: random.Random, n_keys: int) -> tuple[dict, dict]:
    words = ["a", "the", "dog", "cat", "man", "on", "with", "red", "two", "sitting", "table", "of", "in",
             "grass", "ball"]

    def caption() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))

    cands = {f"k{i}": caption() for i in range(n_keys)}
    refs = {k: [caption() for _ in range(rng.randint(1, 5))] for k in cands}
    # Share reference sets between keys, as caption samples of one image do.
    refs["k1"] = refs["k0"]
    return cands, refs


@pytest.mark.parametrize("seed", range(5))
def test_cider_matches_pycocoevalcap(seed):
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider", reason="pycocoevalcap is not installed")
    cands, refs = _random_captions(random.Random(seed), n_keys=12 + seed)
    ref_score, ref_scores = cider_mod.Cider().compute_score(refs, {k: [v] for k, v in cands.items()})
    score, per_key = cider_d(cands, refs)
    assert score == pytest.approx(float(ref_score), abs=1e-6)
    for k, s in zip(refs.keys(), ref_scores):
        assert per_key[k] == pytest.approx(float(s), abs=1e-6)


def test_tokenize_caption():
    assert tokenize_caption("A man's dog, running.") == "a man 's dog running"
    assert tokenize_caption('I don\'t know... "really" (yes)') == "i do n't know really yes"
    assert tokenize_caption("A black-and-white photo of 1,000 U.S. cats\nat 10:30.") == \
        "a black-and-white photo of 1,000 u.s. cats at 10:30"
    assert tokenize_caption("They're eating 3.5 hot dogs; can't stop!") == \
        "they 're eating 3.5 hot dogs ca n't stop"
    assert tokenize_caption("  ") == ""


# ---------------------------------------------------------------- localization

GT2 = [[0, 0, 10, 10], [20, 20, 30, 30]]


def test_ap_perfect_and_input_types():
    boxes, scores = [[20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.8]
    assert localization_ap(boxes, scores, GT2) == 1.0
    assert localization_ap(np.array(boxes, dtype=np.float32), np.array(scores), np.array(GT2)) == 1.0
    assert localization_ap(torch.tensor(boxes) / 30, torch.tensor(scores), torch.tensor(GT2) / 30) == 1.0


def test_ap_empty_cases():
    assert localization_ap([], [], GT2) == 0.0
    assert localization_ap(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4))) == 1.0
    assert localization_ap([[0, 0, 1, 1]], [0.5], []) == 0.0


def test_ap_duplicate_boxes():
    # Ranked TP, FP (duplicate of a taken box), TP: precision 1, 1/2, 2/3 -> monotone 1, 2/3, 2/3.
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]]
    assert localization_ap(boxes, [0.9, 0.8, 0.7], GT2) == pytest.approx((1 + 2 / 3) / 2)


def test_ap_tied_scores_keep_input_order():
    wrong, right = [50, 50, 60, 60], [0, 0, 10, 10]
    gt = [[0, 0, 10, 10]]
    assert localization_ap([wrong, right], [0.5, 0.5], gt) == pytest.approx(0.5)
    assert localization_ap([right, wrong], [0.5, 0.5], gt) == 1.0


def test_ap_detection_goes_to_its_highest_iou_box():
    gt = [[0, 0, 10, 10], [2, 0, 12, 10]]
    # The second detection overlaps both boxes by more than 0.5 but prefers the taken first box
    # (IoU 0.905 vs 0.739), so it is a false positive; recall stops at 1/2.
    boxes = [[0, 0, 10, 10], [0.5, 0, 10.5, 10]]
    assert localization_ap(boxes, [0.9, 0.8], gt) == pytest.approx(0.5)


def test_ap_interpolation_and_threshold():
    hit1, hit2, miss = GT2[0], GT2[1], [100, 100, 110, 110]
    # FP, TP, FP, TP: precision 0, 1/2, 1/3, 1/2 -> monotone 1/2 everywhere -> AP 1/2.
    assert localization_ap([miss, hit1, miss, hit2], [4, 3, 2, 1], GT2) == pytest.approx(0.5)
    # IoU exactly 0.5 counts; above the threshold it does not.
    half = [[0, 0, 1, 1]]
    assert localization_ap(half, [1.0], [[0, 0, 2, 1]]) == 1.0
    assert localization_ap(half, [1.0], [[0, 0, 2, 1]], iou=0.7) == 0.0


def test_ap_zero_area_boxes():
    assert localization_ap([[1, 1, 1, 1]], [1.0], [[0, 0, 2, 2]]) == 0.0
    assert localization_ap([[0, 0, 2, 2]], [1.0], [[1, 1, 1, 1]]) == 0.0


def test_ap_mismatched_scores():
    with pytest.raises(GPVError):
        localization_ap([[0, 0, 1, 1]], [0.5, 0.4], GT2)


def test_coco_map():
    gt = [{"sample_id": "s1", "category": "dog", "boxes": [[10, 10, 200, 200], [300, 300, 420, 400]]},
          {"sample_id": "s2", "category": "cat", "boxes": [[0, 0, 150, 120]]}]
    perfect = [{"sample_id": s["sample_id"], "boxes": s["boxes"], "scores": [0.9] * len(s["boxes"])}
               for s in gt]
    result = coco_map(perfect, gt)
    assert result["mAP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert result["AP_small"] == -1.0  # no small ground-truth box
    wrong = [{"sample_id": "s1", "boxes": [[500, 500, 600, 600]], "scores": [0.9]}]
    assert coco_map(wrong, gt)["mAP"] == 0.0
    assert coco_map([], gt)["mAP"] == 0.0
    with pytest.raises(GPVError):
        coco_map([{"sample_id": "s9", "boxes": [[0, 0, 1, 1]], "scores": [1.0]}], gt)


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("prediction, category, expected", [
    ("dog", "dog", True),
    ("Puppy", "dog", True),
    ("puppies", "dog", True),
    ("doughnuts", "donut", True),
    ("hot dog", "dog", False),
    ("hot dog", "hot dog", True),
    ("hotdog", "hot dog", True),
    ("teddy bear", "bear", False),
    ("cat", "dog", False),
    ("", "dog", False),
])
def test_classification_correct(prediction, category, expected):
    assert classification_correct(prediction, category) is expected


def test_classification_unknown_category():
    with pytest.raises(GPVError):
        classification_correct("dog", "dragon")

