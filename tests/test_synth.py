"""The synthetic COCO-format world: layout, formats, determinism, baselines, CLI."""

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gpvcli.data import categories as cats
from gpvcli.data.text import mentions_in
from gpvcli.errors import GPVError
from gpvcli.synth import render as synth_render
from gpvcli.synth import scene, text
from gpvcli.synth import world as synth

SPLITS = ("train2014", "val2014")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ann(root: Path, name: str) -> dict:
    return json.loads((root / "annotations" / name).read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "world"
    synth.generate(root, train_images=12, val_images=6, seed=3)
    return root


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    again = synth.generate(tmp_path / "again", train_images=12, val_images=6, seed=3)
    assert _files(tmp_path / "again") == _files(world)
    assert again["counts"]["images/train2014"] == 12
    synth.generate(tmp_path / "other", train_images=12, val_images=6, seed=4)
    other = _files(tmp_path / "other")
    assert other.keys() != _files(world).keys()  # image ids differ
    assert other["annotations/captions_val2014.json"] != _files(world)["annotations/captions_val2014.json"]


def test_worker_processes_give_the_same_bytes(world, tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "PARALLEL_FROM", 0)
    synth.generate(tmp_path / "parallel", train_images=12, val_images=6, seed=3, workers=2)
    assert _files(tmp_path / "parallel") == _files(world)


def test_layout_and_images(world):
    expected = {"baselines.json"}
    ids = []
    for split in SPLITS:
        inst = _ann(world, f"instances_{split}.json")
        assert set(inst) == {"info", "licenses", "images", "annotations", "categories"}
        assert inst["categories"] == cats.coco_category_dicts()
        for im in inst["images"]:
            assert set(im) == {"id", "file_name", "width", "height"}
            assert im["file_name"] == f"COCO_{split}_{im['id']:012d}.jpg"
            with Image.open(world / "images" / split / im["file_name"]) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (128, 96))
            ids.append(im["id"])
            expected.add(f"images/{split}/{im['file_name']}")
        expected |= {f"annotations/{n.format(split)}" for n in (
            "instances_{}.json", "captions_{}.json", "v2_OpenEnded_mscoco_{}_questions.json",
            "v2_mscoco_{}_annotations.json", "refexp_{}.json")}
    assert len(ids) == len(set(ids)) == 18
    assert set(_files(world)) == expected


def test_instances(world):
    valid = {c["id"] for c in cats.coco_category_dicts()}
    ann_ids = []
    for split in SPLITS:
        inst = _ann(world, f"instances_{split}.json")
        per_image = Counter(a["image_id"] for a in inst["annotations"])
        assert set(per_image) == {im["id"] for im in inst["images"]}
        assert min(per_image.values()) >= 3
        for a in inst["annotations"]:
            assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
            x, y, w, h = a["bbox"]
            assert all(isinstance(v, float) for v in a["bbox"])
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 96 and w > 4 and h > 4
            assert a["area"] == w * h and a["iscrowd"] == 0
            assert a["segmentation"] == [[x, y, x + w, y, x + w, y + h, x, y + h]]
            assert a["category_id"] in valid
            ann_ids.append(a["id"])
    assert len(ann_ids) == len(set(ann_ids))


def test_captions(world):
    for split in SPLITS:
        caps = _ann(world, f"captions_{split}.json")
        present = defaultdict(set)
        for a in _ann(world, f"instances_{split}.json")["annotations"]:
            present[a["image_id"]].add(cats.by_id()[a["category_id"]].name)
        per_image = Counter(c["image_id"] for c in caps["annotations"])
        assert set(per_image.values()) == {5} and set(per_image) == {im["id"] for im in caps["images"]}
        for c in caps["annotations"]:
            assert set(c) == {"id", "image_id", "caption"}
            named = set(mentions_in(c["caption"]))
            assert named and named <= present[c["image_id"]], c["caption"]


def test_questions_and_answers(world):
    for split in SPLITS:
        qs = _ann(world, f"v2_OpenEnded_mscoco_{split}_questions.json")
        assert (qs["task_type"], qs["data_type"], qs["data_subtype"]) == ("Open-Ended", "mscoco", split)
        assert {"info", "license", "questions"} <= set(qs)
        vqa = _ann(world, f"v2_mscoco_{split}_annotations.json")
        assert {"info", "license", "annotations"} <= set(vqa) and vqa["data_subtype"] == split
        by_id = {q["question_id"]: q for q in qs["questions"]}
        assert len(by_id) == len(qs["questions"]) == len(vqa["annotations"])
        for a in vqa["annotations"]:
            q = by_id[a["question_id"]]
            assert set(q) == {"image_id", "question", "question_id"} and q["image_id"] == a["image_id"]
            assert a["question_id"] // 1000 == a["image_id"]
            assert set(a) == {"question_type", "multiple_choice_answer", "answers", "image_id", "answer_type",
                              "question_id"}
            assert q["question"].lower().startswith(a["question_type"])
            assert a["answer_type"] == text.QUESTION_TYPES[a["question_type"]][0]
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert {x["answer_confidence"] for x in a["answers"]} <= {"yes", "maybe", "no"}
            votes = Counter(x["answer"] for x in a["answers"])
            assert votes[a["multiple_choice_answer"]] == max(votes.values()) >= 7
            if a["answer_type"] == "yes/no":
                assert a["multiple_choice_answer"] in ("yes", "no")


def test_question_mix_is_balanced():
    rng = np.random.default_rng(0)
    made = []
    for _ in range(150):
        sprites = scene.layout(rng, 128, 96)
        objs = [scene.Obj(cats.categories()[s.category_index].name, s.colour,
                          (s.x0, s.y0, s.x0 + s.w, s.y0 + s.h)) for s in sprites]
        made += text.questions(rng, objs)
    yes_no = Counter(q["multiple_choice_answer"] for q in made if q["answer_type"] == "yes/no")
    assert 0.4 < yes_no["yes"] / sum(yes_no.values()) < 0.6
    numbers = Counter(q["multiple_choice_answer"] for q in made if q["answer_type"] == "number")
    assert len(numbers) >= 4 and max(numbers.values()) / sum(numbers.values()) < 0.45
    assert {q["question_type"] for q in made} == set(text.QUESTION_TYPES)


def test_referring_expressions(world):
    for split in SPLITS:
        anns = {a["id"]: a for a in _ann(world, f"instances_{split}.json")["annotations"]}
        refs = _ann(world, f"refexp_{split}.json")
        assert set(refs) == {"info", "refs"}
        per_image = Counter(r["image_id"] for r in refs["refs"])
        assert set(per_image.values()) <= {1, 2}
        for r in refs["refs"]:
            assert set(r) == {"ref_id", "image_id", "ann_id", "category_id", "sentences"}
            ann = anns[r["ann_id"]]
            assert (ann["image_id"], ann["category_id"]) == (r["image_id"], r["category_id"])
            name = cats.by_id()[r["category_id"]].name
            assert r["sentences"] and all(mentions_in(s) == [name] for s in r["sentences"])


def test_baselines_file(world):
    b = json.loads((world / "baselines.json").read_text())
    for name in ("answer_prior_vqa_accuracy", "class_blind_localizer_ap50"):
        assert 0.0 < b[name]["value"] < 1.0 and b[name]["definition"]


def test_baselines_are_low_on_a_moderate_world(tmp_path):
    summary = synth.generate(tmp_path / "w", train_images=300, val_images=100, seed=0)
    assert summary["baselines"]["answer_prior_vqa_accuracy"] < 0.40
    assert summary["baselines"]["class_blind_localizer_ap50"] <= 0.35
    inst = _ann(tmp_path / "w", "instances_train2014.json")
    assert len({a["category_id"] for a in inst["annotations"]}) == 80
    assert Counter(a["category_id"] for a in inst["annotations"]).most_common(1)[0][0] == 1  # person


def test_layout_sizes_and_looks():
    rng = np.random.default_rng(1)
    for _ in range(50):
        sprites = scene.layout(rng, 128, 96)
        assert 3 <= len(sprites) <= scene.MAX_OBJECTS
        for s in sprites:
            assert 16 <= max(s.w, s.h) <= 48 and s.x0 + s.w <= 128 and s.y0 + s.h <= 96
    assert len({synth_render.look(i) for i in range(80)}) == 80
    assert "orange" not in synth_render.COLOUR_NAMES


def test_refuses_a_folder_that_is_not_a_world(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GPVError, match="not a synthetic world"):
        synth.generate(tmp_path, train_images=2, val_images=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli(tmp_path):
    from gpvcli.cli.app import app

    args = ["synth", str(tmp_path / "w"), "--train-images", "8", "--val-images", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "class-blind localizer" in result.output
    assert len(list((tmp_path / "w" / "images" / "val2014").glob("*.jpg"))) == 4
