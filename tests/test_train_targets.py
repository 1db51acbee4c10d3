"""How training targets are built from the prepared data, each checked against a value derived by hand from
the hand-written mini COCO of conftest.py (100x80 images; image i's k-th box is [5k, 5, 20, 10] xywh):
box normalisation and clipping, the "answer given by at least 3 annotators" rule and its per-epoch draw,
the one-token shift of the decoder input, and `gpv prepare --min-count`."""

import json
import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import torch
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.data.dataset import Collator, GPVDataset
from gpvcli.data.store import SplitStore
from gpvcli.data.vocab import PAD, SPECIALS, START, STOP, Vocab
from gpvcli.eval import metrics, runner

cli = CliRunner()
LENGTHS = {"vqa": 5, "cls": 5, "cap": 20, "default": 5}


def prepared(root, *, coco_dir, min_count=1):
    out = root / f"prepared-{min_count}"
    result = cli.invoke(app, ["prepare", "--split", "coco", "--coco-dir", str(coco_dir), "--out", str(out),
                              "--min-count", str(min_count)])
    assert result.exit_code == 0, result.output
    return out


def dataset(data, split="train"):
    store = SplitStore(data / f"{split}.h5")
    return store, GPVDataset(store, Vocab.load(data / "vocab.json"), image_size=(32, 40), max_answer_len=LENGTHS,
                             use_features=True)


def loc_item(store, ds, image_id, category_id):
    i = next(i for i in range(len(store)) if store.tasks[i] == "loc"
             and int(store.image_id[store.image[i]]) == image_id and int(store.category_id[i]) == category_id)
    return i, ds[i]


def test_loc_targets_are_normalized_cxcywh(mini_coco, tmp_path):
    store, ds = dataset(prepared(tmp_path, coco_dir=mini_coco))
    # image 2 (even): dog [0, 5, 20, 10], bench [5, 5, 20, 10], person [10, 5, 20, 10] on 100 x 80
    for category, k in ((18, 0), (15, 1), (1, 2)):
        _, item = loc_item(store, ds, 2, category)
        x, y, w, h = 5.0 * k, 5.0, 20.0, 10.0
        expected = [[(x + w / 2) / 100, (y + h / 2) / 80, w / 100, h / 80]]      # e.g. dog: 0.1, 0.125, 0.2, 0.125
        torch.testing.assert_close(item["boxes"], torch.tensor(expected), rtol=0, atol=1e-6)
        assert len(item["target_ids"]) == 0                  # box tasks have no text target


def test_a_box_partly_outside_is_clipped_where_it_is_used(mini_coco, tmp_path):
    """Annotation 10 (image 1, dog) moved to [90, 70, 20, 20] on the 100x80 image: the box used is
    [90, 70, 100, 80] in pixels, i.e. normalized cxcywh (0.95, 0.9375, 0.1, 0.125); a prediction of exactly
    that box scores AP 1."""
    path = mini_coco / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    assert data["annotations"][0]["id"] == 10
    data["annotations"][0]["bbox"] = [90.0, 70.0, 20.0, 20.0]
    path.write_text(json.dumps(data))
    store, ds = dataset(prepared(tmp_path, coco_dir=mini_coco))
    i, item = loc_item(store, ds, 1, 18)
    torch.testing.assert_close(item["boxes"], torch.tensor([[0.95, 0.9375, 0.1, 0.125]]), rtol=0, atol=1e-6)
    inside = np.array([[0.95, 0.9375, 0.1, 0.125]] + [[0.5, 0.5, 0.0, 0.0]] * 3)
    ap = metrics.localization_ap(runner.pixel_boxes(store, i, inside), np.array([0.9, 0.3, 0.2, 0.1]),
                                 store.boxes[i])
    assert ap == 1.0
    c = next(j for j in range(len(store)) if store.tasks[j] == "cls" and store.sample_id[j] == "cls/1:18")
    # the crop: the box enlarged by 20% of its size on each side, clipped: [86, 66, 100, 80]
    np.testing.assert_allclose(store.crop[c], [86, 66, 100, 80], atol=1e-4)


def fake_store(answers: list[list[str]], targets: list[str]):
    n = len(answers)
    return SimpleNamespace(
        task_names=["vqa"], task_code=np.zeros(n, np.uint8), answers=answers, target=targets,
        query=["What is it?"] * n, boxes=[np.zeros((0, 4), np.float32)] * n, image=np.zeros(n, np.int64),
        image_width=np.array([100]), image_height=np.array([80]), image_id=np.array([1]),
        crop=np.full((n, 4), np.nan, np.float32))


def test_vqa_target_is_an_answer_of_at_least_3_annotators_drawn_per_epoch():
    answers = [
        ["blue"] * 4 + ["red"] * 3 + ["green"] * 2 + ["pink"],     # blue and red qualify, green and pink do not
        ["two"] * 2 + ["2"] * 2 + ["three"] * 2 + ["four"] * 2 + ["five", "six"],   # none has 3: the MC answer
        ["yes"] * 10,
    ]
    vocab = Vocab([*SPECIALS, "blue", "red", "green", "pink", "two", "yes", "three"])
    ds = GPVDataset(fake_store(answers, ["blue", "two", "yes"]), vocab, image_size=(8, 8), max_answer_len=LENGTHS,
                    seed=0, use_features=True, indices=np.arange(3))
    drawn = {k: [] for k in range(3)}
    for epoch in range(40):
        ds.set_epoch(epoch)
        for k in range(3):
            drawn[k].append(vocab.decode(ds[k]["target_ids"].tolist()))
    assert set(drawn[0]) == {"blue", "red"}                # each drawn (2^-39 chance of missing one)
    assert set(drawn[1]) == {"two"} and set(drawn[2]) == {"yes"}
    again = GPVDataset(fake_store(answers, ["blue", "two", "yes"]), vocab, image_size=(8, 8),
                       max_answer_len=LENGTHS, seed=0, use_features=True, indices=np.arange(3))
    again.set_epoch(7)
    assert vocab.decode(again[0]["target_ids"].tolist()) == drawn[0][7]    # the same draw in a new process


def test_decoder_input_is_the_target_shifted_by_one_token(mini_coco, tmp_path):
    """answer_inputs = START, then the targets without their last token; targets end in STOP then PAD."""
    data = prepared(tmp_path, coco_dir=mini_coco)
    store, ds = dataset(data)
    vocab = ds.vocab
    from gpvcli.model.text import build_tokenizer
    from gpvcli.train.config import load_run_config

    tokenizer = build_tokenizer(load_run_config("tiny").model.text, data / "query_vocab.txt")
    cap = next(i for i in range(len(store)) if store.tasks[i] == "cap" and store.target[i] == "A hot dog on a plate.")
    vqa = next(i for i in range(len(store)) if store.tasks[i] == "vqa" and store.target[i] == "dog")
    loc = next(i for i in range(len(store)) if store.tasks[i] == "loc")
    batch = Collator(tokenizer)([ds[cap], ds[vqa], ds[loc]])
    w = vocab.index
    expected_targets = [[w["a"], w["hot"], w["dog"], w["on"], w["a"], w["plate"], STOP],
                        [w["dog"], STOP, PAD, PAD, PAD, PAD, PAD],
                        [PAD] * 7]
    expected_inputs = [[START, w["a"], w["hot"], w["dog"], w["on"], w["a"], w["plate"]],
                       [START, w["dog"], STOP, PAD, PAD, PAD, PAD],
                       [START] + [PAD] * 6]
    assert batch["text_targets"].tolist() == expected_targets
    assert batch["answer_inputs"].tolist() == expected_inputs


def test_long_answers_are_cut_before_the_stop_token():
    vocab = Vocab([*SPECIALS, *"abcdefg"])
    assert vocab.encode("a b c d e f g", max_len=5) == [vocab.index[c] for c in "abcde"] + [STOP]


def test_prepare_min_count_keeps_the_words_seen_that_often(mini_coco, tmp_path):
    """The vocabulary of --min-count N: the words of the train targets (captions, category names of the
    (image, category) pairs, VQA answers of >= 3 annotators once per question and the multiple-choice
    answer) seen at least N times, most frequent first, computed here from the raw annotation files."""
    ann = mini_coco / "annotations"
    counts = Counter()

    def words(text):
        return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()

    for c in json.loads((ann / "captions_train2014.json").read_text())["annotations"]:
        counts.update(words(c["caption"]))
    names = {c["id"]: c["name"] for c in json.loads((ann / "instances_train2014.json").read_text())["categories"]}
    pairs = {(a["image_id"], a["category_id"])
             for a in json.loads((ann / "instances_train2014.json").read_text())["annotations"]}
    for _, category in pairs:
        counts.update(words(names[category]))
    for q in json.loads((ann / "v2_mscoco_train2014_annotations.json").read_text())["annotations"]:
        given = Counter(a["answer"] for a in q["answers"])
        for answer in [*(a for a, n in given.items() if n >= 3), q["multiple_choice_answer"]]:
            counts.update(words(answer))
    for n in (1, 3, 6):
        vocab = json.loads((prepared(tmp_path, coco_dir=mini_coco, min_count=n) / "vocab.json").read_text())
        expected = sorted((w for w, k in counts.items() if k >= n), key=lambda w: (-counts[w], w))
        assert vocab["words"] == [*SPECIALS, *expected] and vocab["min_count"] == n
    assert 0 < len(expected) < len(counts)                  # --min-count 6 drops words
    assert counts["dog"] >= 6 and "plate" not in expected   # e.g. dog stays, plate (1 caption) goes
