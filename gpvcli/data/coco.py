"""Readers of the COCO 2014 / VQA v2 / referring-expression files.

Expected layout under a COCO folder (`--coco-dir`), the one `gpv synth` writes too:

    images/train2014/COCO_train2014_<id:012d>.jpg    images/val2014/...
    annotations/instances_{train2014,val2014}.json   (COCO instances)
    annotations/captions_{train2014,val2014}.json    (COCO captions)
    annotations/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json   (VQA v2)
    annotations/v2_mscoco_{train2014,val2014}_annotations.json           (VQA v2)
    annotations/refexp_{train2014,val2014}.json      (optional; see gpvcli.synth.world for its format)

Only the fields the toolkit uses are read; every missing file or field is one clear error, and so is
a record that would give a wrong sample (`check_split`): a field of the wrong type, a duplicate id, an
unknown image, annotation or category id, a VQA entry without its 10 answers, a box of negative size or
lying wholly outside its image. Boxes of zero width or height are kept (COCO 2014 has a few).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np

from gpvcli.data.categories import by_id
from gpvcli.errors import GPVError
from gpvcli.io import read_json

IMAGE_SPLITS = ("train2014", "val2014")

SOURCES = {
    "instances": ("instances_{s}.json", "https://cocodataset.org/#download (2014 Train/Val annotations)"),
    "captions": ("captions_{s}.json", "https://cocodataset.org/#download (2014 Train/Val annotations)"),
    "questions": ("v2_OpenEnded_mscoco_{s}_questions.json", "https://visualqa.org/download.html (VQA v2 questions)"),
    "vqa": ("v2_mscoco_{s}_annotations.json", "https://visualqa.org/download.html (VQA v2 annotations)"),
}


@dataclass
class ImageSplitData:
    """Everything read for one COCO image split (train2014 or val2014)."""

    name: str
    images: list[dict]        # COCO image dicts (id, file_name, width, height)
    instances: list[dict]     # COCO annotation dicts (id, image_id, category_id, bbox, iscrowd)
    captions: list[dict]      # (id, image_id, caption)
    questions: list[dict]     # VQA questions (question_id, image_id, question)
    vqa: list[dict]           # VQA annotations (question_id, answers, multiple_choice_answer, ...)
    refs: list[dict]          # referring expressions (ref_id, image_id, ann_id, category_id, sentences)


def annotation_path(coco_dir: Path, kind: str, split: str) -> Path:
    return coco_dir / "annotations" / SOURCES[kind][0].format(s=split)


def check_layout(coco_dir: Path) -> None:
    """Raise one GPVError naming the first missing file and where it is downloaded from."""
    if not coco_dir.is_dir():
        raise GPVError(f"COCO folder not found: {coco_dir}")
    for split in IMAGE_SPLITS:
        for kind, (_, origin) in SOURCES.items():
            p = annotation_path(coco_dir, kind, split)
            if not p.is_file():
                raise GPVError(f"missing {p}", hint=f"download it from {origin}")
        if not (coco_dir / "images" / split).is_dir():
            raise GPVError(f"missing image folder {coco_dir / 'images' / split}",
                           hint=f"download {split}.zip from https://cocodataset.org/#download and unpack it there")


def _field(d: dict, key: str, path: Path):
    try:
        return d[key]
    except (KeyError, TypeError):
        raise GPVError(f"{path} has no '{key}' field",
                       hint="is it the right file? (the COCO 2014 / VQA v2 formats)")


# Per list of ImageSplitData: what a record is, its id field, and the fields read with their JSON types.
RECORDS = {
    "images": ("image", "id", {"id": int, "file_name": str, "width": (int, float), "height": (int, float)}),
    "instances": ("annotation", "id", {"id": int, "image_id": int, "category_id": int, "bbox": list}),
    "captions": ("caption", "id", {"id": int, "image_id": int, "caption": str}),
    "questions": ("question", "question_id", {"question_id": int, "image_id": int, "question": str}),
    "vqa": ("VQA annotation", "question_id",
            {"question_id": int, "multiple_choice_answer": str, "answers": list}),
    "refs": ("referring expression", "ref_id",
             {"ref_id": int, "image_id": int, "ann_id": int, "sentences": list}),
}
TYPE_NAMES = {int: "an integer", str: "a string", list: "a list", (int, float): "a number"}
VQA_ANSWERS = 10


def _bad(path: Path, kind: str, record, problem: str) -> GPVError:
    """The error for one record of list `kind`, named by its id when it has one."""
    what, key, _ = RECORDS[kind]
    rid = record.get(key) if isinstance(record, dict) else None
    return GPVError(f"{path}: {what}{'' if rid is None else f' {rid}'} {problem}",
                    hint="fix or remove it (the files follow the COCO 2014 / VQA v2 formats)")


def _check_records(items: list, path: Path, kind: str) -> None:
    """Every record is an object with the fields of RECORDS[kind], each of its JSON type, and a unique id.
    (Fast paths: the types of a column as a set, via C-level map; COCO 2014 has millions of records.)"""
    for key, types in RECORDS[kind][2].items():
        allowed = set(types) if isinstance(types, tuple) else {types}
        try:
            if set(map(type, map(itemgetter(key), items))) <= allowed:
                continue
        except (KeyError, TypeError, IndexError):
            pass
        r = next(r for r in items if not isinstance(r, dict) or type(r.get(key)) not in allowed)
        if not isinstance(r, dict):
            raise _bad(path, kind, r, f"{str(r)[:40]!r} is not a JSON object")
        if key not in r:
            raise _bad(path, kind, r, f"has no '{key}' field")
        raise _bad(path, kind, r, f"has '{key}': {str(r[key])[:40]!r}, not {TYPE_NAMES[types]}")
    key = RECORDS[kind][1]
    ids = list(map(itemgetter(key), items))
    if len(set(ids)) < len(ids):
        seen = set()
        r = next(r for r in items if r[key] in seen or seen.add(r[key]))
        raise _bad(path, kind, r, f"appears twice ({key} must be unique)")


def check_split(data: ImageSplitData, paths: dict[str, Path]) -> None:
    """Raise one GPVError naming the first record of `data` that is malformed or inconsistent (see the module
    docstring); `paths` names the file of each list of `data`."""
    for kind in RECORDS:
        if not isinstance(getattr(data, kind), list):
            raise GPVError(f"{paths[kind]}: the {RECORDS[kind][0]}s are not a JSON list",
                           hint="is it the right file? (the COCO 2014 / VQA v2 formats)")
        _check_records(getattr(data, kind), paths[kind], kind)
    size = {im["id"]: (im["width"], im["height"]) for im in data.images}
    for kind in ("instances", "captions", "questions", "refs"):
        items = getattr(data, kind)
        if not set(map(itemgetter("image_id"), items)) <= size.keys():
            r = next(r for r in items if r["image_id"] not in size)
            raise _bad(paths[kind], kind, r,
                       f"refers to image {r['image_id']}, not in {paths['images'].name}")
    inst, path = data.instances, paths["instances"]
    if not set(map(itemgetter("category_id"), inst)) <= by_id().keys():
        r = next(r for r in inst if r["category_id"] not in by_id())
        raise _bad(path, "instances", r, f"has unknown category id {r['category_id']}")
    boxes = list(map(itemgetter("bbox"), inst))
    number = {int, float}
    if set(map(len, boxes)) - {4} or set(map(type, itertools.chain.from_iterable(boxes))) - number:
        r = next(r for r in inst if len(r["bbox"]) != 4 or set(map(type, r["bbox"])) - number)
        raise _bad(path, "instances", r, f"has bbox {str(r['bbox'])[:60]}, not 4 numbers [x, y, w, h]")
    xywh = np.asarray(boxes, np.float64).reshape(-1, 4)
    wh = np.asarray([size[i] for i in map(itemgetter("image_id"), inst)], np.float64).reshape(-1, 2)
    for wrong, problem in (
            (~np.isfinite(xywh).all(1), "has a box that is not finite: {box}"),
            ((xywh[:, 2:] < 0).any(1), "has a box of negative size {box} (a COCO bbox is [x, y, w, h])"),
            ((xywh[:, :2] >= wh).any(1) | (xywh[:, :2] + xywh[:, 2:] <= 0).any(1),
             "has box {box} wholly outside its {w:g}x{h:g} image")):
        if wrong.any():
            k = int(np.flatnonzero(wrong)[0])
            box, (w, h) = inst[k]["bbox"], wh[k]
            raise _bad(path, "instances", inst[k], problem.format(box=box, w=w, h=h))
    answers = list(map(itemgetter("answers"), data.vqa))
    try:
        texts = map(itemgetter("answer"), itertools.chain.from_iterable(answers))
        ok = set(map(len, answers)) <= {VQA_ANSWERS} and set(map(type, texts)) <= {str}
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        r = next(r for r in data.vqa if len(r["answers"]) != VQA_ANSWERS
                 or not all(isinstance(x, dict) and isinstance(x.get("answer"), str) for x in r["answers"]))
        raise _bad(paths["vqa"], "vqa", r, f"has {len(r['answers'])} answers, not {VQA_ANSWERS} objects with "
                   "an 'answer' string (VQA v2 has ten per question)")
    annotations = set(map(itemgetter("id"), inst))
    for r in data.refs:
        if r["ann_id"] not in annotations:
            raise _bad(paths["refs"], "refs", r, f"points at unknown annotation {r['ann_id']}")
        if not r["sentences"] or not all(isinstance(s, str) for s in r["sentences"]):
            raise _bad(paths["refs"], "refs", r, "needs a list of sentence strings")


def read_split(coco_dir: Path, split: str) -> ImageSplitData:
    paths = {k: annotation_path(coco_dir, k, split) for k in SOURCES}
    inst = read_json(paths["instances"], "COCO instances file")
    caps = read_json(paths["captions"], "COCO captions file")
    qs = read_json(paths["questions"], "VQA questions file")
    vqa = read_json(paths["vqa"], "VQA annotations file")
    ref_path = coco_dir / "annotations" / f"refexp_{split}.json"
    refs = _field(read_json(ref_path, "referring-expression file"), "refs", ref_path) if ref_path.is_file() else []
    data = ImageSplitData(
        name=split,
        images=_field(inst, "images", paths["instances"]),
        instances=_field(inst, "annotations", paths["instances"]),
        captions=_field(caps, "annotations", paths["captions"]),
        questions=_field(qs, "questions", paths["questions"]),
        vqa=_field(vqa, "annotations", paths["vqa"]),
        refs=refs,
    )
    check_split(data, {**paths, "images": paths["instances"], "refs": ref_path})
    return data
