"""`gpv synth`: the synthetic world written in the COCO 2014 / VQA v2 file formats.

`generate(out_dir, ...)` writes, under out_dir:

    images/{train2014,val2014}/COCO_{split}_{id:012d}.jpg     RGB JPEG, width x height
    annotations/instances_{split}.json                        COCO instances
    annotations/captions_{split}.json                         COCO captions, five per image
    annotations/v2_OpenEnded_mscoco_{split}_questions.json    VQA v2 questions
    annotations/v2_mscoco_{split}_annotations.json            VQA v2 answers, ten per question
    annotations/refexp_{split}.json                           referring expressions (format below)
    baselines.json                                            the two shortcut baselines

The world. Every image holds 5-12 objects (9 on average) of 5-10 COCO categories,
usually with 2-3 instances of one or two of them, drawn with category frequencies
that fall off like COCO's (person most common, 18 times the rarest). An object's
category decides its look (`gpvcli.synth.render`: silhouette x texture); its colour (a
named palette), size (long side 16-48 px at 128x96) and position do not. Objects
overlap at most slightly.
Boxes are the tight pixel boxes of the drawn shapes, [x, y, w, h] with continuous
corners (a box [0, 0, 2, 1] covers pixels (0, 0) and (1, 0)); the segmentation is
the box as a polygon. Image, annotation, caption and reference ids are unique over
both splits; question_id = image_id * 1000 + k.

Text. Captions name 1-3 categories with counts, plurals, colours, spatial relations
and synonyms (`categories.SYNONYMS`), held-out categories included. Questions are
yes/no ("Is there a dog?", absent categories half the time), number ("How many
dogs are there?") and other ("What color is the dog?", "What is the red object?",
"What is to the left of the bus?"), with VQA question_type strings. Seven to ten
of the ten answers are right; the rest are a synonym or a wrong answer.

Referring expressions (our format, RefCOCO-like; COCO has none of its own):

    {"info": {...},
     "refs": [{"ref_id": int, "image_id": int, "ann_id": int, "category_id": int,
               "sentences": ["the red dog", "dog on the left", ...]}]}

One or two refs per image, each for an object that its colour or position sets
apart from the other objects of its category; the target box is the instance
annotation `ann_id`.

Baselines (baselines.json) measure how far shortcuts go: an image-blind answer prior
and a class-blind localizer (see `gpvcli.synth.baselines`). Everything is deterministic for a
seed: the same arguments give the same bytes.
"""

from __future__ import annotations

import contextlib
import io as _bytes_io
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gpvcli import io
from gpvcli.data import categories as cats
from gpvcli.errors import GPVError
from gpvcli.progress import progress_bar
from gpvcli.synth.baselines import baselines
from gpvcli.synth.render import render
from gpvcli.synth.scene import Obj, layout
from gpvcli.synth.text import captions, questions, referring

SPLITS = ("train2014", "val2014")
JPEG_QUALITY = 92
WORLD_MARK = "baselines.json"   # written last: it marks a complete world
MAX_IMAGES = 200_000
MAX_IMAGE_ID = 600_000  # COCO-like ids; question ids (image_id * 1000 + k) stay below 2**31
PARALLEL_FROM = 1000  # smaller worlds render in-process (starting workers costs about a second)
INFO = {"description": "gpvcli synthetic COCO-format world", "version": "1.0", "year": 2014,
        "contributor": "gpvcli", "url": "", "date_created": "2014-01-01"}
LICENSES = [{"id": 1, "name": "public domain (synthetic images)", "url": ""}]


def make_image(*, seed: int, split: str, index: int, width: int, height: int) -> tuple[bytes, dict]:
    """JPEG bytes and annotations (objects, captions, questions, refs) of one image.

    Depends only on (seed, split, index, width, height).
    """
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    sprites = layout(rng, width, height)
    pixels, boxes = render(sprites, rng, width, height)
    buf = _bytes_io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    names = [c.name for c in cats.categories()]
    objs = [Obj(names[s.category_index], s.colour, tuple(float(v) for v in b))
            for s, b in zip(sprites, boxes, strict=True)]
    return buf.getvalue(), {
        "objects": objs,
        "captions": captions(rng, objs, width, height),
        "questions": questions(rng, objs),
        "refs": referring(rng, objs),
    }


# --------------------------------------------------------------------------- files


def _split_files(split: str, records: list[tuple[int, dict]], width: int, height: int,
                 ids: dict[str, int]) -> dict[str, dict]:
    """The five annotation files of one split from (image_id, make_image annotations) pairs.
    `ids` holds the next free annotation/caption/ref id and is advanced."""
    images, instances, caps, qs, vqa, refs = [], [], [], [], [], []
    for image_id, rec in records:
        images.append({"id": image_id, "file_name": f"COCO_{split}_{image_id:012d}.jpg",
                       "width": width, "height": height})
        ann_ids = []
        for o in rec["objects"]:
            x0, y0, x1, y1 = o.box
            w, h = x1 - x0, y1 - y0
            ann_ids.append(ids["ann"])
            category_id = cats.by_name()[o.category].id
            instances.append({"id": ids["ann"], "image_id": image_id, "category_id": category_id,
                              "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0,
                              "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
            ids["ann"] += 1
        for text in rec["captions"]:
            caps.append({"id": ids["caption"], "image_id": image_id, "caption": text})
            ids["caption"] += 1
        for k, q in enumerate(rec["questions"]):
            qid = image_id * 1000 + k
            qs.append({"image_id": image_id, "question": q["question"], "question_id": qid})
            vqa.append({"question_type": q["question_type"],
                        "multiple_choice_answer": q["multiple_choice_answer"], "answers": q["answers"],
                        "image_id": image_id, "answer_type": q["answer_type"], "question_id": qid})
        for i, sentences in rec["refs"]:
            o = rec["objects"][i]
            refs.append({"ref_id": ids["ref"], "image_id": image_id, "ann_id": ann_ids[i],
                         "category_id": cats.by_name()[o.category].id, "sentences": sentences})
            ids["ref"] += 1
    vqa_info = {**INFO, "description": "gpvcli synthetic VQA v2-format questions"}
    return {
        f"instances_{split}.json": {"info": INFO, "licenses": LICENSES, "images": images,
                                    "annotations": instances, "categories": cats.coco_category_dicts()},
        f"captions_{split}.json": {"info": INFO, "licenses": LICENSES, "images": images, "annotations": caps},
        f"v2_OpenEnded_mscoco_{split}_questions.json": {
            "info": vqa_info, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": split,
            "license": LICENSES[0], "questions": qs},
        f"v2_mscoco_{split}_annotations.json": {
            "info": vqa_info, "license": LICENSES[0], "data_type": "mscoco", "data_subtype": split,
            "annotations": vqa},
        f"refexp_{split}.json": {"info": {**INFO, "description": "gpvcli synthetic referring expressions"},
                                 "refs": refs},
    }


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or
                             (any(out_dir.iterdir()) and not (out_dir / WORLD_MARK).is_file())):
        raise GPVError(f"{out_dir} exists and is not a synthetic world",
                       hint="give an empty or new folder (an earlier `gpv synth` output is replaced)")


def _write_image(job: tuple) -> dict:
    """Render one image (job = seed, split, index, width, height, path), write its JPEG, return
    its annotations. A module-level function so that worker processes can run it."""
    seed, split, index, width, height, path = job
    jpeg, rec = make_image(seed=seed, split=split, index=index, width=width, height=height)
    Path(path).write_bytes(jpeg)
    return rec


def _records(jobs: list[tuple], workers: int, advance) -> list[dict]:
    """`_write_image` over `jobs`, in order; in `workers` forked processes for large worlds
    (fork needs no `if __name__ == "__main__"` guard in the caller's script)."""
    if workers <= 1 or len(jobs) < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        out = []
        for job in jobs:
            out.append(_write_image(job))
            advance()
        return out
    out = []
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for rec in pool.imap(_write_image, jobs, chunksize=32):
            out.append(rec)
            advance()
    return out


def generate(out_dir: str | Path, *, train_images: int = 2000, val_images: int = 500, seed: int = 0,
             width: int = 128, height: int = 96, show_progress: bool = False,
             workers: int | None = None) -> dict:
    """Write the synthetic world under `out_dir` (replacing an earlier `gpv synth` output atomically).

    workers: processes that render images (default: up to 2 CPU cores; worlds under
    PARALLEL_FROM images are rendered in-process). The output does not depend on it.
    Returns {"out_dir": str, "counts": {"images/<split>" or file name: number of records},
    "baselines": {name: value}, "seconds": float}. The files are identical for identical arguments.
    """
    if train_images < 1 or val_images < 1 or train_images + val_images > MAX_IMAGES:
        raise GPVError(f"the synthetic world needs 1 to {MAX_IMAGES} train + val images, "
                       f"not {train_images} + {val_images}")
    if width < 64 or height < 48:
        raise GPVError(f"image size {width}x{height} is too small", hint="use at least 64x48")
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    out_dir = Path(out_dir)
    _check_target(out_dir)
    start = time.perf_counter()
    all_ids = np.random.default_rng([seed, 1000]).choice(np.arange(1, MAX_IMAGE_ID + 1),
                                                          size=train_images + val_images, replace=False)
    split_ids = {"train2014": np.sort(all_ids[:train_images]).tolist(),
                 "val2014": np.sort(all_ids[train_images:]).tolist()}
    counts: dict[str, int] = {}
    files: dict[str, dict] = {}
    next_ids = {"ann": 1, "caption": 1, "ref": 1}
    with io.atomic_dir(out_dir) as tmp, _progress(show_progress, train_images + val_images) as advance:
        for split in SPLITS:
            folder = tmp / "images" / split
            folder.mkdir(parents=True)
            jobs = [(seed, split, index, width, height, str(folder / f"COCO_{split}_{image_id:012d}.jpg"))
                    for index, image_id in enumerate(split_ids[split])]
            records = list(zip(split_ids[split], _records(jobs, workers, advance), strict=True))
            for name, content in _split_files(split, records, width, height, next_ids).items():
                io.write_json(tmp / "annotations" / name, content, indent=None)
                files[name] = content
            counts[f"images/{split}"] = len(records)
        counts.update(_record_counts(files))
        values = baselines(files, seed=seed)
        io.write_json(tmp / WORLD_MARK, values)
    return {"out_dir": str(out_dir), "counts": counts,
            "baselines": {k: v["value"] for k, v in values.items()},
            "seconds": round(time.perf_counter() - start, 2)}


def _record_counts(files: dict[str, dict]) -> dict[str, int]:
    keys = {"instances": "annotations", "captions": "annotations", "v2_OpenEnded": "questions",
            "v2_mscoco": "annotations", "refexp": "refs"}
    return {name: len(content[key]) for name, content in files.items()
            for prefix, key in keys.items() if name.startswith(prefix)}


@contextlib.contextmanager
def _progress(enabled: bool, total: int):
    """Yield an `advance()` callable that moves a rich progress bar (a no-op when disabled)."""
    with progress_bar(enabled) as bar:
        task = bar.add_task("rendering images", total=total, info="")
        yield lambda: bar.advance(task)
