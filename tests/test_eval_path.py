"""The evaluation path from model outputs to the reported numbers, through `gpv evaluate`'s own code.

A stand-in model replaces the network (nothing else of `gpv evaluate` is replaced): it answers each test
sample with text and boxes chosen by the test. The expected scores are derived here, independently of
gpvcli.eval: the official VQA accuracy written out again, pycocoevalcap's CIDEr, the AP of a known
ranking by hand, and seen / unseen / category-group means read straight from the prepared HDF5 with h5py.
"""

import json
import re
from collections import defaultdict

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.data import categories as cats
from gpvcli.data.store import SplitStore
from gpvcli.data.text import normalize
from gpvcli.data.vocab import PAD, SPECIALS, Vocab
from gpvcli.eval import runner

cli = CliRunner()
Q = 12                      # boxes per sample answered by the stand-in (the real model gives 100)

# DESIGN.md section 4, Table 6 of the seed
H_VQA_CAP = {"bed", "bench", "book", "cell phone", "horse", "remote", "sheep", "suitcase", "surfboard", "wine glass"}
H_CLS_LOC = {"banana", "baseball bat", "bottle", "broccoli", "donut", "hot dog", "keyboard", "laptop", "train", "tv"}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


# ---- independent expected values ------------------------------------------------------------------

def official_vqa(prediction: str, answers: list[str]) -> float:
    """VQA v2 accuracy for answers of plain lower-case words (no punctuation): when the humans disagree,
    number words become digits and articles go; then mean over leave-one-out sets of min(#match / 3, 1)."""
    assert all(re.fullmatch(r"[a-z0-9 ]+", a) for a in answers), answers
    if len(set(answers)) > 1:
        def norm(s):
            return " ".join(NUMBER_WORDS.get(w, w) for w in s.split() if w not in ("a", "an", "the"))
        answers, prediction = [norm(a) for a in answers], norm(prediction)
    accs = []
    for i in range(len(answers)):
        others = answers[:i] + answers[i + 1:]
        accs.append(min(sum(a == prediction for a in others) / 3, 1.0))
    return sum(accs) / len(accs)


def ap_with_one_false_positive_first(k: int) -> float:
    """A wrong box ranked first, then the k true boxes: the j-th true box is found at rank j + 1, so the
    precision at recall j/k is j/(j+1). It rises with j, so the all-point interpolated precision (the
    best precision at any recall >= r) is k/(k+1) at every recall level, and so is AP."""
    return k / (k + 1)


def simple_tokens(caption: str) -> str:
    """The synthetic captions are letters, spaces, commas and periods: lower-case, punctuation dropped."""
    assert re.fullmatch(r"[A-Za-z ,.]+", caption), caption
    return " ".join(re.sub(r"[,.]", " ", caption.lower()).split())


def read_h5(path) -> dict:
    """The columns the summary needs, read with h5py alone (schema: gpvcli/data/store.py docstring)."""
    with h5py.File(path, "r") as f:
        tasks = [t.decode() if isinstance(t, bytes) else str(t) for t in f.attrs["tasks"]]
        offsets, data = f["samples/mentions/offsets"][()], f["samples/mentions/data"][()]
        return {"task": [tasks[c] for c in f["samples/task"][()]], "unseen": f["samples/unseen"][()].astype(bool),
                "mentions": [data[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]}


def expected_summary(h5: dict, scores: dict[int, float]) -> dict:
    """Per task: all, seen, unseen and per category group the mean of per-category means (seed Fig. 1)."""
    group_of = {c.id: ("H_vqa,cap" if c.name in H_VQA_CAP else "H_cls,loc" if c.name in H_CLS_LOC else "S")
                for c in cats.categories()}
    out = {}
    for task in sorted({h5["task"][i] for i in scores}):
        idx = [i for i in scores if h5["task"][i] == task]
        seen = [scores[i] for i in idx if not h5["unseen"][i]]
        unseen = [scores[i] for i in idx if h5["unseen"][i]]
        per_cat = defaultdict(list)
        for i in idx:
            for c in h5["mentions"][i]:
                per_cat[c].append(scores[i])
        groups = {}
        for g in ("S", "H_vqa,cap", "H_cls,loc"):
            means = [sum(v) / len(v) for c, v in per_cat.items() if group_of[c] == g]
            groups[g] = sum(means) / len(means) if means else None
        out[task] = {"all": sum(scores[i] for i in idx) / len(idx), "n": len(idx), "n_unseen": len(unseen),
                     "seen": sum(seen) / len(seen) if seen else None,
                     "unseen": sum(unseen) / len(unseen) if unseen else None, "groups": groups}
    return out


def normalized_cxcywh(xyxy: np.ndarray, w: float, h: float) -> np.ndarray:
    x0, y0, x1, y1 = np.asarray(xyxy, np.float64).T
    return np.stack([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], -1)


# ---- the stand-in model ---------------------------------------------------------------------------

class StandIn:
    """Answers store sample i with plan[i] = (text, boxes (Q, 4) normalized cxcywh in rank order).

    It hands back the boxes in a shuffled order with relevance that ranks them as planned, so the
    runner's sort is exercised too. It reads the sample index that `index_inputs` adds to the inputs."""

    def __init__(self, vocab: Vocab, plan: dict):
        self.vocab, self.plan = vocab, plan
        self.calls = []

    def eval(self):
        return self

    def generate(self, *, index, task, beam_size=1, allowed_words=None, **_):
        self.calls.append({"beam_size": beam_size, "masked": allowed_words is not None, "task": list(task)})
        ids = [self.vocab.encode(self.plan[i][0]) for i in index]
        tokens = torch.full((len(ids), max(map(len, ids))), PAD, dtype=torch.long)
        for b, row in enumerate(ids):
            tokens[b, :len(row)] = torch.tensor(row)
        ranked = torch.tensor(np.stack([self.plan[i][1] for i in index]), dtype=torch.float32)   # (B, Q, 4)
        perm = torch.randperm(Q, generator=torch.Generator().manual_seed(len(self.calls)))
        relevance = torch.linspace(0.95, 0.05, Q).expand(len(ids), Q)                          # rank order
        return {"boxes": ranked[:, perm], "relevance": relevance[:, perm].contiguous(),
                "relevance_logits": torch.zeros(len(ids), Q, 2), "tokens": tokens, "scores": torch.zeros(len(ids))}


def index_inputs(real):
    def model_inputs(batch, device, features=None, **kwargs):
        return {**real(batch, device, features, **kwargs), "index": list(batch["index"])}
    return model_inputs


def full_vocab(store: SplitStore) -> Vocab:
    """Every word of the split's answers, targets and captions (so the stand-in can say any of them)."""
    words = set()
    for i in range(len(store)):
        for text in [store.target[i], *store.answers[i]]:
            words.update(normalize(text))
    for i in range(len(store.image_id)):
        for c in store.captions[i]:
            words.update(normalize(c))
    for c in cats.categories():
        words.update(normalize(c.name))
    return Vocab([*SPECIALS, *sorted(words)])


def run_evaluate(monkeypatch, run, data, out, plan, store, *args) -> tuple[dict, StandIn]:
    from gpvcli.model import checkpoint

    vocab = full_vocab(store)
    model = StandIn(vocab, plan)
    real_load = checkpoint.load_model

    def load_model(folder, device="cpu"):
        _, cfg, _, tokenizer = real_load(folder, device=device)
        return model, cfg, vocab, tokenizer

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "load_model", load_model)
        m.setattr(runner, "model_inputs", index_inputs(runner.model_inputs))
        result = cli.invoke(app, ["evaluate", str(run), "--data", str(data), "--out", str(out), "--json", *args])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "lines": lines}, model


# ---- the plans --------------------------------------------------------------------------------------

FILLER = np.array([0.5, 0.5, 0.0, 0.0])        # a zero-area box: IoU 0 with everything


def box_plan(store: SplitStore, i: int, false_first: bool) -> np.ndarray:
    w, h = float(store.image_width[store.image[i]]), float(store.image_height[store.image[i]])
    truth = normalized_cxcywh(store.boxes[i], w, h)
    rows = ([FILLER] if false_first else []) + list(truth)
    return np.stack(rows + [FILLER] * (Q - len(rows)))


def best_vqa_answer(answers: list[str]) -> str:
    return max(sorted(set(answers)), key=lambda a: official_vqa(a, answers))


def rarest_vqa_answer(answers: list[str]) -> str:
    counts = {a: answers.count(a) for a in answers}
    return min(sorted(counts), key=lambda a: counts[a])


def make_plans(store: SplitStore) -> tuple[dict, dict, dict, dict]:
    """(oracle plan, erroneous plan, expected per-sample scores of each, except captions)."""
    names = cats.by_id()
    all_names = sorted(c.name for c in cats.categories())
    oracle, wrong, exp_oracle, exp_wrong = {}, {}, {}, {}
    cls_seen = 0
    for i in range(len(store)):
        task = store.tasks[i]
        blank = np.stack([FILLER] * Q)
        if task == "vqa":
            answers = store.answers[i]
            best, rare = best_vqa_answer(answers), rarest_vqa_answer(answers)
            oracle[i], wrong[i] = (best, blank), (rare, blank)
            exp_oracle[i], exp_wrong[i] = official_vqa(best, answers), official_vqa(rare, answers)
        elif task == "cap":
            caption = store.target[i]
            other = store.captions[(int(store.image[i]) + 1) % len(store.image_id)][0]   # another image's
            oracle[i], wrong[i] = (caption, blank), (other, blank)
        elif task in ("loc", "refexp"):
            oracle[i], wrong[i] = ("", box_plan(store, i, False)), ("", box_plan(store, i, True))
            exp_oracle[i], exp_wrong[i] = 1.0, ap_with_one_false_positive_first(len(store.boxes[i]))
        elif task == "cls":
            name = names[int(store.category_id[i])].name
            other = next(n for n in all_names if n != name and n not in cats.phrases(name))
            cls_seen += 1
            bad = cls_seen % 3 == 0                       # every third classification answer is wrong
            oracle[i], wrong[i] = (name, blank), (other if bad else name, blank)
            exp_oracle[i], exp_wrong[i] = 1.0, 0.0 if bad else 1.0
    return oracle, wrong, exp_oracle, exp_wrong


def pycocoevalcap_cider(store: SplitStore, plan: dict) -> dict[int, float]:
    cider = pytest.importorskip("pycocoevalcap.cider.cider", reason="pycocoevalcap is not installed")
    keys = [i for i in range(len(store)) if store.tasks[i] == "cap"]
    gts = {i: [simple_tokens(c) for c in store.captions[int(store.image[i])]] for i in keys}
    res = {i: [simple_tokens(plan[i][0])] for i in keys}
    _, per_key = cider.Cider().compute_score(gts, res)
    return {i: float(s) for i, s in zip(gts, per_key)}


@pytest.fixture(scope="module")
def evaluated(tiny_run, tiny_world, tmp_path_factory):
    store = SplitStore(tiny_world["data"] / "test.h5")
    oracle, wrong, exp_oracle, exp_wrong = make_plans(store)
    exp_oracle.update(pycocoevalcap_cider(store, oracle))
    exp_wrong.update(pycocoevalcap_cider(store, wrong))
    out = tmp_path_factory.mktemp("eval_path")
    h5 = read_h5(tiny_world["data"] / "test.h5")
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, plan, expected in (("oracle", oracle, exp_oracle), ("wrong", wrong, exp_wrong)):
            got, _ = run_evaluate(mp, tiny_run, tiny_world["data"], out / name, plan, store)
            results[name] = {**got, "expected": expected, "summary": expected_summary(h5, expected)}
    return {"store": store, "h5": h5, **results}


# ---- the tests -------------------------------------------------------------------------------------

def test_oracle_reaches_the_best_attainable_score_of_each_task(evaluated):
    store, got = evaluated["store"], evaluated["oracle"]
    tasks = got["metrics"]["tasks"]
    assert set(tasks) == set(store.tasks)
    assert tasks["loc"]["all"] == 1.0 and tasks["refexp"]["all"] == 1.0 and tasks["cls"]["all"] == 1.0
    vqa = [i for i in range(len(store)) if store.tasks[i] == "vqa"]
    best = [max(official_vqa(a, store.answers[i]) for a in set(store.answers[i])) for i in vqa]
    assert tasks["vqa"]["all"] == pytest.approx(np.mean(best), abs=1e-12)
    # (in the synthetic world some answer of each question is given by 4 or more humans, so the best is 1;
    # partial credit is checked with the erroneous stand-in below)
    cap = evaluated["oracle"]["expected"]
    cap_keys = [i for i in range(len(store)) if store.tasks[i] == "cap"]
    assert tasks["cap"]["all"] == pytest.approx(np.mean([cap[i] for i in cap_keys]), abs=1e-9)
    assert tasks["cap"]["all"] > 1.0


def test_per_sample_scores_match_the_derived_ones(evaluated):
    """predictions.jsonl's score of every sample, for the oracle and for the stand-in with known errors."""
    store = evaluated["store"]
    sample = {store.sample_id[i]: i for i in range(len(store))}
    for name in ("oracle", "wrong"):
        lines, expected = evaluated[name]["lines"], evaluated[name]["expected"]
        assert len(lines) == len(store)
        for line in lines:
            assert line["score"] == pytest.approx(expected[sample[line["sample_id"]]], abs=1e-9), (name, line)
    wrong = evaluated["wrong"]["metrics"]["tasks"]
    assert 0 < wrong["vqa"]["all"] < evaluated["oracle"]["metrics"]["tasks"]["vqa"]["all"]
    vqa_wrong = {round(evaluated["wrong"]["expected"][i], 9) for i in range(len(store)) if store.tasks[i] == "vqa"}
    assert {0.3, 0.6} & vqa_wrong          # answers given by one or two humans: partial credit
    assert wrong["refexp"]["all"] == pytest.approx(0.5)                        # one box each: found at rank 2
    n_cls = store.tasks.count("cls")
    assert wrong["cls"]["all"] == pytest.approx((n_cls - n_cls // 3) / n_cls)


def test_seen_unseen_and_category_groups_match_the_hdf5(evaluated):
    for name in ("oracle", "wrong"):
        tasks, expected = evaluated[name]["metrics"]["tasks"], evaluated[name]["summary"]
        assert set(tasks) == set(expected)
        for task, row in expected.items():
            got = tasks[task]
            assert (got["n"], got["n_unseen"]) == (row["n"], row["n_unseen"]), (name, task)
            for col in ("all", "seen", "unseen"):
                assert got[col] == pytest.approx(row[col], abs=1e-9), (name, task, col)
            assert got["groups"].keys() == row["groups"].keys()
            for g, value in row["groups"].items():
                assert got["groups"][g] == pytest.approx(value, abs=1e-9), (name, task, g)
    # the erroneous stand-in gives groups that differ from each other, so a wrong grouping shows
    wrong = evaluated["wrong"]["summary"]
    assert len({round(v, 9) for row in wrong.values() for v in row["groups"].values() if v is not None}) > 3


def test_written_boxes_are_the_ground_truth_in_pixels(evaluated):
    """boxes.npz and predictions.jsonl hold the oracle's boxes in pixels: the ground truth, ranked first."""
    store = evaluated["store"]
    out_boxes = {line["sample_id"]: line["boxes"] for line in evaluated["oracle"]["lines"]}
    for i in range(len(store)):
        if store.tasks[i] in ("loc", "refexp"):
            gt = store.boxes[i]
            np.testing.assert_allclose(out_boxes[store.sample_id[i]][:len(gt)], gt, atol=0.011)


def test_crop_prediction_maps_back_to_pixels(tiny_world):
    """A box in a cls sample's crop lands in the crop's pixel frame; a box on a loc image scales by width
    along x and height along y (the synthetic images are 128 x 96, so a swap shows)."""
    store = SplitStore(tiny_world["data"] / "test.h5")
    i = store.tasks.index("cls")
    x0, y0, x1, y1 = (float(v) for v in store.crop[i])
    boxes = np.array([[0.5, 0.5, 1.0, 1.0], [0.25, 0.75, 0.5, 0.5], [0.5, 0.5, 0.0, 0.0]])
    cw, ch = x1 - x0, y1 - y0
    expected = [[x0, y0, x1, y1], [x0, y0 + ch / 2, x0 + cw / 2, y1], [x0 + cw / 2, y0 + ch / 2] * 2]
    np.testing.assert_allclose(runner.pixel_boxes(store, i, boxes), expected, rtol=0, atol=1e-4)
    j = store.tasks.index("loc")
    w, h = float(store.image_width[store.image[j]]), float(store.image_height[store.image[j]])
    assert w != h
    expected = [[0, 0, w, h], [0, h / 2, w / 2, h], [w / 2, h / 2] * 2]
    np.testing.assert_allclose(runner.pixel_boxes(store, j, boxes), expected, rtol=0, atol=1e-4)
