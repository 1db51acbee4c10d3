"""Decoding a prepared split and scoring the predictions.

`predict(model, loader, vocab, ...)` runs greedy (or beam) decoding over a DataLoader of
`gpvcli.data.dataset` batches and returns one record per sample (with cls_mask, batches holding only
cls samples may answer with category words only; `task_batches` makes such batches):
    index, task, text (the decoded answer), boxes (Q, 4) normalized cxcywh sorted by relevance
    (descending; ties keep query order), relevance (Q,) sorted the same way.
`score(store, predictions)` turns them into per-sample scores and the table of metrics:
    per task: "all", "seen", "unseen", and per category group (S, H_vqa,cap, H_cls,loc): the mean
    over the group's categories of the mean score of the samples that mention each category
    (the seed's Fig. 1 definition).
Per-sample scores: vqa = VQA accuracy (official), cap = CIDEr-D of the sample's caption against all
captions of its image (document frequencies from the scored set), loc/refexp = AP@0.5 on pixel boxes,
cls = 1 when the answer names the category or a synonym.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
import torch

from gpvcli import boxes as box_ops
from gpvcli.data import categories as cats
from gpvcli.data.store import SplitStore
from gpvcli.data.vocab import Vocab
from gpvcli.eval import metrics

METRIC_NAMES = {"vqa": "VQA accuracy", "cap": "CIDEr-D", "loc": "AP@0.5", "cls": "accuracy", "refexp": "AP@0.5"}


def category_mask(vocab: Vocab) -> torch.Tensor:
    """(V,) bool: the words of category names and synonyms (for classification decoding)."""
    allowed = torch.zeros(len(vocab), dtype=torch.bool)
    for c in cats.categories():
        for phrase in cats.phrases(c.name):
            for w in phrase.split():
                if w in vocab.index:
                    allowed[vocab.index[w]] = True
    return allowed


def model_inputs(batch: dict, device: torch.device, features: Callable | None = None, *,
                 encoder: torch.nn.Module | None = None, channels_last: bool = False) -> dict:
    """The keyword arguments of GPV.forward/generate for a collated batch: images (uint8 pixels normalized on
    the device), or visual outputs: decoded from the rows the batch carries (`Collator.features`), the
    images of the samples the cache lacks run through the frozen `encoder`; or read by key from `features`."""
    from gpvcli.data.images import device_images
    from gpvcli.model.feature_cache import decode_rows, frozen_outputs

    kwargs = {"query_ids": batch["query_ids"].to(device, non_blocking=True),
              "query_mask": batch["query_mask"].to(device, non_blocking=True), "task": batch["task"]}
    images = device_images(batch["images"], device, channels_last=channels_last) if "images" in batch else None
    if "cached" in batch:
        cached = batch["cached"].to(device)                                           # (B,)
        parts = {}
        if "visual" in batch:
            parts[True] = decode_rows(batch["visual"], device)
        if images is not None:
            parts[False] = {k: v.float() for k, v in frozen_outputs(encoder, images).items()}
        first = next(iter(parts.values()))
        visual = {k: v.new_empty((len(cached), *v.shape[1:])) for k, v in first.items()}
        for is_cached, values in parts.items():
            for k, v in values.items():
                visual[k][cached == is_cached] = v
        kwargs["visual"] = visual
    elif images is not None:
        kwargs["images"] = images
    else:
        kwargs["visual"] = {k: v.to(device) for k, v in features(batch["feature_keys"]).items()}
    return kwargs


@torch.inference_mode()
def predict(model, loader: Iterable[dict], vocab: Vocab, *, device: torch.device, beam_size: int = 1,
            cls_mask: bool = False, features: Callable | None = None, encoder: torch.nn.Module | None = None,
            progress=None) -> list[dict]:
    """Decode every batch of `loader`; `encoder`: the frozen visual encoder that computes the images of the
    samples a batch's feature cache lacks (see `model_inputs`)."""
    model.eval()
    allowed = category_mask(vocab).to(device) if cls_mask else None
    records = []
    for batch in loader:
        only_cls = allowed is not None and set(batch["task"]) == {"cls"}
        out = model.generate(**model_inputs(batch, device, features, encoder=encoder), beam_size=beam_size,
                             allowed_words=allowed if only_cls else None)
        order = torch.sort(out["relevance"], dim=1, descending=True, stable=True).indices     # (B, Q)
        boxes = torch.gather(out["boxes"], 1, order[..., None].expand(-1, -1, 4)).float().cpu()
        relevance = torch.gather(out["relevance"], 1, order).float().cpu()
        for b, (i, task) in enumerate(zip(batch["index"], batch["task"])):
            records.append({"index": int(i), "task": task, "text": vocab.decode(out["tokens"][b].tolist()),
                            "boxes": boxes[b].numpy(), "relevance": relevance[b].numpy()})
        if progress is not None:
            progress(len(batch["index"]))
    return records


def task_batches(tasks: list[str], batch_size: int) -> list[list[int]]:
    """Batches (lists of positions into `tasks`) that each hold one task, in a fixed order."""
    batches = []
    for task in dict.fromkeys(tasks):
        pos = [k for k, t in enumerate(tasks) if t == task]
        batches.extend(pos[s:s + batch_size] for s in range(0, len(pos), batch_size))
    return batches


def pixel_boxes(store: SplitStore, i: int, boxes_cxcywh: np.ndarray) -> np.ndarray:
    """Normalized cxcywh boxes of sample i -> xyxy pixels of the image the model saw (the crop for cls)."""
    w = float(store.image_width[store.image[i]])
    h = float(store.image_height[store.image[i]])
    xyxy = box_ops.cxcywh_to_xyxy(torch.as_tensor(boxes_cxcywh, dtype=torch.float32)).numpy()
    c = store.crop[i]
    if not np.isnan(c).any():
        x0, y0, x1, y1 = c
        return xyxy * np.array([x1 - x0, y1 - y0] * 2, np.float32) + np.array([x0, y0, x0, y0], np.float32)
    return xyxy * np.array([w, h, w, h], np.float32)


def sample_scores(store: SplitStore, predictions: list[dict]) -> dict[int, float]:
    """Store index -> the sample's score under its task's metric."""
    scores: dict[int, float] = {}
    captions = [p for p in predictions if p["task"] == "cap"]
    if captions:
        cands = {p["index"]: p["text"] for p in captions}
        refs = {p["index"]: store.captions[int(store.image[p["index"]])] for p in captions}
        if len(cands) > 1:
            _, per_key = metrics.cider_d(cands, refs, tokenize=True)
            scores.update({k: float(v) for k, v in per_key.items()})
        else:   # CIDEr-D is undefined on one caption (its document frequencies are all 1)
            scores.update({k: 0.0 for k in cands})
    names = cats.by_id()
    for p in predictions:
        i, task = p["index"], p["task"]
        if task == "vqa":
            scores[i] = metrics.vqa_accuracy(p["text"], store.answers[i])
        elif task in ("loc", "refexp"):
            scores[i] = metrics.localization_ap(pixel_boxes(store, i, p["boxes"]), p["relevance"], store.boxes[i])
        elif task == "cls":
            scores[i] = float(metrics.classification_correct(p["text"], names[int(store.category_id[i])].name))
    return scores


def summarize(store: SplitStore, scores: dict[int, float]) -> dict:
    """Per task: n, all, seen, unseen, and per category group (Fig. 1) from per-sample scores."""
    group = {c.id: c.group for c in cats.categories()}
    by_task: dict[str, list[int]] = defaultdict(list)
    for i in scores:
        by_task[store.task_names[store.task_code[i]]].append(i)
    table = {}
    for task, idx in by_task.items():
        vals = np.array([scores[i] for i in idx])
        unseen = store.unseen[np.asarray(idx)]
        per_category: dict[int, list[float]] = defaultdict(list)
        for i in idx:
            for c in store.mentions[i].tolist():
                per_category[c].append(scores[i])
        groups = {}
        for g in cats.GROUPS:
            means = [np.mean(v) for c, v in per_category.items() if group[c] == g]
            groups[g] = float(np.mean(means)) if means else None
        table[task] = {
            "metric": METRIC_NAMES[task], "n": len(idx), "all": float(vals.mean()),
            "seen": float(vals[~unseen].mean()) if (~unseen).any() else None,
            "unseen": float(vals[unseen].mean()) if unseen.any() else None,
            "n_unseen": int(unseen.sum()), "groups": groups,
        }
    return table


def score(store: SplitStore, predictions: list[dict]) -> tuple[dict, dict[int, float]]:
    scores = sample_scores(store, predictions)
    return summarize(store, scores), scores


def selection_metric(table: dict) -> float:
    """The sum of the task metrics (model selection on val)."""
    return float(sum(row["all"] for row in table.values()))
