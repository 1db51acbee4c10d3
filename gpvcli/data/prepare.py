"""`gpv prepare`: COCO / COCO-SCE samples for every task, the answer vocabulary, Table 5.

Samples per task (DESIGN.md section 4):
- vqa: one per question; query = the question; target = the multiple-choice answer; answers = the 10.
- cap: one per caption; query = a Table 4 captioning prompt; target = the caption.
- loc: one per (image, category present); query = a Table 4 localization prompt naming the category;
  boxes = every box of that category, clipped to the image (COCO has boxes partly outside).
- cls: one per (image, category present); the input is a crop of the instance with the lowest
  annotation id, enlarged by 20% of its width/height on each side and clipped to the image.
- refexp: one per referring expression (when the refexp file exists); box = its instance's, clipped.

Splits. `coco`: train2014 -> train, val2014 -> val (and test, the same images: COCO has no other
labelled test set). `sce` (COCO-SCE): train2014 images split 80/20 into train/val by a seeded
permutation of the sorted image ids (or an external JSON {"train": [ids], "val": [ids]}), val2014 ->
test. train/val drop vqa/cap samples that mention an H_vqa,cap category and loc/cls/refexp samples
that mention an H_cls,loc category (refexp is treated as localization); test keeps all samples and
flags one "unseen" when it mentions a category held out from its task.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import numpy as np

from gpvcli import io, locks, paths
from gpvcli.data import categories as cats
from gpvcli.data import coco
from gpvcli.data.prompts import CAPTION_PROMPTS, CLASSIFICATION_PROMPTS, LOCALIZATION_PROMPTS, PROMPTS, TASKS
from gpvcli.data.store import ImageTable, Ragged, SampleTable, encode_split
from gpvcli.data.text import mentions, normalize
from gpvcli.data.vocab import Vocab
from gpvcli.errors import GPVError

SPLITS = ("coco", "sce")
CROP_MARGIN = 0.2
HELD_FOR_TASK = {"vqa": cats.HELD_VQA_CAP, "cap": cats.HELD_VQA_CAP,
                 "loc": cats.HELD_CLS_LOC, "cls": cats.HELD_CLS_LOC, "refexp": cats.HELD_CLS_LOC}
TASK_CODE = {t: i for i, t in enumerate(TASKS)}
QUERY_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
STATS_FILE = "stats.json"         # its presence marks a prepared folder (written whole, see `prepare`)


class _Mentions:
    """Category ids mentioned by a text, memoized (prompts and answers repeat a lot)."""

    def __init__(self):
        self.cache: dict[str, tuple[int, ...]] = {}
        self.ids = {c.name: c.id for c in cats.categories()}

    def __call__(self, *texts: str) -> tuple[int, ...]:
        if len(texts) > 1:
            return tuple(dict.fromkeys(c for t in texts for c in self(t)))
        text = texts[0]
        hit = self.cache.get(text)
        if hit is None:
            hit = self.cache[text] = tuple(self.ids[n] for n in mentions(normalize(text)))
        return hit


def _table(task: str, *, sample_id: list[str], image: np.ndarray, query: list[str], template_id, target: list[str],
           mentions: list, answers: list | None = None, boxes: Ragged | None = None, crop: np.ndarray | None = None,
           category_id=None, question_type: list[str] | None = None,
           answer_type: list[str] | None = None) -> SampleTable:
    """Columns of one task's samples; unset columns get their empty value."""
    n = len(sample_id)
    empty = [""] * n
    return SampleTable(
        task=np.full(n, TASK_CODE[task], np.uint8),
        sample_id=[f"{task}/{i}" for i in sample_id],
        image=np.asarray(image, np.int64).reshape(n),
        query=query,
        template_id=np.asarray(template_id, np.int16).reshape(n) if template_id is not None
        else np.full(n, -1, np.int16),
        target=target,
        answers=answers if answers is not None else [[] for _ in range(n)],
        boxes=boxes if boxes is not None else Ragged(np.zeros((0, 4), np.float32), np.zeros(n + 1, np.int64)),
        crop=crop if crop is not None else np.full((n, 4), np.nan, np.float32),
        category_id=np.asarray(category_id, np.int32).reshape(n) if category_id is not None
        else np.full(n, -1, np.int32),
        mentions=Ragged.from_rows(mentions, np.int32),
        unseen=np.zeros(n, bool),
        question_type=question_type if question_type is not None else empty,
        answer_type=answer_type if answer_type is not None else empty,
    )


def build_samples(data: coco.ImageSplitData, *, seed: int) -> tuple[ImageTable, SampleTable]:
    """All samples of one COCO image split, in a fixed order, with prompts drawn by a seeded generator."""
    rng = np.random.default_rng([seed, coco.IMAGE_SPLITS.index(data.name)])
    mention = _Mentions()
    images, row_of = _image_table(data)
    tables = [_vqa_samples(data, row_of, mention), _caption_samples(data, row_of, mention, rng),
              *_object_samples(data, images, row_of, mention, rng), *_refexp_samples(data, images, row_of, mention)]
    return images, SampleTable.concat(tables)


def _image_table(data: coco.ImageSplitData) -> tuple[ImageTable, dict[int, int]]:
    """The split's images sorted by id, with their captions; and the row of each image id."""
    images = ImageTable()
    row_of: dict[int, int] = {}
    for im in sorted(data.images, key=lambda d: d["id"]):
        row_of[im["id"]] = len(images.id)
        images.id.append(im["id"])
        images.file.append(f"{data.name}/{im['file_name']}")
        images.width.append(im["width"])
        images.height.append(im["height"])
        images.captions.append([])
    for c in sorted(data.captions, key=lambda d: d["id"]):
        images.captions[row_of[c["image_id"]]].append(c["caption"].strip())
    return images, row_of


def _vqa_samples(data: coco.ImageSplitData, row_of: dict[int, int], mention: _Mentions) -> SampleTable:
    """vqa: one sample per question."""
    answers_of = {a["question_id"]: a for a in data.vqa}
    questions = sorted(data.questions, key=lambda d: d["question_id"])
    missing = [q["question_id"] for q in questions if q["question_id"] not in answers_of]
    if missing:
        raise GPVError(f"VQA question {missing[0]} has no annotation in v2_mscoco_{data.name}_annotations.json")
    vqa = [answers_of[q["question_id"]] for q in questions]
    return _table(
        "vqa", sample_id=[q["question_id"] for q in questions], image=[row_of[q["image_id"]] for q in questions],
        query=[q["question"] for q in questions], template_id=None,
        target=[a["multiple_choice_answer"] for a in vqa],
        mentions=[mention(q["question"], a["multiple_choice_answer"]) for q, a in zip(questions, vqa)],
        answers=[[x["answer"] for x in a["answers"]] for a in vqa],
        question_type=[a.get("question_type", "") for a in vqa], answer_type=[a.get("answer_type", "") for a in vqa])


def _caption_samples(data: coco.ImageSplitData, row_of: dict[int, int], mention: _Mentions,
                     rng: np.random.Generator) -> SampleTable:
    """cap: one sample per caption, its prompt drawn from Table 4."""
    captions = sorted(data.captions, key=lambda d: d["id"])
    templates = rng.integers(len(CAPTION_PROMPTS), size=len(captions))
    texts = [c["caption"].strip() for c in captions]
    return _table(
        "cap", sample_id=[c["id"] for c in captions], image=[row_of[c["image_id"]] for c in captions],
        query=[CAPTION_PROMPTS[t] for t in templates], template_id=templates, target=texts,
        mentions=[mention(t) for t in texts])


def _object_samples(data: coco.ImageSplitData, images: ImageTable, row_of: dict[int, int], mention: _Mentions,
                    rng: np.random.Generator) -> list[SampleTable]:
    """loc and cls: one sample each per (image, category present), grouped with numpy; the cls crop is the
    instance with the lowest annotation id, enlarged by CROP_MARGIN and clipped to the image."""
    inst = data.instances
    n_inst = len(inst)
    ann_image = np.fromiter((a["image_id"] for a in inst), np.int64, n_inst)
    ann_cat = np.fromiter((a["category_id"] for a in inst), np.int64, n_inst)
    ann_id = np.fromiter((a["id"] for a in inst), np.int64, n_inst)
    xywh = np.fromiter(itertools.chain.from_iterable(a["bbox"] for a in inst), np.float64, 4 * n_inst).reshape(-1, 4)
    order = np.lexsort((ann_id, ann_cat, ann_image))        # by image, then category, then annotation id
    ann_image, ann_cat, xywh = ann_image[order], ann_cat[order], xywh[order]
    new_group = np.ones(n_inst, bool)
    new_group[1:] = (ann_image[1:] != ann_image[:-1]) | (ann_cat[1:] != ann_cat[:-1])
    first = np.flatnonzero(new_group)                        # lowest annotation id of each group
    offsets = np.append(first, n_inst).astype(np.int64)
    g_image, g_cat = ann_image[first], ann_cat[first]
    ann_rows = np.asarray([row_of[int(i)] for i in ann_image], np.int64)
    boxes = Ragged(_clipped_xyxy(xywh, images, ann_rows), offsets)
    rows = np.asarray([row_of[int(i)] for i in g_image], np.int64)
    ids = [f"{i}:{c}" for i, c in zip(g_image.tolist(), g_cat.tolist())]
    names = [cats.by_id()[c].name for c in g_cat.tolist()]
    loc_t = rng.integers(len(LOCALIZATION_PROMPTS), size=len(first))
    cls_t = rng.integers(len(CLASSIFICATION_PROMPTS), size=len(first))
    loc_q = [LOCALIZATION_PROMPTS[t].replace("[OBJECT]", n) for t, n in zip(loc_t, names)]
    loc = _table(
        "loc", sample_id=ids, image=rows, query=loc_q, template_id=loc_t, target=[""] * len(ids),
        mentions=[dict.fromkeys((c, *mention(q))) for c, q in zip(g_cat.tolist(), loc_q)],
        boxes=boxes, category_id=g_cat)
    x, y, w, h = xywh[first].T
    W = np.asarray(images.width, np.float64)[rows]
    H = np.asarray(images.height, np.float64)[rows]
    crop = np.stack([np.maximum(0, x - CROP_MARGIN * w), np.maximum(0, y - CROP_MARGIN * h),
                     np.minimum(W, x + w + CROP_MARGIN * w), np.minimum(H, y + h + CROP_MARGIN * h)], 1)
    cls_q = [CLASSIFICATION_PROMPTS[t] for t in cls_t]
    cls = _table(
        "cls", sample_id=ids, image=rows, query=cls_q, template_id=cls_t, target=names,
        mentions=[dict.fromkeys((c, *mention(q))) for c, q in zip(g_cat.tolist(), cls_q)],
        crop=crop.astype(np.float32), category_id=g_cat)
    return [loc, cls]


def _refexp_samples(data: coco.ImageSplitData, images: ImageTable, row_of: dict[int, int],
                    mention: _Mentions) -> list[SampleTable]:
    """refexp: one sample per sentence of each referring expression (none without a refexp file)."""
    if not data.refs:
        return []
    ann_by_id = {a["id"]: a for a in data.instances}
    refs = sorted(data.refs, key=lambda r: r["ref_id"])
    for ref in refs:
        if ref["ann_id"] not in ann_by_id:
            raise GPVError(f"referring expression {ref['ref_id']} points at unknown annotation {ref['ann_id']}")
    rows_ = [(ref, k, sent) for ref in refs for k, sent in enumerate(ref["sentences"])]
    anns = [ann_by_id[ref["ann_id"]] for ref, _, _ in rows_]
    return [_table(
        "refexp", sample_id=[f"{ref['ref_id']}:{k}" for ref, k, _ in rows_],
        image=[row_of[ref["image_id"]] for ref, _, _ in rows_], query=[s for _, _, s in rows_], template_id=None,
        target=[""] * len(rows_),
        mentions=[dict.fromkeys((a["category_id"], *mention(s))) for a, (_, _, s) in zip(anns, rows_)],
        boxes=Ragged(_clipped_xyxy(np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4), images,
                                   np.asarray([row_of[a["image_id"]] for a in anns], np.int64)),
                     np.arange(len(anns) + 1, dtype=np.int64)),
        category_id=[a["category_id"] for a in anns])]


def _clipped_xyxy(xywh: np.ndarray, images: ImageTable, rows: np.ndarray) -> np.ndarray:
    """(N, 4) COCO xywh boxes of the images at `rows` -> float32 xyxy pixels clipped to their image."""
    w = np.asarray(images.width, np.float64)[rows]
    h = np.asarray(images.height, np.float64)[rows]
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return np.clip(xyxy, 0, np.stack([w, h, w, h], 1)).astype(np.float32)


def held_out_mask(samples: SampleTable) -> np.ndarray:
    """True where a sample mentions a category held out (in COCO-SCE) from its own task."""
    held_of_category = np.zeros((len(TASKS), 91), bool)      # [task code, category id]
    for c in cats.categories():
        for task, group in HELD_FOR_TASK.items():
            held_of_category[TASK_CODE[task], c.id] = c.group == group
    m = samples.mentions
    row = np.repeat(np.arange(len(m)), np.diff(m.offsets))   # sample of each mention
    hit = held_of_category[samples.task[row].astype(np.int64), m.data]
    return np.bincount(row[hit], minlength=len(m)) > 0


def _subset_images(images: ImageTable, samples: SampleTable, image_rows: np.ndarray) -> tuple[ImageTable, SampleTable]:
    """Keep the images at `image_rows` (and their samples), renumbering sample image rows."""
    new_row = np.full(len(images.id), -1, np.int64)
    new_row[image_rows] = np.arange(len(image_rows))
    sub = ImageTable(**{k: [v[i] for i in image_rows] for k, v in vars(images).items()})
    keep = new_row[np.asarray(samples.image, np.int64)] >= 0
    kept = samples.select(keep)
    kept.image = new_row[kept.image]
    return sub, kept


def sce_image_split(image_ids: list[int], *, seed: int, split_file: Path | None = None) -> tuple[set, set]:
    """train2014 image ids -> (train ids, val ids): seeded 80/20 of the sorted ids, or read from a file."""
    if split_file is not None:
        data = io.read_json(split_file, "image-split file")
        lists = [data.get("train"), data.get("val")] if isinstance(data, dict) else [None]
        if not all(isinstance(ids, list) and all(isinstance(i, int) for i in ids) for ids in lists):
            raise GPVError(f"{split_file} must be a JSON object with 'train' and 'val' lists of image ids",
                           hint='e.g. {"train": [9, 25], "val": [30]}')
        return set(lists[0]), set(lists[1])
    ids = np.asarray(sorted(image_ids), np.int64)
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_train = round(0.8 * len(ids))
    return set(ids[perm[:n_train]].tolist()), set(ids[perm[n_train:]].tolist())


def training_texts(samples: SampleTable) -> list[str]:
    """Text targets a decoder may be trained on: captions, cls names, VQA answers given by >= 3 annotators
    and the multiple-choice answer."""
    texts = []
    for t, target, answers in zip(samples.task, samples.target, samples.answers):
        if t == TASK_CODE["vqa"]:
            counts = Counter(answers)
            texts.extend(a for a, n in counts.items() if n >= 3)
        if target:
            texts.append(target)
    return texts


def query_vocab(samples: SampleTable) -> list[str]:
    """WordPiece vocabulary for a randomly initialised text encoder: specials, the words of the training
    queries, of every category phrase and of every Table 4 prompt, and single characters (with ## forms)
    so any word can still be spelled."""
    words = Counter(w for q in set(samples.query) for w in normalize(q))
    for c in cats.categories():
        for p in cats.phrases(c.name):
            words.update(normalize(p))
    for templates in PROMPTS.values():
        for t in templates:
            words.update(normalize(t))
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    punct = list(".,?!'\"-:;()/")
    ordered = sorted(words, key=lambda w: (-words[w], w))
    out = list(QUERY_SPECIALS)
    for w in ordered + chars + punct + ["##" + c for c in chars]:
        if w not in out:
            out.append(w)
    return out


def task_counts(samples: SampleTable, mask: np.ndarray | None = None) -> dict[str, int]:
    """Samples per task (only where `mask` is true, when given)."""
    codes = np.asarray(samples.task, np.int64)
    if mask is not None:
        codes = codes[mask]
    return dict(zip(TASKS, np.bincount(codes, minlength=len(TASKS)).tolist()))


PREPARED_FILES = ("train.h5", "val.h5", "test.h5", "vocab.json", "query_vocab.txt", STATS_FILE, "meta.json")


def prepare(split: str = "sce", *, coco_dir: Path, out_dir: Path | None = None, seed: int = 0,
            min_count: int = 1, image_split_file: Path | None = None) -> dict:
    """Build the prepared data of `split` ("coco" or "sce") from the COCO-format files in `coco_dir`
    into out_dir (default $GPV_HOME/prepared/SPLIT); returns the stats (Table 5).

    The folder is written by one process at a time (`gpvcli.locks`) into a temporary folder that replaces
    it only when every file is written, so it is complete or absent (an earlier version stays until then).
    The files are built in memory and their size checked against the free space before any is written."""
    if split not in SPLITS:
        raise GPVError(f"unknown split {split!r}", hint=f"use one of: {', '.join(SPLITS)}")
    coco_dir = Path(coco_dir).resolve()
    out_dir = Path(out_dir) if out_dir is not None else paths.default_prepared_dir(split)
    coco.check_layout(coco_dir)
    _check_replaceable(out_dir)
    with locks.writing(out_dir, option="--out"), io.atomic_dir(out_dir) as tmp:
        files, stats = prepared_files(split, coco_dir=coco_dir, seed=seed, min_count=min_count,
                                      image_split_file=image_split_file)
        io.check_space(out_dir, sum(len(data) for data in files.values()))
        for name, data in files.items():
            io.write_bytes(tmp / name, data)
    return stats


def _check_replaceable(out_dir: Path) -> None:
    """Refuse an output folder that holds anything but an earlier preparation (it is replaced whole)."""
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in PREPARED_FILES and not io.is_temporary(p.name)) \
        if out_dir.is_dir() else []
    if others:
        raise GPVError(f"{out_dir} holds files that `gpv prepare` did not write ({', '.join(others[:3])}); it "
                       "replaces the whole folder", hint="choose a new or empty --out")


def prepared_files(split: str, *, coco_dir: Path, seed: int, min_count: int,
                   image_split_file: Path | None) -> tuple[dict[str, bytes | memoryview], dict]:
    """The contents of every file of a prepared folder ({name: bytes}, names PREPARED_FILES) and the stats."""
    start = time.perf_counter()
    built = {}
    for image_split in coco.IMAGE_SPLITS:
        data = coco.read_split(coco_dir, image_split)
        built[image_split] = build_samples(data, seed=seed)
        del data

    train_images, train_samples = built["train2014"]
    test_images, test_samples = built["val2014"]
    if split == "coco":
        parts = {"train": (train_images, train_samples), "val": (test_images, test_samples),
                 "test": (test_images, test_samples)}
    else:
        train_ids, val_ids = sce_image_split(train_images.id, seed=seed, split_file=image_split_file)
        ids = np.asarray(train_images.id)
        parts = {}
        for name, wanted in (("train", train_ids), ("val", val_ids)):
            rows = np.flatnonzero(np.isin(ids, np.fromiter(wanted, np.int64, len(wanted))))
            images, samples = _subset_images(train_images, train_samples, rows)
            parts[name] = (images, samples.select(~held_out_mask(samples)))
        test_samples.unseen = held_out_mask(test_samples)
        parts["test"] = (test_images, test_samples)

    vocab = Vocab.build(training_texts(parts["train"][1]), min_count=min_count)
    images_root = str(coco_dir / "images")
    files = {f"{name}.h5": encode_split(split=name, dataset=split, images_root=images_root, images=images,
                                        samples=samples) for name, (images, samples) in parts.items()}
    files["vocab.json"] = vocab.to_json(min_count=min_count).encode()
    files["query_vocab.txt"] = ("\n".join(query_vocab(parts["train"][1])) + "\n").encode()

    test = parts["test"][1]
    unseen = np.asarray(test.unseen, bool)
    stats = {
        "dataset": split,
        "columns": ["Train", "Val", "Test", "Test Seen", "Test Unseen"],
        "rows": {},
        "answer_vocab_size": len(vocab),
        "images": {name: len(images.id) for name, (images, _) in parts.items()},
    }
    columns = {"Train": task_counts(parts["train"][1]), "Val": task_counts(parts["val"][1]),
               "Test": task_counts(test), "Test Seen": task_counts(test, ~unseen),
               "Test Unseen": task_counts(test, unseen)}
    stats["rows"] = {task: {col: counts[task] for col, counts in columns.items()} for task in TASKS}
    files[STATS_FILE] = io.json_text(stats).encode()
    files["meta.json"] = io.json_text({
        "dataset": split, "coco_dir": str(coco_dir), "images_root": images_root, "seed": seed,
        "min_count": min_count, "image_split_file": str(image_split_file) if image_split_file else None,
        "seconds": round(time.perf_counter() - start, 2)}).encode()
    return files, stats
