"""`gpv prepare`: COCO / COCO-SCE samples for every task, the answer vocabulary, Table 5.

Samples per task (DESIGN.md section 4):
- vqa: one per question; query = the question; target = the multiple-choice answer; answers = the 10.
- cap: one per caption; query = a Table 4 captioning prompt; target = the caption.
- loc: one per (image, category present); query = a Table 4 localization prompt naming the category;
  boxes = every box of that category.
- cls: one per (image, category present); the input is a crop of the instance with the lowest
  annotation id, enlarged by 20% of its width/height on each side and clipped to the image.
- refexp: one per referring expression (when the refexp file exists); box = its instance.

Splits. `coco`: train2014 -> train, val2014 -> val (and test, the same images: COCO has no other
labelled test set). `sce` (COCO-SCE): train2014 images split 80/20 into train/val by a seeded
permutation of the sorted image ids (or an external JSON {"train": [ids], "val": [ids]}), val2014 ->
test. train/val drop vqa/cap samples that mention an H_vqa,cap category and loc/cls/refexp samples
that mention an H_cls,loc category (refexp is treated as localization); test keeps all samples and
flags one "unseen" when it mentions a category held out from its task.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from gpvcli import io
from gpvcli.data import categories as cats
from gpvcli.data import coco
from gpvcli.data.prompts import CAPTION_PROMPTS, CLASSIFICATION_PROMPTS, LOCALIZATION_PROMPTS, PROMPTS, TASKS
from gpvcli.data.store import ImageTable, SampleTable, write_split
from gpvcli.data.text import mentions, normalize
from gpvcli.data.vocab import Vocab
from gpvcli.errors import GPVError

SPLITS = ("coco", "sce")
CROP_MARGIN = 0.2
HELD_FOR_TASK = {"vqa": cats.HELD_VQA_CAP, "cap": cats.HELD_VQA_CAP,
                 "loc": cats.HELD_CLS_LOC, "cls": cats.HELD_CLS_LOC, "refexp": cats.HELD_CLS_LOC}
TASK_CODE = {t: i for i, t in enumerate(TASKS)}
QUERY_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class _Mentions:
    """Category ids mentioned by a text, memoized (prompts and answers repeat a lot)."""

    def __init__(self):
        self.cache: dict[str, tuple[int, ...]] = {}
        self.ids = {c.name: c.id for c in cats.categories()}

    def __call__(self, text: str) -> tuple[int, ...]:
        hit = self.cache.get(text)
        if hit is None:
            hit = self.cache[text] = tuple(self.ids[n] for n in mentions(normalize(text)))
        return hit


def _union(*groups) -> list[int]:
    out: list[int] = []
    for g in groups:
        for c in g:
            if c not in out:
                out.append(c)
    return out


def build_samples(data: coco.ImageSplitData, *, seed: int) -> tuple[ImageTable, SampleTable]:
    """All samples of one COCO image split, in a fixed order, with prompts drawn by a seeded generator."""
    rng = np.random.default_rng([seed, coco.IMAGE_SPLITS.index(data.name)])
    mention = _Mentions()
    images = ImageTable()
    row_of: dict[int, int] = {}
    for im in sorted(data.images, key=lambda d: d["id"]):
        row_of[im["id"]] = len(images.id)
        images.id.append(im["id"])
        images.file.append(f"{data.name}/{im['file_name']}")
        images.width.append(im["width"])
        images.height.append(im["height"])
        images.captions.append([])
    captions = sorted(data.captions, key=lambda d: d["id"])
    for c in captions:
        images.captions[row_of[c["image_id"]]].append(c["caption"].strip())

    s = SampleTable()
    nan4 = (np.nan,) * 4

    def add(task, sid, image_id, query, template, target, answers, boxes, crop, category, mentioned,
            qtype="", atype=""):
        s.task.append(TASK_CODE[task])
        s.sample_id.append(f"{task}/{sid}")
        s.image.append(row_of[image_id])
        s.query.append(query)
        s.template_id.append(template)
        s.target.append(target)
        s.answers.append(answers)
        s.boxes.append(boxes)
        s.crop.append(crop)
        s.category_id.append(category)
        s.mentions.append(mentioned)
        s.unseen.append(False)
        s.question_type.append(qtype)
        s.answer_type.append(atype)

    no_boxes = np.zeros((0, 4), np.float32)
    # vqa
    answers_of = {a["question_id"]: a for a in data.vqa}
    for q in sorted(data.questions, key=lambda d: d["question_id"]):
        a = answers_of.get(q["question_id"])
        if a is None:
            raise GPVError(f"VQA question {q['question_id']} has no annotation in v2_mscoco_{data.name}_annotations.json")
        mc = a["multiple_choice_answer"]
        add("vqa", q["question_id"], q["image_id"], q["question"], -1, mc, [x["answer"] for x in a["answers"]],
            no_boxes, nan4, -1, _union(mention(q["question"]), mention(mc)),
            a.get("question_type", ""), a.get("answer_type", ""))
    # cap
    templates = rng.integers(len(CAPTION_PROMPTS), size=len(captions))
    for c, t in zip(captions, templates):
        add("cap", c["id"], c["image_id"], CAPTION_PROMPTS[t], int(t), c["caption"].strip(), [], no_boxes, nan4,
            -1, list(mention(c["caption"])))
    # loc and cls: one sample each per (image, category present)
    by_image_cat: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for a in data.instances:
        by_image_cat[(a["image_id"], a["category_id"])].append(a)
    keys = sorted(by_image_cat)
    loc_t = rng.integers(len(LOCALIZATION_PROMPTS), size=len(keys))
    cls_t = rng.integers(len(CLASSIFICATION_PROMPTS), size=len(keys))
    names = cats.by_id()
    loc_rows, cls_rows = [], []
    for (image_id, cat_id), lt, ct in zip(keys, loc_t, cls_t):
        anns = by_image_cat[(image_id, cat_id)]
        xywh = np.asarray([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        name = names[cat_id].name
        query = LOCALIZATION_PROMPTS[lt].replace("[OBJECT]", name)
        loc_rows.append((f"{image_id}:{cat_id}", image_id, query, int(lt), boxes, cat_id,
                         _union((cat_id,), mention(query))))
        first = min(anns, key=lambda a: a["id"])
        x, y, w, h = first["bbox"]
        row = row_of[image_id]
        W, H = images.width[row], images.height[row]
        crop = (max(0.0, x - CROP_MARGIN * w), max(0.0, y - CROP_MARGIN * h),
                min(float(W), x + w + CROP_MARGIN * w), min(float(H), y + h + CROP_MARGIN * h))
        cq = CLASSIFICATION_PROMPTS[ct]
        cls_rows.append((f"{image_id}:{cat_id}", image_id, cq, int(ct), name, crop, cat_id,
                         _union((cat_id,), mention(cq))))
    for sid, image_id, query, t, boxes, cat_id, m in loc_rows:
        add("loc", sid, image_id, query, t, "", [], boxes, nan4, cat_id, m)
    for sid, image_id, query, t, name, crop, cat_id, m in cls_rows:
        add("cls", sid, image_id, query, t, name, [], no_boxes, crop, cat_id, m)
    # refexp
    ann_by_id = {a["id"]: a for a in data.instances} if data.refs else {}
    for ref in sorted(data.refs, key=lambda r: r["ref_id"]):
        ann = ann_by_id.get(ref["ann_id"])
        if ann is None:
            raise GPVError(f"referring expression {ref['ref_id']} points at unknown annotation {ref['ann_id']}")
        x, y, w, h = ann["bbox"]
        box = np.asarray([[x, y, x + w, y + h]], np.float32)
        for k, sentence in enumerate(ref["sentences"]):
            add("refexp", f"{ref['ref_id']}:{k}", ref["image_id"], sentence, -1, "", [], box, nan4,
                ann["category_id"], _union((ann["category_id"],), mention(sentence)))
    return images, s


def held_out_mask(samples: SampleTable) -> np.ndarray:
    """True where a sample mentions a category held out (in COCO-SCE) from its own task."""
    group = {c.id: c.group for c in cats.categories()}
    return np.asarray([any(group[c] == HELD_FOR_TASK[TASKS[t]] for c in m)
                       for t, m in zip(samples.task, samples.mentions)], dtype=bool)


def _subset_images(images: ImageTable, samples: SampleTable, image_rows: np.ndarray) -> tuple[ImageTable, SampleTable]:
    """Keep the images at `image_rows` (and their samples), renumbering sample image rows."""
    new_row = np.full(len(images.id), -1, np.int64)
    new_row[image_rows] = np.arange(len(image_rows))
    sub = ImageTable(**{k: [v[i] for i in image_rows] for k, v in vars(images).items()})
    keep = new_row[np.asarray(samples.image, np.int64)] >= 0
    kept = samples.select(keep)
    kept.image = new_row[np.asarray(kept.image, np.int64)].tolist()
    return sub, kept


def sce_image_split(image_ids: list[int], *, seed: int, split_file: Path | None = None) -> tuple[set, set]:
    """train2014 image ids -> (train ids, val ids): seeded 80/20 of the sorted ids, or read from a file."""
    if split_file is not None:
        data = io.read_json(split_file, "image-split file")
        if not isinstance(data, dict) or not {"train", "val"} <= set(data):
            raise GPVError(f"{split_file} must be a JSON object with 'train' and 'val' lists of image ids")
        return set(map(int, data["train"])), set(map(int, data["val"]))
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


def prepare(split: str = "sce", *, coco_dir: Path | None = None, out_dir: Path | None = None, seed: int = 0,
            min_count: int = 1, image_split_file: Path | None = None, show_progress: bool = False) -> dict:
    """Build the prepared data of `split` ("coco" or "sce") into out_dir; returns the stats (Table 5).

    With no coco_dir, the synthetic world in $GPV_HOME/synth is used (generated on first use).
    """
    from gpvcli import paths

    if split not in SPLITS:
        raise GPVError(f"unknown split {split!r}", hint=f"use one of: {', '.join(SPLITS)}")
    if coco_dir is None:
        coco_dir = paths.default_synth_dir()
        if not (coco_dir / "annotations").is_dir():
            from gpvcli.data import synth

            synth.generate(coco_dir, show_progress=show_progress)
    coco_dir = Path(coco_dir).resolve()
    out_dir = Path(out_dir) if out_dir is not None else paths.default_prepared_dir(split)
    coco.check_layout(coco_dir)
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
        test_samples.unseen = held_out_mask(test_samples).tolist()
        parts["test"] = (test_images, test_samples)

    vocab = Vocab.build(training_texts(parts["train"][1]), min_count=min_count)
    out_dir.mkdir(parents=True, exist_ok=True)
    images_root = str(coco_dir / "images")
    for name, (images, samples) in parts.items():
        write_split(out_dir / f"{name}.h5", split=name, dataset=split, images_root=images_root,
                    images=images, samples=samples)
    vocab.save(out_dir / "vocab.json", min_count=min_count)
    io.write_text(out_dir / "query_vocab.txt", "\n".join(query_vocab(parts["train"][1])) + "\n")

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
    io.write_json(out_dir / "stats.json", stats)
    io.write_json(out_dir / "meta.json", {"dataset": split, "coco_dir": str(coco_dir), "images_root": images_root,
                                          "seed": seed, "min_count": min_count,
                                          "image_split_file": str(image_split_file) if image_split_file else None,
                                          "seconds": round(time.perf_counter() - start, 2)})
    return stats
