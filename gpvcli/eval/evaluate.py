"""`gpv evaluate`: decode a prepared split with a checkpoint and score it.

Writes into `OUT` (default `RUN/eval/<split>/`):
    metrics.json       per task: all / seen / unseen and per category group (S, H_vqa,cap, H_cls,loc),
                       plus the protocol (split, decoding, max lengths, metric variants, checkpoint hash)
    predictions.jsonl  one line per sample: sample_id, task, query, prediction, target, score, unseen,
                       and the top-10 boxes (pixel xyxy) with relevance
    captions_results.json  COCO captions results format [{"image_id", "caption"}] (one per caption sample)
    detections.json        COCO detection results format [{"image_id", "category_id", "bbox" xywh, "score"}]
    vqa_results.json       VQA results format [{"question_id", "answer"}]
    boxes.npz              every sample's boxes (N, Q, 4) pixel xyxy, sorted by relevance, and relevance (N, Q)
    swapped.jsonl      the grounding checks: one line per sample decoded with its image or query swapped:
                       sample_id, task, swap, image_of / query_of (the sample_id whose image or query it got),
                       query, prediction, score, and the top-10 boxes with relevance
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from gpvcli import io, runs
from gpvcli.data.dataset import Collator, GPVDataset
from gpvcli.data.store import SplitStore
from gpvcli.device import pick_device
from gpvcli.errors import GPVError
from gpvcli.eval import grounding, runner
from gpvcli.progress import progress_bar

TOP_BOXES = 10
PREDICTIONS = "predictions.jsonl"


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def evaluate(run_or_checkpoint: str | Path, *, split: str = "test", data_dir: str | Path | None = None,
             out_dir: str | Path | None = None, batch_size: int = 64, beam_size: int = 1, cls_mask: bool = False,
             limit: int | None = None, tasks: list[str] | None = None, device: str = "auto",
             checks: bool = True, features: str | Path | None = None, show_progress: bool = True) -> dict:
    """Decode and score `split` (only `tasks`, when given; only the first `limit` of those samples, when
    given), and, with `checks`, score every task again with its image or query swapped (the grounding
    checks, `gpvcli.eval.grounding`); returns the metrics dict written to metrics.json.
    `features`: a feature cache of the split's images and crops (`gpvcli.model.feature_cache`) made by this
    checkpoint's visual encoder (refused otherwise), read instead of running the encoder: what the
    ablation's variants do, whose frozen encoder is shared. Keys it lacks are computed live."""
    from gpvcli.model.checkpoint import WEIGHTS

    if split not in ("test", "val"):
        raise GPVError(f"unknown split {split!r}", hint="use test or val")
    checkpoint = runs.resolve_checkpoint(run_or_checkpoint)
    data_dir = runs.data_of(checkpoint, data_dir)
    store = SplitStore(data_dir / f"{split}.h5")
    indices = np.arange(len(store)) if tasks is None else np.flatnonzero(np.isin(np.asarray(store.tasks), tasks))
    indices = indices[:limit]
    swaps = grounding.pairings(store, indices) if checks else {}
    decoder = Decoder(checkpoint, device=device, features=features)
    options = {"batch_size": batch_size, "beam_size": beam_size, "cls_mask": cls_mask}
    with progress_bar(show_progress) as progress:
        def decode(title: str, targets: np.ndarray, **swap) -> list[dict]:
            bar = progress.add_task(title, total=len(targets), info="")
            return decoder(store, targets, **swap, **options, progress=lambda n: progress.advance(bar, n))

        preds = decode(f"evaluating {split}", indices)
        swapped = {task: decode(f"{task}, {swap.kind} swapped", swap.targets, image_of=swap.image_of,
                                query_of=swap.query_of) for task, swap in swaps.items()}
    cfg = decoder.cfg
    table, scores = runner.score(store, preds)
    swapped_scores = {task: runner.sample_scores(store, p) for task, p in swapped.items()}
    for task, swap in swaps.items():
        table[task]["grounding"] = grounding.dependence(scores, swapped_scores[task], swap)
    result = {
        "tasks": table,
        "protocol": {
            "split": split, "dataset": store.dataset, "data_dir": str(data_dir), "samples": len(preds),
            "decoding": "greedy" if beam_size == 1 else f"beam {beam_size}", "cls_mask": cls_mask,
            "max_answer_len": cfg.max_answer_len,
            "metrics": {"vqa": "official VQA v2 accuracy", "cap": "CIDEr-D (pure-Python PTB-style tokens)",
                        "loc": "per-sample AP@0.5 on corner boxes (corrected GPV-1 metric)",
                        "cls": "exact match of category name or synonym"},
            "grounding_checks": grounding.PROTOCOL if checks else None,
            "visual_features": "computed" if features is None else f"read from the feature cache {features}",
            "checkpoint": str(checkpoint), "checkpoint_sha256": file_hash(checkpoint / WEIGHTS),
            "data_sha256": file_hash(data_dir / f"{split}.h5"),
        },
    }
    out = Path(out_dir) if out_dir else checkpoint.parent / runs.EVAL / split
    write_outputs(out, store, preds, scores, result)
    write_swapped(out, store, swaps, swapped, swapped_scores)
    result["out_dir"] = str(out)
    return result


class Decoder:
    """A checkpoint's model, loaded once on `device`, that decodes store samples in one-task batches; with
    `features` (a feature cache file of this model's visual encoder), its visual outputs read from there."""

    def __init__(self, checkpoint: Path, *, device: str = "auto", num_workers: int = 0,
                 features: str | Path | None = None):
        from gpvcli.model.checkpoint import load_model
        from gpvcli.model.feature_cache import FeatureCache, visual_fingerprint

        self.device = pick_device(device)
        self.num_workers = num_workers        # DataLoader workers that read and resize the images
        self.model, self.cfg, self.vocab, self.tokenizer = load_model(checkpoint, device=str(self.device))
        self.features = None if features is None else FeatureCache(
            features, visual_fingerprint(self.model.visual, self.cfg.visual)).load()

    def __call__(self, store: SplitStore, indices: np.ndarray, *, image_of: np.ndarray | None = None,
                 query_of: np.ndarray | None = None, batch_size: int = 64, beam_size: int = 1,
                 cls_mask: bool = False, progress: Callable[[int], None] | None = None) -> list[dict]:
        """`runner.predict` records (boxes normalized cxcywh sorted by relevance) of store samples `indices`,
        each read with the image of `image_of` and the query of `query_of` when given (see GPVDataset)."""
        dataset = GPVDataset(store, self.vocab, image_size=tuple(self.cfg.visual.image_size),
                             max_answer_len=self.cfg.max_answer_len, indices=np.asarray(indices), image_of=image_of,
                             query_of=query_of, use_features=self.features is not None)
        collate = Collator(self.tokenizer)
        dataset.features = collate.features = self.features
        loader = DataLoader(dataset, batch_sampler=runner.task_batches(dataset.tasks, batch_size),
                            collate_fn=collate, num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        return runner.predict(self.model, loader, self.vocab, device=self.device, beam_size=beam_size,
                              cls_mask=cls_mask, encoder=self.model.visual if self.features is not None else None,
                              progress=progress)


def write_swapped(out: Path, store: SplitStore, swaps: dict[str, grounding.Swap],
                  swapped: dict[str, list[dict]], scores: dict[str, dict[int, float]]) -> None:
    lines = []
    for task, swap in swaps.items():
        sources = dict(zip(swap.targets.tolist(), zip(swap.image_of.tolist(), swap.query_of.tolist())))
        for p in swapped[task]:
            i = p["index"]
            image_of, query_of = sources[i]
            px = runner.pixel_boxes(store, image_of, p["boxes"])
            lines.append(json.dumps({
                "sample_id": store.sample_id[i], "task": task, "swap": swap.kind,
                "image_of": store.sample_id[image_of], "query_of": store.sample_id[query_of],
                "query": store.query[query_of], "prediction": p["text"], "score": scores[task][i],
                "boxes": np.round(px[:TOP_BOXES].astype(np.float64), 2).tolist(),
                "relevance": np.round(p["relevance"][:TOP_BOXES].astype(np.float64), 4).tolist()}))
    io.write_text(out / "swapped.jsonl", "\n".join(lines) + ("\n" if lines else ""))


def write_outputs(out: Path, store: SplitStore, preds: list[dict], scores: dict[int, float], result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / "metrics.json", result)
    lines, captions, detections, vqa = [], [], [], []
    all_boxes, all_rel = [], []
    for p in preds:
        i = p["index"]
        s = store.sample(i)
        px = runner.pixel_boxes(store, i, p["boxes"])
        all_boxes.append(px)
        all_rel.append(p["relevance"])
        lines.append(json.dumps({
            "sample_id": s["sample_id"], "task": s["task"], "image_id": s["image_id"], "query": s["query"],
            "prediction": p["text"], "target": s["target"], "score": scores.get(i), "unseen": s["unseen"],
            "boxes": np.round(px[:TOP_BOXES].astype(np.float64), 2).tolist(),
            "relevance": np.round(p["relevance"][:TOP_BOXES].astype(np.float64), 4).tolist()}))
        if s["task"] == "cap":
            captions.append({"image_id": s["image_id"], "caption": p["text"]})
        elif s["task"] == "vqa":
            vqa.append({"question_id": int(s["sample_id"].split("/")[1]), "answer": p["text"]})
        elif s["task"] == "loc":
            xywh = np.concatenate([px[:, :2], px[:, 2:] - px[:, :2]], 1)
            detections.extend({"image_id": s["image_id"], "category_id": s["category_id"],
                               "bbox": [round(float(v), 2) for v in b], "score": round(float(r), 5)}
                              for b, r in zip(xywh, p["relevance"]))
    io.write_text(out / PREDICTIONS, "\n".join(lines) + "\n")
    io.write_json(out / "captions_results.json", captions, indent=None)
    io.write_json(out / "detections.json", detections, indent=None)
    io.write_json(out / "vqa_results.json", vqa, indent=None)
    with io.atomic_path(out / "boxes.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, index=np.array([p["index"] for p in preds]),
                            boxes=np.stack(all_boxes) if all_boxes else np.zeros((0, 0, 4)),
                            relevance=np.stack(all_rel) if all_rel else np.zeros((0, 0)))


TABLE_COLUMNS = [("vqa", "VQA"), ("cap", "Captioning"), ("loc", "Localization"), ("cls", "Classification")]


def format_metric(task: str, value: float | None) -> str:
    """CIDEr-D as is (3 decimals), the other metrics in percent (1 decimal), "-" for none."""
    if value is None:
        return "-"
    return f"{value:.3f}" if task == "cap" else f"{100 * value:.1f}"


def table1_row(tasks: dict) -> tuple[list[str], list[str]]:
    """Header and cells of one row of the seed's Table 1 (Test / Seen / Unseen per task)."""
    header, cells = [], []
    for task, name in TABLE_COLUMNS:
        row = tasks.get(task)
        for col in ("all", "seen", "unseen"):
            header.append(f"{name} {'Test' if col == 'all' else col.capitalize()}")
            cells.append(format_metric(task, None if row is None else row[col]))
    return header, cells
