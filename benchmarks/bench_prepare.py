"""Speed and memory of `gpv prepare --split sce` at COCO 2014 scale.

Writes annotation files (no images) shaped like COCO 2014 + VQA v2 (about 83k train + 40k val
images, 600k+ instances, 600k+ captions, 650k+ questions), then times, each in a fresh process:
(a) merely loading the same JSON files with json.load, (b) prepare --split sce. Prints both
times, their ratio and the peak RSS of each process.

    python benchmarks/bench_prepare.py [--scale 1.0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPLITS = {"train2014": 82783, "val2014": 40504}
COLOURS = ["red", "green", "blue", "yellow", "white", "black"]


def write_coco_scale(root: Path, scale: float, seed: int = 0) -> dict:
    from gpvcli.data.categories import categories, coco_category_dicts

    rng = np.random.default_rng(seed)
    cats = categories()
    names = np.array([c.name for c in cats])
    ids = np.array([c.id for c in cats])
    counts = {}
    next_ann = 1
    next_q = 1
    for split, n_full in SPLITS.items():
        n = int(n_full * scale)
        image_ids = np.arange(1, n + 1) + (0 if split == "train2014" else 10_000_000)
        images = [{"id": int(i), "file_name": f"COCO_{split}_{i:012d}.jpg", "width": 640, "height": 480}
                  for i in image_ids]
        per_image = rng.integers(1, 15, size=n)                      # mean 7.3 instances
        ann_image = np.repeat(image_ids, per_image)
        ann_cat = rng.integers(0, 80, size=len(ann_image))
        xy = rng.uniform(0, 400, size=(len(ann_image), 2))
        wh = rng.uniform(5, 200, size=(len(ann_image), 2))
        anns = [{"id": next_ann + k, "image_id": int(im), "category_id": int(ids[c]),
                 "bbox": [round(float(x), 2), round(float(y), 2), round(float(w), 2), round(float(h), 2)],
                 "area": round(float(w * h), 2), "iscrowd": 0, "segmentation": []}
                for k, (im, c, (x, y), (w, h)) in enumerate(zip(ann_image, ann_cat, xy, wh))]
        next_ann += len(anns)
        cap_image = np.repeat(image_ids, 5)
        c1, c2 = rng.integers(0, 80, size=(2, len(cap_image)))
        col = rng.integers(0, len(COLOURS), size=len(cap_image))
        captions = [{"id": k + 1 + (0 if split == "train2014" else 5_000_000), "image_id": int(im),
                     "caption": f"A {COLOURS[cc]} {names[a]} next to some {names[b]}s in a room."}
                    for k, (im, a, b, cc) in enumerate(zip(cap_image, c1, c2, col))]
        q_image = np.repeat(image_ids, rng.integers(3, 9, size=n))   # mean 5.5 questions
        qc = rng.integers(0, 80, size=len(q_image))
        questions, answers = [], []
        for im, c in zip(q_image, qc):
            questions.append({"question_id": next_q, "image_id": int(im), "question": f"Is there a {names[c]}?"})
            answers.append({"question_id": next_q, "image_id": int(im), "question_type": "is there a",
                            "answer_type": "yes/no", "multiple_choice_answer": "yes",
                            "answers": [{"answer": "yes" if k < 8 else "no", "answer_confidence": "yes",
                                         "answer_id": k + 1} for k in range(10)]})
            next_q += 1
        ann_dir = root / "annotations"
        ann_dir.mkdir(parents=True, exist_ok=True)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        for name, obj in [
            (f"instances_{split}.json", {"images": images, "annotations": anns, "categories": coco_category_dicts()}),
            (f"captions_{split}.json", {"images": images, "annotations": captions}),
            (f"v2_OpenEnded_mscoco_{split}_questions.json", {"questions": questions}),
            (f"v2_mscoco_{split}_annotations.json", {"annotations": answers}),
        ]:
            with open(ann_dir / name, "w") as f:
                json.dump(obj, f)
        counts[split] = {"images": n, "instances": len(anns), "captions": len(captions),
                         "questions": len(questions)}
    return counts


LOAD_ONLY = """
import json, pathlib, resource, sys, time
t = time.perf_counter()
for p in sorted(pathlib.Path(sys.argv[1], "annotations").glob("*.json")):
    with open(p, "rb") as f:
        json.load(f)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

PREPARE = """
import pathlib, resource, sys, time
from gpvcli.data.prepare import prepare
t = time.perf_counter()
prepare("sce", coco_dir=pathlib.Path(sys.argv[1]), out_dir=pathlib.Path(sys.argv[2]))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run(code: str, *args: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    seconds, rss_kb = out.stdout.split()
    return float(seconds), float(rss_kb) / 1024 ** 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of COCO 2014's size")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the generated files in")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="gpv-bench-"))
    t = time.perf_counter()
    counts = write_coco_scale(root / "coco", args.scale)
    print(f"generated {counts} in {time.perf_counter() - t:.1f}s")
    load_s, load_gb = run(LOAD_ONLY, str(root / "coco"))
    prep_s, prep_gb = run(PREPARE, str(root / "coco"), str(root / "prepared"))
    stats = json.loads((root / "prepared" / "stats.json").read_text())
    print(json.dumps(stats["rows"]))
    print(f"json.load only:   {load_s:7.1f} s   peak RSS {load_gb:.2f} GiB")
    print(f"prepare --split sce: {prep_s:7.1f} s   peak RSS {prep_gb:.2f} GiB")
    print(f"ratio prepare / json load: {prep_s / load_s:.2f}x (target <= 3x; peak RSS target < 4 GiB)")


if __name__ == "__main__":
    main()
