"""Categories, prompts, mention detection, the COCO-SCE rules and the HDF5 store."""

import json

import numpy as np
import pytest

from gpvcli.data import categories as cats
from gpvcli.data import prompts
from gpvcli.data.prepare import prepare
from gpvcli.data.store import SplitStore
from gpvcli.data.text import fill_template, mentions_in, normalize, object_template
from gpvcli.data.vocab import STOP, Vocab
from gpvcli.errors import GPVError

# Seed Table 6, read row by row from the printed table.
H_VQA_CAP = {"bed", "bench", "book", "cell phone", "horse", "remote", "sheep", "suitcase", "surfboard",
             "wine glass"}
H_CLS_LOC = {"banana", "baseball bat", "bottle", "broccoli", "donut", "hot dog", "keyboard", "laptop",
             "train", "tv"}


def test_table6_sets():
    assert len(cats.categories()) == 80
    assert len({c.id for c in cats.categories()}) == 80
    assert set(cats.group_members(cats.HELD_VQA_CAP)) == H_VQA_CAP
    assert set(cats.group_members(cats.HELD_CLS_LOC)) == H_CLS_LOC
    seen = set(cats.group_members(cats.SEEN))
    assert len(seen) == 60 and "person" in seen and not seen & (H_VQA_CAP | H_CLS_LOC)
    assert cats.by_name()["dog"].id == 18 and cats.by_name()["toothbrush"].id == 90
    assert cats.by_name()["hot dog"].supercategory == "food"


def test_table4_prompts():
    assert len(prompts.CAPTION_PROMPTS) == 13
    assert len(prompts.CLASSIFICATION_PROMPTS) == 4
    assert len(prompts.LOCALIZATION_PROMPTS) == 18
    assert prompts.CAPTION_PROMPTS[0] == "Generate a caption."
    assert prompts.CAPTION_PROMPTS[-1] == "Generate a description for this image."
    assert prompts.CLASSIFICATION_PROMPTS == ("What is this?", "What is this object?", "What object is this?",
                                              "What is this thing?")
    expected_loc = [f"{verb} {what}[OBJECT]{where}." for verb in ("Locate", "Find")
                    for what in ("", "instances of ", "all instances of ")
                    for where in ("", " in the image", " in this image")]
    assert list(prompts.LOCALIZATION_PROMPTS) == expected_loc
    rng = np.random.default_rng(0)
    tid, text = prompts.draw_prompt("loc", rng, obj="hot dog")
    assert text == prompts.LOCALIZATION_PROMPTS[tid].replace("[OBJECT]", "hot dog")


@pytest.mark.parametrize("text, expected", [
    ("Two dogs on a couch", ["dog", "couch"]),
    ("A puppy and a doughnut", ["dog", "donut"]),
    ("people watching a television", ["person", "tv"]),
    ("a man eating a hot dog", ["person", "hot dog"]),
    ("hotdogs and a hot-dog", ["hot dog"]),
    ("a teddy bear next to a bear", ["teddy bear", "bear"]),
    ("a teddy bear", ["teddy bear"]),
    ("wine glasses on the table", ["wine glass", "dining table"]),
    ("a glass of water", ["cup"]),
    ("a cell phone and a phone", ["cell phone"]),
    ("three mice and knives", ["mouse", "knife"]),
    ("The sheep's wool", ["sheep"]),
    ("Is there a Fire Hydrant?", ["fire hydrant"]),
    ("a dogged effort", []),
])
def test_mentions(text, expected):
    assert mentions_in(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("What color is the houseplant?", "What color is the [OBJECT]?"),         # a synonym, as the name's place
    ("How many cups can you see?", "How many [OBJECTS] can you see?"),
    ("Are there any Teddy Bears?", "Are there any [OBJECTS]?"),               # "teddy bears", not "bears"
    ("Is the hot-dog next to the other hot dog?", "Is the [OBJECT] next to the other [OBJECT]?"),
    ("Is the dog's tail up?", "Is the [OBJECT]'s tail up?"),
    ("Is there a dog near the hot dog?", None),                               # two categories
    ("What is the black item?", None),                                        # none
    ("Is the dogged man here?", "Is the dogged [OBJECT] here?"),             # "dogged" is no dog
])
def test_object_template(text, expected):
    assert object_template(text) == expected


def test_fill_template_puts_a_name_or_its_plural():
    assert fill_template("How many [OBJECTS] near the [OBJECT]?", "bus") == "How many buses near the bus?"
    assert fill_template("Is there a [OBJECT]?", "hot dog") == "Is there a hot dog?"


def test_plural_rules():
    assert cats.plural("bus") == "buses"
    assert cats.plural("hot dog") == "hot dogs"
    assert cats.plural("person") == "people"
    assert cats.plural("sheep") == "sheep"
    assert cats.plural("couch") == "couches"
    assert cats.plural("knife") == "knives"
    assert "skis" in cats.phrases("skis") and "ski" in cats.phrases("skis")


def test_vocab_round_trip(tmp_path):
    vocab = Vocab.build(["a dog", "a cat", "two dogs", "a dog"], min_count=2)
    assert vocab.words[4:] == ["a", "dog"]
    ids = vocab.encode("A dog, a bird!")
    assert ids[-1] == STOP and vocab.decode(ids) == "a dog a <unk>"
    vocab.save(tmp_path / "v.json", min_count=2)
    assert Vocab.load(tmp_path / "v.json").words == vocab.words


def test_sce_filters_and_tags(mini_coco, tmp_path):
    stats = prepare("sce", coco_dir=mini_coco, out_dir=tmp_path / "out", seed=0)
    train = SplitStore(tmp_path / "out" / "train.h5")
    val = SplitStore(tmp_path / "out" / "val.h5")
    test = SplitStore(tmp_path / "out" / "test.h5")
    # train2014 images are split 80/20 and nothing else
    assert len(train.image_id) == 8 and len(val.image_id) == 2
    assert not set(train.image_id) & set(val.image_id)
    held_vqa = {cats.by_name()[n].id for n in H_VQA_CAP}
    held_loc = {cats.by_name()[n].id for n in H_CLS_LOC}
    for store in (train, val):
        for i in range(len(store)):
            s = store.sample(i)
            if s["task"] in ("vqa", "cap"):
                assert not set(s["mentions"]) & held_vqa, s
            else:
                assert s["category_id"] not in held_loc, s
    # the held-out words still reach training through the other tasks
    train_texts = [train.sample(i)["target"] for i in range(len(train))]
    assert any("banana" in normalize(t) or "bananas" in normalize(t) for t in train_texts)
    assert "bench" in [train.sample(i)["target"] for i in range(len(train)) if train.tasks[i] == "cls"]
    # test keeps every sample and tags the unseen ones
    tagged = {test.sample(i)["sample_id"]: test.sample(i)["unseen"] for i in range(len(test))}
    assert tagged["cap/3001"] is True        # "A dog on a bench."
    assert tagged["cap/3002"] is False       # banana is only held out from cls/loc
    assert tagged["cap/3003"] is False       # "A hot dog." mentions hot dog, not dog
    assert tagged["vqa/4001"] is True        # answer "bench"
    assert tagged["loc/102:52"] is True and tagged["cls/102:52"] is True
    assert tagged["loc/103:58"] is True      # hot dog is in H_cls,loc
    assert tagged["loc/101:15"] is False     # bench is held out from vqa/cap only
    for row in stats["rows"].values():
        assert row["Test"] == row["Test Seen"] + row["Test Unseen"]


def test_sample_fields(mini_coco, tmp_path):
    prepare("coco", coco_dir=mini_coco, out_dir=tmp_path / "out", seed=3)
    test = SplitStore(tmp_path / "out" / "test.h5")
    by_id = {test.sample(i)["sample_id"]: test.sample(i) for i in range(len(test))}
    loc = by_id["loc/102:52"]
    assert loc["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0], [40.0, 2.0, 50.0, 12.0]]
    assert loc["query"].replace("banana", "[OBJECT]") == prompts.LOCALIZATION_PROMPTS[loc["template_id"]]
    cls = by_id["cls/104:1"]      # box (90, 70, 20, 20) in a 100x80 image: +20% then clipped
    assert cls["crop"].tolist() == [86.0, 66.0, 100.0, 80.0] and cls["target"] == "person"
    vqa = by_id["vqa/4003"]
    assert vqa["answers"] == ["hot dog"] * 10 and vqa["target"] == "hot dog" and vqa["template_id"] == -1
    cap = by_id["cap/3001"]
    assert cap["references"] == ["A dog on a bench."] and cap["query"] in prompts.CAPTION_PROMPTS
    assert not any(s["unseen"] for s in by_id.values())
    assert test.image_path(0).name == "COCO_val2014_000000000101.jpg"


def test_prepare_is_deterministic(mini_coco, tmp_path):
    prepare("sce", coco_dir=mini_coco, out_dir=tmp_path / "a", seed=1)
    prepare("sce", coco_dir=mini_coco, out_dir=tmp_path / "b", seed=1)
    a, b = SplitStore(tmp_path / "a" / "train.h5"), SplitStore(tmp_path / "b" / "train.h5")
    assert a.query.tolist() == b.query.tolist() and a.sample_id.tolist() == b.sample_id.tolist()


def test_external_image_split(mini_coco, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": [1, 2, 3, 4, 5, 6, 7], "val": [8, 9, 10]}))
    prepare("sce", coco_dir=mini_coco, out_dir=tmp_path / "out", image_split_file=split_file)
    assert sorted(SplitStore(tmp_path / "out" / "val.h5").image_id.tolist()) == [8, 9, 10]


def test_bad_inputs(mini_coco, tmp_path):
    with pytest.raises(GPVError, match="unknown split"):
        prepare("lvis", coco_dir=mini_coco, out_dir=tmp_path / "o")
    (mini_coco / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(GPVError, match="captions_val2014.json.*cocodataset.org"):
        prepare("sce", coco_dir=mini_coco, out_dir=tmp_path / "o")
    (mini_coco / "annotations" / "captions_val2014.json").write_text("{not json")
    with pytest.raises(GPVError, match="not valid JSON"):
        prepare("sce", coco_dir=mini_coco, out_dir=tmp_path / "o")
    assert not (tmp_path / "o" / "train.h5").exists()


def test_store_refuses_other_files(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(GPVError, match="not a readable HDF5"):
        SplitStore(bad)
    with pytest.raises(GPVError, match="run `gpv prepare`"):
        SplitStore(tmp_path / "missing.h5")
