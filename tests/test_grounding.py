"""Grounding checks: the swap pairings, the swapped dataset, and `gpv evaluate`'s dependence figures
for stand-in models that read, or ignore, the swapped input."""

import json

import numpy as np
import pytest
import torch

from gpvcli.data.dataset import GPVDataset, input_image, input_pixels
from gpvcli.data.store import SplitStore
from gpvcli.data.vocab import PAD, Vocab
from gpvcli.eval import grounding, metrics
from gpvcli.eval.evaluate import evaluate


@pytest.fixture(scope="module")
def test_store(tiny_world) -> SplitStore:
    return SplitStore(tiny_world["data"] / "test.h5")


def test_image_swaps_give_every_sample_another_image_of_its_task(test_store):
    swaps = grounding.pairings(test_store, np.arange(len(test_store)), seed=3)
    tasks = np.asarray(test_store.tasks)
    for task in ("vqa", "cap", "cls"):
        swap = swaps[task]
        assert swap.kind == "image" and np.array_equal(swap.query_of, swap.targets)
        assert sorted(swap.targets.tolist()) == np.flatnonzero(tasks == task).tolist()   # each sample once
        assert (tasks[swap.image_of] == task).all()
        assert (test_store.image[swap.image_of] != test_store.image[swap.targets]).all()
    again = grounding.pairings(test_store, np.arange(len(test_store)), seed=3)
    assert all(np.array_equal(swaps[t].image_of, again[t].image_of) for t in swaps)      # fixed by the seed


def test_query_swaps_name_another_target_on_the_same_image(test_store):
    swap = grounding.pairings(test_store, np.arange(len(test_store)))["loc"]
    loc = np.flatnonzero(np.asarray(test_store.tasks) == "loc")
    categories_per_image = {}
    for i in loc:
        categories_per_image.setdefault(int(test_store.image[i]), set()).add(int(test_store.category_id[i]))
    expected = [i for i in loc if len(categories_per_image[int(test_store.image[i])]) > 1]
    assert swap.targets.tolist() == expected            # exactly the samples whose image shows another category
    assert np.array_equal(swap.image_of, swap.targets)
    assert (test_store.image[swap.query_of] == test_store.image[swap.targets]).all()
    assert (test_store.category_id[swap.query_of] != test_store.category_id[swap.targets]).all()


def test_swapped_dataset_reads_the_other_image_and_query(test_store):
    vocab = Vocab(["<pad>", "<s>", "</s>", "<unk>"])
    cls = np.flatnonzero(np.asarray(test_store.tasks) == "cls")[:2]
    loc = np.flatnonzero(np.asarray(test_store.tasks) == "loc")[:2]
    ds = GPVDataset(test_store, vocab, image_size=(24, 32), max_answer_len={"default": 5},
                    indices=np.array([cls[0], loc[0]]), image_of=np.array([cls[1], loc[0]]),
                    query_of=np.array([cls[0], loc[1]]))
    swapped_image, swapped_query = ds[0], ds[1]
    assert torch.equal(swapped_image["image"], input_pixels(test_store, int(cls[1]), (24, 32)))   # the other crop
    assert swapped_image["query"] == test_store.query[int(cls[0])] and swapped_image["index"] == cls[0]
    assert swapped_query["query"] == test_store.query[int(loc[1])]
    assert torch.equal(swapped_query["image"], input_pixels(test_store, int(loc[0]), (24, 32)))
    assert len(swapped_query["boxes"]) == len(test_store.boxes[int(loc[0])])     # targets stay the sample's own


def test_dependence_row_by_hand():
    swap = grounding.Swap("image", np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0]), np.array([0, 1, 2, 3]))
    true, swapped = {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0}, {0: 0.0, 1: 1.0, 2: 0.0, 3: 0.0}
    row = grounding.dependence(true, swapped, swap)
    # differences 1, 0, 0, 1: mean 0.5, sample std sqrt(1/3), se = std / 2; 0.5 is below 2 se (0.577)
    assert row["dependence"] == pytest.approx(0.5) and row["se"] == pytest.approx(np.sqrt(1 / 3) / 2)
    assert row["true"] == 0.75 and row["swapped"] == 0.25 and row["n"] == 4
    assert row["within_noise"] is True
    assert grounding.dependence({k: v + (k < 2) for k, v in true.items()}, swapped, swap)["within_noise"] is False
    flat = grounding.dependence(true, true, swap)
    assert flat["dependence"] == 0 and flat["within_noise"] and grounding.warnings({"vqa": flat})


class StandIn:
    """A stand-in for GPV that recognises its inputs exactly (lookup tables built from the test split) and
    answers from the ground truth: loc with the boxes of the category its query names on its image (or,
    ignoring the query, of the image's first loc sample); vqa with the answer to its question on its image
    (or, ignoring the image, to the first sample asking that question)."""

    def __init__(self, store: SplitStore, vocab: Vocab, tokenizer, image_size, *, reads: bool):
        self.store, self.vocab, self.reads = store, vocab, reads
        self.image_row = {input_image(store, i, image_size).numpy().tobytes(): int(store.image[i])
                          for i in range(len(store)) if np.isnan(store.crop[i]).all()}
        self.query_text = {tuple(tokenizer(store.query[i])["input_ids"]): store.query[i] for i in range(len(store))}
        self.sample = {}
        for i in range(len(store)):
            self.sample.setdefault((store.tasks[i], int(store.image[i]), store.query[i]), i)
            self.sample.setdefault((store.tasks[i], int(store.image[i]), None), i)
            self.sample.setdefault((store.tasks[i], None, store.query[i]), i)

    def eval(self):
        return self

    def generate(self, *, query_ids, query_mask, task, images, **_):
        B, Q = len(task), 10
        tokens = torch.full((B, 8), PAD, dtype=torch.long)
        boxes, relevance = torch.zeros(B, Q, 4), torch.zeros(B, Q)
        for b in range(B):
            row = self.image_row[images[b].numpy().tobytes()]
            query = self.query_text[tuple(query_ids[b][query_mask[b].bool()].tolist())]
            if task[b] == "loc":
                i = self.sample[("loc", row, query if self.reads else None)]
                w, h = float(self.store.image_width[row]), float(self.store.image_height[row])
                gt = torch.as_tensor(self.store.boxes[i]) / torch.tensor([w, h, w, h])
                boxes[b, :len(gt)] = torch.cat([(gt[:, :2] + gt[:, 2:]) / 2, gt[:, 2:] - gt[:, :2]], 1)
                relevance[b, :len(gt)] = 1.0
            else:
                i = self.sample.get(("vqa", row if self.reads else None, query))
                answer = self.store.target[i] if i is not None else "nothing"
                ids = self.vocab.encode(answer, 7)
                tokens[b, :len(ids)] = torch.tensor(ids)
        return {"tokens": tokens, "boxes": boxes, "relevance": relevance}


@pytest.mark.parametrize("reads", [True, False])
def test_evaluate_measures_dependence_of_a_stand_in(reads, tiny_run, tiny_world, test_store, tmp_path, monkeypatch):
    from gpvcli.model import checkpoint

    real = checkpoint.load_model

    def load_stand_in(folder, device="cpu"):
        _, cfg, vocab, tokenizer = real(folder, device)
        return StandIn(test_store, vocab, tokenizer, tuple(cfg.visual.image_size), reads=reads), cfg, vocab, tokenizer

    monkeypatch.setattr(checkpoint, "load_model", load_stand_in)
    result = evaluate(tiny_run, split="test", out_dir=tmp_path, tasks=["loc", "vqa"], show_progress=False)
    lines = [json.loads(x) for x in (tmp_path / "swapped.jsonl").read_text().splitlines()]
    row_of = {test_store.sample_id[i]: i for i in range(len(test_store))}
    _, _, vocab, _ = real(tiny_run / "best")

    loc = result["tasks"]["loc"]["grounding"]
    pairs = [(row_of[x["sample_id"]], row_of[x["query_of"]]) for x in lines if x["task"] == "loc"]
    assert loc["swap"] == "query" and loc["n"] == len(pairs) > 0
    if reads:      # true boxes score 1; the swapped query returns the other category's boxes
        swapped = [metrics.localization_ap(test_store.boxes[m], np.ones(len(test_store.boxes[m])),
                                           test_store.boxes[k]) for k, m in pairs]
        assert loc["true"] == pytest.approx(1.0)
        assert loc["dependence"] == pytest.approx(1.0 - np.mean(swapped), abs=1e-6)
        assert loc["dependence"] > 0.5 and not loc["within_noise"]
    else:
        assert loc["dependence"] == 0.0 and loc["swapped"] == loc["true"] and loc["within_noise"]

    vqa = result["tasks"]["vqa"]["grounding"]
    pairs = [(row_of[x["sample_id"]], row_of[x["image_of"]]) for x in lines if x["task"] == "vqa"]
    assert vqa["swap"] == "image" and vqa["n"] == len(pairs) == result["tasks"]["vqa"]["n"]
    if reads:      # the answer to the same question about the other image, when it was asked there
        def answer(row, question):
            asked = [i for i in range(len(test_store)) if test_store.tasks[i] == "vqa"
                     and int(test_store.image[i]) == row and test_store.query[i] == question]
            return vocab.decode(vocab.encode(test_store.target[asked[0]], 7)) if asked else "nothing"

        expected = [metrics.vqa_accuracy(answer(int(test_store.image[k]), test_store.query[k]), test_store.answers[k])
                    - metrics.vqa_accuracy(answer(int(test_store.image[m]), test_store.query[k]),
                                           test_store.answers[k]) for k, m in pairs]
        assert vqa["dependence"] == pytest.approx(np.mean(expected), abs=1e-9) and vqa["dependence"] > 0
    else:
        assert vqa["dependence"] == 0.0 and vqa["within_noise"]


def test_report_shows_the_checks_of_the_same_checkpoint(tiny_run, tiny_world, tmp_path):
    import shutil

    from gpvcli.viz.report import build_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval", "report.html"))
    page = build_report(run, n=1).read_text()
    assert "Grounding checks:</b> not measured" in page
    result = evaluate(run, split="test", tasks=["loc", "cls"], show_progress=False)
    page = build_report(run, n=1).read_text()
    for task in ("loc", "cls"):
        g = result["tasks"][task]["grounding"]
        assert f"<td>{task}</td><td>{g['swap']}</td><td>{g['n']}</td><td>{g['true']:.3f}</td>" in page
    saved = run / "eval" / "test" / "metrics.json"
    saved.write_text(saved.read_text().replace(result["protocol"]["checkpoint_sha256"], "0" * 64))
    assert "not measured" in build_report(run, n=1).read_text()     # the checks were of another checkpoint


def test_ablation_tables_carry_the_dependence():
    from test_ablate import fake_result

    from gpvcli.ablate import tables
    from gpvcli.ablate.variants import Variant

    checked, unchecked = Variant(("vqa",)), Variant(("vqa", "cap"))
    results = {v.name: fake_result(v, {t: (0.5, 0.1) for t in v.tasks}) for v in (checked, unchecked)}
    results[checked.name]["metrics"]["vqa"]["grounding"] = {"dependence": 0.071}
    header, rows = tables.cell_texts(tables.build_table("tasks", results), "markdown")
    column = header.index("VQA dep.") + 1
    by_label = {r[0]: r for r in rows}
    assert by_label["[a] GPV-I-VQA"][column] == "7.1"     # on the VQA scale (percent), unmarked (one value)
    assert by_label["[e] GPV-I-VQA+Cap"][column] == "-" and by_label["[b] GPV-I-Cap"][column] == "-"
