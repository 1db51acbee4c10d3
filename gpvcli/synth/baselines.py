"""The synthetic world's two shortcut baselines (baselines.json): how far an image-blind answer prior and
a class-blind localizer go, scored with the project's metrics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from gpvcli.eval.metrics import localization_ap, vqa_accuracy
from gpvcli.synth.scene import subset

LOCALIZER_DRAWS = 3
LOCALIZER_SAMPLES = 2000


def baselines(files: dict[str, dict], *, seed: int) -> dict[str, dict]:
    """The two shortcut baselines on val2014 from the annotation files (name -> content), each
    {"value": float, "definition": str, ...}.

    answer_prior_vqa_accuracy: per question_type, the most frequent multiple_choice_answer on
    train, predicted for every val question of that type (the overall most frequent answer for
    a type unseen on train), scored with the official VQA accuracy; mean over questions.
    class_blind_localizer_ap50: for a val localization sample (image, category present), all
    boxes of the image in random order, scored with AP@0.5 against that category's boxes; mean
    over LOCALIZER_DRAWS seeded orders and over the samples (a seeded subset of
    LOCALIZER_SAMPLES when there are more: the metric costs a fraction of a millisecond a call).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the metric runs on tiny tensors: thread hand-offs would dominate
    try:
        return {"answer_prior_vqa_accuracy": _answer_prior(files),
                "class_blind_localizer_ap50": _class_blind_localizer(files, seed)}
    finally:
        torch.set_num_threads(threads)


def _answer_prior(files: dict[str, dict]) -> dict:
    by_type: dict[str, Counter] = {}
    for a in files["v2_mscoco_train2014_annotations.json"]["annotations"]:
        by_type.setdefault(a["question_type"], Counter())[a["multiple_choice_answer"]] += 1
    overall = sum(by_type.values(), Counter()).most_common(1)[0][0]
    prior = {t: c.most_common(1)[0][0] for t, c in sorted(by_type.items())}
    scores = [vqa_accuracy(prior.get(a["question_type"], overall), [x["answer"] for x in a["answers"]])
              for a in files["v2_mscoco_val2014_annotations.json"]["annotations"]]
    return {"value": round(float(np.mean(scores)), 4), "prior": prior, "questions": len(scores),
            "definition": "per question_type, the most frequent multiple_choice_answer on train2014, "
                          "predicted for every val2014 question, scored with the official VQA accuracy"}


def _class_blind_localizer(files: dict[str, dict], seed: int) -> dict:
    by_image: dict[int, list[tuple[int, list[float]]]] = {}
    for a in files["instances_val2014.json"]["annotations"]:
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append((a["category_id"], [x, y, x + w, y + h]))
    samples = [(image_id, cat) for image_id in sorted(by_image)
               for cat in sorted({c for c, _ in by_image[image_id]})]
    rng = np.random.default_rng([seed, 2000])
    if len(samples) > LOCALIZER_SAMPLES:
        samples = [samples[i] for i in subset(rng, len(samples), LOCALIZER_SAMPLES)]
    aps = []
    for image_id, cat in samples:
        entries = by_image[image_id]
        boxes = np.array([b for _, b in entries])  # (N, 4) xyxy pixels
        gt = np.array([b for c, b in entries if c == cat])  # (M, 4)
        ranks = np.arange(len(entries), 0, -1, dtype=float)  # (N,) descending scores
        aps.extend(localization_ap(boxes[rng.permutation(len(entries))], ranks, gt, iou=0.5)
                   for _ in range(LOCALIZER_DRAWS))
    return {"value": round(float(np.mean(aps)), 4), "samples": len(samples), "draws": LOCALIZER_DRAWS,
            "definition": "per val2014 (image, category present) sample, all boxes of the image in random "
                          "order, AP@0.5 against that category's boxes; mean over samples and draws"}
